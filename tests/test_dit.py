"""DiT prior: shapes/dtypes, params (axes, init, count), mask semantics, KV cache == full pass,
training-layout mask, remat, bf16 timestep rounding.

Compiles dominate the run time on CPU, so the tests share a few jitted functions and shapes, and
random parameters come from numpy (shapes via `jax.eval_shape`, no init compile).
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colajax.models import attention
from colajax.models.config import DiTConfig
from colajax.models.dit import DiT, init_dit_cache, timestep_freqs, timestep_sinusoid

CFG = DiTConfig(
    txt_in_channels=4,
    txt_out_channels=4,
    txt_dim=32,
    emb_dim=32,
    heads=2,
    head_dim=12,  # inner width 24 != txt_dim
    expand_ratio=2,
    num_layers=2,
    rope_dim=8,
    block_size=2,
)
BF16 = dataclasses.replace(CFG, dtype="bfloat16")
BS = CFG.block_size
C = CFG.txt_in_channels
AXES = {"vocab", "embed", "mlp", "heads", "kv", "latent", None}


@pytest.fixture(autouse=True)
def _full_f32_matmuls():
    """float32 means float32 on GPUs too (XLA's default there is TF32: ~1e-3 off the fixtures)."""
    with jax.default_matmul_precision("highest"):
        yield


def _abstract(cfg=CFG):
    x = jnp.zeros((1, 2, cfg.txt_in_channels))
    return jax.eval_shape(lambda: DiT(cfg).init(jax.random.key(0), x, x[..., 0]))["params"]


@pytest.fixture(scope="module")
def params():
    """Random weights everywhere (kernels N(0, 1/fan_in), affines/biases non-trivial)."""
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        shape = leaf.shape
        if name.endswith("['kernel']"):
            fan_in = math.prod(shape[:2]) if "['msa']['proj_out']" in name else shape[0]
            return rng.normal(0, fan_in**-0.5, shape).astype(np.float32)
        base = 1.0 if name.endswith("['scale']") else 0.0
        return (base + 0.1 * rng.normal(size=shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, nn.meta.unbox(_abstract()))


@functools.cache
def _fwd(cfg=CFG):
    model = DiT(cfg)
    return jax.jit(lambda p, *a, **kw: model.apply({"params": p}, *a, **kw))


@functools.cache
def _cached(update):
    model = DiT(CFG)
    return jax.jit(
        lambda p, x, t, cache, n: model.apply(
            {"params": p}, x, t, cache, n, update, method=DiT.cached
        )
    )


def _x(seed, b, length):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, length, C)), jnp.float32)


def _padded_forward(params, rows_x, rows_t, length):
    """Full forward of variable-length samples as one right-padded batch (segment ids)."""
    x = np.zeros((len(rows_x), length, C), np.float32)
    t = np.zeros((len(rows_x), length), np.float32)
    for i, (xi, ti) in enumerate(zip(rows_x, rows_t, strict=True)):
        x[i, : len(xi)], t[i, : len(ti)] = xi, ti
    seg = attention.segments_from_lengths(jnp.array([len(v) for v in rows_x]), length)
    return _fwd()(params, jnp.asarray(x), jnp.asarray(t), segment_ids_BL=seg)


def test_timestep_sinusoid_golden():
    exact = np.exp(-math.log(10000.0) * np.arange(128) / 128)
    np.testing.assert_allclose(timestep_freqs(), exact, rtol=1e-6)
    e = np.asarray(timestep_sinusoid(jnp.array([[0.0, 250.0]])))
    assert e.shape == (1, 2, 256)
    np.testing.assert_array_equal(e[0, 0], np.r_[np.zeros(128), np.ones(128)])  # sin first
    np.testing.assert_allclose(e[0, 1, :128], np.sin(250.0 * exact), atol=1e-4)
    np.testing.assert_allclose(e[0, 1, 128:], np.cos(250.0 * exact), atol=1e-4)


def test_shapes_and_dtypes(params):
    x, t = _x(0, 2, 8), jnp.full((2, 8), 500.0)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    ref = _fwd()(params, x, t)
    out = _fwd(BF16)(params, x, t)
    for v in (ref, out):
        assert v.shape == (2, 8, CFG.txt_out_channels) and v.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(out - ref)))
    assert 0 < err < 0.1 * float(jnp.max(jnp.abs(ref))), err


def test_logical_axes_on_every_param():
    boxed = _abstract()
    leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
    assert len(leaves) == 14 + 18 * CFG.num_layers
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), leaf
        names = leaf.names
        assert len(names) == len(leaf.value.shape) and set(names) <= AXES, names
        named = [n for n in names if n is not None]
        assert len(named) == len(set(named)), f"duplicate logical axis in {names}"


def test_xavier_init_and_norms():
    cfg = dataclasses.replace(CFG, num_layers=1)
    x = jnp.zeros((1, 2, C))
    key = jax.random.key(3, impl="rbg")  # threefry init compiles slowly on CPU
    p = nn.meta.unbox(jax.jit(DiT(cfg).init)(key, x, x[..., 0])["params"])
    kernels = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(p):
        name, leaf = jax.tree_util.keystr(path), np.asarray(leaf)
        if name.endswith("['kernel']"):
            contract = 2 if "['msa']['proj_out']" in name else 1
            fans = math.prod(leaf.shape[:contract]) + math.prod(leaf.shape[contract:])
            bound = math.sqrt(6.0 / fans)
            assert 0.9 * bound < np.abs(leaf).max() <= bound, name
            kernels += 1
        elif name.endswith("['scale']"):
            np.testing.assert_array_equal(leaf, 1.0)
        else:
            np.testing.assert_array_equal(leaf, 0.0, err_msg=name)
    assert kernels == 6 + 8  # txt_in, emb x3, out_ada, txt_out + qkv, out, mlp x2, ada x4


def test_default_config_param_count():
    x = jnp.zeros((1, 4, 16))
    model = DiT(DiTConfig(block_size=16))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, x[..., 0]))
    n = sum(math.prod(v.shape) for v in jax.tree.leaves(nn.meta.unbox(shapes)))
    assert n == 1_829_875_728


@pytest.mark.parametrize(
    "bad, msg",
    [({"patch_size": 2}, "patch_size"), ({"emb_dim": 16}, "emb_dim"), ({"rope_dim": 7}, "rope")],
)
def test_config_errors(bad, msg):
    x = jnp.zeros((1, 2, C))
    model = DiT(dataclasses.replace(CFG, **bad))
    with pytest.raises(ValueError, match=msg):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, x[..., 0]))


def test_block_causal_mask_semantics(params):
    fwd = _fwd()
    x, t = _x(1, 2, 8), jnp.asarray(np.random.default_rng(2).uniform(0, 1000, (2, 8)), jnp.float32)
    cut = 2 * BS  # rows of the first two blocks
    x2, t2 = x.at[:, cut:].set(_x(3, 2, 8)[:, cut:]), t.at[:, cut:].set(3.0)
    a, b = fwd(params, x, t), fwd(params, x2, t2)
    np.testing.assert_allclose(a[:, :cut], b[:, :cut], atol=1e-6)
    assert float(jnp.max(jnp.abs(a[:, cut:] - b[:, cut:]))) > 1e-3
    # Bidirectional inside a block: changing the block's 2nd row moves its 1st row.
    c = fwd(params, x.at[:, 1].add(1.0), t)
    assert float(jnp.max(jnp.abs(c[:, 0] - a[:, 0]))) > 1e-3
    # Per-sample timesteps broadcast over the rows.
    ts = jnp.array([3.0, 800.0])
    np.testing.assert_allclose(
        fwd(params, x, ts), fwd(params, x, jnp.repeat(ts[:, None], 8, 1)), atol=1e-6
    )


def test_padded_and_packed_batches_equal_single_samples(params):
    fwd = _fwd()
    lens = [8, 4, 4]
    xs = [_x(10 + i, 1, n) for i, n in enumerate(lens)]
    ts = [jnp.full((1, n), 100.0 * (i + 1)) for i, n in enumerate(lens)]
    singles = [fwd(params, x, t)[0] for x, t in zip(xs, ts, strict=True)]
    out = _padded_forward(params, [x[0] for x in xs], [t[0] for t in ts], 8)
    for i, n in enumerate(lens):
        np.testing.assert_allclose(out[i, :n], singles[i], atol=2e-5)
    # Another sample's rows (and the padding) never leak into sample 0.
    seg = attention.segments_from_lengths(jnp.array(lens), 8)
    x_pad = jnp.zeros((3, 8, C)).at[0].set(xs[0][0]).at[1, 4:].set(9.0).at[2, :4].set(xs[2][0])
    t_pad = jnp.full((3, 8), 100.0)
    o1 = fwd(params, x_pad, t_pad, segment_ids_BL=seg)
    o2 = fwd(params, x_pad.at[1].add(5.0).at[2, 4:].set(-3.0), t_pad, segment_ids_BL=seg)
    np.testing.assert_allclose(o1[0], o2[0], atol=1e-6)
    np.testing.assert_allclose(o1[2, :4], o2[2, :4], atol=1e-6)
    # Packed: samples 1 and 2 in one row, positions restart, segment ids 1 / 2.
    x_pk = jnp.concatenate([xs[1], xs[2]], axis=1)
    t_pk = jnp.concatenate([ts[1], ts[2]], axis=1)
    pos = jnp.array([[0, 1, 2, 3, 0, 1, 2, 3]])
    seg_pk = jnp.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    pk = fwd(params, x_pk, t_pk, positions_BL=pos, segment_ids_BL=seg_pk)[0]
    np.testing.assert_allclose(pk[:4], singles[1], atol=2e-5)
    np.testing.assert_allclose(pk[4:], singles[2], atol=2e-5)


def test_cached_equals_full_sequence(params):
    """Prefill (mixed prefix lengths incl. 0) -> block without update -> commit -> next block."""
    p_lens = [4, 2, 0]
    prefix, blk1, blk2 = _x(20, 3, 4), _x(21, 3, BS), _x(22, 3, BS)
    t1, t2 = np.array([900.0, 450.0, 12.5]), np.array([300.0, 0.0, 999.0])
    cache = init_dit_cache(CFG, 3, 4 + 2 * BS)
    _, cache = _cached(True)(params, prefix, jnp.zeros((3, 4)), cache, jnp.array(p_lens))
    np.testing.assert_array_equal(cache["end"], p_lens)
    k = np.asarray(cache["layers"][1]["k"])
    assert np.abs(k[:, :4]).min() > 0 and np.all(k[:, 4:] == 0)  # scratch rows past end

    tb1 = jnp.asarray(np.repeat(t1[:, None], BS, 1))
    v1, same = _cached(False)(params, blk1, tb1, cache, None)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(cache), strict=True):
        np.testing.assert_array_equal(a, b)  # update=False leaves the cache as it was
    ctx = [np.asarray(prefix[i, :n]) for i, n in enumerate(p_lens)]
    ref1 = _padded_forward(
        params,
        [np.concatenate([c, blk1[i]]) for i, c in enumerate(ctx)],
        [np.r_[np.zeros(len(c)), np.full(BS, t1[i])] for i, c in enumerate(ctx)],
        4 + BS,
    )
    for i, n in enumerate(p_lens):
        np.testing.assert_allclose(v1[i], ref1[i, n : n + BS], atol=2e-5)

    _, cache = _cached(True)(params, blk1, jnp.zeros((3, BS)), cache, None)
    np.testing.assert_array_equal(cache["end"], np.array(p_lens) + BS)
    tb2 = jnp.asarray(np.repeat(t2[:, None], BS, 1))
    v2, _ = _cached(False)(params, blk2, tb2, cache, None)
    ctx = [np.concatenate([c, blk1[i]]) for i, c in enumerate(ctx)]
    ref2 = _padded_forward(
        params,
        [np.concatenate([c, blk2[i]]) for i, c in enumerate(ctx)],
        [np.r_[np.zeros(len(c)), np.full(BS, t2[i])] for i, c in enumerate(ctx)],
        4 + 2 * BS,
    )
    for i, n in enumerate(p_lens):
        np.testing.assert_allclose(v2[i], ref2[i, n + BS : n + 2 * BS], atol=2e-5)


def test_clean_noisy_training_layout(params):
    """Noisy block k of the [clean | noisy] layout == block k generated after clean blocks < k."""
    length, fwd = 6, _fwd()
    clean, noisy = np.asarray(_x(40, 2, length)), np.asarray(_x(41, 2, length))
    t_noisy = np.array([[700.0] * 2 + [300.0] * 2 + [50.0] * 2, [10.0] * 6], np.float32)
    pos = jnp.tile(jnp.arange(length), 2)[None].repeat(2, 0)
    copy = jnp.repeat(jnp.array([0, 1]), length)[None].repeat(2, 0)
    mask = attention.clean_noisy_mask(pos, copy, BS)
    x = jnp.concatenate([clean, noisy], axis=1)
    t = jnp.concatenate([jnp.zeros((2, length)), t_noisy], axis=1)
    out = np.asarray(fwd(params, x, t, positions_BL=pos, mask_B1LL=mask))
    # Reference rows: the clean sequences at t = 0, then [clean < k | noisy block k] per k.
    rows_x, rows_t = [clean[0], clean[1]], [np.zeros(length)] * 2
    for k in range(length // BS):
        for b in range(2):
            blk = slice(k * BS, (k + 1) * BS)
            rows_x.append(np.concatenate([clean[b, : k * BS], noisy[b, blk]]))
            rows_t.append(np.r_[np.zeros(k * BS), t_noisy[b, blk]])
    ref = np.asarray(_padded_forward(params, rows_x, rows_t, 8))
    np.testing.assert_allclose(out[:, :length], ref[:2, :length], atol=2e-5)
    for k in range(length // BS):
        for b in range(2):
            got = out[b, length + k * BS : length + (k + 1) * BS]
            np.testing.assert_allclose(got, ref[2 + 2 * k + b, k * BS : (k + 1) * BS], atol=2e-5)


def test_remat_same_values_and_grads(params):
    x, t = _x(50, 1, 4), jnp.full((1, 4), 250.0)
    cfg = dataclasses.replace(CFG, num_layers=1)
    params = {k: v for k, v in params.items() if k != "blocks_1"}

    def value_and_grad(cfg):
        loss = lambda p: jnp.sum(DiT(cfg).apply({"params": p}, x, t) ** 2)
        return jax.jit(jax.value_and_grad(loss))(params)

    (l0, g0) = value_and_grad(cfg)
    (l1, g1) = value_and_grad(dataclasses.replace(cfg, remat=True))
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a))))


def test_bf16_mode_rounds_timesteps(params):
    x = _x(0, 2, 8)
    t_a, t_b = jnp.full((2, 8), 937.5), jnp.full((2, 8), 936.0)  # bf16(937.5) == 936
    np.testing.assert_array_equal(_fwd(BF16)(params, x, t_a), _fwd(BF16)(params, x, t_b))
    diff = _fwd()(params, x, t_a) - _fwd()(params, x, t_b)
    assert float(jnp.max(jnp.abs(diff))) > 1e-4
