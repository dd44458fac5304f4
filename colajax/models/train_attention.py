"""Attention over the DiT training layout `[clean | noisy]` without a dense `(2L - bs)^2` mask.

Same numbers as `attention.attend` under `attention.clean_noisy_mask` (up to float summation
order; rows that see no key output 0), with a flash-attention style custom VJP: scores live one
query chunk at a time, and the backward pass recomputes them from the saved log-sum-exp. In bf16
the backward pass keeps dP in float32, about one bf16 ulp from dense autodiff.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from colajax.models import lean
from colajax.models.attention import (
    NEG_INF,
    clean_noisy_allowed,
    clean_noisy_mask,
    same_segment,
)
from colajax.models.layers import precision_for, round_to


class CleanNoisyLayout(NamedTuple):
    """The DiT training layout of `[B, L]` samples: rows `[clean 0..L-bs-1 | noisy 0..L-1]`.

    Positions are `arange(L)` in both copies, so blocks are aligned to rows (the trainer's
    batches; padding via segment ids is fine). Visibility is `clean_noisy_mask` over these rows;
    `attend_clean_noisy` computes it without the dense `(2L - bs)^2` mask. Packed rows whose
    positions restart mid-row need the dense mask (`clean_noisy_mask`) instead.
    """

    segment_ids_BL: jax.Array  # [B, L] segment ids of the sample rows (0 = padding)

    def rows(self, block_size: int):
        """(positions_BS, copy_BS, segment_ids_BS) of the S = 2L - bs layout rows."""
        seg = self.segment_ids_BL
        pos = jnp.broadcast_to(jnp.arange(seg.shape[1], dtype=jnp.int32), seg.shape)
        return layout_rows(pos, seg, block_size)

    def dense_mask(self, block_size: int):
        """The equivalent dense `[B, 1, S, S]` mask (reference / tests)."""
        pos, copy, seg = self.rows(block_size)
        return clean_noisy_mask(pos, copy, block_size, seg)


def layout_rows(pos_BL, seg_BL, block_size: int):
    """(positions_BS, copy_BS, segment_ids_BS) of `[clean without the last block | noisy]` rows
    built from the sample rows (copy 0 = clean, 1 = noisy)."""
    b, length = pos_BL.shape
    nc = _n_clean(length, block_size)
    copy = jnp.broadcast_to((jnp.arange(nc + length) >= nc).astype(jnp.int32), (b, nc + length))
    both = lambda x: jnp.concatenate([x[:, :nc], x], axis=1)
    return both(pos_BL), copy, both(seg_BL)


def _n_clean(length: int, block_size: int) -> int:
    if length % block_size or length < block_size:
        raise ValueError(
            f"layout length {length} is not a positive multiple of block size {block_size}."
        )
    return length - block_size


def attend_clean_noisy(
    q_BSHD, k_BSHD, v_BSHD, layout: CleanNoisyLayout, block_size: int, dtype, chunk: int = 128
):
    """`attend` under the training-layout mask, without `[S, S]` scores or mask.

    Query rows go in chunks of `chunk` rows (clean chunks, then noisy chunks). A chunk scores
    only the clean keys it can see (clean rows < the chunk end for clean queries, < the start of
    its last block for noisy ones: about half of the `[S, L - bs]` tile is skipped), and a noisy
    chunk also scores each of its blocks against itself; one softmax runs over both parts. The
    backward pass recomputes the scores from the saved log-sum-exp (flash-attention style), so
    no score matrix outlives its chunk. Equals the dense masked `attend` up to float summation
    order, except that query rows with no visible key (padding) output 0 where `attend` gives
    them an average of the values.
    """
    length = layout.segment_ids_BL.shape[1]
    n_clean = _n_clean(length, block_size)
    if q_BSHD.shape[1] != n_clean + length:
        raise ValueError(
            f"training layout of {length} rows needs {n_clean + length} DiT rows, got "
            f"{q_BSHD.shape[1]}."
        )
    chunk = max(block_size, chunk // block_size * block_size)
    d = q_BSHD.shape[-1]
    q = round_to(q_BSHD.astype(jnp.float32) * (1.0 / np.sqrt(d)), dtype)
    o = _clean_noisy_attention(
        q, k_BSHD.astype(dtype), v_BSHD.astype(dtype), layout.segment_ids_BL, block_size, chunk
    )
    return round_to(o, dtype)


def _plan(length: int, block_size: int, chunk: int):
    """Static chunks: (first S row, rows, visible clean keys, own-block part?)."""
    nc = length - block_size
    clean = [(lo, min(chunk, nc - lo), min(lo + chunk, nc), False) for lo in range(0, nc, chunk)]
    hi = lambda lo: min(lo + chunk, length)
    noisy = [(nc + lo, hi(lo) - lo, hi(lo) - block_size, True) for lo in range(0, length, chunk)]
    return clean + noisy


def _chunk_masks(seg_BL, lo: int, rows: int, n_keys: int, own: bool, block_size: int):
    """Boolean masks of one chunk: `[B, 1, Q, K]` over clean keys and (own) `[B, 1, n, bs, bs]`."""
    n_clean = seg_BL.shape[1] - block_size
    copy = int(own)
    r0 = lo - copy * n_clean  # first sample row of the queries
    blk = jnp.arange(r0, r0 + rows) // block_size
    allowed = clean_noisy_allowed(blk[:, None], copy, (jnp.arange(n_keys) // block_size), 0)
    q_seg = seg_BL[:, r0 : r0 + rows]
    mask_a = allowed[None, None] & same_segment(
        q_seg[:, None, :, None], seg_BL[:, None, None, :n_keys]
    )
    if not own:
        return mask_a, None
    blk = blk.reshape(-1, block_size)
    allowed_b = clean_noisy_allowed(blk[:, :, None], 1, blk[:, None, :], 1)
    seg_b = q_seg.reshape(q_seg.shape[0], -1, block_size)
    mask_b = allowed_b[None, None] & same_segment(
        seg_b[:, None, :, :, None], seg_b[:, None, :, None, :]
    )
    return mask_a, mask_b


def _take(x_BHSD, start: int, rows: int):
    """Rows `start .. start + rows - 1` along S (static)."""
    return x_BHSD[:, :, start : start + rows]


def _blocks(x_BHQD, block_size: int):
    b, h, q, d = x_BHQD.shape
    return x_BHQD.reshape(b, h, q // block_size, block_size, d)


def _mm(spec, a, b, dtype):
    a, b, prec = a.astype(dtype), b.astype(dtype), precision_for(dtype)
    return jnp.einsum(spec, a, b, precision=prec, preferred_element_type=jnp.float32)


def _masked_scores(q, k, mask, dtype, spec):
    s = round_to(_mm(spec, q, k, dtype), dtype).astype(jnp.float32)
    return jnp.where(mask, s, NEG_INF)


_QK, _PV, _KT = "bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd", "bhqk,bhqd->bhkd"  # KT: dK, dV
_QK_B, _PV_B, _KT_B = "bhnqd,bhnkd->bhnqk", "bhnqk,bhnkd->bhnqd", "bhnqk,bhnqd->bhnkd"


def _chunk_forward(q, k, v, seg_BL, piece, block_size):
    """One chunk of query rows: (o_BHQD float32, lse_BHQ)."""
    lo, rows, n_keys, own = piece
    dt = q.dtype
    q_c = _take(q, lo, rows)
    b, h = q_c.shape[:2]
    mask_a, mask_b = _chunk_masks(seg_BL, lo, rows, n_keys, own, block_size)
    parts = []  # (scores [b, h, q, keys], values, own block?): one softmax over all parts
    if n_keys:
        s = _masked_scores(q_c, _take(k, 0, n_keys), mask_a, dt, _QK)
        parts.append((s, _take(v, 0, n_keys), False))
    if own:
        blk = lambda x: _blocks(x, block_size)
        s_o = _masked_scores(blk(q_c), blk(_take(k, lo, rows)), mask_b, dt, _QK_B)
        parts.append((s_o.reshape(b, h, rows, block_size), _take(v, lo, rows), True))
    m = functools.reduce(jnp.maximum, [jnp.max(s, axis=-1) for s, _, _ in parts])
    es = [jnp.exp(s - m[..., None]) for s, _, _ in parts]
    den = functools.reduce(jnp.add, [jnp.sum(e, axis=-1) for e in es])
    exact_p = jnp.dtype(dt) != jnp.float32  # bf16: round p = e / den before P @ V, as `attend`
    o = 0.0
    for e, (_, val, is_own) in zip(es, parts, strict=True):
        p = round_to(e / den[..., None], dt) if exact_p else e
        if is_own:
            p = p.reshape(b, h, rows // block_size, block_size, block_size)
            o = o + _mm(_PV_B, p, _blocks(val, block_size), dt).reshape(b, h, rows, -1)
        else:
            o = o + _mm(_PV, p, val, dt)
    if not exact_p:
        o = o / den[..., None]
    # A query row that sees no key (padding) outputs 0 and gets lse = +inf, so the backward pass
    # recomputes p = 0 for it: its VJP matches this forward pass (zero gradients through it).
    seen = m > NEG_INF
    return jnp.where(seen[..., None], o, 0.0), jnp.where(seen, m + jnp.log(den), jnp.inf)


def _chunk_backward(q, k, v, lse, delta, do, seg_BL, piece, block_size):
    """Gradients of one chunk: (dq_c, dk_clean_prefix, dv_clean_prefix, dk_own, dv_own)."""
    lo, rows, n_keys, own = piece
    dt = q.dtype
    q_c, do_c = _take(q, lo, rows), _take(do, lo, rows)
    lse_c, delta_c = _take(lse, lo, rows)[..., None], _take(delta, lo, rows)[..., None]
    b, h = q_c.shape[:2]
    mask_a, mask_b = _chunk_masks(seg_BL, lo, rows, n_keys, own, block_size)
    round_p = (lambda p: round_to(p, dt)) if jnp.dtype(dt) != jnp.float32 else (lambda p: p)
    dq = 0.0
    out = [None, None, None, None]
    if n_keys:
        k_a, v_a = _take(k, 0, n_keys), _take(v, 0, n_keys)
        p = jnp.exp(_masked_scores(q_c, k_a, mask_a, dt, _QK) - lse_c)
        ds = p * (_mm(_QK, do_c, v_a, dt) - delta_c)
        dq = dq + _mm(_PV, ds, k_a, dt)
        out[0], out[1] = _mm(_KT, ds, q_c, dt), _mm(_KT, round_p(p), do_c, dt)
    if own:
        blk = lambda x: _blocks(x, block_size)
        qb, kb, vb, dob = blk(q_c), blk(_take(k, lo, rows)), blk(_take(v, lo, rows)), blk(do_c)
        p = jnp.exp(_masked_scores(qb, kb, mask_b, dt, _QK_B) - blk(lse_c))
        ds = p * (_mm(_QK_B, dob, vb, dt) - blk(delta_c))
        flat = lambda x: x.reshape(b, h, rows, -1)
        dq = dq + flat(_mm(_PV_B, ds, kb, dt))
        out[2], out[3] = flat(_mm(_KT_B, ds, qb, dt)), flat(_mm(_KT_B, round_p(p), dob, dt))
    return dq, *out


_to_bhsd = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731  ([B, S, H, D] <-> [B, H, S, D])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _clean_noisy_attention(q, k, v, seg_BL, block_size: int, chunk: int):
    """Training-layout attention on `[B, S, H, D]` (q pre-scaled); float32 `[B, S, H, D]`."""
    return _cn_fwd(q, k, v, seg_BL, block_size, chunk)[0]


def _cn_fwd(q, k, v, seg_BL, block_size, chunk):
    qt, kt, vt = _to_bhsd(q), _to_bhsd(k), _to_bhsd(v)
    outs = [
        _chunk_forward(qt, kt, vt, seg_BL, piece, block_size)
        for piece in _plan(seg_BL.shape[1], block_size, chunk)
    ]
    o = _to_bhsd(jnp.concatenate([o for o, _ in outs], axis=2))  # [B, S, H, D]
    lse = jnp.concatenate([x for _, x in outs], axis=2)
    return o, (qt, kt, vt, seg_BL, o, lse)


def _cn_bwd(block_size, chunk, res, do):
    # Released with the cotangent: XLA can neither run this before `do` exists nor merge its
    # slices with the forward pass's (which would keep those alive until now).
    qt, kt, vt, seg_BL, o, lse = res
    qt, kt, vt, o, lse = lean.after((qt, kt, vt, o, lse), do)
    delta = _to_bhsd(jnp.sum(do * o, axis=-1)[..., None])[..., 0]  # [B, H, S]
    dot = _to_bhsd(do)
    length = seg_BL.shape[1]
    b, h, _, d = qt.shape
    dk_c = dv_c = jnp.zeros((b, h, length - block_size, d), jnp.float32)  # clean keys
    dq, dk_own, dv_own = [], [], []
    for piece in _plan(length, block_size, chunk):
        g = _chunk_backward(qt, kt, vt, lse, delta, dot, seg_BL, piece, block_size)
        dq.append(g[0])
        if n := piece[2]:
            dk_c, dv_c = dk_c.at[:, :, :n].add(g[1]), dv_c.at[:, :, :n].add(g[2])
        if piece[3]:
            dk_own, dv_own = [*dk_own, g[3]], [*dv_own, g[4]]
    cat = lambda xs, like: _to_bhsd(jnp.concatenate(xs, axis=2)).astype(like.dtype)
    return cat(dq, qt), cat([dk_c, *dk_own], kt), cat([dv_c, *dv_own], vt), None


_clean_noisy_attention.defvjp(_cn_fwd, _cn_bwd)
