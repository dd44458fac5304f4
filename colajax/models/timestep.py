"""Timestep conditioning inputs of the DiT: the sinusoidal features and grouped timesteps.

`GroupedTimesteps` lets the DiT run its timestep MLP and AdaLN linears once per group of rows
that share a timestep (the Stage-2 training layout has 1 + L / bs of them for 2L - bs rows)
instead of once per row; `rows_of` broadcasts per-group results back to the rows. Rows pinned by
the prompt-block repaint (clean rows inside a noisy block, timestep 0) take group 0's values.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SINUSOID_DIM = 256
MAX_PERIOD = 10000.0


def timestep_freqs() -> np.ndarray:
    """`exp(-ln(10000) * j / 128)`, j < 128, as the official float32 computation rounds it."""
    half = SINUSOID_DIM // 2
    exponent = np.float32(-math.log(MAX_PERIOD)) * np.arange(half, dtype=np.float32)
    exponent = exponent / np.float32(half)
    return np.exp(exponent.astype(np.float64)).astype(np.float32)


def timestep_sinusoid(t_BL) -> jax.Array:
    """`[sin(t f), cos(t f)]` (sin first), width 256, float32."""
    ang = t_BL.astype(jnp.float32)[..., None] * jnp.asarray(timestep_freqs())
    return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)


class GroupedTimesteps(NamedTuple):
    """Timesteps shared by groups of rows: `t_BG` (0..1000 scale) and `group_BN` (run -> group).

    The L rows form N runs of L / N consecutive rows (N = L: one run per row); every row of run
    n has timestep `t_BG[b, group_BN[b, n]]`, except rows where `first_BL` (bool `[B, L]`,
    optional) is set: those take group 0 (`t_BG[b, 0]`). The timestep MLP and every AdaLN
    linear run once per group (`[B, G, D]`) and are broadcast to the rows: each row gets the
    numbers of the per-row computation at a fraction of the cost when G << L (the training
    layout has 1 + L / bs groups: clean rows and pinned rows in group 0 at t = 0, then one per
    noisy block), and the per-row copies are never stored.
    """

    t_BG: jax.Array
    group_BN: jax.Array
    first_BL: jax.Array | None = None

    def checked(self, length: int) -> "GroupedTimesteps":
        """Self (arrays as jax arrays) after checking the shapes against `length` rows."""
        t, group = jnp.asarray(self.t_BG), jnp.asarray(self.group_BN)
        if t.ndim != 2 or group.ndim != 2 or group.shape[1] == 0 or length % group.shape[1]:
            raise ValueError(
                f"GroupedTimesteps needs t_BG [B, G] and group_BN [B, N] with N dividing the "
                f"{length} rows; got {t.shape} and {group.shape}."
            )
        first = self.first_BL
        if first is not None and jnp.shape(first) != (group.shape[0], length):
            raise ValueError(
                f"GroupedTimesteps.first_BL has shape {jnp.shape(first)}; the DiT input has "
                f"{(group.shape[0], length)} rows."
            )
        return GroupedTimesteps(t, group, None if first is None else jnp.asarray(first, bool))


def rows_of(x_BG, groups: GroupedTimesteps | None, length: int):
    """Per-group values `[B, G, ...]` -> rows `[B, length, ...]` (identity if `groups` is None).

    `groups` supplies `group_BN` and `first_BL` (its `t_BG` is not read).
    """
    if groups is None:
        return x_BG
    group_BN = groups.group_BN
    b, n = group_BN.shape
    # A one-hot matmul (exact: one non-zero term per output) rather than a gather: XLA then
    # fuses the broadcast to rows into the consumers instead of storing per-row copies.
    onehot = (group_BN[..., None] == jnp.arange(x_BG.shape[1])).astype(x_BG.dtype)
    hi = jax.lax.Precision.HIGHEST
    runs = jnp.einsum("bng,bg...->bn...", onehot, x_BG, precision=hi).astype(x_BG.dtype)
    rows = jnp.broadcast_to(runs[:, :, None], (b, n, length // n, *runs.shape[2:]))
    rows = rows.reshape(b, length, *runs.shape[2:])
    if groups.first_BL is None:
        return rows
    # A select (fused into the consumers like the broadcast): pinned rows read group 0.
    first = groups.first_BL.reshape(b, length, *(1,) * (rows.ndim - 2))
    return jnp.where(first, x_BG[:, :1], rows)
