"""Attention primitives: the block-causal masks (the only place they are defined), RoPE,
dot-product attention with the official precision points, and explicit fixed-size KV caches.

Layout: padded `[B, L]` batches. Every row carries an in-sample position (restarting at 0 per
sample) and a segment id (0 = padding). Block index = position // block_size.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from colajax.models.layers import precision_for, round_to

NEG_INF = float(np.finfo(np.float32).min)


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def block_causal_mask(q_pos_BQ, k_pos_BK, block_size: int, q_seg_BQ=None, k_seg_BK=None):
    """Boolean `[B, 1, Q, K]`: same (non-zero) segment and block(q) >= block(k).

    Bidirectional within a block, causal across blocks, never across segments/samples.
    Keys with segment 0 (padding, unused cache slots) are never visible.
    """
    qb = (q_pos_BQ // block_size)[:, :, None]
    kb = (k_pos_BK // block_size)[:, None, :]
    allowed = qb >= kb
    if q_seg_BQ is None:
        q_seg_BQ = jnp.ones_like(q_pos_BQ)
    if k_seg_BK is None:
        k_seg_BK = jnp.ones_like(k_pos_BK)
    same = (q_seg_BQ[:, :, None] == k_seg_BK[:, None, :]) & (k_seg_BK[:, None, :] > 0)
    return (allowed & same)[:, None]


def clean_noisy_allowed(q_blk, q_copy, k_blk, k_copy):
    """The training-layout visibility rule on (broadcastable) block indices and copy flags."""
    return (
        ((q_copy == 0) & (k_copy == 0) & (q_blk >= k_blk))
        | ((q_copy == 1) & (k_copy == 0) & (q_blk > k_blk))
        | ((q_copy == 1) & (k_copy == 1) & (q_blk == k_blk))
    )


def same_segment(q_seg, k_seg):
    """Same segment and a real (non-padding) key, on broadcastable segment ids."""
    return (q_seg == k_seg) & (k_seg > 0)


def clean_noisy_mask(pos_BL, copy_BL, block_size: int, seg_BL=None):
    """Training mask over a `[clean | noisy]` DiT layout (copy 0 = clean, 1 = noisy).

    clean q -> clean k: block(q) >= block(k); noisy q -> clean k: block(q) > block(k);
    noisy q -> noisy k: same block only; clean q never sees noisy k; never across segments.
    """
    b = pos_BL // block_size
    allowed = clean_noisy_allowed(
        b[:, :, None], copy_BL[:, :, None], b[:, None, :], copy_BL[:, None, :]
    )
    if seg_BL is None:
        seg_BL = jnp.ones_like(pos_BL)
    same = same_segment(seg_BL[:, :, None], seg_BL[:, None, :])
    return (allowed & same)[:, None]


def segments_from_lengths(lengths_B, length: int):
    """Segment ids `[B, L]`: 1 on the first lengths[b] rows, 0 on padding."""
    return (jnp.arange(length)[None, :] < lengths_B[:, None]).astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# RoPE (float32; inverse frequencies computed once in float32 as the reference does)
# --------------------------------------------------------------------------------------------


def inv_freq(dim: int, theta: float) -> np.ndarray:
    """`1 / theta^(2j/dim)`, j < dim/2, float32."""
    exps = np.arange(0, dim, 2, dtype=np.float32)[: dim // 2] / np.float32(dim)
    return (np.float32(1.0) / (np.float32(theta) ** exps)).astype(np.float32)


def rope_half(x_BLHD, pos_BL, theta: float):
    """NeoX half-split RoPE over all head channels (VAE). float32 result."""
    d = x_BLHD.shape[-1]
    ang = pos_BL.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq(d, theta))  # [B,L,d/2]
    ang = jnp.concatenate([ang, ang], axis=-1)[:, :, None, :]
    x = x_BLHD.astype(jnp.float32)
    rot = jnp.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * jnp.cos(ang) + rot * jnp.sin(ang)


def rope_interleaved(x_BLHD, pos_BL, theta: float, rope_dim: int):
    """GPT-J interleaved RoPE on the first `rope_dim` channels (DiT). float32 result.

    Pair (2j, 2j+1) -> (x0 cos - x1 sin, x1 cos + x0 sin); the other channels pass through
    (cos 1, sin 0), written as `x * cos + swap(x) * sin` so no slicing or concatenation of
    the head channels is needed.
    """
    x = x_BLHD.astype(jnp.float32)
    d = x.shape[-1]
    ang = pos_BL.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq(rope_dim, theta))
    rest = jnp.zeros((*ang.shape[:-1], d - rope_dim), jnp.float32)
    cos = jnp.concatenate([jnp.repeat(jnp.cos(ang), 2, axis=-1), rest + 1.0], -1)[:, :, None]
    sin = jnp.concatenate([jnp.repeat(jnp.sin(ang), 2, axis=-1), rest], -1)[:, :, None]
    pairs = x.reshape(*x.shape[:-1], d // 2, 2)
    swap = (pairs[..., ::-1] * jnp.array([-1.0, 1.0], jnp.float32)).reshape(x.shape)
    return x * cos + swap * sin


# --------------------------------------------------------------------------------------------
# Dot-product attention
# --------------------------------------------------------------------------------------------


def attend(q_BQHD, k_BKHD, v_BKHD, mask_B1QK, dtype):
    """softmax(round(q/sqrt(D)) K^T + mask) V with float32 softmax; output in `dtype`.

    Matmuls take `dtype` inputs with float32 accumulation and round once to `dtype`.
    Rows without any visible key produce a uniform average (they are padding; ignore them).
    """
    d = q_BQHD.shape[-1]
    prec = precision_for(dtype)
    q = round_to(q_BQHD.astype(jnp.float32) * (1.0 / np.sqrt(d)), dtype)
    s = jnp.einsum(
        "bqhd,bkhd->bhqk",
        q,
        k_BKHD.astype(dtype),
        precision=prec,
        preferred_element_type=jnp.float32,
    )
    s = jnp.where(mask_B1QK, round_to(s, dtype).astype(jnp.float32), NEG_INF)
    p = round_to(jax.nn.softmax(s, axis=-1), dtype)
    o = jnp.einsum(
        "bhqk,bkhd->bqhd",
        p,
        v_BKHD.astype(dtype),
        precision=prec,
        preferred_element_type=jnp.float32,
    )
    return round_to(o, dtype)


# --------------------------------------------------------------------------------------------
# KV cache: explicit fixed-size arrays, passed in and returned.
#   cache = {"end": int32[B], "layers": [{"k": [B,S,H,D], "v": [B,S,H,D]}, ...]}
# Keys are stored after q/k-norm and RoPE (positions are absolute, so this is exact).
# --------------------------------------------------------------------------------------------


def init_cache(batch: int, max_len: int, num_layers: int, heads: int, head_dim: int, dtype):
    """An empty cache holding up to `max_len` rows per sample."""
    z = jnp.zeros((batch, max_len, heads, head_dim), dtype)
    return {
        "end": jnp.zeros((batch,), jnp.int32),
        "layers": [{"k": z, "v": z} for _ in range(num_layers)],
    }


def cached_layout(cache: dict[str, Any], q_len: int, new_lengths_B=None):
    """Positions/segments for `q_len` new rows appended after each sample's cached rows.

    Returns (q_pos_BQ, q_seg_BQ, k_pos_BK, k_seg_BK) over keys `[cache slots | new rows]`.
    New rows of sample b are valid for j < new_lengths_B[b] (default: all).
    """
    end = cache["end"]
    b = end.shape[0]
    s = cache["layers"][0]["k"].shape[1]
    j = jnp.arange(q_len)[None, :]
    if new_lengths_B is None:
        new_lengths_B = jnp.full((b,), q_len, jnp.int32)
    q_pos = end[:, None] + j
    q_seg = (j < new_lengths_B[:, None]).astype(jnp.int32)
    slot = jnp.arange(s)[None, :]
    k_pos = jnp.concatenate([jnp.broadcast_to(slot, (b, s)), q_pos], axis=1)
    k_seg = jnp.concatenate([(slot < end[:, None]).astype(jnp.int32), q_seg], axis=1)
    return q_pos, q_seg, k_pos, k_seg


def write_rows(buf_BSHD, end_B, new_BQHD):
    """Write new rows at per-sample offsets `end_B`; rows that would land past S are dropped."""
    b, q = new_BQHD.shape[:2]
    rows = end_B[:, None] + jnp.arange(q)[None, :]
    bidx = jnp.broadcast_to(jnp.arange(b)[:, None], (b, q))
    return buf_BSHD.at[bidx, rows].set(new_BQHD.astype(buf_BSHD.dtype), mode="drop")
