"""TextVAE behaviour: shapes/dtypes, logical axes, masks, KV cache, converter, posterior."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from colajax.convert.hf_vae import hf_vae_shapes, vae_config_from_hf, vae_params_from_hf
from colajax.models import posterior
from colajax.models.attention import segments_from_lengths
from colajax.models.config import VAEConfig
from colajax.models.vae import TextVAE, init_decoder_cache

TINY = VAEConfig(
    vocab_size=61,
    dim=32,
    ffn_dim=48,
    num_heads=4,
    encoder_num_blocks=2,
    decoder_num_blocks=2,
    latent_dim=6,
    block_size=2,
)
AXES = {"vocab", "embed", "mlp", "heads", "kv", "latent", None}


def _init(cfg, length=8):
    return jax.jit(TextVAE(cfg).init)(jax.random.key(0), jnp.zeros((1, length), jnp.int32))


def _random_hf(cfg, seed=0):
    """Random HF-layout tensors with the fixtures' statistics (no branch is zero)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in hf_vae_shapes(cfg).items():
        if k.endswith(".bias"):
            w = 0.05 * rng.normal(size=s)
        elif "norm" in k:
            w = 1.0 + 0.1 * rng.normal(size=s)
        elif "wte" in k:
            w = rng.normal(size=s)
        else:
            w = rng.normal(size=s) / np.sqrt(np.prod(s[1:]))
        out[k] = w.astype(np.float32)
    return out


def _params(cfg=TINY, seed=0):
    return vae_params_from_hf(_random_hf(cfg, seed), cfg)


def _abstract(cfg):
    """Boxed abstract init (logical axes, shapes) without compiling anything."""
    return jax.eval_shape(
        lambda: TextVAE(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    )


def _fn(cfg, method, **kw):
    model = TextVAE(cfg)
    return jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=method, **kw))


@pytest.fixture(scope="module")
def params():
    return _params()


@pytest.fixture(scope="module")
def encode():
    return _fn(TINY, TextVAE.encode)


@pytest.fixture(scope="module")
def decode():
    return _fn(TINY, TextVAE.decode)


def _ids(rng, shape, cfg=TINY):
    return jnp.asarray(rng.integers(0, cfg.vocab_size + 1, shape), jnp.int32)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_shapes_dtypes(dtype, params):
    cfg = dataclasses.replace(TINY, dtype=dtype)
    ids = _ids(np.random.default_rng(0), (2, 8))
    logits, mean, logvar = jax.jit(TextVAE(cfg).apply)({"params": params}, ids)
    assert logits.shape == (2, 8, cfg.vocab_size) and logits.dtype == jnp.float32
    assert mean.shape == logvar.shape == (2, 8, cfg.latent_dim)
    assert mean.dtype == logvar.dtype == jnp.float32
    # The non-affine LayerNorm on the mean: zero mean / unit variance over channels.
    np.testing.assert_allclose(np.mean(mean, -1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.var(mean, -1), 1.0, atol=1e-3)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    if dtype == "bfloat16":  # bf16 compute: close to, but not identical with, float32
        ref, ref_mean, _ = jax.jit(TextVAE(TINY).apply)({"params": params}, ids)
        diff = float(jnp.max(jnp.abs(logits - ref)))
        assert 0.0 < diff < 0.1 * float(jnp.max(jnp.abs(ref)))
        assert float(jnp.max(jnp.abs(mean - ref_mean))) < 0.1


def test_logical_axes_on_every_param():
    boxed = _abstract(TINY)["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), type(leaf)
        assert len(leaf.names) == leaf.value.ndim
        assert set(leaf.names) <= AXES
        named = [n for n in leaf.names if n is not None]
        assert len(named) == len(set(named)), leaf.names  # flax rejects repeated names


def test_init_statistics():
    params = nn.unbox(_init(TINY))["params"]
    abstract = nn.unbox(_abstract(TINY))["params"]
    assert jax.tree.structure(params) == jax.tree.structure(abstract)
    blk = params["encoder"]["blocks_0"]
    w = np.asarray(blk["qkv_proj"]["kernel"])
    assert np.abs(w).max() <= 0.06 + 1e-7 and 0.012 < w.std() < 0.02  # trunc N(0, .02^2) at 3s
    assert not np.any(np.asarray(blk["attn_out_proj"]["bias"]))
    np.testing.assert_array_equal(blk["norm_ffn"]["scale"], 1.0)
    pe = np.asarray(params["encoder"]["patch_embedder"]["kernel"])  # torch default uniform
    assert np.abs(pe).max() <= 1 / np.sqrt(TINY.dim) and pe.std() > 0.1


def test_released_param_count():
    cfg = VAEConfig(block_size=16)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(_abstract(cfg))))
    assert n == 501_871_574
    hf = hf_vae_shapes(cfg)
    assert len(hf) == 133
    assert sum(int(np.prod(s)) for s in hf.values()) == n


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"use_variation": False},
        {"act": "gelu", "qk_bias": True, "clip_qkv": 1.0},
        {"layer_norm_affine": False, "qk_norm_affine": False, "bias": False},
        {"qk_norm": False, "post_norm": False, "act": "silu", "encoder_last_ln": False},
    ],
)
def test_converter_tree_matches_init(overrides):
    cfg = dataclasses.replace(TINY, **overrides)
    mapped = _params(cfg, seed=1)
    abstract = nn.unbox(_abstract(cfg))["params"]
    assert jax.tree.structure(mapped) == jax.tree.structure(abstract)
    for a, b in zip(jax.tree.leaves(mapped), jax.tree.leaves(abstract)):
        assert a.shape == b.shape and a.dtype == np.float32
    ids = _ids(np.random.default_rng(1), (1, 4), cfg)  # every variant runs
    logits, _, _ = jax.jit(TextVAE(cfg).apply)({"params": mapped}, ids)
    assert np.isfinite(np.asarray(logits)).all()


def test_converter_layout():
    """HF row layouts: qkv [q|k|v] head-major, ffn_proj [value|gate], head [mean|logvar]."""
    shapes = hf_vae_shapes(TINY)
    tensors = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    d, hd = TINY.dim, TINY.head_dim
    qkv = np.zeros((3 * d, d), np.float32)
    qkv[d + 2 * hd + 5, 7] = 1.0  # k section, head 2, channel 5 <- input 7
    tensors["encoder.blocks.0.qkv_proj.weight"] = qkv
    ffn = np.zeros((TINY.ffn_dim, d), np.float32)
    ffn[TINY.ffn_dim // 2 + 3, 1] = 2.0  # gate unit 3 <- input 1
    tensors["decoder.blocks.1.ffn_proj.weight"] = ffn
    tensors["encoder.final_layer.bias"] = np.arange(2 * TINY.latent_dim, dtype=np.float32)
    p = vae_params_from_hf(tensors, TINY)
    k = p["encoder"]["blocks_0"]["qkv_proj"]["kernel"]
    assert k[7, 1, 2, 5] == 1.0 and k.sum() == 1.0
    f = p["decoder"]["blocks_1"]["ffn_proj"]["kernel"]
    assert f[1, 1, 3] == 2.0 and f.sum() == 2.0
    np.testing.assert_array_equal(p["encoder"]["final_layer"]["bias"][1], np.arange(6, 12))


def test_converter_errors():
    shapes = hf_vae_shapes(TINY)
    tensors = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    bad = dict(tensors)
    del bad["decoder.blocks.1.q_norm.bias"]
    bad["decoder.blocks.1.qkv_proj.bias"] = np.zeros(3 * TINY.dim, np.float32)
    with pytest.raises(ValueError, match=r"q_norm\.bias.*qkv_proj\.bias"):
        vae_params_from_hf(bad, TINY)
    bad = dict(tensors, **{"encoder.wte.weight": np.zeros((61, 32), np.float32)})
    with pytest.raises(ValueError, match=r"encoder\.wte\.weight: expected \(62, 32\), got"):
        vae_params_from_hf(bad, TINY)


def test_config_validation():
    hf = {"model_type": "cola_text_vae", "dim": 32, "num_heads": 4, "dtype": "bfloat16"}
    hf["block_size"] = 4
    cfg = vae_config_from_hf({**hf, "architectures": ["X"], "use_emb": True})
    assert cfg.dim == 32 and cfg.dtype == "float32"  # HF storage dtype is not the compute dtype
    assert vae_config_from_hf(hf, dtype="bfloat16").dtype == "bfloat16"
    for bad, msg in [
        ({"patch_size": 2}, "patch_size"),
        ({"shared_heads_kv": 2}, "shared_heads_kv"),
        ({"act": "relu"}, "act"),
        ({"model_type": "cola_dit"}, "cola_text_vae"),
        ({"layer_norm_type": "rms_norm"}, "layer_norm_type"),
    ]:
        with pytest.raises(ValueError, match=msg):
            vae_config_from_hf({**hf, **bad})
    with pytest.raises(ValueError, match="patch_size"):
        _init(dataclasses.replace(TINY, patch_size=2))


def test_encoder_block_causal(params, encode):
    rng = np.random.default_rng(2)
    ids = _ids(rng, (1, 8))
    mean, logvar = encode(params, ids)
    later = ids.at[0, 5].set((ids[0, 5] + 1) % TINY.vocab_size)  # block 2 (positions 4, 5)
    mean2, logvar2 = encode(params, later)
    np.testing.assert_array_equal(mean[:, :4], mean2[:, :4])  # earlier blocks: bit-identical
    np.testing.assert_array_equal(logvar[:, :4], logvar2[:, :4])
    assert np.abs(mean[:, 4] - mean2[:, 4]).max() > 1e-4  # own block (bidirectional) changes
    assert np.abs(mean[:, 6:] - mean2[:, 6:]).max() > 1e-4  # later blocks change


def test_no_cross_sample_leakage(params, encode, decode):
    rng = np.random.default_rng(3)
    ids = _ids(rng, (2, 8))
    lengths = jnp.array([8, 4])
    seg = segments_from_lengths(lengths, 8)
    mean, _ = encode(params, ids, seg)
    alone, _ = encode(params, ids[1:, :4])
    np.testing.assert_allclose(mean[1, :4], alone[0], atol=1e-5)
    garbage = ids.at[1, 4:].set(3)  # changing the padding changes nothing valid
    mean2, _ = encode(params, garbage, seg)
    np.testing.assert_array_equal(mean[:, :4], mean2[:, :4])
    np.testing.assert_array_equal(mean[0], mean2[0])
    # Two samples packed in one row (segments 1, 2; positions restart) == separate rows.
    packed_seg = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    packed_pos = jnp.array([[0, 1, 2, 3, 0, 1, 2, 3]])
    z = jnp.asarray(rng.normal(size=(1, 8, TINY.latent_dim)), jnp.float32)
    packed = decode(params, z, packed_seg, packed_pos)
    sep = decode(params, z.reshape(2, 4, -1))
    np.testing.assert_allclose(packed.reshape(2, 4, -1), sep, atol=1e-5)


def test_full_attention_when_not_block_causal(params):
    cfg = dataclasses.replace(TINY, block_causal=False)
    enc = _fn(cfg, TextVAE.encode)
    rng = np.random.default_rng(4)
    ids = _ids(rng, (2, 8))
    seg = segments_from_lengths(jnp.array([8, 6]), 8)
    mean, _ = enc(params, ids, seg)
    later = ids.at[:, 5].set((ids[:, 5] + 1) % TINY.vocab_size)
    mean2, _ = enc(params, later, seg)
    assert np.abs(mean[:, 0] - mean2[:, 0]).max() > 1e-4  # row 0 now sees position 5
    alone, _ = enc(params, ids[1:, :6])  # still no leakage across samples / padding
    np.testing.assert_allclose(mean[1, :6], alone[0], atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_decode_cached_matches_full_decode(dtype, params):
    cfg = dataclasses.replace(TINY, dtype=dtype)
    dec, dec_cached = _fn(cfg, TextVAE.decode), _fn(cfg, TextVAE.decode_cached)
    rng = np.random.default_rng(5)
    bs, c = cfg.block_size, cfg.latent_dim
    prefix_lengths = np.array([0, 4, 2, 6])  # multiples of the block size, mixed per sample
    b, p_max = len(prefix_lengths), 6
    prefix = rng.normal(size=(b, p_max, c)).astype(np.float32)
    block = rng.normal(size=(b, bs, c)).astype(np.float32)
    # Prefill in two chunks (rows 0..3, then the rest), then the block.
    kv = init_decoder_cache(cfg, b, 16)
    first = np.minimum(prefix_lengths, 4)
    _, kv = dec_cached(params, jnp.asarray(prefix[:, :4]), kv, jnp.asarray(first))
    rest = np.zeros_like(prefix[:, :2])
    for i, (f, n) in enumerate(zip(first, prefix_lengths)):
        rest[i, : n - f] = prefix[i, f:n]
    _, kv = dec_cached(params, jnp.asarray(rest), kv, jnp.asarray(prefix_lengths - first))
    np.testing.assert_array_equal(kv["end"], prefix_lengths)
    logits, kv2 = dec_cached(params, jnp.asarray(block), kv)
    np.testing.assert_array_equal(kv2["end"], prefix_lengths + bs)
    # Reference: one full decode of every [prefix | block], padded, positions from 0.
    full = np.zeros((b, p_max + bs, c), np.float32)
    for i, n in enumerate(prefix_lengths):
        full[i, : n + bs] = np.concatenate([prefix[i, :n], block[i]])
    ref = dec(params, jnp.asarray(full), segments_from_lengths(jnp.asarray(prefix_lengths + bs), 8))
    atol = 1e-5 if dtype == "float32" else 2e-2
    for i, n in enumerate(prefix_lengths):
        np.testing.assert_allclose(logits[i], ref[i, n : n + bs], atol=atol)
    # update=False: logits identical, cache untouched.
    peek = _fn(cfg, TextVAE.decode_cached, update=False)
    logits_nu, kv3 = peek(params, jnp.asarray(block), kv)
    np.testing.assert_allclose(logits_nu, logits, rtol=1e-5, atol=1e-5)  # other program
    for a, b_ in zip(jax.tree.leaves(kv3), jax.tree.leaves(kv)):
        np.testing.assert_array_equal(a, b_)
    assert kv["layers"][0]["k"].dtype == jnp.dtype(dtype)


def test_remat_same_values_and_grads():
    small = dataclasses.replace(TINY, encoder_num_blocks=1, decoder_num_blocks=1)
    params = _params(small)
    ids = _ids(np.random.default_rng(6), (2, 4))

    def value_and_grad(cfg):
        def loss(p):  # encoder and decoder blocks both on the gradient path
            logits, mean, logvar = TextVAE(cfg).apply({"params": p}, ids)
            return jnp.mean(logits**2) + jnp.mean(mean * logvar)

        return jax.jit(jax.value_and_grad(loss))(params)

    v1, g1 = value_and_grad(small)
    v2, g2 = value_and_grad(dataclasses.replace(small, remat=True))
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-7)  # float32 reassociation


def test_posterior_helpers():
    rng = np.random.default_rng(7)
    mean = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    logvar = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    np.testing.assert_allclose(posterior.kl(mean, logvar, mean, logvar), 0.0, atol=1e-6)
    zeros = jnp.zeros_like(mean)
    closed = 0.5 * np.sum(np.square(mean) + np.exp(logvar) - 1 - logvar, -1)
    np.testing.assert_allclose(posterior.kl_to_standard_normal(mean, logvar), closed, rtol=1e-5)
    np.testing.assert_allclose(posterior.kl(mean, logvar, zeros, zeros), closed, rtol=1e-5)
    # N(1, 1) vs N(0, 4): 0.5 * (ln 4 - 0 + (1 + 1) / 4 - 1) per channel.
    one = jnp.ones((2,))
    expected = 2 * 0.5 * (np.log(4.0) + 0.5 - 1.0)
    np.testing.assert_allclose(posterior.kl(one, 0 * one, 0 * one, np.log(4.0) * one), expected)
    np.testing.assert_allclose(posterior.neg_entropy(jnp.zeros((4,))), -2 * (np.log(2 * np.pi) + 1))
    raw = jnp.array([-40.0, -30.0, 0.0, 20.0, 35.0])
    np.testing.assert_array_equal(posterior.clamp_logvar(raw), [-30, -30, 0, 20, 20])
    assert posterior.mode(mean, logvar) is mean
    z = posterior.sample(
        jnp.full((20000, 1), 2.0), jnp.full((20000, 1), np.log(0.25)), jax.random.key(0)
    )
    assert abs(float(z.mean()) - 2.0) < 0.02 and abs(float(z.std()) - 0.5) < 0.02
