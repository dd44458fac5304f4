"""What the machine can do: peak FLOP/s per device (a table of known accelerators, else measured)
and the process's peak memory. MFU everywhere in colajax is measured against `peak_flops`.

The table holds the vendors' dense peak per chip (bf16 inputs, f32 accumulation) for the device
kinds users run on; float32 peaks are listed where the vendor gives one. An unknown device (a
CPU, a new chip) is measured: the best of a few large matmuls, sharded over every device.
"""

import functools
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# device_kind substring (lower case) -> {dtype: dense peak FLOP/s per device}
PEAK_TABLE: dict[str, dict[str, float]] = {
    "tpu v4": {"bfloat16": 275e12, "float32": 275e12 / 2},
    "tpu v5 lite": {"bfloat16": 197e12},  # v5e reports "TPU v5 lite"
    "tpu v5e": {"bfloat16": 197e12},
    "tpu v5p": {"bfloat16": 459e12},
    "tpu v5": {"bfloat16": 459e12},  # v5p reports "TPU v5"
    "tpu v6 lite": {"bfloat16": 918e12},  # v6e (Trillium)
    "tpu v6e": {"bfloat16": 918e12},
    "a100": {"bfloat16": 312e12, "float32": 19.5e12},
    "h100": {"bfloat16": 989e12, "float32": 67e12},  # SXM dense
    "h100 pcie": {"bfloat16": 756e12, "float32": 51e12},
    "h200": {"bfloat16": 989e12, "float32": 67e12},
}


def table_peak(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one device of `device_kind` from the table (longest match), or None."""
    kind = device_kind.lower()
    hits = [k for k in PEAK_TABLE if k in kind and dtype in PEAK_TABLE[k]]
    return PEAK_TABLE[max(hits, key=len)][dtype] if hits else None


@functools.cache
def measure_peak_flops(dtype: str = "float32", size: int = 2048, reps: int = 10) -> float:
    """Peak FLOP/s of all devices together: the best of `reps` timed [n*D, n] @ [n, n] matmuls,
    row-sharded over every device (f32 accumulation). The best, not the median: a peak is what
    the machine can do, and on a shared host the median drifts with other tenants. Measured once
    per process and arguments.
    """
    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("d",))
    rows = size * len(devices)
    dt = jnp.dtype(dtype)
    a = jax.device_put(
        jax.random.normal(jax.random.key(0), (rows, size), jnp.float32).astype(dt),
        NamedSharding(mesh, PartitionSpec("d", None)),
    )
    b = jax.device_put(
        jax.random.normal(jax.random.key(1), (size, size), jnp.float32).astype(dt),
        NamedSharding(mesh, PartitionSpec()),
    )
    mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    mm(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2.0 * rows * size * size / float(np.min(times))


def peak_flops(dtype: str = "float32", configured_per_device: float | None = None) -> float:
    """Peak FLOP/s of the whole job: `configured_per_device` x devices if given, else the table
    value of this device kind x devices, else measured (CPUs, unknown chips)."""
    n = jax.device_count()
    if configured_per_device:
        return float(configured_per_device) * n
    per_device = table_peak(getattr(jax.devices()[0], "device_kind", ""), dtype)
    if per_device is not None:
        return per_device * n
    return measure_peak_flops(dtype)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib) * (1 if sys.platform == "darwin" else 1024)
