"""Data-parallel placement of a sampler's batch (shared by the Cola, AR and LLaDA samplers).

A sampler given a batch sharding (`batch_sharding(mesh, rules)`: the first dimension over the
mesh's data-parallel axes, rules 'batch' -> ('data', 'fsdp')) pads its batch to a multiple of
the data-parallel size by repeating the last sample, places every per-sample array with its
rows split over the devices and everything else replicated, runs its jitted core (XLA
partitions it over the batch) and brings the outputs back to host, where the padding rows are
dropped. Every sample's computation is independent of the other rows, so a prompt's output is
the same on 1 device or on many.

Multi-process (a mesh over the devices of several processes): every process holds the same
global batch (same prompts, same padding) and places only the rows its own devices hold
(`jax.make_array_from_process_local_data`); the outputs are gathered to every process
(`multihost_utils.process_allgather`). On a mesh of this process's devices only, nothing
crosses processes.
"""

import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    """Rows of per-sample arrays (any rank) over the mesh axes of rules['batch'] (size > 1)."""
    axes = tuple(a for a in rules.get("batch", ()) if mesh.shape[a] > 1)
    return NamedSharding(mesh, PartitionSpec(axes or None))


def data_parallel_size(sharding: NamedSharding | None) -> int:
    """How many ways `sharding` splits the rows (1 without a sharding)."""
    if sharding is None or not len(sharding.spec) or sharding.spec[0] is None:
        return 1
    first = sharding.spec[0]
    axes = (first,) if isinstance(first, str) else first
    return math.prod(sharding.mesh.shape[a] for a in axes)


def sample_seeds(seed: int, seeds, n: int) -> np.ndarray:
    """uint32 [n] per-sample seeds: `seeds` (e.g. seed + record number), else `seed + b`."""
    if seeds is None:
        return np.uint32(seed % 2**32) + np.arange(n, dtype=np.uint32)
    out = np.asarray([int(s) % 2**32 for s in seeds], np.uint32)
    if out.shape != (n,):
        raise ValueError(f"seeds has {out.size} entries for {n} prompts; give one per prompt.")
    return out


def padded_rows(n: int, sharding: NamedSharding | None) -> np.ndarray:
    """Row indices of a batch of `n` padded to a multiple of the data-parallel size: 0..n-1,
    then the last row repeated."""
    dp = data_parallel_size(sharding)
    return np.minimum(np.arange(-(-n // dp) * dp), n - 1)


class Placer:
    """Puts host arrays on the devices of a batch sharding (or leaves them to jit without).

    Given the batch size `n`, per-sample arrays [n, ...] are padded to the data-parallel
    multiple (`padded_rows`) as they are placed, and `host` drops the padding rows again."""

    def __init__(self, sharding: NamedSharding | None, n: int | None = None):
        self.rows = sharding
        self.shared = None if sharding is None else NamedSharding(sharding.mesh, PartitionSpec())
        self.n = n
        self.index = None if n is None else padded_rows(n, sharding)

    def _put(self, host: np.ndarray, sharding: NamedSharding | None):
        if sharding is None:
            return jax.numpy.asarray(host)
        if sharding.is_fully_addressable:
            return jax.device_put(host, sharding)
        # the same global array on every process: each process places the rows it holds
        return jax.make_array_from_process_local_data(sharding, host, host.shape)

    def batch(self, host) -> jax.Array:
        """A per-sample array, rows over the data-parallel axes (padded when `n` is given)."""
        host = np.asarray(host)
        return self._put(host if self.index is None else host[self.index], self.rows)

    def seeds(self, seed: int, seeds) -> jax.Array:
        """The placed uint32 per-sample seeds (`sample_seeds`) of the `n` samples."""
        return self.batch(sample_seeds(seed, seeds, self.n))

    def shared_value(self, host) -> jax.Array:
        """An array every device holds whole (scalars, schedules)."""
        return self._put(np.asarray(host), self.shared)

    def reshard(self, array: jax.Array) -> jax.Array:
        """A device array [B, ...] (e.g. drawn noise) onto the batch sharding."""
        return array if self.rows is None else jax.device_put(array, self.rows)

    def host(self, array) -> np.ndarray | None:
        """An output's value on this process without the padding rows (None stays None)."""
        out = to_host(array)
        return out if out is None or self.n is None else out[: self.n]


def to_host(array) -> np.ndarray | None:
    """The whole value of an output on this process (gathered if it spans other processes)."""
    if array is None:
        return None
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.asarray(array)
    if array.is_fully_replicated:
        return np.asarray(array.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
