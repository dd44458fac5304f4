"""Job launchers (TPU VMs, xpk/GKE, SLURM, sweeps); no JAX imports."""
