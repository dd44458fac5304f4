"""Pure objective functions: masking, timesteps (per sequence / per block), the prompt-block
repaint, loss weights, latent normalisation, the FM training layout and its mask / gradient paths
(with the real tiny DiT), and the VAE terms with stand-in models."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layout_reference import allowed_batch
from tiny_models import tiny_dit

from colajax.models.config import VAEConfig
from colajax.models.dit import DiT
from colajax.train import objectives as obj

BS = 2
L = 8  # the paper's Fig. 1 example: lsq = 8, bs = 2 -> 3 clean + 4 noisy blocks
C = 4
DIT = tiny_dit(num_layers=2, block_size=BS)


@functools.partial(jax.jit, static_argnames=("grad_to_vae", "sampling", "p", "bs"))
def _layout(
    z0,
    seed=0,
    grad_to_vae=True,
    segment_ids_BL=None,
    positions_BL=None,
    sampling="block",
    p=0.0,
    loss_weights_BL=None,
    bs=BS,
):
    return obj.fm_layout(
        z0,
        jax.random.PRNGKey(seed),
        block_size=bs,
        t_loc=1.0,
        t_scale=1.0,
        grad_to_vae=grad_to_vae,
        segment_ids_BL=segment_ids_BL,
        positions_BL=positions_BL,
        timestep_sampling=sampling,
        prompt_block_prob=p,
        loss_weights_BL=loss_weights_BL,
    )


@pytest.fixture(scope="module")
def dit():
    model = DiT(DIT)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, BS, C)), jnp.zeros((1, BS)))
    params = params["params"]

    @jax.jit
    def apply(p, x, t, pos, seg, mask):
        return model.apply({"params": p}, x, t, pos, seg, mask)

    return lambda x, t, pos, seg, mask, p=params: apply(p, x, t, pos, seg, mask)


def test_logit_normal_median_and_degenerate_scale():
    t = jax.jit(obj.logit_normal, static_argnums=(1, 2, 3))(
        jax.random.PRNGKey(0), (40000,), 1.0, 1.0
    )
    assert abs(float(jnp.median(t)) - float(jax.nn.sigmoid(1.0))) < 0.01  # ~0.731
    assert 0.0 < float(t.min()) and float(t.max()) < 1.0
    t0 = obj.logit_normal(jax.random.PRNGKey(0), (10,), 1.0, 0.0)
    np.testing.assert_allclose(t0, jax.nn.sigmoid(1.0), rtol=1e-6)


def test_bert_mask_ratio_and_padding():
    tokens = jnp.arange(4000, dtype=jnp.int32).reshape(4, 1000) % 50
    valid = jnp.ones_like(tokens).at[:, 900:].set(0)
    masked, hit = jax.jit(obj.bert_mask, static_argnums=(2, 3))(
        jax.random.PRNGKey(1), tokens, 0.3, 50, valid
    )
    assert abs(float(hit[:, :900].mean()) - 0.3) < 0.02
    assert not bool(hit[:, 900:].any())  # padding is never masked
    np.testing.assert_array_equal(masked, jnp.where(hit, 50, tokens))


def test_dit_space_roundtrip():
    cfg = VAEConfig(scaling_factor=0.5, shifting_factor=0.25, block_size=4)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4))
    x = obj.to_dit_space(z, cfg)
    np.testing.assert_allclose(x, (z - 0.25) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(obj.from_dit_space(x, cfg), z, rtol=1e-5, atol=1e-6)


def test_fm_layout_matches_the_paper_figure():
    z0 = jax.random.normal(jax.random.PRNGKey(0), (2, L, C))
    lay = _layout(z0)
    n_clean = L - BS
    assert lay.x_BSC.shape == (2, 2 * L - BS, C)  # 3 clean + 4 noisy blocks
    np.testing.assert_array_equal(lay.x_BSC[:, :n_clean], z0[:, :n_clean])
    np.testing.assert_array_equal(lay.t_BS[:, :n_clean], 0.0)
    np.testing.assert_array_equal(lay.positions_BS[0], list(range(n_clean)) + list(range(L)))
    t = lay.t_BL
    np.testing.assert_array_equal(t[:, ::BS], t[:, 1::BS])  # one t per noisy block
    assert float(jnp.abs(t[:, 0] - t[:, BS]).max()) > 0  # ... drawn independently per block
    np.testing.assert_allclose(lay.t_BS[:, n_clean:], 1000.0 * t, rtol=1e-6)
    # z_t = (1 - t) z0 + t eps and target = eps - z0  =>  z_t - z0 = t * target
    np.testing.assert_allclose(
        lay.x_BSC[:, n_clean:] - z0, t[..., None] * lay.target_BLC, atol=1e-5
    )
    # mask (query rows / key columns in blocks): clean 0..2, noisy 3..6
    blk = np.asarray(lay.mask_B1SS[0, 0])[::BS, ::BS].astype(int)
    expected = np.array(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0],  # noisy block 1: no context
            [1, 0, 0, 0, 1, 0, 0],
            [1, 1, 0, 0, 0, 1, 0],
            [1, 1, 1, 0, 0, 0, 1],
        ]
    )
    np.testing.assert_array_equal(blk, expected)


def test_fm_layout_blocks_follow_packed_positions():
    """Packed samples restart positions: each sample's blocks get their own timestep."""
    pos = jnp.array([[0, 1, 2, 0, 1, 2, 3, 4]], jnp.int32)  # samples of 3 and 5 tokens
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 2]], jnp.int32)
    z0 = jnp.zeros((1, L, C))
    lay = _layout(z0, positions_BL=pos, segment_ids_BL=seg)
    t = np.asarray(lay.t_BL[0])
    assert t[0] == t[1] != t[2]  # sample 1: blocks {0,1}, {2}
    assert t[3] == t[4] and t[5] == t[6] and t[4] != t[5]  # sample 2: {0,1}, {2,3}, {4}
    assert t[7] != t[6]


def test_noisy_block_sees_only_earlier_clean_blocks_and_itself(dit):
    z0 = jax.random.normal(jax.random.PRNGKey(0), (1, L, C))
    lay = _layout(z0)
    n_clean = L - BS
    base = dit(lay.x_BSC, lay.t_BS, lay.positions_BS, lay.segment_ids_BS, lay.mask_B1SS)
    j = 2  # noisy block 2 (rows n_clean + 4 .. n_clean + 5)
    rows = slice(n_clean + j * BS, n_clean + (j + 1) * BS)

    def run(x):
        return dit(x, lay.t_BS, lay.positions_BS, lay.segment_ids_BS, lay.mask_B1SS)

    noise = 5.0 * jax.random.normal(jax.random.PRNGKey(3), lay.x_BSC.shape)
    invisible = np.zeros(lay.x_BSC.shape[1], bool)
    invisible[j * BS : n_clean] = True  # clean blocks >= j
    invisible[n_clean:] = True  # every noisy row ...
    invisible[rows] = False  # ... except block j itself
    out = run(jnp.where(invisible[None, :, None], lay.x_BSC + noise, lay.x_BSC))
    np.testing.assert_allclose(out[:, rows], base[:, rows], atol=1e-6)
    # clean rows never see noisy rows
    np.testing.assert_allclose(out[:, : j * BS], base[:, : j * BS], atol=1e-6)
    # the test can fail: an earlier clean block and the block itself do matter
    for r in (slice(0, BS), rows):
        x = lay.x_BSC.at[:, r].add(noise[:, r])
        assert float(jnp.abs(run(x)[:, rows] - base[:, rows]).max()) > 1e-3


@pytest.mark.parametrize("grad_to_vae", [False, True])
def test_no_gradient_into_clean_history(dit, grad_to_vae):
    z0 = jax.random.normal(jax.random.PRNGKey(0), (2, L, C))
    n_clean = L - BS

    def loss_z0(z):
        return obj.fm_loss(dit, _layout(z, grad_to_vae=grad_to_vae))[0]

    g = jax.jit(jax.grad(loss_z0))(z0)
    if not grad_to_vae:
        np.testing.assert_array_equal(g, 0.0)
        return
    # Only the noisy path z_t = (1 - t) z0 + t eps carries gradient: dL/dz0 = (1 - t) dL/dz_t.
    lay = _layout(z0)

    def loss_x(x):
        return obj.fm_loss(dit, lay._replace(x_BSC=x))[0]

    gx = jax.jit(jax.grad(loss_x))(lay.x_BSC)
    assert float(jnp.abs(gx[:, :n_clean]).max()) > 0  # the DiT does use the clean copy ...
    expected = (1.0 - lay.t_BL[..., None]) * gx[:, n_clean:]
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-7)  # ... but it is detached


def test_fm_loss_value_and_padding_weights():
    z0 = jax.random.normal(jax.random.PRNGKey(0), (2, L, C))
    seg = jnp.ones((2, L), jnp.int32).at[1, 6:].set(0)
    lay = _layout(z0, segment_ids_BL=seg)
    zero_dit = lambda x, *_: jnp.zeros_like(x)
    loss, v = jax.jit(lambda la: obj.fm_loss(zero_dit, la))(lay)
    err = np.mean(np.square(np.asarray(lay.target_BLC)), axis=-1)
    w = np.asarray(seg, np.float32)
    np.testing.assert_allclose(loss, (err * w).sum() / w.sum(), rtol=1e-5)
    assert v.shape == (2, L, C)


def test_fm_layout_rejects_unaligned_length():
    with pytest.raises(ValueError, match="multiple of the DiT block size"):
        obj.fm_layout(jnp.zeros((1, 7, C)), jax.random.PRNGKey(0), block_size=2, t_loc=1, t_scale=1)


# --------------------------------------------------------------------------------------------
# VAE terms with a stand-in "perfect" VAE: latents are one-hot tokens (the mask token gets its
# own channel, which the decoder ignores), so reconstruction is exact and every masked token is
# unrecoverable (uniform logits): BERT CE = log V on masked positions.
# --------------------------------------------------------------------------------------------

V = 12


def _onehot_vae():
    def encode(ids, seg, pos):
        mean = 10.0 * jax.nn.one_hot(ids, V + 1)
        return mean, jnp.full(mean.shape, -30.0)

    def decode(z, seg, pos):
        return 100.0 * z[..., :V]

    return encode, decode


def test_vae_terms_with_a_perfect_stand_in_vae():
    encode, decode = _onehot_vae()
    tokens = jax.random.randint(jax.random.PRNGKey(0), (4, 64), 0, V)
    seg = jnp.ones_like(tokens).at[:, 60:].set(0)
    terms = jax.jit(
        lambda tok, sg: obj.vae_terms(
            encode,
            decode,
            tok,
            jax.random.PRNGKey(1),
            mask_ratio=0.25,
            mask_id=V,
            segment_ids_BL=sg,
        )
    )
    t = terms(tokens, seg)
    assert float(t["recon"]) < 1e-4 and float(t["recon_acc"]) == 1.0
    np.testing.assert_allclose(t["bert_masked_ce"], np.log(V), rtol=1e-5)  # original targets
    frac = float(t["bert"]) / np.log(V)  # all-position CE = masked fraction * log V
    assert 0.15 < frac < 0.35
    # analytic KL and E_q log q per token (sum over V+1 channels)
    kl = 0.5 * (100.0 + (V + 1) * (np.exp(-30.0) - 1.0 + 30.0))
    np.testing.assert_allclose(t["kl"], kl, rtol=1e-5)
    neg_ent = -0.5 * (V + 1) * (np.log(2 * np.pi) - 30.0 + 1.0)
    np.testing.assert_allclose(t["neg_entropy"], neg_ent, rtol=1e-5)


def test_vae_terms_loss_weights_score_tokens_not_inputs():
    """`loss_weights` 0: the token is still encoded and decoded, but not averaged over."""
    encode, decode = _onehot_vae()
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 16), 0, V)
    w = jnp.ones((2, 16)).at[:, 8:].set(0.0)
    calls = []
    enc = lambda ids, seg, pos: (calls.append(ids.shape), encode(ids, seg, pos))[1]
    rng = jax.random.PRNGKey(1)
    t = jax.jit(
        lambda tok, w: obj.vae_terms(
            enc, decode, tok, rng, mask_ratio=0.5, mask_id=V, loss_weights_BL=w
        )
    )(tokens, w)
    assert calls == [(2, 16), (2, 16)]  # every row is an input (clean and masked copy)
    np.testing.assert_array_equal(t["weights"], w)
    kl = 0.5 * (100.0 + (V + 1) * (np.exp(-30.0) - 1.0 + 30.0))
    np.testing.assert_allclose(t["kl"], kl, rtol=1e-5)  # a mean over scored tokens
    _, hit = obj.bert_mask(jax.random.fold_in(rng, obj._RNG_MASK), tokens, 0.5, V, w)
    assert not bool(hit[:, 8:].any())  # unscored tokens are never masked
    frac = float(hit.sum()) / float(w.sum())  # BERT CE = log V on the masked scored tokens
    np.testing.assert_allclose(float(t["bert"]), frac * np.log(V), rtol=1e-5)


def test_stage1_loss_combines_terms():
    encode, decode = _onehot_vae()
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 16), 0, V)
    o = obj.ObjectiveConfig(beta=0.01, lambda_mask=0.5, mask_ratio=0.5)
    loss, m = jax.jit(
        lambda tok: obj.stage1_loss(encode, decode, tok, jax.random.PRNGKey(1), o, V)
    )(tokens)
    np.testing.assert_allclose(loss, m["recon"] + 0.01 * m["kl"] + 0.5 * m["bert"], rtol=1e-6)
    o0 = obj.ObjectiveConfig(beta=0.01, lambda_mask=0.0)
    _, m0 = jax.eval_shape(
        lambda: obj.stage1_loss(encode, decode, tokens, jax.random.PRNGKey(1), o0, V)
    )
    assert "bert" not in m0  # lambda_mask = 0 skips the masked branch entirely


def test_objective_config_validation():
    assert obj.ObjectiveConfig.from_config({"beta": 0.5}).beta == 0.5
    with pytest.raises(ValueError, match="unknown field"):
        obj.ObjectiveConfig.from_config({"lamda_fm": 1.0})
    with pytest.raises(ValueError, match="mask_ratio"):
        obj.ObjectiveConfig.from_config({"mask_ratio": 1.0})


def test_fm_layout_mask_equals_an_independent_pattern():
    """The layout's dense mask (and its fast-path equivalent) = the official rule written out
    with loops (`layout_reference`), including padding and two segments in one row."""
    seg = jnp.array([[1] * L, [1] * 5 + [0] * 3, [1] * 3 + [2] * 5], jnp.int32)
    lay = _layout(jnp.zeros((3, L, C)), segment_ids_BL=seg)
    want = allowed_batch(seg, BS)
    np.testing.assert_array_equal(np.asarray(lay.mask_B1SS), want)
    np.testing.assert_array_equal(np.asarray(lay.attn.dense_mask(BS)), want)


def test_sequence_sampling_draws_one_t_per_row():
    z0 = jax.random.normal(jax.random.PRNGKey(0), (64, L, C))
    lay = _layout(z0, sampling="sequence")
    t = np.asarray(lay.t_BL)
    np.testing.assert_array_equal(t, np.repeat(t[:, :1], L, axis=1))
    assert len(np.unique(t[:, 0])) == 64  # independent across the batch
    assert abs(np.median(t[:, 0]) - float(jax.nn.sigmoid(1.0))) < 0.1  # logit-normal(1, 1)
    np.testing.assert_array_equal(lay.t_groups.t_BG[:, 1:], 1000.0 * np.repeat(t[:, :1], 4, 1))
    with pytest.raises(ValueError, match="timestep_sampling"):
        _layout(z0, sampling="token")


def test_prompt_block_repaint_pins_a_clean_prefix_at_t0_with_weight_0():
    bs, n = 4, 4000
    z0 = jax.random.normal(jax.random.PRNGKey(0), (n, 2 * bs, C))
    lay = _layout(z0, p=0.3, sampling="sequence", bs=bs)
    pin = np.asarray(lay.pinned_BL).reshape(n, 2, bs)  # [sample, block, row]
    split = pin.sum(-1)
    hit = split > 0
    assert abs(hit.mean() - 0.3) < 0.03  # P(block pinned) = prompt_block_prob
    np.testing.assert_array_equal(pin, np.arange(bs) < split[..., None])  # a prefix ...
    counts = np.bincount(split[hit], minlength=bs)  # ... of 1 .. bs - 1 rows, uniform
    assert counts[0] == 0 and counts[bs:].sum() == 0
    assert np.all(np.abs(counts[1:] / hit.sum() - 1 / (bs - 1)) < 0.04), counts
    noisy = np.asarray(lay.x_BSC[:, bs:])  # noisy copy: pinned rows are z0 at t = 0 ...
    p_rows = np.asarray(lay.pinned_BL)
    np.testing.assert_array_equal(noisy[p_rows], np.asarray(z0)[p_rows])
    np.testing.assert_array_equal(np.asarray(lay.t_BS[:, bs:])[p_rows], 0.0)
    np.testing.assert_array_equal(np.asarray(lay.weights_BL), (~p_rows).astype(np.float32))
    assert np.all(np.asarray(lay.t_BS[:, bs:])[~p_rows] > 0)  # ... the others are noised
    assert not np.allclose(noisy[~p_rows], np.asarray(z0)[~p_rows])
    first = np.asarray(lay.t_groups.first_BL)  # grouped timesteps: pinned rows read group 0
    np.testing.assert_array_equal(first[:, bs:], p_rows)
    assert not first[:, :bs].any()
    assert _layout(z0, p=0.0, bs=bs).pinned_BL is None  # p = 0: no repaint, no extra work


def test_repaint_follows_packed_blocks():
    """Blocks follow the positions: a short block of n rows pins 1 .. n - 1 of them (never a
    1-row block), as the script's split ~ U{1 .. len - 1} per block."""
    n = 3000
    pos = jnp.broadcast_to(jnp.array([0, 1, 2, 3, 4, 0, 1, 2], jnp.int32), (n, 8))  # bs = 4
    seg = jnp.broadcast_to(jnp.array([1, 1, 1, 1, 1, 2, 2, 2], jnp.int32), (n, 8))
    lay = _layout(jnp.zeros((n, 8, C)), p=1.0, positions_BL=pos, segment_ids_BL=seg, bs=4)
    pin = np.asarray(lay.pinned_BL)
    full, single, short = pin[:, :4].sum(1), pin[:, 4], pin[:, 5:].sum(1)
    assert set(np.unique(full)) == {1, 2, 3} and not single.any()
    assert set(np.unique(short)) == {1, 2}
    np.testing.assert_array_equal(pin[:, 5:], np.arange(3) < short[:, None])  # a prefix


def test_pinned_rows_condition_exactly_like_per_row_t0(dit):
    """A block holding pinned and noisy rows: the grouped (compact) path = per-row timesteps."""
    z0 = jax.random.normal(jax.random.PRNGKey(4), (3, L, C))
    lay = _layout(z0, seed=1, p=0.7, sampling="sequence")
    assert 0 < int(lay.pinned_BL.sum()) < lay.pinned_BL.size
    fast = dit(lay.x_BSC, lay.t_groups, None, None, lay.attn)
    dense = dit(lay.x_BSC, lay.t_BS, lay.positions_BS, lay.segment_ids_BS, lay.mask_B1SS)
    np.testing.assert_allclose(fast, dense, atol=2e-6)
    no_pins = lay.t_groups._replace(first_BL=None)  # the test can fail: ignoring the pins
    wrong = dit(lay.x_BSC, no_pins, None, None, lay.attn)
    assert float(jnp.abs(wrong - dense).max()) > 1e-3


def test_loss_weight_0_rows_are_scored_0_but_stay_inputs(dit):
    z0 = jax.random.normal(jax.random.PRNGKey(0), (1, L, C))
    w = jnp.ones((1, L)).at[0, 5].set(0.0)  # row 5 (noisy block 2) is not scored
    lay = _layout(z0, loss_weights_BL=w)
    np.testing.assert_array_equal(lay.weights_BL, w)
    run = lambda x: obj.fm_loss(lambda *a: dit(*a), lay._replace(x_BSC=x))[1]
    row = L - BS + 5
    moved = run(lay.x_BSC.at[:, row].add(3.0))
    assert float(jnp.abs(moved[:, 4] - run(lay.x_BSC)[:, 4]).max()) > 1e-3  # still an input
