"""Stage objects with the real tiny VAE and DiT: golden one-step losses, losses fall on a repeated
batch, VAE-mode behaviours (frozen / reference encoder get no gradient, interval schedule),
parameter placement, checkpoint initialisation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from colajax import flops
from colajax.train import stages

B, L, V = 4, 16, 64


def make_config(stage="prior", mode="joint", **objective):
    c = ml_collections.ConfigDict()
    c.stage = stage
    c.vae = dict(
        vocab_size=V,
        dim=32,
        ffn_dim=64,
        num_heads=2,
        encoder_num_blocks=1,
        decoder_num_blocks=1,
        latent_dim=4,
    )
    c.dit = dict(
        txt_in_channels=4,
        txt_out_channels=4,
        txt_dim=32,
        emb_dim=32,
        heads=2,
        head_dim=16,
        expand_ratio=2,
        num_layers=2,
        rope_dim=8,
    )
    c.block_size = 4
    c.objective = dict(
        beta=1e-3,
        stage2_beta=1e-3,
        mask_ratio=0.15,
        lambda_mask=1.0,
        lambda_vae=1.0,
        lambda_fm=1.0,
        lambda_ref=1.0,
        t_loc=1.0,
        t_scale=1.0,
        timestep_sampling="sequence",
        prompt_block_prob=0.05,
        bf16_inputs="auto",
        vae_sample=True,
        fm_grad_to_vae=True,
    )
    c.objective.update(objective)
    c.stage2 = dict(
        vae_mode=mode,
        vae_lr_ratio=1.0,
        interval_joint_steps=2,
        interval_frozen_steps=3,
        init_from="",
    )
    return c


TOKENS = jax.random.randint(jax.random.PRNGKey(123), (B, L), 0, V)


@pytest.fixture(scope="module")
def joint_init():
    """Boxed (params, frozen) of the joint Stage 2 at seed 0 (one init compile for the module)."""
    return jax.jit(stages.make_stage(make_config()).init)(jax.random.PRNGKey(0))


def train(stage, steps: int, lr: float = 3e-3, init=None):
    """Adam on one repeated batch; returns (losses, first metrics, grads of params and frozen)."""
    init = jax.jit(stage.init)(jax.random.PRNGKey(0)) if init is None else init
    params, frozen = nn.unbox(init)
    tx = optax.adam(lr)
    opt = tx.init(params)

    @jax.jit
    def step(params, frozen, opt, i):
        rng = jax.random.fold_in(jax.random.PRNGKey(1), i)
        grad_fn = jax.value_and_grad(stage.loss, argnums=(0, 1), has_aux=True)
        (loss, metrics), (g, g_frozen) = grad_fn(params, frozen, {"tokens": TOKENS}, rng, i)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, loss, metrics, g, g_frozen

    losses, first = [], None
    for i in range(steps):
        params, opt, loss, metrics, g, g_frozen = step(params, frozen, opt, i)
        if first is None:
            first = (jax.device_get(metrics), g, g_frozen)
        losses.append(float(loss))
    return np.array(losses), *first


def _check_golden(metrics, golden, what):
    got = {k: float(metrics[k]) for k in golden}
    for k, v in golden.items():
        assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-5), (
            f"{what}: golden one-step value of {k!r} changed: got {got}. If the change is "
            "deliberate (model, objective or RNG-stream change), update the golden numbers here "
            "and say why in the commit message."
        )


# Golden numbers: tiny config above, init seed 0, loss rng fold_in(key(1), 0), TOKENS.
# FM with the released sampling (one t per sequence, prompt-block repaint at 0.05); the VAE
# terms draw from their own rng streams and did not move when those defaults came in.
GOLDEN_VAE = {"loss": 8.297686, "recon": 4.163769, "kl": 2.021988, "bert": 4.131896}
GOLDEN_JOINT = {
    "loss": 12.873768,
    "recon": 4.174024,
    "bert": 4.166736,
    "fm": 4.538677,
    "ref_kl": 0.0,
}
GOLDEN_FROZEN = {"loss": 4.538677, "fm": 4.538677}  # = joint fm: same z0 stream
# One t per block and no repaint: the FM value of the code before both options existed.
GOLDEN_FROZEN_BLOCK = {"loss": 4.609112, "fm": 4.609112}


def test_stage1_golden_and_loss_falls():
    stage = stages.make_stage(make_config(stage="vae"))
    losses, metrics, g, g_frozen = train(stage, 40, lr=1e-2)
    _check_golden(metrics, GOLDEN_VAE, "stage 1")
    assert set(g) == {"vae"} and g_frozen == {}
    assert losses[-5:].mean() < 0.75 * losses[:5].mean(), losses


def test_stage2_joint_golden_loss_falls_and_reference_is_frozen(joint_init):
    stage = stages.make_stage(make_config())
    losses, metrics, g, g_frozen = train(stage, 40, init=joint_init)
    _check_golden(metrics, GOLDEN_JOINT, "stage 2 joint")
    assert set(g) == {"vae", "dit"} and set(g_frozen) == {"vae_ref"}
    assert set(g_frozen["vae_ref"]) == {"encoder"}
    for leaf in jax.tree.leaves(g_frozen):  # KL(q || q_ref) does not train the reference
        np.testing.assert_array_equal(leaf, 0.0)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g["vae"])) > 0
    assert losses[-5:].mean() < 0.8 * losses[:5].mean(), losses


def test_stage2_frozen_mode_has_no_vae_gradient(joint_init):
    stage = stages.make_stage(make_config(mode="frozen"))
    params, _ = joint_init  # frozen-mode init draws the same VAE and DiT (same rng split)
    losses, metrics, g, g_frozen = train(
        stage, 1, init=({"dit": params["dit"]}, {"vae": params["vae"]})
    )
    _check_golden(metrics, GOLDEN_FROZEN, "stage 2 frozen")
    assert set(g) == {"dit"} and set(g_frozen) == {"vae"}
    for leaf in jax.tree.leaves(g_frozen):
        np.testing.assert_array_equal(leaf, 0.0)
    assert set(metrics) == {"loss", "fm", "logsnr"}  # no VAE loss terms computed
    assert stage.update_enabled(0) == {}  # no trained VAE group to switch
    block = stages.make_stage(
        make_config(mode="frozen", timestep_sampling="block", prompt_block_prob=0.0)
    )
    _, m_block, _, _ = train(block, 1, init=({"dit": params["dit"]}, {"vae": params["vae"]}))
    _check_golden(m_block, GOLDEN_FROZEN_BLOCK, "stage 2 frozen, t per block, no repaint")


def test_stage2_loss_weights_score_rows_not_inputs(joint_init):
    """Batch `loss_weights` (float32, 0 = not scored): all ones = the unweighted golden; a zero
    changes the FM average, but the weight-0 row stays a model input."""
    stage = stages.make_stage(make_config(mode="frozen"))
    params, _ = nn.unbox(joint_init)
    loss = jax.jit(stage.loss)
    p, f = {"dit": params["dit"]}, {"vae": params["vae"]}
    rng = jax.random.fold_in(jax.random.PRNGKey(1), 0)
    ones = jnp.ones(TOKENS.shape, jnp.float32)
    same = loss(p, f, {"tokens": TOKENS, "loss_weights": ones}, rng, 0)[1]
    _check_golden(same, GOLDEN_FROZEN, "stage 2 frozen, loss_weights = 1")
    row = 5  # inside block 1 (rows 4..7): not scored, but its block-mates attend to it
    w = {"tokens": TOKENS, "loss_weights": ones.at[:, row].set(0.0)}
    m = loss(p, f, w, rng, 0)[1]
    assert abs(float(m["fm"]) - float(same["fm"])) > 1e-4
    m2 = loss(p, f, {**w, "tokens": TOKENS.at[:, row].set(0)}, rng, 0)[1]
    assert abs(float(m2["fm"]) - float(m["fm"])) > 1e-3  # still an input (of the VAE and DiT)


def test_interval_schedule():
    stage = stages.make_stage(make_config(mode="interval"))  # 2 joint, 3 frozen
    want = [True, True, False, False, False] * 2
    assert [bool(stage.update_enabled(s)["vae"]) for s in range(10)] == want
    traced = jax.jit(jax.vmap(lambda s: stage.update_enabled(s)["vae"]))(jnp.arange(10))
    assert traced.tolist() == want
    assert stages.make_stage(make_config(mode="joint")).update_enabled(7) == {}


def test_param_placement_and_groups():
    placement = {
        "joint": ({"vae", "dit"}, {"vae_ref"}),
        "interval": ({"vae", "dit"}, {"vae_ref"}),
        "scratch": ({"vae", "dit"}, set()),
        "frozen": ({"dit"}, {"vae"}),
    }
    for mode, (p_keys, f_keys) in placement.items():
        stage = stages.make_stage(make_config(mode=mode))
        params, frozen = jax.eval_shape(stage.init, jax.random.PRNGKey(0))
        assert (set(params), set(frozen)) == (p_keys, f_keys), mode
        # boxed: the trainer reads logical axes from the init output
        specs = nn.get_partition_spec(params)
        assert specs["dit"]["txt_in"]["kernel"] == jax.sharding.PartitionSpec("latent", "embed")
        groups = stage.param_groups(nn.unbox(params))
        for key in p_keys:
            assert set(jax.tree.leaves(groups[key])) == {key}
    no_ref = stages.make_stage(make_config(lambda_ref=0.0))
    assert set(jax.eval_shape(no_ref.init, jax.random.PRNGKey(0))[1]) == set()


def test_init_from_checkpoint(joint_init):
    stage = stages.make_stage(make_config())
    params, frozen = joint_init  # boxed
    restored = jax.tree.map(lambda x: x + 1.0, nn.unbox(params["vae"]))
    p2, f2 = stage.init_from_checkpoint(params, frozen, {"vae": restored})
    assert isinstance(
        jax.tree.leaves(p2["vae"], is_leaf=lambda x: isinstance(x, nn.Partitioned))[0],
        nn.Partitioned,
    )
    for a, b in zip(jax.tree.leaves(nn.unbox(p2["vae"])), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(a, b)
    ref = nn.unbox(f2["vae_ref"])["encoder"]
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(restored["encoder"])):
        np.testing.assert_array_equal(a, b)
        assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()  # survives donation
    # unboxed inputs, as the trainer passes them inside its jitted init
    p3, f3 = jax.jit(stage.init_from_checkpoint)(*nn.unbox((params, frozen)), {"vae": restored})
    np.testing.assert_array_equal(
        p3["vae"]["encoder"]["wte"]["embedding"], restored["encoder"]["wte"]["embedding"]
    )
    np.testing.assert_array_equal(
        f3["vae_ref"]["encoder"]["wte"]["embedding"], restored["encoder"]["wte"]["embedding"]
    )
    frozen_stage = stages.make_stage(make_config(mode="frozen"))
    fp, ff = frozen_stage.init_from_checkpoint(
        {"dit": params["dit"]}, {"vae": params["vae"]}, {"vae": restored}
    )
    assert set(fp) == {"dit"}
    np.testing.assert_array_equal(
        nn.unbox(ff["vae"])["decoder"]["in_layer"]["kernel"],
        restored["decoder"]["in_layer"]["kernel"],
    )
    with pytest.raises(ValueError, match="scratch"):
        s = stages.make_stage(make_config(mode="scratch"))
        s.init_from_checkpoint(*jax.eval_shape(s.init, jax.random.PRNGKey(0)), {"vae": restored})
    bad = jax.tree.map(lambda x: jnp.zeros((x.shape[0] + 1,) + x.shape[1:]), restored)
    with pytest.raises(ValueError, match="shape"):
        stage.init_from_checkpoint(params, frozen, {"vae": bad})


def test_flops_per_step_matches_the_flops_module():
    cfg = make_config()
    s = stages.make_stage(cfg)
    rep = flops.stage2_flops(s.vae_config, s.dit_config, 8, 64, mode="joint")
    assert s.flops_report(8, 64)["total"] == rep["total"]
    assert set(rep["components"]) == {"vae_encoder", "vae_decoder", "vae_ref_encoder", "dit"}
    f = stages.make_stage(make_config(mode="frozen")).flops_report(8, 64)
    assert set(f["components"]) == {"vae_encoder", "dit"}
    assert not f["components"]["vae_encoder"]["trained"]
    s1 = stages.make_stage(make_config(stage="vae"))
    assert s1.flops_report(8, 64)["total"] == flops.stage1_flops(s1.vae_config, 8, 64)["total"]


def test_bad_config_and_batch_errors():
    with pytest.raises(ValueError, match="make_stage"):
        stages.make_stage(make_config(stage="all"))
    with pytest.raises(ValueError, match="vae_mode"):
        stages.make_stage(make_config(mode="sometimes"))
    stage = stages.make_stage(make_config())
    params, frozen = jax.eval_shape(stage.init, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="multiple of the block size"):
        jax.eval_shape(
            stage.loss,
            params,
            frozen,
            {"tokens": jnp.zeros((2, 10), jnp.int32)},
            jax.random.PRNGKey(0),
            0,
        )
