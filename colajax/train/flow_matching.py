"""The Stage-2 flow-matching step on the paper's training layout, as the official pretraining
step computes it (official-implementation.md §7.1; fixture `train_step.npz`).

Three pure pieces, so that the trainer and the parity test run the same code:
  draw(...)          the random part: t per row, noise, the prompt-block repaint's pinned rows
  noisy_copy(...)    z_t = (1 - t) z0 + t eps, pinned rows = sg(z0) at t = 0, target eps - sg(z0)
  row_weights(...)   the noisy rows' loss weights: token weights, 0 on pinned rows
  build_layout(...)  DiT inputs `[sg(z0) without its last block | z_t]` + timesteps, mask, weights
  fm_loss(dit, lay)  sum(w * mean_c (v - target)^2) / max(sum w, 1) over the noisy rows
`objectives.fm_layout` chains the first three with the objective's settings.

With default positions (every trainer batch) the layout is compact: `CleanNoisyLayout` instead of
the dense mask and `GroupedTimesteps` (group 0: clean rows and pinned rows at t = 0; group 1 + j:
noisy block j) instead of per-row timesteps. Pinned rows inside a noisy block read group 0, so a
block holding pinned and noisy rows is conditioned exactly as with per-row timesteps.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from colajax.models import attention, train_attention
from colajax.models.layers import round_to
from colajax.models.timestep import GroupedTimesteps

T_SCALE = 1000.0  # the DiT is told 1000 * t
TIMESTEP_SAMPLING = ("sequence", "block")
# rng streams (fold_in constants; fixed so golden values stay put when streams are added)
RNG_T, RNG_EPS, RNG_PIN = 3, 4, 5


class FMLayout(NamedTuple):
    """DiT inputs of the training layout (S = 2L - bs rows) and the FM target.

    `attn` / `t_groups` (None for packed batches with explicit positions) are the compact
    equivalents of `mask_B1SS` / `t_BS` that `fm_loss` prefers.
    """

    x_BSC: jax.Array  # [sg(z0) without the last block | z_t] (bf16-rounded values if asked)
    t_BS: jax.Array  # DiT timesteps, 0..1000 (clean and pinned rows 0)
    positions_BS: jax.Array
    segment_ids_BS: jax.Array
    mask_B1SS: jax.Array
    target_BLC: jax.Array  # eps - sg(z0), float32, never rounded
    weights_BL: jax.Array  # loss weights of the noisy rows (0: an input, not scored)
    t_BL: jax.Array  # per-row t in [0, 1) of the noisy rows (0 on pinned rows)
    attn: train_attention.CleanNoisyLayout | None = None  # the mask without materialising it
    t_groups: GroupedTimesteps | None = None  # one DiT timestep per group (clean, noisy blocks)
    pinned_BL: jax.Array | None = None  # rows pinned by the prompt-block repaint


class FMDraw(NamedTuple):
    """The random part of one FM step."""

    t_BL: jax.Array  # t in (0, 1) per row (shared by a sequence or a block)
    eps_BLC: jax.Array  # noise
    pinned_BL: jax.Array | None  # bool; None when prompt_block_prob = 0


def logit_normal(rng, shape, loc: float, scale: float):
    """t = sigmoid(loc + scale * u), u ~ N(0, 1); float32 in (0, 1)."""
    return jax.nn.sigmoid(loc + scale * jax.random.normal(rng, shape, jnp.float32))


def _block_start(pos_BL, block_size: int):
    """Row index of the first row of each row's block (blocks follow the positions)."""
    rows = jnp.arange(pos_BL.shape[1])[None, :]
    return jnp.clip(rows - pos_BL % block_size, 0, pos_BL.shape[1] - 1)


def draw(
    rng,
    shape,
    pos_BL,
    *,
    block_size: int,
    t_loc: float,
    t_scale: float,
    timestep_sampling: str,
    prompt_block_prob: float,
) -> FMDraw:
    """t per sequence (one per batch row, as released) or per block (one per noisy block),
    logit-normal; noise; and the repaint, as the script draws it: each block of n >= 2 rows is
    hit with probability `prompt_block_prob`, and a hit block pins its first `split` rows,
    split ~ U{1 .. n - 1} (n = bs, except for the short last block of a packed sample)."""
    if timestep_sampling not in TIMESTEP_SAMPLING:
        raise ValueError(
            f"objective.timestep_sampling={timestep_sampling!r}; use one of {TIMESTEP_SAMPLING}."
        )
    b, length, _ = shape
    start = _block_start(pos_BL, block_size)
    r_t = jax.random.fold_in(rng, RNG_T)
    if timestep_sampling == "block":
        u_BL = logit_normal(r_t, (b, length), t_loc, t_scale)
        t_BL = jnp.take_along_axis(u_BL, start, axis=1)
    else:
        t_BL = jnp.broadcast_to(logit_normal(r_t, (b,), t_loc, t_scale)[:, None], (b, length))
    eps = jax.random.normal(jax.random.fold_in(rng, RNG_EPS), shape, jnp.float32)
    pinned = None
    if prompt_block_prob > 0 and block_size > 1:
        r_hit, r_split = jax.random.split(jax.random.fold_in(rng, RNG_PIN))
        hit = jax.random.bernoulli(r_hit, prompt_block_prob, (b, length))
        u = jax.random.uniform(r_split, (b, length))
        take = lambda x: jnp.take_along_axis(x, start, axis=1)
        n = jax.vmap(lambda s: jnp.zeros(length, jnp.int32).at[s].add(1)[s])(start)  # block rows
        split = 1 + jnp.floor(take(u) * (n - 1)).astype(jnp.int32)
        pinned = take(hit) & (n >= 2) & (pos_BL % block_size < split)
    return FMDraw(t_BL, eps, pinned)


def noisy_copy(z0_BLC, d: FMDraw, *, grad_to_vae: bool):
    """(z_t, ts 0..1000, target): z_t = (1 - t) z0 + t eps, target eps - sg(z0); pinned rows are
    sg(z0) at timestep 0. The FM gradient reaches z0 through z_t iff `grad_to_vae`."""
    z0 = z0_BLC.astype(jnp.float32)
    z0_sg = jax.lax.stop_gradient(z0)
    t = d.t_BL[..., None]
    z_t = (1.0 - t) * (z0 if grad_to_vae else z0_sg) + t * d.eps_BLC
    ts = T_SCALE * d.t_BL
    if d.pinned_BL is not None:
        z_t = jnp.where(d.pinned_BL[..., None], z0_sg, z_t)
        ts = jnp.where(d.pinned_BL, 0.0, ts)
    return z_t, ts, d.eps_BLC - z0_sg


def row_weights(weights_BL, pinned_BL=None):
    """Loss weights of the noisy rows: the rows' token weights, 0 on pinned rows (float32)."""
    w = weights_BL.astype(jnp.float32)
    return w if pinned_BL is None else jnp.where(pinned_BL, 0.0, w)


def build_layout(
    z0_BLC,
    zt_BLC,
    ts_BL,
    target_BLC,
    weights_BL,
    pinned_BL=None,
    *,
    block_size: int,
    bf16_inputs: bool,
    segment_ids_BL=None,
    positions_BL=None,
    compact: bool = True,
) -> FMLayout:
    """The DiT inputs of one FM step from given values (the trainer's draw, or a recorded one).

    `ts_BL`: timesteps of the noisy rows on the 0..1000 scale (constant over a block except on
    its pinned rows, which are 0); `weights_BL`: loss weights (already 0 on pinned and padding
    rows); `bf16_inputs`: round the DiT's latent rows and timesteps to bf16, as the official
    step does (`txt.to(bfloat16)`, `timestep.to(bfloat16)`); target and weights stay float32.
    """
    b, length, _ = z0_BLC.shape
    if length % block_size:
        raise ValueError(
            f"sequence length {length} is not a multiple of the DiT block size {block_size}; "
            "use a seq_len divisible by the block size."
        )
    compact = compact and positions_BL is None  # blocks are row-aligned
    if segment_ids_BL is None:
        segment_ids_BL = jnp.ones((b, length), jnp.int32)
    if positions_BL is None:
        positions_BL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    n_clean = length - block_size
    z0_sg = jax.lax.stop_gradient(z0_BLC.astype(jnp.float32))
    x = jnp.concatenate([z0_sg[:, :n_clean], zt_BLC.astype(jnp.float32)], axis=1)
    ts = ts_BL.astype(jnp.float32)
    rnd = (lambda a: round_to(a, jnp.bfloat16).astype(jnp.float32)) if bf16_inputs else None
    if rnd is not None:
        x, ts = rnd(x), rnd(ts)
    t_rows = jnp.concatenate([jnp.zeros((b, n_clean), jnp.float32), ts], axis=1)
    pos2, copy, seg2 = train_attention.layout_rows(positions_BL, segment_ids_BL, block_size)
    mask = attention.clean_noisy_mask(pos2, copy, block_size, seg2)
    attn = t_groups = None
    if compact:  # group 0: clean (and pinned) rows, t = 0; group 1 + j: noisy block j
        n = length // block_size  # a block's t: its last row's (never pinned)
        t_BG = jnp.pad(ts[:, block_size - 1 :: block_size], ((0, 0), (1, 0)))
        group = jnp.concatenate(
            [jnp.zeros(n - 1, jnp.int32), jnp.arange(1, n + 1, dtype=jnp.int32)]
        )
        first = None
        if pinned_BL is not None:
            first = jnp.concatenate([jnp.zeros((b, n_clean), bool), pinned_BL], axis=1)
        attn = train_attention.CleanNoisyLayout(segment_ids_BL)
        t_groups = GroupedTimesteps(t_BG, jnp.broadcast_to(group, (b, group.size)), first)
    return FMLayout(
        x_BSC=x,
        t_BS=t_rows,
        positions_BS=pos2,
        segment_ids_BS=seg2,
        mask_B1SS=mask,
        target_BLC=target_BLC.astype(jnp.float32),
        weights_BL=weights_BL.astype(jnp.float32),
        t_BL=ts_BL.astype(jnp.float32) / T_SCALE,
        attn=attn,
        t_groups=t_groups,
        pinned_BL=pinned_BL,
    )


def masked_mean(x, weights):
    """sum(w x) / max(sum w, 1) over all axes (x and weights broadcast)."""
    w = jnp.broadcast_to(weights.astype(jnp.float32), x.shape)
    return jnp.sum(x.astype(jnp.float32) * w) / jnp.maximum(jnp.sum(w), 1.0)


def fm_loss(dit, layout: FMLayout):
    """Token-weighted mean over the noisy rows of mean_c (v - (eps - z0))^2. -> (loss, v_BLC).

    `dit(x, t, positions, segment_ids, mask)`; it gets the compact layout (`layout.attn`,
    `layout.t_groups`) where there is one.
    """
    t = layout.t_BS if layout.t_groups is None else layout.t_groups
    if layout.attn is None:
        v = dit(layout.x_BSC, t, layout.positions_BS, layout.segment_ids_BS, layout.mask_B1SS)
    else:
        v = dit(layout.x_BSC, t, None, None, layout.attn)
    length = layout.target_BLC.shape[1]
    v = v[:, -length:].astype(jnp.float32)
    err = jnp.mean(jnp.square(v - layout.target_BLC), axis=-1)
    return masked_mean(err, layout.weights_BL), v
