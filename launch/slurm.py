"""A colajax job on a SLURM GPU cluster: writes the sbatch script and submits it.

    python -m launch.slurm --nodes 2 --gpus-per-node 8 --partition gpu --time 04:00:00 \\
        --name cola2b -- colajax train --config experiments/cola_2b_gpu.py \\
        --workdir /shared/runs/cola2b

Run from a checkout on a filesystem every node sees, with its venv (`--venv`, default
<checkout>/.venv, made from requirements-gpu.lock). `--per gpu` (default) starts one process per
GPU (`--ntasks-per-node=G`; each process takes GPU $SLURM_LOCALID), `--per node` one process per
node driving all its GPUs (JAX_LOCAL_DEVICE_IDS=0..G-1). The coordinator (first node of the
step, port from the job id) and the process ids come from the SLURM variables, which
`colajax train` detects inside `srun` and hands to jax.distributed.initialize.
`--signal=TERM@120` asks SLURM for SIGTERM 2 minutes before the time limit (colajax saves and
exits 0); `--requeue` lets a preempted job restart and resume from its checkpoints.
`--dry-run` prints the script and the sbatch command; nothing imports JAX.
"""

import argparse
import os
import shlex
import sys

from launch import common

# XLA/NCCL settings for NVIDIA GPUs (README "Run on GPUs" explains each).
GPU_ENV = {
    "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.92",  # leave room for NCCL and cuDNN workspaces
    "XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true",  # overlap comms & compute
    "NCCL_DEBUG": "WARN",  # NCCL errors and warnings in the task logs
    "NCCL_NVLS_ENABLE": "0",  # NVLink SHARP off: avoids hangs on clusters without NVLS
    "TF_CPP_MIN_LOG_LEVEL": "1",
}


def sbatch_script(args, command: list[str], env: dict[str, str]) -> str:
    g = args.gpus_per_node
    tasks = g if args.per == "gpu" else 1
    logs = os.path.join(args.log_dir, "%x-%j")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={common.job_name(args.name, 64)}",
        f"#SBATCH --nodes={args.nodes}",
        f"#SBATCH --ntasks-per-node={tasks}",
        f"#SBATCH --gpus-per-node={g}",
        f"#SBATCH --partition={args.partition}",
        f"#SBATCH --time={args.time}",
        f"#SBATCH --output={logs}.out",
        "#SBATCH --exclusive",
        "#SBATCH --requeue",
        "#SBATCH --signal=TERM@120",
    ]
    lines += [f"#SBATCH --account={args.account}"] if args.account else []
    lines += [f"#SBATCH --cpus-per-task={args.cpus_per_task}"] if args.cpus_per_task else []
    lines += ["set -euo pipefail", f"cd {shlex.quote(args.chdir)}"]
    full_env = dict(GPU_ENV)
    if args.per == "node":
        full_env["JAX_LOCAL_DEVICE_IDS"] = ",".join(str(i) for i in range(g))
    full_env.update(env)
    lines += [f"export {k}={shlex.quote(v)}" for k, v in full_env.items()]
    venv_bin = os.path.join(args.venv, "bin")
    job = [os.path.join(venv_bin, command[0]), *command[1:]]
    lines += [
        'echo "colajax job $SLURM_JOB_ID: $SLURM_NNODES nodes, $SLURM_NTASKS processes"',
        f"srun --kill-on-bad-exit=1 --output={shlex.quote(logs)}-%t.log {shlex.join(job)}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m launch.slurm", description=__doc__)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, required=True)
    p.add_argument("--partition", required=True)
    p.add_argument("--time", required=True, help="time limit, e.g. 04:00:00 or 2-00:00:00")
    p.add_argument("--name", required=True, help="job (run) name")
    p.add_argument("--per", choices=("gpu", "node"), default="gpu", help="one process per ...")
    p.add_argument("--account", default=None)
    p.add_argument("--cpus-per-task", type=int, default=None)
    p.add_argument("--chdir", default=common.REPO, help="colajax checkout on shared storage")
    p.add_argument("--venv", default=None, help="venv with requirements-gpu.lock")
    p.add_argument("--log-dir", default=None, help="default: <chdir>/logs")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE (e.g. NCCL_*)")
    p.add_argument("--dry-run", action="store_true", help="print the script and command only")
    args = p.parse_args(argv)
    if args.nodes < 1 or args.gpus_per_node < 1:
        raise SystemExit("launch: --nodes and --gpus-per-node must be >= 1.")
    args.venv = args.venv or os.path.join(args.chdir, ".venv")
    args.log_dir = args.log_dir or os.path.join(args.chdir, "logs")
    script = sbatch_script(args, common.colajax_command(command), common.parse_env(args.env))
    path = os.path.join(args.log_dir, f"{common.job_name(args.name, 64)}.sbatch")
    runner = common.Runner(args.dry_run)
    runner.write(path, script)
    runner.run(["mkdir", "-p", args.log_dir])
    runner.run(["sbatch", path])
    return 0


if __name__ == "__main__":
    sys.exit(main())
