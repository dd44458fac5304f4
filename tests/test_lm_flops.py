"""LM (AR / LLaDA) FLOPs: the paper's 2B parameter counts (exact, via eval_shape), hand formulas,
and XLA's compiled cost analysis of the real loss + grad steps and sampler passes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colajax import flops
from colajax.models import attention
from colajax.models.config import LMConfig
from colajax.models.llama import Llama, init_lm_cache
from colajax.train import lm_objectives

# Tiny, but matmul-dominated so XLA's elementwise FLOPs stay a few percent of the total.
CFG = LMConfig(
    vocab_size=512, dim=128, ffn_dim=512, num_heads=4, num_kv_heads=2, head_dim=32, num_layers=2
)
B, S = 2, 64


def _xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def _assert_close_to_xla(xla: float, analytic: float):
    # the band of tests/test_flops.py: XLA also counts elementwise work, a little above
    print(f"xla/analytic = {xla / analytic:.4f}")
    assert 0.995 <= xla / analytic <= 1.05, (xla, analytic, xla / analytic)


def _n_params(cfg: LMConfig) -> int:
    shapes = jax.eval_shape(Llama(cfg).init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def test_paper_2b_parameter_counts_exact():
    cfg = LMConfig()  # 27 layers, 2048 / 8192, 16 x 128, vocab 100278, untied
    counts = flops.lm_param_counts(cfg)
    assert counts["embedding"] == 410_738_688 == 2 * 100_278 * 2048  # paper Table 9
    assert counts["blocks"] == 1_811_939_328
    assert counts["norms"] == 27 * 2 * 2048 + 2048 == 112_640
    assert counts["non_embedding"] == 1_812_051_968
    assert counts["total"] == _n_params(cfg) == 2_222_790_656  # eval_shape, no allocation
    tied = dataclasses.replace(CFG, tie_embeddings=True)
    assert flops.lm_param_counts(tied)["total"] == _n_params(tied)
    assert flops.lm_param_counts(CFG)["total"] == _n_params(CFG)  # GQA widths


def test_pairs_match_the_real_masks():
    pos = jnp.arange(12)[None]
    causal = attention.block_causal_mask(pos, pos, 1)
    assert flops.causal_pairs(12) == int(causal.sum()) == 78
    assert flops.bidirectional_pairs(12) == 144


def test_hand_formulas():
    cfg = LMConfig()
    d, f, v, lay = 2048, 8192, 100278, 27
    per_row = 4 * d * d + 3 * d * f
    assert flops.lm_block_macs_per_row(cfg) == per_row
    length = 512
    fwd = 2 * (length * lay * per_row + length * d * v + lay * 2 * (length * (length + 1) // 2) * d)
    ar = flops.ar_train_flops(cfg, 1, length)
    assert ar["total"] == 3 * fwd
    dense = 2 * (length * lay * per_row + length * d * v + lay * 2 * length * length * d)
    assert ar["total_dense"] == 3 * dense
    assert flops.llada_train_flops(cfg, 4, length)["total"] == 4 * 3 * dense
    p, n = 10, 5
    g = flops.ar_generation_flops(cfg, p, n)
    steps = [flops.lm_forward_flops(cfg, 1, p + j) for j in range(1, n)]
    assert g["decode"] == pytest.approx(sum(steps))
    assert g["prefill"] == flops.lm_forward_flops(cfg, p, 55, head_rows=1)
    lg = flops.llada_generation_flops(cfg, p, 8, steps=4)
    assert lg["total"] == 4 * flops.lm_forward_flops(cfg, 18, 18 * 18, head_rows=8)
    with pytest.raises(ValueError, match="must be >= 1"):
        flops.ar_generation_flops(cfg, 0, 4)


@pytest.mark.parametrize("family", ["ar", pytest.param("llada", marks=pytest.mark.slow)])
def test_train_step_matches_xla_cost_analysis(family):
    """The compiled loss + grad step: dense attention (the masked dense kernel) = total_dense."""
    cfg = CFG if family == "ar" else dataclasses.replace(CFG, causal=False, mask_id=511)
    model = Llama(cfg)
    tokens = jnp.zeros((B, S), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens)

    def step(params, tokens):
        def loss(p):
            fn = lambda ids, pos, seg: model.apply(p, ids, pos, seg)
            if family == "ar":
                return lm_objectives.ar_loss(fn, tokens)[0]
            return lm_objectives.llada_loss(fn, tokens, jax.random.PRNGKey(0), mask_id=511)[0]

        return jax.value_and_grad(loss)(params)

    want = (flops.ar_train_flops if family == "ar" else flops.llada_train_flops)(cfg, B, S)
    _assert_close_to_xla(_xla_flops(step, params, tokens), want["total_dense"])


@pytest.mark.slow
def test_sampler_passes_match_xla_cost_analysis():
    """A cached one-row AR pass reads the whole fixed-size cache (S keys + itself); a LLaDA
    step is a bidirectional pass with the head on the answer rows."""
    model = Llama(CFG)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((B, S), jnp.int32))
    cache = init_lm_cache(CFG, B, S)
    one = jnp.zeros((B, 1), jnp.int32)
    xla = _xla_flops(lambda p, x, c: model.apply(p, x, c, method=Llama.cached), params, one, cache)
    _assert_close_to_xla(xla, flops.lm_forward_flops(CFG, B, B * (S + 1)))
    g = 16
    ids = jnp.zeros((B, S), jnp.int32)
    answer = lambda m, x: m.head(m.hidden(x)[:, S - g :])
    xla = _xla_flops(lambda p, x: model.apply(p, x, method=answer), params, ids)
    per_sample = flops.llada_generation_flops(CFG, S - g, g, steps=1)["total"]
    _assert_close_to_xla(xla, B * per_sample)
