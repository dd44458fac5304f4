"""AR / LLaDA losses against hand (NumPy) computations, padding invariance with the real model,
and the LLaDA masking statistics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_lm import TINY_AR, TINY_LLADA, random_params

from colajax.models.llama import Llama
from colajax.train import lm_objectives as lo

V, MASK = 6, 5
TABLE = np.random.default_rng(0).standard_normal((V, V)).astype(np.float32)


def _bigram(ids, pos, seg):
    """logits[b, i] = TABLE[ids[b, i]]."""
    return jnp.asarray(TABLE)[ids]


def _ce(ids, targets):
    rows = TABLE[ids].astype(np.float64)
    lse = np.log(np.exp(rows).sum(-1))
    return lse - np.take_along_axis(rows, targets[..., None], -1)[..., 0]


def test_positions_restart_per_segment():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 0, 0], [3, 3, 1, 1, 1, 1, 0]])
    want = [[0, 1, 2, 0, 1, 0, 1], [0, 1, 0, 1, 2, 3, 0]]
    np.testing.assert_array_equal(np.asarray(lo.positions_from_segments(seg)), want)


def test_ar_loss_by_hand():
    tokens = np.asarray([[1, 2, 3, 4, 0, 2], [3, 1, 4, 4, 2, 0]], np.int32)
    seg = np.asarray([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]], np.int32)
    lw = np.asarray([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0.5, 1]], np.float32)
    loss, m = jax.jit(functools.partial(lo.ar_loss, _bigram))(
        tokens, segment_ids_BL=seg, loss_weights_BL=lw
    )
    # scored targets (input -> target): row 0: 1->2, 2->3 (4 starts segment 2), 4->0;
    # row 1: every pair, weighted by the target's loss weight (3->1: 1, 1->4: 0, ...)
    ce = _ce(tokens[:, :-1], tokens[:, 1:])
    w = np.asarray([[1, 1, 0, 1, 0], [1, 0, 1, 0.5, 1]])
    want = (ce * w).sum() / w.sum()
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(m["ce"]) == float(loss) and float(m["scored"]) == pytest.approx(w.sum())
    hit = TABLE[tokens[:, :-1]].argmax(-1) == tokens[:, 1:]
    assert float(m["acc"]) == pytest.approx((hit * w).sum() / w.sum(), rel=1e-6)


@pytest.mark.parametrize("padded", [False, True])
def test_llada_loss_by_hand(padded):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, MASK, (3, 40)).astype(np.int32)  # never the mask id itself
    seg = np.ones_like(tokens)
    lw = np.ones(tokens.shape, np.float32)
    if padded:
        seg[0, 30:] = 0  # padding
        lw[1, :10] = 0  # an unscored prompt (never masked, as in LLaDA SFT)
    t, key = np.asarray([0.2, 0.5, 0.9], np.float32), jax.random.PRNGKey(3)
    loss, m = jax.jit(functools.partial(lo.llada_loss, _bigram, mask_id=MASK, t_B=t))(
        tokens, key, segment_ids_BL=seg, loss_weights_BL=lw
    )
    w = lw * (seg > 0)
    mask = jax.jit(functools.partial(lo.llada_mask, mask_id=MASK, t_B=t))
    noisy, masked, _ = (np.asarray(a) for a in mask(key, tokens, w))
    np.testing.assert_array_equal(noisy, np.where(masked, MASK, tokens))
    p = (1 - 1e-3) * t.astype(np.float64) + 1e-3
    ce = _ce(noisy, tokens)  # the model sees the noisy ids
    want = (ce * masked * w / p[:, None]).sum() / w.sum()
    if not padded:  # LLaDA GUIDELINES: sum(ce / p over masked) / (b * l)
        assert want == pytest.approx((ce * masked / p[:, None]).sum() / tokens.size)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert not masked[w == 0].any() and masked.sum() > 10
    assert float(m["masked_frac"]) == pytest.approx(masked.sum() / w.sum())
    assert float(m["masked_ce"]) == pytest.approx((ce * masked).sum() / masked.sum(), rel=1e-5)
    hit = TABLE[noisy].argmax(-1) == tokens
    assert float(m["acc"]) == pytest.approx((hit * masked).sum() / masked.sum(), rel=1e-6)


def test_llada_mask_rate_follows_t():
    tokens = jnp.zeros((3, 4000), jnp.int32)
    t = jnp.asarray([0.0, 0.3, 1.0])
    _, masked, p = jax.jit(
        lambda k: lo.llada_mask(k, tokens, jnp.ones_like(tokens), mask_id=MASK, t_B=t)
    )(jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(p), [1e-3, 0.3 * 0.999 + 1e-3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(masked).mean(1), np.asarray(p), atol=0.025)
    _, _, drawn = lo.llada_mask(jax.random.PRNGKey(1), tokens[:, :4], tokens[:, :4], mask_id=MASK)
    assert np.all((np.asarray(drawn) >= 1e-3) & (np.asarray(drawn) <= 1.0))


def test_llada_masks_ignore_appended_padding():
    """Per-row draws: the real tokens of a right-padded batch get the same masks (so padding
    never changes the loss of the real tokens; the model side is tested in test_llama)."""
    tokens = jnp.ones((3, 50), jnp.int32)
    mask = jax.jit(lambda t, w: lo.llada_mask(jax.random.PRNGKey(4), t, w, mask_id=MASK))
    _, short, p_short = mask(tokens[:, :30], tokens[:, :30])
    _, long, p_long = mask(tokens, tokens.at[:, 30:].set(0))
    np.testing.assert_array_equal(np.asarray(long[:, :30]), np.asarray(short))
    np.testing.assert_array_equal(np.asarray(p_long), np.asarray(p_short))
    assert not np.asarray(long[:, 30:]).any() and np.asarray(short).any()


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [TINY_AR, TINY_LLADA], ids=["ar", "llada"])
def test_padding_never_changes_the_loss(cfg):
    """Appending segment-0 columns (random ids) leaves the loss and metrics of the real tokens
    unchanged (LLaDA: the same rng masks the same real tokens)."""
    params = random_params(cfg)
    fn = lambda ids, pos, seg: Llama(cfg).apply({"params": params}, ids, pos, seg)
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 60, (2, 12)).astype(np.int32)
    pad = rng.integers(0, 60, (2, 4)).astype(np.int32)
    padded = np.concatenate([tokens, pad], 1)
    seg = np.concatenate([np.ones((2, 12)), np.zeros((2, 4))], 1).astype(np.int32)
    if cfg.causal:
        loss = jax.jit(lambda t, s: lo.ar_loss(fn, t, segment_ids_BL=s))
    else:
        key = jax.random.PRNGKey(7)
        loss = jax.jit(lambda t, s: lo.llada_loss(fn, t, key, mask_id=63, segment_ids_BL=s))
    a, ma = loss(tokens, np.ones_like(tokens))
    b, mb = loss(padded, seg)
    assert float(a) > 0
    for k in ma:
        assert float(mb[k]) == pytest.approx(float(ma[k]), rel=1e-5, abs=1e-6), k
