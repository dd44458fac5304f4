"""Parity of the Stage-2 training step with the official one (`scripts/cola_pretrain.py`), on every
`train_step.npz` fixture.

A fixture is any directory under $COLAJAX_PARITY_DIR (default: ../shared/reference relative to the
repo root) holding `train_step.npz` and `dit/` (HF config.json + safetensors); all sizes come from
the fixture. For each case (`seq_`: one t per sample + the prompt-block repaint; `blk_`: one t per
block; `pad_`: weight-0 padding rows) and numerics variant (`official`: bf16-rounded DiT inputs;
`nocast`: float32), the recorded latents, timesteps, pinned rows and loss weights go through the
trainer's own code: `flow_matching.build_layout` (compact layout: the training-attention fast
path and grouped timesteps) and `flow_matching.fm_loss` with `stages.dit_fn`, exactly what
`PriorStage.loss` runs after its random draw. Prediction, loss, every DiT gradient and the global
norm are compared at rtol = atol = 1e-4; max abs errors are printed (`pytest -s`) and recorded
as junit properties.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from layout_reference import allowed_rows
from parity_dirs import ENV, PARITY_DIR, TOL, fixture_dirs

from colajax.convert.hf_dit import dit_config_from_hf, dit_hf_spec, dit_params_from_hf
from colajax.convert.hf_io import load_hf_dir
from colajax.models import train_attention
from colajax.models.dit import DiT, GroupedTimesteps
from colajax.train import flow_matching, stages
from colajax.train.objectives import ObjectiveConfig

CASES = ("seq_", "blk_", "pad_")
VARIANTS = ("official", "nocast")


FIXTURES = fixture_dirs("train_step.npz", ("dit",))


@pytest.fixture(autouse=True)
def _full_f32_matmuls():
    """float32 means float32 on GPUs too (XLA's default there is TF32)."""
    with jax.default_matmul_precision("highest"):
        yield


@functools.cache
def _load(path: str):
    """(DiTConfig, params, npz) of a fixture, through the import path (float32)."""
    hf_config, tensors = load_hf_dir(os.path.join(path, "dit"))
    cfg = dit_config_from_hf(hf_config, dtype="float32")
    npz = dict(np.load(os.path.join(path, "train_step.npz")))
    assert (
        int(npz["block_size"]) == cfg.block_size and int(npz["latent_dim"]) == cfg.txt_in_channels
    )
    return cfg, jax.tree.map(jnp.asarray, dit_params_from_hf(tensors, cfg)), npz


def _inputs(npz, case: str, **changes) -> dict:
    """The recorded arrays of a case, as `build_layout` takes them."""
    get = lambda key: jnp.asarray(npz[case + key])
    args = dict(
        z0_BLC=get("z_0"),
        zt_BLC=get("z_noisy"),
        ts_BL=get("ts_noisy"),
        target_BLC=get("target"),
        weights_BL=get("loss_mask"),
        pinned_BL=get("pinned").astype(bool),
    )
    args.update(changes)
    return args


@functools.cache
def _step(cfg):
    """jit((params, layout) -> ((loss, pred), grads)): the trainer's FM loss and its gradients."""
    model = DiT(cfg)

    def loss(params, layout):
        return flow_matching.fm_loss(stages.dit_fn(model, params), layout)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _layout(cfg, inputs: dict, bf16: bool):
    """The trainer's layout of recorded inputs (built eagerly: one compile for all cases)."""
    return flow_matching.build_layout(**inputs, block_size=cfg.block_size, bf16_inputs=bf16)


def _round_flag(variant: str) -> bool:
    """The config route: objective.bf16_inputs on/off for a float32 DiT (as in the fixture)."""
    setting = {"official": "on", "nocast": "off"}[variant]
    return ObjectiveConfig(bf16_inputs=setting).round_dit_inputs("float32")


def _run(path: str, case: str, variant: str, bf16: bool | None = None, **changes):
    cfg, params, npz = _load(path)
    bf16 = _round_flag(variant) if bf16 is None else bf16
    lay = _layout(cfg, _inputs(npz, case, **changes), bf16)
    (loss, pred), grads = _step(cfg)(params, lay)
    return cfg, npz, loss, pred, lay, grads


def _errors(cfg, npz, case, variant, loss, pred, grads) -> dict:
    """Max abs errors, after asserting every compared quantity at TOL."""
    key = case + variant
    np.testing.assert_allclose(pred, npz[key + "_pred"], **TOL)
    np.testing.assert_allclose(loss, npz[key + "_loss"], **TOL)
    spec = dit_hf_spec(cfg)
    names = sorted(k.split("/", 1)[1] for k in npz if k.startswith(key + "_grad/"))
    assert names == sorted(spec), "the fixture's gradients must cover every DiT parameter"
    grad_err = 0.0
    for name in names:
        path, _, to_colajax = spec[name]
        got = np.asarray(functools.reduce(lambda t, k: t[k], path, grads))
        want = to_colajax(npz[f"{key}_grad/{name}"])
        np.testing.assert_allclose(got, want, err_msg=name, **TOL)
        grad_err = max(grad_err, float(np.max(np.abs(got - want))))
    norm = float(optax.tree.norm(grads))
    np.testing.assert_allclose(norm, npz[key + "_grad_global_norm"], **TOL)
    return {
        "pred": float(np.max(np.abs(np.asarray(pred) - npz[key + "_pred"]))),
        "loss": abs(float(loss) - float(npz[key + "_loss"])),
        "grad": grad_err,
        "grad_norm": abs(norm - float(npz[key + "_grad_global_norm"])),
    }


def test_fixtures_found():
    if not FIXTURES:
        if ENV in os.environ:
            pytest.fail(f"{ENV}={PARITY_DIR} holds no train_step.npz with a dit/ directory.")
        pytest.skip(f"no training-step fixtures under {PARITY_DIR} (set {ENV})")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fixture", FIXTURES, ids=[os.path.basename(f) for f in FIXTURES])
def test_train_step_parity(fixture, case, variant, record_property):
    cfg, npz, loss, pred, lay, grads = _run(fixture, case, variant)
    # the trainer's fast path: no dense mask, grouped timesteps (pinned rows -> group 0)
    assert isinstance(lay.attn, train_attention.CleanNoisyLayout)
    assert isinstance(lay.t_groups, GroupedTimesteps) and lay.t_groups.first_BL is not None
    if variant == "official":  # the rounded DiT inputs are the script's, bit for bit
        n_clean = npz["seq_len"] - cfg.block_size  # colajax drops the last clean block
        keep = np.r_[0:n_clean, npz["seq_len"] : 2 * npz["seq_len"]]
        np.testing.assert_array_equal(lay.x_BSC, npz[case + "official_dit_txt"][:, keep])
        np.testing.assert_array_equal(lay.t_BS, npz[case + "official_dit_timestep"][:, keep])
    errs = _errors(cfg, npz, case, variant, loss, pred, grads)
    name = f"{os.path.basename(fixture)} {case}{variant}"
    print(f"\n[train parity] {name}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    for k, v in errs.items():
        record_property(f"max_abs_err_{k}", v)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[os.path.basename(f) for f in FIXTURES])
def test_the_parity_test_can_fail(fixture):
    """Ignoring the pinning, the bf16 rounding or the loss weights fails the comparison."""
    _, _, npz = _load(fixture)
    broken = {
        "pinning": ("seq_", "nocast", {"pinned_BL": jnp.zeros_like(npz["seq_pinned"], bool)}),
        "bf16 rounding": ("seq_", "official", {"bf16": False}),
        "loss weights": ("pad_", "nocast", {"weights_BL": jnp.ones_like(npz["pad_loss_mask"])}),
    }
    for what, (case, variant, change) in broken.items():
        cfg, _, loss, pred, _, grads = _run(fixture, case, variant, **change)
        with pytest.raises(AssertionError):
            _errors(cfg, npz, case, variant, loss, pred, grads)
        print(f"\n[train parity] breaking the {what} fails the {case}{variant} comparison")


@pytest.mark.parametrize("fixture", FIXTURES, ids=[os.path.basename(f) for f in FIXTURES])
def test_layout_mask_equals_the_official_attention_pattern(fixture):
    """The official `attn_allowed` = the loop-written rule (`layout_reference`) = the mask of
    colajax's layout (its last clean block, which no query sees, dropped)."""
    cfg, _, npz = _load(fixture)
    length, bs = int(npz["seq_len"]), cfg.block_size
    official = npz["attn_allowed"]
    ones = np.ones(length, np.int32)
    np.testing.assert_array_equal(allowed_rows(ones, bs, drop_last_clean=False), official)
    keep = np.r_[0 : length - bs, length : 2 * length]
    layout = train_attention.CleanNoisyLayout(jnp.ones((1, length), jnp.int32))
    np.testing.assert_array_equal(np.asarray(layout.dense_mask(bs))[0, 0], official[keep][:, keep])
    np.testing.assert_array_equal(npz["positions"], np.r_[0:length, 0:length])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fixture", FIXTURES, ids=[os.path.basename(f) for f in FIXTURES])
def test_noisy_copy_and_weights_reproduce_the_script(fixture, case):
    """The trainer's noising (`flow_matching.noisy_copy`) and loss weights, given the script's
    t, noise and pinned rows, give its recorded z_noisy, ts_noisy, target and loss_mask."""
    _, _, npz = _load(fixture)
    b, length = npz[case + "pinned"].shape
    t = npz[case + "t"]
    t_BL = (
        np.broadcast_to(t[:, None], (b, length))
        if t.ndim == 1
        else np.repeat(t, length // t.shape[1], 1)
    )
    pinned = jnp.asarray(npz[case + "pinned"], bool)
    draw = flow_matching.FMDraw(jnp.asarray(t_BL), jnp.asarray(npz[case + "z_1"]), pinned)
    z_t, ts, target = flow_matching.noisy_copy(
        jnp.asarray(npz[case + "z_0"]), draw, grad_to_vae=False
    )
    np.testing.assert_allclose(z_t, npz[case + "z_noisy"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ts, npz[case + "ts_noisy"])
    np.testing.assert_array_equal(target, npz[case + "target"])
    valid = np.arange(length)[None] < npz[case + "unpadded_len"][:, None]  # the row weights
    w = flow_matching.row_weights(jnp.asarray(valid, jnp.float32), pinned)
    np.testing.assert_array_equal(w, npz[case + "loss_mask"])
