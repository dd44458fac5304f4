"""Parity with the official PyTorch Cola DLM through the real import path, on every fixture.

A fixture is any directory under $COLAJAX_PARITY_DIR (default: ../shared/reference relative to
the repo root) holding `cases.npz`, `dit/` and `vae/` (HF config.json + safetensors). Each is
converted with `colajax import-hf` (float32) into a tmp dir and restored with
`checkpoint.restore_params`; sizes, block sizes and lengths come from the fixture itself.
Outputs are compared on valid positions (by `lengths`) with rtol = atol = 1e-4; the max abs
error of every case is printed (`pytest -s`) and recorded as a junit property.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity_dirs import ENV, PARITY_DIR, TOL, fixture_dirs

from colajax import checkpoint
from colajax.cli import import_hf as import_hf_cli
from colajax.models.attention import segments_from_lengths
from colajax.models.config import DiTConfig, VAEConfig
from colajax.models.dit import DiT, init_dit_cache

FIXTURES = fixture_dirs("cases.npz", ("dit", "vae"))
DIT_CASES = ["dit", "dit_cached"]
# VAE cases, computed from the same imported checkpoint.
VAE_CASES = ["vae_encode_mean", "vae_encode_logvar", "vae_encode_logvar_raw"]
VAE_CASES += ["vae_decode", "vae_decode_cached"]


@pytest.fixture(autouse=True)
def _full_f32_matmuls():
    """float32 means float32 on GPUs too (XLA's default there is TF32: ~1e-3 off the fixtures)."""
    with jax.default_matmul_precision("highest"):
        yield


def _import(path: str, tmp_root) -> tuple[dict, dict]:
    out = os.path.join(tmp_root, "ckpt")
    argv = ["--vae", os.path.join(path, "vae"), "--dit", os.path.join(path, "dit"), "--out", out]
    assert import_hf_cli.main(argv) == 0
    return checkpoint.restore_params(out)


def _rows(lengths, length):
    return np.asarray(segments_from_lengths(jnp.asarray(lengths), length)) > 0


def _dit_cases(params, cfg: DiTConfig, c) -> dict:
    model = DiT(cfg)
    fwd = jax.jit(lambda p, *a: model.apply({"params": p}, *a))
    step = jax.jit(
        lambda p, x, t, cache, n, update: model.apply(
            {"params": p}, x, t, cache, n, update, method=DiT.cached
        ),
        static_argnums=5,
    )
    res = {}
    if "dit/x" in c:
        x, t, lengths = c["dit/x"], c["dit/t"], c["dit/lengths"]
        seg = segments_from_lengths(jnp.asarray(lengths), x.shape[1])
        t_rows = jnp.broadcast_to(jnp.asarray(t)[:, None], x.shape[:2])
        out = fwd(params, jnp.asarray(x), t_rows, None, seg)
        res["dit"] = (out, c["dit/out"], _rows(lengths, x.shape[1]))
    if "dit_cached/prefix" in c:
        prefix, block = c["dit_cached/prefix"], c["dit_cached/block"]
        plen = jnp.asarray(c["dit_cached/prefix_lengths"], jnp.int32)
        cache = init_dit_cache(cfg, prefix.shape[0], prefix.shape[1] + block.shape[1])
        t0 = jnp.zeros(prefix.shape[:2])
        _, cache = step(params, jnp.asarray(prefix), t0, cache, plen, True)
        np.testing.assert_array_equal(np.asarray(cache["end"]), np.asarray(plen))
        t_rows = jnp.broadcast_to(jnp.asarray(c["dit_cached/t"])[:, None], block.shape[:2])
        out, after = step(params, jnp.asarray(block), t_rows, cache, None, False)
        np.testing.assert_array_equal(np.asarray(after["end"]), np.asarray(plen))
        res["dit_cached"] = (out, c["dit_cached/out"], np.ones(block.shape[:2], bool))
    return res


def _vae_cases(params, cfg: VAEConfig, c) -> dict:
    from colajax.models.posterior import clamp_logvar
    from colajax.models.vae import TextVAE, init_decoder_cache

    model = TextVAE(cfg)
    run = jax.jit(
        lambda p, *a, method: model.apply({"params": p}, *a, method=method),
        static_argnames="method",
    )
    res = {}
    if "vae_encode/input_ids" in c:
        ids, lengths = c["vae_encode/input_ids"], c["vae_encode/lengths"]
        seg = segments_from_lengths(jnp.asarray(lengths), ids.shape[1])
        valid = _rows(lengths, ids.shape[1])
        mean, logvar_raw = run(params, jnp.asarray(ids), seg, method=TextVAE.encode)
        res["vae_encode_mean"] = (mean, c["vae_encode/mean"], valid)
        res["vae_encode_logvar"] = (clamp_logvar(logvar_raw), c["vae_encode/logvar"], valid)
        res["vae_encode_logvar_raw"] = (logvar_raw, c["vae_encode/logvar_raw"], valid)
    if "vae_decode/latents" in c:
        z, lengths = c["vae_decode/latents"], c["vae_decode/lengths"]
        seg = segments_from_lengths(jnp.asarray(lengths), z.shape[1])
        logits = run(params, jnp.asarray(z), seg, method=TextVAE.decode)
        res["vae_decode"] = (logits, c["vae_decode/logits"], _rows(lengths, z.shape[1]))
    if "vae_decode_cached/prefix" in c:
        prefix, block = c["vae_decode_cached/prefix"], c["vae_decode_cached/block"]
        plen = jnp.asarray(c["vae_decode_cached/prefix_lengths"], jnp.int32)
        kv = init_decoder_cache(cfg, prefix.shape[0], prefix.shape[1] + block.shape[1])
        _, kv = run(params, jnp.asarray(prefix), kv, plen, method=TextVAE.decode_cached)
        logits, _ = run(params, jnp.asarray(block), kv, method=TextVAE.decode_cached)
        valid = np.ones(block.shape[:2], bool)
        res["vae_decode_cached"] = (logits, c["vae_decode_cached/logits"], valid)
    return res


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Per fixture dir: import once, then {case: (port, expected, valid_mask)}."""
    done: dict[str, dict] = {}

    def get(path: str) -> dict:
        if path not in done:
            params, meta = _import(path, tmp_path_factory.mktemp("parity"))
            c = np.load(os.path.join(path, "cases.npz"))
            dit_cfg = DiTConfig.from_dict(meta["models"]["dit"])
            vae_cfg = VAEConfig.from_dict(meta["models"]["vae"])
            assert dit_cfg.dtype == vae_cfg.dtype == "float32"
            done[path] = {
                **_dit_cases(params["dit"], dit_cfg, c),
                **_vae_cases(params["vae"], vae_cfg, c),
            }
        return done[path]

    return get


def test_fixtures_found():
    if not FIXTURES:
        if ENV in os.environ:
            pytest.fail(f"{ENV}={PARITY_DIR} holds no fixture (cases.npz + dit/ + vae/).")
        pytest.skip(f"no parity fixtures under {PARITY_DIR} (set {ENV})")


@pytest.mark.parametrize("case", DIT_CASES + VAE_CASES)
@pytest.mark.parametrize("fixture", FIXTURES, ids=[os.path.basename(f) for f in FIXTURES])
def test_parity(fixture, case, outputs, record_property):
    res = outputs(fixture)
    if case not in res:
        pytest.skip(f"{fixture}/cases.npz has no inputs for {case}")
    port, expected, valid = res[case]
    port = np.asarray(port)
    assert port.shape == expected.shape and port.dtype == np.float32, (port.shape, port.dtype)
    err = float(np.max(np.abs(port[valid] - expected[valid])))
    print(f"\n[parity] {os.path.basename(fixture)} {case}: max abs err {err:.3e}")
    record_property(f"max_abs_err_{case}", err)
    np.testing.assert_allclose(port[valid], expected[valid], **TOL)
