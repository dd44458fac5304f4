"""Multi-process JAX: automatic `jax.distributed.initialize` and a cross-process stop vote.

`maybe_initialize(mode)` runs before anything touches a JAX backend (every `colajax` command
that computes calls it). mode `off` never initialises, `on` always does (JAX's own detection
fills in what the environment does not say), and `auto` (the default) does so only when the
environment says this process is one of several:

1. explicit: `COLAJAX_COORDINATOR` (or `JAX_COORDINATOR_ADDRESS`) = host:port together with
   `COLAJAX_NUM_PROCESSES` / `COLAJAX_PROCESS_ID` (or `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`),
   more than one process;
2. SLURM: inside an `srun` step (`SLURM_STEP_NODELIST`, `SLURM_PROCID`) of more than one task
   (the batch script itself, outside `srun`, is a single process);
3. TPU: `TPU_WORKER_HOSTNAMES` / `TPU_PROCESS_ADDRESSES` listing several hosts (GKE, xpk),
   `MEGASCALE_NUM_SLICES` > 1 (multi-slice), or a TPU VM (it has /dev/accel* or /dev/vfio
   devices) whose metadata server lists several workers.

Anything else is a single-host run and nothing happens. On CPU, cross-process collectives use
gloo. `COLAJAX_DISTRIBUTED=auto|on|off` sets the default of the `--distributed` flag.
"""

import dataclasses
import glob
import itertools
import os
import urllib.request
from collections.abc import Callable, Mapping

MODES = ("auto", "on", "off")
_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `maybe_initialize` does: `kind` none | explicit | slurm | tpu | forced."""

    kind: str
    reason: str
    kwargs: dict = dataclasses.field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.kind != "none"


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[n] for n in names if env.get(n)), None)


def _count(value: str | None) -> int:
    return len([v for v in (value or "").split(",") if v.strip()])


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer; fix the job environment.") from None


def tpu_vm_workers(timeout_s: float = 2.0) -> int | None:
    """Number of workers of this TPU VM slice from the metadata server; None off a TPU VM.

    Only asked on a machine with TPU device files, so CPU and GPU hosts never wait on it.
    """
    if not (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
        return None
    req = urllib.request.Request(
        _METADATA + "worker-network-endpoints", headers={"Metadata-Flavor": "Google"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return _count(resp.read().decode())
    except OSError:
        return None


def detect(
    env: Mapping[str, str] | None = None, tpu_workers: Callable[[], int | None] = tpu_vm_workers
) -> Plan:
    """The multi-process job this environment describes (`Plan('none', ...)` if none)."""
    env = os.environ if env is None else env
    coord = _first(env, "COLAJAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
    nproc = _first(env, "COLAJAX_NUM_PROCESSES", "JAX_NUM_PROCESSES")
    pid = _first(env, "COLAJAX_PROCESS_ID", "JAX_PROCESS_ID")
    override = {"coordinator_address": coord} if coord else {}
    if coord and nproc is not None:
        n = _int("COLAJAX_NUM_PROCESSES", nproc)
        if n <= 1:
            return Plan("none", "explicit coordinator variables with 1 process")
        if pid is None:
            raise ValueError(
                f"COLAJAX_COORDINATOR={coord} and COLAJAX_NUM_PROCESSES={n} are set but not "
                "COLAJAX_PROCESS_ID: give every process its id 0..N-1."
            )
        kwargs = dict(override, num_processes=n, process_id=_int("COLAJAX_PROCESS_ID", pid))
        return Plan("explicit", f"coordinator {coord}, {n} processes", kwargs)
    tasks = _first(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    if env.get("SLURM_STEP_NODELIST") and "SLURM_PROCID" in env and tasks:
        n = _int("SLURM_NTASKS", tasks)
        if n > 1:
            reason = f"SLURM step with {n} tasks (job {env.get('SLURM_JOB_ID', '?')})"
            return Plan("slurm", reason, dict(override, cluster_detection_method="slurm"))
    hosts = _count(_first(env, "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"))
    slices = _int("MEGASCALE_NUM_SLICES", env.get("MEGASCALE_NUM_SLICES") or "1")
    if hosts > 1 or slices > 1:
        return Plan("tpu", f"TPU job: {hosts} hosts per slice, {slices} slice(s)", override)
    if env.get("TPU_SKIP_MDS_QUERY") is None:
        workers = tpu_workers()
        if workers is not None and workers > 1:
            return Plan("tpu", f"TPU VM slice with {workers} workers", override)
    if coord:
        raise ValueError(
            f"COLAJAX_COORDINATOR / JAX_COORDINATOR_ADDRESS={coord} is set but the number of "
            "processes is not: also set COLAJAX_NUM_PROCESSES and COLAJAX_PROCESS_ID."
        )
    return Plan("none", "single process (no TPU pod, SLURM step or coordinator variables)")


def _initialized() -> bool:
    from jax._src import distributed

    return distributed.global_state.client is not None


def maybe_initialize(mode: str = "auto", env: Mapping[str, str] | None = None) -> Plan:
    """Initialise `jax.distributed` per `mode` (see the module docstring); returns the plan."""
    if mode not in MODES:
        raise ValueError(f"--distributed must be one of {MODES}, got {mode!r}.")
    if mode == "off":
        return Plan("none", "--distributed off")
    plan = detect(env)
    if mode == "on" and not plan.active:
        plan = Plan("forced", "--distributed on (JAX detects the cluster)")
    if not plan.active or _initialized():
        return plan
    import jax

    if not (env or os.environ).get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**plan.kwargs)
    except (RuntimeError, ValueError) as e:
        raise RuntimeError(
            f"jax.distributed.initialize failed ({plan.reason}): {e}. Check that every process "
            "of the job started and reaches the coordinator, or pass --distributed off for a "
            "single-process run."
        ) from None
    return plan


def add_flag(parser) -> None:
    """`--distributed [auto|on|off]` (bare `--distributed` = on) on an argparse parser."""
    parser.add_argument(
        "--distributed",
        nargs="?",
        const="on",
        default=os.environ.get("COLAJAX_DISTRIBUTED", "auto"),
        choices=MODES,
        help="jax.distributed.initialize: auto (when the environment is a multi-process job: "
        "TPU pod, SLURM step, COLAJAX_COORDINATOR), on, off (default: auto)",
    )


# --------------------------------------------------------------------------------------------
# Agreeing to stop: one process's SIGTERM -> every process stops at the same step.
# --------------------------------------------------------------------------------------------

_instances = itertools.count()
BARRIER_TIMEOUT_MS = 30 * 60 * 1000  # a slow host (compiling, checkpointing) may lag this long


class StopVote:
    """`vote(step, local)` is True on every process at the same step once any process passed
    `local=True` (e.g. its SIGTERM flag): the processes meet at a coordination-service barrier
    per call, after the ones that want to stop have left a key, so no device work is needed.
    All processes must call it at the same steps, and create their votes in the same order."""

    def __init__(self, name: str):
        import jax

        self.pid, self.n = jax.process_index(), jax.process_count()
        self.prefix = f"colajax/stop/{name}/{next(_instances)}"
        self._client = None
        if self.n > 1:
            from jax._src import distributed

            self._client = distributed.global_state.client

    def __call__(self, step: int, local: bool) -> bool:
        if self.n == 1:
            return bool(local)
        if self._client is None:  # multi-process without the coordination service
            import numpy as np
            from jax.experimental import multihost_utils

            return bool(np.max(multihost_utils.process_allgather(np.int32(bool(local)))))
        key = f"{self.prefix}/{int(step)}/"
        if local:
            self._client.key_value_set(f"{key}{self.pid}", "1")
        self._client.wait_at_barrier(f"{self.prefix}/barrier", BARRIER_TIMEOUT_MS)
        return bool(self._client.key_value_dir_get(key))
