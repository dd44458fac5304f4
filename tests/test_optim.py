"""Optimizer: schedule values, weight-decay mask, AdamW equivalence, group lr, VAE freezing,
gradient accumulation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from colajax.config import load_config
from colajax.train import optim


def _cfg(**kw):
    c = ml_collections.ConfigDict(
        dict(
            lr=1.5e-4,
            init_lr=1e-6,
            warmup_steps=5000,
            decay_steps=1_000_000,
            final_lr=1e-5,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=0.01,
            wd_exclude=("bias$", "scale$", "embedding$"),
            clip_norm=1.0,
            clip_scope="all",
            stage1_warmup_steps=-1,
            stage1_decay_steps=-1,
            grad_accum=1,
        )
    )
    c.update(kw)
    return c


def test_paper_schedule_values():
    s = optim.make_schedule(_cfg())
    np.testing.assert_allclose(s(0), 1e-6, rtol=1e-5)
    np.testing.assert_allclose(s(2500), 1e-6 + 0.5 * (1.5e-4 - 1e-6), rtol=1e-5)
    np.testing.assert_allclose(s(5000), 1.5e-4, rtol=1e-5)
    # cosine: final + (peak - final) * (1 + cos(pi * frac)) / 2
    frac = (250_000 - 5000) / (1_000_000 - 5000)
    want = 1e-5 + (1.5e-4 - 1e-5) * 0.5 * (1 + np.cos(np.pi * frac))
    np.testing.assert_allclose(s(250_000), want, rtol=1e-5)
    np.testing.assert_allclose(s(250_000), 1.30e-4, rtol=1e-2)  # paper.md §2.4
    np.testing.assert_allclose(s(1_000_000), 1e-5, rtol=1e-5)
    np.testing.assert_allclose(s(2_000_000), 1e-5, rtol=1e-5)


def test_decay_mask_on_real_model_names():
    from colajax.train.stages import make_stage

    config = load_config("experiments/tiny.py:synthetic")
    params, _ = jax.eval_shape(make_stage(config, "prior").init, jax.random.key(0))
    params = jax.tree.map(lambda x: x, __import__("flax.linen").linen.unbox(params))
    mask = optim.decay_mask(params, config.optim.wd_exclude)
    flat = {optim.path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
    assert flat["vae/encoder/wte/embedding"] is False
    assert all(not m for k, m in flat.items() if k.endswith(("/bias", "/scale")))
    kernels = [m for k, m in flat.items() if k.endswith("/kernel")]
    assert kernels and all(kernels)
    assert flat["dit/blocks_0/msa/proj_qkv/kernel"] is True


def _toy():
    k = jax.random.split(jax.random.key(0), 4)
    params = {
        "vae": {
            "w": {"kernel": jax.random.normal(k[0], (4, 3))},
            "emb": {"embedding": jnp.ones(3)},
        },
        "dit": {"d": {"kernel": jax.random.normal(k[1], (3, 2)), "bias": jnp.ones(2)}},
    }
    grads = jax.tree.map(lambda p: 0.3 * jnp.cos(p) + 0.1, params)
    labels = {"vae": jax.tree.map(lambda _: "vae", params["vae"]), "dit": {"d": "dit"}}
    return params, grads, labels


def test_matches_optax_adamw_with_mask_and_clip():
    params, grads, labels = _toy()
    labels = {"vae": labels["vae"], "dit": jax.tree.map(lambda _: "dit", params["dit"])}
    cfg = _cfg(lr=1e-2, init_lr=1e-2, warmup_steps=0, decay_steps=10, final_lr=1e-2, clip_norm=0.5)
    opt = optim.make_optimizer(cfg, labels)
    ref = optax.chain(
        optax.clip_by_global_norm(0.5),
        optax.adamw(
            1e-2,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=0.01,
            mask=lambda p: optim.decay_mask(p, cfg.wd_exclude),
        ),
    )
    s, rs = opt.init(params), ref.init(params)
    p, rp = params, params
    for step in range(3):
        p, s, stats = opt.update(grads, s, p, step)
        u, rs = ref.update(grads, rs, rp)
        rp = optax.apply_updates(rp, u)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p, rp)
    np.testing.assert_allclose(stats["grad_norm"], optax.tree.norm(grads), rtol=1e-5)


def test_group_lr_ratio_and_vae_freeze():
    params, grads, labels = _toy()
    labels = {"vae": labels["vae"], "dit": jax.tree.map(lambda _: "dit", params["dit"])}
    cfg = _cfg(lr=1e-2, init_lr=1e-2, warmup_steps=0, final_lr=1e-2, clip_norm=0, weight_decay=0)
    opt = optim.make_optimizer(cfg, labels, {"vae": 0.5, "dit": 1.0})
    s0 = opt.init(params)
    p1, s1, _ = opt.update(grads, s0, params, 0)
    dv = jax.tree.map(lambda a, b: a - b, p1["vae"], params["vae"])
    dd = jax.tree.map(lambda a, b: a - b, p1["dit"], params["dit"])
    # first Adam step is lr * g / (|g| + eps): -lr * sign(g) per element
    np.testing.assert_allclose(
        dv["w"]["kernel"], -0.5e-2 * np.sign(grads["vae"]["w"]["kernel"]), rtol=1e-5
    )
    np.testing.assert_allclose(
        dd["d"]["kernel"], -1e-2 * np.sign(grads["dit"]["d"]["kernel"]), rtol=1e-5
    )

    # frozen step: VAE params and moments unchanged, DiT still moves
    p2, s2, _ = jax.jit(opt.update)(grads, s1, p1, 1, {"vae": False})
    jax.tree.map(np.testing.assert_array_equal, p2["vae"], p1["vae"])
    assert not np.allclose(p2["dit"]["d"]["kernel"], p1["dit"]["d"]["kernel"])
    mu1, mu2 = s1[0].mu, s2[0].mu
    jax.tree.map(np.testing.assert_array_equal, mu2["vae"], mu1["vae"])
    assert not np.allclose(mu2["dit"]["d"]["kernel"], mu1["dit"]["d"]["kernel"])


def test_bad_group_label():
    params, _, _ = _toy()
    with pytest.raises(ValueError, match="not in"):
        optim.make_optimizer(_cfg(), jax.tree.map(lambda _: "encoder", params))


def test_grad_accumulation_matches_full_batch():
    """A mean-over-rows loss: 2 scanned micro-batches == 1 full batch (SGD)."""
    from colajax.train.state import TrainState
    from colajax.train.step import make_train_step

    class Stage:
        def loss(self, params, frozen, batch, rng, step):
            x = batch["tokens"].astype(jnp.float32)
            err = jnp.mean((x @ params["dit"]["w"] - 1.0) ** 2)
            return err, {"err": err}

        def update_enabled(self, step):
            return {}

    params = {"dit": {"w": jnp.linspace(-1, 1, 8).reshape(4, 2)}}
    labels = jax.tree.map(lambda _: "dit", params)
    batch = {"tokens": jnp.arange(32, dtype=jnp.int32).reshape(8, 4) % 5}
    outs = []
    for accum in (1, 2, 4):
        opt = optim.Optimizer(optax.identity(), optax.constant_schedule(0.01), labels, {})
        st = TrainState(step=jnp.int32(0), params=params, frozen={}, opt_state=opt.init(params))
        new, m = jax.jit(make_train_step(Stage(), opt, seed=0, grad_accum=accum))(st, batch)
        outs.append((new.params["dit"]["w"], m["loss"], m["grad_norm"]))
    for w, loss, g in outs[1:]:
        np.testing.assert_allclose(w, outs[0][0], rtol=1e-5)
        np.testing.assert_allclose(loss, outs[0][1], rtol=1e-5)
        np.testing.assert_allclose(g, outs[0][2], rtol=1e-5)


@pytest.mark.parametrize("scope", ["all", "dit"])
def test_clip_scope(scope):
    """'all': one norm over every gradient; 'dit': the DiT's gradient alone is clipped."""
    params, grads, labels = _toy()
    labels = {"vae": labels["vae"], "dit": jax.tree.map(lambda _: "dit", params["dit"])}
    grads = {"vae": jax.tree.map(lambda g: 100.0 * g, grads["vae"]), "dit": grads["dit"]}
    cfg = _cfg(clip_norm=0.1, clip_scope=scope, weight_decay=0)
    opt = optim.make_optimizer(cfg, labels)
    _, state, _ = opt.update(grads, opt.init(params), params, 0)
    mu = state[1].mu  # first Adam step: mu = (1 - b1) * clipped gradient
    norm = lambda tree: float(optax.tree.norm(tree))
    if scope == "all":
        want = jax.tree.map(lambda g: 0.1 * g * 0.1 / norm(grads), grads)
    else:
        want = {
            "vae": jax.tree.map(lambda g: 0.1 * g, grads["vae"]),  # unclipped
            "dit": jax.tree.map(lambda g: 0.1 * g * 0.1 / norm(grads["dit"]), grads["dit"]),
        }
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), mu, want)
    # Stage 1 (no DiT group) is clipped whole in both scopes
    vae_only = optim.make_optimizer(cfg, {"vae": labels["vae"]})
    _, s1, _ = vae_only.update(
        {"vae": grads["vae"]}, vae_only.init({"vae": params["vae"]}), {"vae": params["vae"]}, 0
    )
    np.testing.assert_allclose(norm(s1[1].mu), 0.1 * 0.1, rtol=1e-5)
    with pytest.raises(ValueError, match="clip_scope"):
        optim.make_optimizer(_cfg(clip_scope="vae"), labels)


def test_stage1_has_its_own_schedule():
    config = load_config(
        "experiments/tiny.py:synthetic", ["train.vae_steps=300", "train.steps=1000"]
    )
    s1, s2 = optim.stage_optim(config, "vae"), optim.stage_optim(config, "prior")
    assert (s2.warmup_steps, s2.decay_steps) == (
        config.optim.warmup_steps,
        config.optim.decay_steps,
    )
    assert (s1.warmup_steps, s1.decay_steps) == (config.optim.warmup_steps, 300)  # derived
    np.testing.assert_allclose(optim.make_schedule(s1)(300), config.optim.final_lr, rtol=1e-6)
    assert float(optim.make_schedule(s2)(300)) > 2 * config.optim.final_lr  # not decayed yet
    short = load_config("experiments/tiny.py:synthetic", ["train.vae_steps=10"])
    assert optim.stage_optim(short, "vae").warmup_steps == 10  # warmup capped by the stage
    explicit = load_config(
        "experiments/tiny.py:synthetic",
        ["optim.stage1_warmup_steps=7", "optim.stage1_decay_steps=77"],
    )
    s1 = optim.stage_optim(explicit, "vae")
    assert (s1.warmup_steps, s1.decay_steps) == (7, 77)


def test_decay_everything_preset():
    params, _, _ = _toy()
    assert all(jax.tree.leaves(optim.decay_mask(params, optim.DECAY_ALL)))
    default = optim.decay_mask(params, optim.DECAY_EXCLUDE_NORMS)
    assert not default["dit"]["d"]["bias"] and default["dit"]["d"]["kernel"]
    config = load_config("experiments/base.py")
    assert tuple(config.optim.wd_exclude) == optim.DECAY_EXCLUDE_NORMS
