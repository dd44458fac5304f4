"""The fast Stage-2 training path equals the dense reference: training-layout attention without
a dense mask (values and gradients, any chunking, padding/segments), grouped AdaLN timesteps,
the compact FM layout end to end, the memory-lean VJPs, and that no `[S, S]` score matrix is
materialised any more."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layout_reference import allowed_batch
from tiny_models import TINY_DIT, tiny_dit

from colajax.models import attention, lean, train_attention
from colajax.models.dit import DiT, GroupedTimesteps
from colajax.train import objectives as obj

B, L, BS, H, D = 3, 24, 4, 2, 8
S = 2 * L - BS
SEG = jnp.ones((B, L), jnp.int32).at[1, 14:].set(0).at[2, 9:].set(2)  # padding; 2 segments
CFG = TINY_DIT


@pytest.fixture(autouse=True)
def _full_f32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def _qkvw(seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    return [jax.random.normal(k, (B, S, H, D)) for k in ks]


def _valid_rows(layout):
    return (layout.rows(BS)[2] > 0)[..., None, None]  # padding query rows are unspecified


@functools.cache
def _attn_value_and_grad(kind: str, chunk: int = 0, dtype=jnp.float32):
    layout = train_attention.CleanNoisyLayout(SEG)
    valid = _valid_rows(layout)

    def loss(q, k, v, w):
        if kind == "dense":
            o = attention.attend(q, k, v, layout.dense_mask(BS), dtype)
        else:
            o = train_attention.attend_clean_noisy(q, k, v, layout, BS, dtype, chunk=chunk)
        return jnp.sum(o.astype(jnp.float32) * w * valid), o

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


# one block per chunk; chunks dividing L; a short last noisy chunk (20 + 4 rows); one chunk
@pytest.mark.parametrize("chunk", [BS, 3 * BS, 5 * BS, 64])
def test_training_attention_equals_dense_mask(chunk):
    q, k, v, w = _qkvw()
    (l_ref, o_ref), g_ref = _attn_value_and_grad("dense")(q, k, v, w)
    (l_got, o_got), g_got = _attn_value_and_grad("fast", chunk)(q, k, v, w)
    valid = _valid_rows(train_attention.CleanNoisyLayout(SEG))
    np.testing.assert_allclose(o_got * valid, o_ref * valid, atol=2e-6)
    np.testing.assert_allclose(l_got, l_ref, rtol=1e-5)  # a float32 sum of 2112 terms
    for a, b in zip(g_got, g_ref, strict=True):  # q, k, v gradients (incl. key padding: zero)
        np.testing.assert_allclose(a, b, atol=3e-6)


def test_training_attention_bf16_close_to_dense():
    q, k, v, _ = _qkvw(1)
    layout = train_attention.CleanNoisyLayout(SEG)
    o_ref = jax.jit(attention.attend, static_argnums=4)(q, k, v, layout.dense_mask(BS), "bfloat16")
    fast = jax.jit(train_attention.attend_clean_noisy, static_argnums=(4, 5, 6))
    o_got = fast(q, k, v, layout, BS, "bfloat16", 2 * BS)
    valid = _valid_rows(layout)
    assert o_got.dtype == jnp.bfloat16
    err = jnp.abs((o_got.astype(jnp.float32) - o_ref.astype(jnp.float32)) * valid)
    assert float(err.max()) < 3e-2  # a couple of bf16 ulps on O(1) values


def test_training_attention_bf16_gradients_close_to_dense():
    """bf16: dP stays float32 here (the dense autodiff rounds it): about one bf16 ulp apart."""
    q, k, v, w = _qkvw(2)
    _, g_ref = _attn_value_and_grad("dense", 0, "bfloat16")(q, k, v, w)
    _, g_got = _attn_value_and_grad("fast", 2 * BS, "bfloat16")(q, k, v, w)
    for a, b in zip(g_got, g_ref, strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.abs(a - b).max() <= 2**-5 * np.abs(b).max(), np.abs(a - b).max()


@pytest.mark.slow  # ~1 min; the fast path's values and gradients = dense: default suite
def test_padding_rows_output_zero_and_vjp_matches_own_forward():
    """Rows that see no key output 0, and the custom VJP is the derivative of the forward pass
    even with a cotangent on those rows (the flash-style recomputation must agree)."""
    q, k, v, w = _qkvw(3)
    layout = train_attention.CleanNoisyLayout(SEG)
    q = q * (1.0 / np.sqrt(D))
    blind = ~_valid_rows(layout)[..., 0, 0]  # padding rows see no key
    fast = lambda q, k, v: train_attention._clean_noisy_attention(q, k, v, SEG, BS, 2 * BS)
    plain = lambda q, k, v: train_attention._cn_fwd(q, k, v, SEG, BS, 2 * BS)[0]
    o = fast(q, k, v)
    assert bool(blind.any())
    np.testing.assert_array_equal(np.asarray(o)[np.asarray(blind)], 0.0)
    grads = [jax.grad(lambda *a, f=f: jnp.sum(f(*a) * w), argnums=(0, 1, 2)) for f in (fast, plain)]
    for a, b in zip(grads[0](q, k, v), grads[1](q, k, v), strict=True):
        np.testing.assert_allclose(a, b, atol=3e-6)


def test_layout_masks_equal_an_independent_pattern():
    """`CleanNoisyLayout` (what the fast path attends under) and fm_layout's dense mask both equal
    the official rule written out with loops (padding and two segments in a row)."""
    z0 = jnp.zeros((B, L, 4))
    lay = obj.fm_layout(
        z0, jax.random.key(0), block_size=BS, t_loc=1, t_scale=1, segment_ids_BL=SEG
    )
    want = allowed_batch(SEG, BS)
    np.testing.assert_array_equal(np.asarray(lay.attn.dense_mask(BS)), want)
    np.testing.assert_array_equal(np.asarray(lay.mask_B1SS), want)
    pos, copy, seg = lay.attn.rows(BS)
    np.testing.assert_array_equal(pos, lay.positions_BS)
    np.testing.assert_array_equal(seg, lay.segment_ids_BS)
    np.testing.assert_array_equal(copy[:, L - BS :], 1)
    # explicit (packed) positions fall back to the dense mask and per-row timesteps
    packed = obj.fm_layout(
        z0, jax.random.key(0), block_size=BS, t_loc=1, t_scale=1, positions_BL=pos[:, L - BS :]
    )
    assert packed.attn is None and packed.t_groups is None


def test_attention_rejects_wrong_rows():
    q = jnp.zeros((1, S + 1, H, D))
    with pytest.raises(ValueError, match="needs 44 DiT rows"):
        layout = train_attention.CleanNoisyLayout(SEG[:1])
        train_attention.attend_clean_noisy(q, q, q, layout, BS, "float32")


# --------------------------------------------------------------------------------------------
# DiT and FM loss end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dit_params():
    """Random weights everywhere (non-trivial AdaLN / norm parameters: every path matters)."""
    x = jnp.zeros((1, BS, 4))
    shapes = jax.eval_shape(lambda: DiT(CFG).init(jax.random.key(0), x, x[..., 0]))["params"]
    rng = np.random.default_rng(0)
    draw = lambda s: jnp.asarray(rng.normal(0, s.shape[0] ** -0.5, s.shape), jnp.float32)
    return jax.tree.map(draw, nn.meta.unbox(shapes))


def _fm_layout(compact, seed=0):
    """Per-block t and the repaint at p = 0.5 (blocks holding pinned and noisy rows)."""
    z0 = jax.random.normal(jax.random.key(seed), (B, L, 4))
    return obj.fm_layout(
        z0,
        jax.random.key(seed + 1),
        block_size=BS,
        t_loc=1,
        t_scale=1,
        segment_ids_BL=SEG,
        timestep_sampling="block",
        prompt_block_prob=0.5,
    )._replace(**({} if compact else {"attn": None, "t_groups": None}))


@functools.cache
def _fm_value_and_grad():
    model = DiT(CFG)

    def loss(p, x, lay):
        return obj.fm_loss(lambda *a: model.apply({"params": p}, *a), lay._replace(x_BSC=x))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


def test_fm_loss_compact_equals_dense(dit_params):
    fast, dense = _fm_layout(True), _fm_layout(False)
    assert int(fast.pinned_BL.sum()) > 0
    assert isinstance(fast.attn, train_attention.CleanNoisyLayout)
    assert fast.t_groups.t_BG.shape == (B, 1 + L // BS)
    (l_f, v_f), (gp_f, gx_f) = _fm_value_and_grad()(dit_params, fast.x_BSC, fast)
    (l_d, v_d), (gp_d, gx_d) = _fm_value_and_grad()(dit_params, dense.x_BSC, dense)
    np.testing.assert_allclose(l_f, l_d, rtol=1e-6)
    w = SEG[..., None] > 0
    np.testing.assert_allclose(v_f * w, v_d * w, atol=3e-6)
    np.testing.assert_allclose(gx_f, gx_d, atol=2e-6 * float(jnp.abs(gx_d).max()))
    for a, b in zip(jax.tree.leaves(gp_f), jax.tree.leaves(gp_d), strict=True):
        np.testing.assert_allclose(a, b, atol=3e-6 * max(1.0, float(jnp.abs(b).max())))


def test_grouped_timesteps_equal_per_row(dit_params):
    """Any grouping (runs of rows -> groups) gives each row its per-row-timestep numbers."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 8, 4)), jnp.float32)
    t_BG = jnp.asarray(rng.uniform(0, 1000, (2, 3)), jnp.float32)
    fwd = jax.jit(lambda p, x, t: DiT(CFG).apply({"params": p}, x, t))
    for group in ([[2, 0, 1, 1], [0, 0, 2, 1]], [[1, 0, 2, 2, 0, 1, 1, 0]] * 2):
        g = jnp.asarray(group, jnp.int32)
        per_row = jnp.repeat(jnp.take_along_axis(t_BG, g, axis=1), 8 // g.shape[1], axis=1)
        got = fwd(dit_params, x, GroupedTimesteps(t_BG, g))
        np.testing.assert_allclose(got, fwd(dit_params, x, per_row), atol=1e-6)
    with pytest.raises(ValueError, match="N dividing"):
        fwd(dit_params, x, GroupedTimesteps(t_BG, jnp.zeros((2, 3), jnp.int32)))


def test_layout_with_explicit_positions_is_an_error(dit_params):
    lay = _fm_layout(True)
    with pytest.raises(ValueError, match="come from the layout"):
        DiT(CFG).apply(
            {"params": dit_params}, lay.x_BSC, lay.t_groups, lay.positions_BS, None, lay.attn
        )


# --------------------------------------------------------------------------------------------
# Memory-lean VJPs and the memory they save
# --------------------------------------------------------------------------------------------


def test_lean_vjps_equal_autodiff():
    x = jnp.linspace(-6.0, 6.0, 101)
    g = jax.grad(lambda x: jnp.sum(jnp.sin(lean.gelu_tanh(x))))(x)
    ref = jax.grad(lambda x: jnp.sum(jnp.sin(jax.nn.gelu(x, approximate=True))))(x)
    np.testing.assert_allclose(g, ref, atol=3e-6)  # tails: cancellation in 1 + tanh

    def f(a, b, idx):  # an integer input gets no cotangent
        return jnp.tanh(a[idx] * b["w"]) * jnp.exp(-a)

    a, b = jnp.linspace(-1, 1, 5), {"w": jnp.float32(0.7)}
    idx = jnp.array([4, 3, 2, 1, 0])
    loss = lambda f: lambda a, b: jnp.sum(jnp.sin(f(a, b, idx)))
    got = jax.grad(loss(lean.recompute_in_backward(f)), argnums=(0, 1))(a, b)
    want = jax.grad(loss(f), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(lean.recompute_in_backward(f)(a, b, idx), f(a, b, idx))
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_training_step_memory_has_no_dense_scores():
    """XLA's temp memory of DiT fwd+bwd on the layout: compact path << dense-mask path."""
    length, b = 128, 2
    cfg = tiny_dit(block_size=16)
    x = jnp.zeros((b, 2 * length - 16, 4))
    z0 = jnp.zeros((b, length, 4))
    lay = obj.fm_layout(z0, jax.random.key(0), block_size=16, t_loc=1, t_scale=1)
    p = jax.eval_shape(lambda: DiT(cfg).init(jax.random.key(0), x[:, :16], x[:, :16, 0]))

    def temp(layout):
        def loss(p, x):
            return obj.fm_loss(lambda *a: DiT(cfg).apply(p, *a), layout._replace(x_BSC=x))[0]

        compiled = jax.jit(jax.grad(loss)).lower(p, x).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    dense = temp(lay._replace(attn=None, t_groups=None))
    fast = temp(lay)
    scores = b * cfg.heads * x.shape[1] ** 2 * 4  # one f32 [B, H, S, S] score tensor
    assert dense > 2 * scores and fast < dense / 2, (dense, fast, scores)
