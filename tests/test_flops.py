"""Analytic FLOPs: parameter counts, visible-pair counts against the real masks, hand formulas,
and XLA's compiled cost analysis of the real (dense-attention) models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colajax import flops
from colajax.models import attention
from colajax.models.config import DiTConfig, VAEConfig
from colajax.models.dit import DiT, GroupedTimesteps, init_dit_cache
from colajax.models.vae import TextVAE

# Tiny, but matmul-dominated so XLA's elementwise FLOPs stay a few percent of the total.
DIT = DiTConfig(
    txt_in_channels=8,
    txt_out_channels=8,
    txt_dim=128,
    emb_dim=128,
    heads=2,
    head_dim=64,
    expand_ratio=4,
    num_layers=2,
    rope_dim=32,
    block_size=8,
)
VAE = VAEConfig(
    vocab_size=512,
    dim=128,
    ffn_dim=512,
    num_heads=2,
    encoder_num_blocks=2,
    decoder_num_blocks=2,
    latent_dim=8,
    block_size=8,
)
B, S = 2, 64


def _xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def _assert_close_to_xla(xla: float, analytic: float):
    # XLA also counts elementwise work (norms, softmax, activations): a little above, never below
    assert 0.995 <= xla / analytic <= 1.05, (xla, analytic, xla / analytic)


def test_dit_param_count_official_and_real_model():
    official = DiTConfig(block_size=16)  # the released sizes, spec §3.2
    assert flops.dit_param_count(official) == 1_829_875_728
    shapes = jax.eval_shape(
        DiT(DIT).init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8)), jnp.zeros((1, 8))
    )
    real = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert flops.dit_param_count(DIT) == real


@pytest.mark.parametrize("length,bs", [(8, 2), (16, 4), (12, 1), (16, 16)])
def test_visible_pairs_match_the_real_masks(length, bs):
    pos = jnp.arange(length)[None]
    causal = attention.block_causal_mask(pos, pos, bs)
    assert flops.block_causal_pairs(length, bs) == int(causal.sum()) == length * (length + bs) // 2
    n_clean = length - bs
    pos2 = jnp.concatenate([pos[:, :n_clean], pos], axis=1)
    copy = (jnp.arange(n_clean + length) >= n_clean).astype(jnp.int32)[None]
    train = attention.clean_noisy_mask(pos2, copy, bs)
    assert flops.train_layout_pairs(length, bs) == int(train.sum()) == length * length
    assert flops.train_layout_rows(length, bs) == 2 * length - bs


def test_hand_formulas_default_models():
    d, c, lay = 2048, 16, 24
    # per row: txt_in + 24 x (qkv 3d^2 + out d^2 + MLP 8d^2) + txt_out
    per_row = c * d + lay * 12 * d * d + d * c
    # per timestep: timestep MLP + 24 x AdaLN 6d^2 + the head's AdaLN 2d^2
    per_t = (256 * d + 2 * d * d) + lay * 6 * d * d + 2 * d * d
    rows, pairs = 1008, 512 * 512
    want = 2 * (rows * (per_row + per_t) + lay * 2 * pairs * 16 * 128)
    assert flops.dit_flops(DiTConfig(block_size=16), rows, pairs) == want
    grouped = 2 * (rows * per_row + 33 * per_t + lay * 2 * pairs * 16 * 128)
    assert flops.dit_flops(DiTConfig(block_size=16), rows, pairs, t_groups=33) == grouped
    assert flops.dit_macs_per_row(DiTConfig(block_size=16)) == per_row
    assert flops.dit_macs_per_timestep(DiTConfig(block_size=16)) == per_t
    assert flops.train_layout_t_groups(512, 16) == 33
    v = VAEConfig(block_size=16)
    k, f, vocab = 1536, 6144, 100278
    block = 3 * k * k + k * k + k * f + (f // 2) * k  # qkv, out, ffn_proj, SwiGLU ffn_out
    enc = 2 * (512 * (k * k + 4 * block + k * 32) + 4 * 2 * 1000 * k)
    dec = 2 * (512 * (16 * k + 4 * block + k * k + k * vocab) + 4 * 2 * 1000 * k)
    assert flops.vae_encoder_flops(v, 512, 1000) == enc
    assert flops.vae_decoder_flops(v, 512, 1000) == dec


def test_stage_totals_combine_components():
    b, length = 8, 64
    pairs = flops.block_causal_pairs(length, VAE.block_size)
    enc = flops.vae_encoder_flops(VAE, b * length, b * pairs)
    dec = flops.vae_decoder_flops(VAE, b * length, b * pairs)
    rows = flops.train_layout_rows(length, DIT.block_size)
    groups = b * flops.train_layout_t_groups(length, DIT.block_size)
    dit = flops.dit_flops(DIT, b * rows, b * length * length, groups)
    s1 = flops.stage1_flops(VAE, b, length)
    assert s1["total"] == pytest.approx(3 * 2 * (enc + dec))
    assert flops.stage1_flops(VAE, b, length, bert=False)["total"] == pytest.approx(3 * (enc + dec))
    frozen = flops.stage2_flops(VAE, DIT, b, length, mode="frozen")
    assert frozen["total"] == pytest.approx(enc + 3 * dit)
    joint = flops.stage2_flops(VAE, DIT, b, length, mode="joint")
    assert joint["total"] == pytest.approx(3 * 2 * (enc + dec) + enc + 3 * dit)
    scratch = flops.stage2_flops(VAE, DIT, b, length, mode="scratch")
    assert scratch["total"] == pytest.approx(3 * 2 * (enc + dec) + 3 * dit)
    assert joint["total_dense"] > joint["total"]
    dense_dit = flops.dit_flops(DIT, b * rows, b * rows * rows)
    assert frozen["components"]["dit"]["step_dense"] == pytest.approx(3 * dense_dit)
    with pytest.raises(ValueError, match="vae_mode"):
        flops.stage2_flops(VAE, DIT, b, length, mode="sometimes")
    with pytest.raises(ValueError, match="multiple of block_size"):
        flops.stage1_flops(VAE, b, 60)


def test_paper_budget_axis():
    # 10k steps x 1408 x 512 tokens = 77.86 EFLOPs under 6 N D with N = 1.8e9 (digest §5.2)
    assert flops.six_nd(10_000 * 1408 * 512) / 1e18 == pytest.approx(77.86, rel=1e-4)


def test_generation_block_flops():
    ctx, bs = 32, DIT.block_size
    g = flops.generation_block_flops(VAE, DIT, ctx, steps=16)
    assert g["cond"] == 16 * flops.dit_flops(DIT, bs, bs * (ctx + bs), 1)
    assert g["uncond"] == 16 * flops.dit_flops(DIT, bs, bs * bs, 1)
    assert g["commit"] == flops.dit_flops(DIT, bs, bs * (ctx + bs), 1)
    assert g["decoder"] == flops.vae_decoder_flops(VAE, bs, bs * (ctx + bs))
    assert g["total"] == g["cond"] + g["uncond"] + g["commit"] + g["decoder"]
    assert flops.generation_block_flops(VAE, DIT, ctx, cfg=False)["uncond"] == 0.0
    whole = flops.generation_flops(VAE, DIT, ctx, 2)
    nxt = flops.generation_block_flops(VAE, DIT, ctx + bs)["total"]
    assert whole["blocks"] == pytest.approx(g["total"] + nxt)
    assert whole["prefill"] > 0


def test_dense_counts_match_xla_cost_analysis():
    model = DiT(DIT)
    x, t = jnp.zeros((B, S, 8)), jnp.zeros((B, S))
    p = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)
    xla = _xla_flops(lambda p, x, t: model.apply(p, x, t), p, x, t)
    _assert_close_to_xla(xla, flops.dit_flops(DIT, B * S, B * S * S))

    vae = TextVAE(VAE)
    ids, z = jnp.zeros((B, S), jnp.int32), jnp.zeros((B, S, 8))
    vp = jax.eval_shape(vae.init, jax.random.PRNGKey(0), ids)
    enc = _xla_flops(lambda p, i: vae.apply(p, i, method=TextVAE.encode), vp, ids)
    _assert_close_to_xla(enc, flops.vae_encoder_flops(VAE, B * S, B * S * S))
    dec = _xla_flops(lambda p, z: vae.apply(p, z, method=TextVAE.decode), vp, z)
    _assert_close_to_xla(dec, flops.vae_decoder_flops(VAE, B * S, B * S * S))


def test_generation_pass_matches_xla_cost_analysis():
    """A cached conditional pass reads the whole fixed-size cache: dense over S + bs keys."""
    model, bs = DiT(DIT), DIT.block_size
    x, t = jnp.zeros((B, bs, 8)), jnp.zeros((B, bs))
    p = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)
    cache = init_dit_cache(DIT, B, S)
    xla = _xla_flops(lambda p, x, t, c: model.apply(p, x, t, c, method=DiT.cached), p, x, t, cache)
    _assert_close_to_xla(xla, flops.dit_flops(DIT, B * bs, B * bs * (S + bs)))


def test_timestep_conditioning_counted_per_group_matches_xla():
    """Grouped / per-sample timesteps run the timestep MLP and AdaLN once per timestep."""
    model, g = DiT(DIT), S // DIT.block_size
    x = jnp.zeros((B, S, 8))
    p = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jnp.zeros((B, S)))
    grouped = GroupedTimesteps(jnp.zeros((B, g)), jnp.broadcast_to(jnp.arange(g), (B, g)))
    xla = _xla_flops(lambda p, x, t: model.apply(p, x, t), p, x, grouped)
    _assert_close_to_xla(xla, flops.dit_flops(DIT, B * S, B * S * S, t_groups=B * g))
    xla = _xla_flops(lambda p, x, t: model.apply(p, x, t), p, x, jnp.zeros((B,)))
    _assert_close_to_xla(xla, flops.dit_flops(DIT, B * S, B * S * S, t_groups=B))
    per_row = flops.dit_flops(DIT, B * S, B * S * S)
    assert per_row > flops.dit_flops(DIT, B * S, B * S * S, t_groups=B * g)
