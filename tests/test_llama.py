"""LLaMA backbone (AR / LLaDA): attention direction, segments and padding, KV cache, logical
axes, remat, mixed precision and the LMConfig contract."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_lm import TINY_AR, TINY_LLADA, random_params

from colajax.models.config import LMConfig
from colajax.models.llama import Llama, init_lm_cache, lm_params

AR, LLADA = TINY_AR, TINY_LLADA
B, L = 2, 12


@pytest.fixture(scope="module")
def models():
    """{family: (cfg, params, fwd)}; fwd fills default positions / segments on the host, so one
    compiled program serves each shape."""
    out = {}
    for name, cfg in (("ar", AR), ("llada", LLADA)):
        params = random_params(cfg)
        jitted = jax.jit(
            lambda p, ids, pos, seg, cfg=cfg: Llama(cfg).apply({"params": p}, ids, pos, seg)
        )

        def fwd(p, ids, pos=None, seg=None, jitted=jitted):
            b, length = ids.shape
            pos = np.broadcast_to(np.arange(length), (b, length)) if pos is None else pos
            seg = np.ones((b, length), np.int32) if seg is None else seg
            return jitted(p, ids, jnp.asarray(pos, jnp.int32), jnp.asarray(seg, jnp.int32))

        out[name] = (cfg, params, fwd)
    return out


def _ids(seed=0, shape=(B, L)):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 63, shape), jnp.int32)


def test_every_param_has_its_logical_axes():
    model = Llama(AR)
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    boxed = boxed["params"]
    want = {
        "embedding": ("vocab", "embed"),
        "q_proj": ("embed", "heads", "kv"),
        "k_proj": ("embed", "heads", "kv"),
        "v_proj": ("embed", "heads", "kv"),
        "o_proj": ("heads", "kv", "embed"),
        "gate_proj": ("embed", "mlp"),
        "up_proj": ("embed", "mlp"),
        "down_proj": ("mlp", "embed"),
        "lm_head": ("embed", "vocab"),
        "input_layernorm": ("embed",),
        "post_attention_layernorm": ("embed",),
        "norm": ("embed",),
    }
    leaves = jax.tree_util.tree_flatten_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    seen = set()
    for path, leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), path
        names = [p.key for p in path]
        key = names[-1] if names[-1] == "embedding" else names[-2]
        assert leaf.names == want[key], (names, leaf.names)
        assert leaf.value.dtype == jnp.float32 and leaf.value.ndim == len(leaf.names)
        seen.add(key)
    assert seen == set(want)
    assert len(leaves) == 1 + 2 * 9 + 2  # embedding, 2 x 9 per layer, final norm, lm_head


def test_causal_future_tokens_do_not_change_earlier_logits(models):
    cfg, params, fwd = models["ar"]
    ids = _ids()
    base = np.asarray(fwd(params, ids))
    j = 7
    changed = np.asarray(fwd(params, ids.at[:, j].set((ids[:, j] + 1) % 63)))
    np.testing.assert_array_equal(changed[:, :j], base[:, :j])
    assert np.all(np.abs(changed[:, j:] - base[:, j:]).max(axis=-1) > 1e-4)


def test_bidirectional_every_token_changes_earlier_logits(models):
    cfg, params, fwd = models["llada"]
    ids = _ids()
    base = np.asarray(fwd(params, ids))
    for j in (L - 1, 5):
        changed = np.asarray(fwd(params, ids.at[:, j].set(cfg.mask_id)))
        assert np.all(np.abs(changed[:, :j] - base[:, :j]).max(axis=-1) > 1e-4), j


@pytest.mark.parametrize("family", ["ar", "llada"])
def test_padding_and_packing_do_not_leak(models, family):
    cfg, params, fwd = models[family]
    ids = _ids()
    base = np.asarray(fwd(params, ids))
    # padding: 5 rows of segment 0 (random ids) appended
    padded = jnp.concatenate([ids, _ids(1, (B, 5))], axis=1)
    seg = jnp.concatenate([jnp.ones((B, L), jnp.int32), jnp.zeros((B, 5), jnp.int32)], axis=1)
    out = np.asarray(fwd(params, padded, None, seg))
    np.testing.assert_allclose(out[:, :L], base, rtol=1e-5, atol=1e-5)
    # packing: rows [A | B] and [B | A] (positions restart per document): each document's
    # logits are the same wherever it sits, so nothing crosses a segment boundary
    a, b = ids[0, :7], ids[1, :5]
    rows = jnp.stack([jnp.concatenate([a, b]), jnp.concatenate([b, a])])
    pos = np.stack([np.r_[np.arange(7), np.arange(5)], np.r_[np.arange(5), np.arange(7)]])
    seg = np.asarray([[1] * 7 + [2] * 5, [1] * 5 + [2] * 7])
    packed = np.asarray(fwd(params, rows, pos, seg))
    np.testing.assert_allclose(packed[0, :7], packed[1, 5:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed[0, 7:], packed[1, :5], rtol=1e-5, atol=1e-5)
    if family == "ar":  # causal: a prefix of a row is that document alone
        np.testing.assert_allclose(packed[0, :7], base[0, :7], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(packed[1, :5], base[1, :5], rtol=1e-5, atol=1e-5)


def test_cached_decoding_equals_full_forward(models):
    cfg, params, fwd = models["ar"]
    ids = _ids(3)
    full = np.asarray(fwd(params, ids))
    model = Llama(cfg)
    cached = jax.jit(
        lambda p, x, c, n=None, update=True, last_only=False: model.apply(
            {"params": p}, x, c, n, update, last_only=last_only, method=Llama.cached
        ),
        static_argnames=("update", "last_only"),
    )
    lens = jnp.asarray([5, 3], jnp.int32)  # per-sample prefill lengths (rest is padding)
    cache = init_lm_cache(cfg, B, L + 4)
    first, cache = cached(params, ids[:, :6], cache, lens)
    np.testing.assert_array_equal(np.asarray(cache["end"]), [5, 3])
    np.testing.assert_allclose(np.asarray(first)[0, :5], full[0, :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(first)[1, :3], full[1, :3], rtol=1e-5, atol=1e-5)
    last, same = cached(params, ids[:, :6], init_lm_cache(cfg, B, L), lens, False, True)
    assert (np.asarray(same["end"]) == 0).all()  # update=False: the cache is left as it was
    np.testing.assert_allclose(np.asarray(last)[:, 0], full[[0, 1], [4, 2]], rtol=1e-5, atol=1e-5)
    # then one row per step
    for step in range(3):
        nxt = jnp.stack([ids[0, 5 + step], ids[1, 3 + step]])[:, None]
        out, cache = cached(params, nxt, cache)
        want = full[[0, 1], [5 + step, 3 + step]]
        np.testing.assert_allclose(np.asarray(out)[:, 0], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        Llama(LLADA).apply({"params": params}, ids, init_lm_cache(LLADA, B, L), method="cached")


@pytest.mark.slow
def test_remat_gives_the_same_gradients(models):
    cfg, params, _ = models["ar"]
    ids = _ids(4)
    grad = lambda c: jax.jit(jax.grad(lambda p: jnp.mean(Llama(c).apply({"params": p}, ids) ** 2)))
    g0 = grad(cfg)(params)
    g1 = grad(dataclasses.replace(cfg, remat=True))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g0, g1)


def test_tied_and_bf16(models):
    cfg, params, fwd = models["ar"]
    ids = _ids(4)
    bf16_cfg = dataclasses.replace(cfg, dtype="bfloat16")
    bf16 = jax.jit(lambda p: Llama(bf16_cfg).apply({"params": p}, ids))(params)
    assert bf16.dtype == jnp.float32
    f32 = np.asarray(fwd(params, ids))
    assert 0 < np.abs(np.asarray(bf16) - f32).max() < 0.05 * np.abs(f32).max()
    tied = dataclasses.replace(cfg, tie_embeddings=True)
    tp = random_params(tied)
    assert "lm_head" not in tp
    both = lambda m: (m(ids), m.hidden(ids))
    logits, h = jax.jit(lambda p: Llama(tied).apply({"params": p}, method=both))(tp)
    want = np.asarray(h) @ np.asarray(tp["embed_tokens"]["embedding"]).T
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=1e-5)
    assert lm_params({"lm": tp}) is tp and lm_params(tp) is tp


def test_config_contract():
    assert LMConfig().kv_heads == 16 and AR.kv_heads == 2
    assert LMConfig.from_dict(dataclasses.asdict(LLADA)) == LLADA
    with pytest.raises(ValueError, match="unknown field"):
        LMConfig.from_dict({"hidden_size": 8})
    hf = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 96,
          "intermediate_size": 192, "rms_norm_eps": 1e-5, "rope_theta": 5e5, "torch_dtype": "bf16",
          "tie_word_embeddings": True, "architectures": ["LlamaForCausalLM"]}  # fmt: skip
    cfg = LMConfig.from_hf(hf)
    assert (cfg.dim, cfg.head_dim, cfg.ffn_dim, cfg.num_layers, cfg.norm_eps) == (
        64,
        16,
        192,
        2,
        1e-5,
    )
    assert cfg.rope_theta == 5e5 and cfg.tie_embeddings and cfg.dtype == "float32"
    newer = {k: v for k, v in hf.items() if k != "rope_theta"}
    newer["rope_parameters"] = {"rope_theta": 123.0, "rope_type": "default"}
    assert LMConfig.from_hf(newer).rope_theta == 123.0
    bad = [
        (dict(num_heads=4, num_kv_heads=3), "multiple of num_kv_heads"),
        (dict(causal=False), "needs a mask_id"),
        (dict(causal=False, mask_id=100278), "outside the vocabulary"),
        (dict(head_dim=7), "even"),
        (dict(dtype="float16"), "dtype"),
        (dict(num_layers=0), "num_layers"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            LMConfig(**kw)


@pytest.mark.slow
def test_sharded_loss_and_grads_equal_unsharded():
    """Params sharded by their logical axes on a 2x2x2 mesh (fsdp x tensor, GQA heads split),
    batch over data x fsdp: the jitted AR loss + grads equal the single-device ones."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    from colajax import sharding as shd
    from colajax.train.lm_objectives import ar_loss

    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    rules = {"embed": ("fsdp",), "mlp": ("tensor",), "vocab": ("tensor",), "heads": ("tensor",)}
    boxed = jax.eval_shape(Llama(AR).init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    p_sh = shd.tree_shardings(boxed["params"], mesh, rules)
    assert p_sh["layers_0"]["k_proj"]["kernel"].spec == PartitionSpec("fsdp", "tensor")
    params = random_params(AR)
    tokens = _ids(5, (8, L))

    def step(p, t):
        def loss(q):
            return ar_loss(lambda *a: Llama(AR).apply({"params": q}, *a), t)[0]

        return jax.value_and_grad(loss)(p)

    want = jax.jit(step)(params, tokens)
    batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    got = jax.jit(step, in_shardings=(p_sh, batch), out_shardings=(None, p_sh))(
        jax.device_put(params, p_sh), jax.device_put(tokens, batch)
    )
    assert float(jnp.abs(want[1]["layers_1"]["down_proj"]["kernel"]).max()) > 1e-3
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
