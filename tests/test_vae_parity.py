"""Parity of TextVAE (float32) with the official PyTorch VAE on every fixture directory.

A fixture is any directory under $COLAJAX_PARITY_DIR (default: ../shared/reference relative to
the repo root) holding `cases.npz` and `vae/config.json` (+ weights). Sizes, block sizes, depths
and lengths are read from the fixture itself. Compared on valid positions only (by `lengths`),
rtol = atol = 1e-4; the max abs error of every case is printed (`pytest -s`) and recorded as a
junit property.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity_dirs import PARITY_DIR, TOL, fixture_dirs

from colajax.convert.hf_io import load_hf_dir
from colajax.convert.hf_vae import vae_config_from_hf, vae_params_from_hf
from colajax.models.attention import segments_from_lengths
from colajax.models.posterior import clamp_logvar
from colajax.models.vae import TextVAE, init_decoder_cache

FIXTURES = fixture_dirs("cases.npz", ("vae",))
CASES = ["encode_mean", "encode_logvar", "encode_logvar_raw", "decode", "decode_cached"]


@pytest.fixture(scope="module")
def outputs():
    """Per fixture dir: {case: (port, expected, valid_mask)} computed once."""
    cache: dict[str, dict] = {}

    def get(path: str) -> dict:
        if path not in cache:
            cache[path] = _run_fixture(path)
        return cache[path]

    return get


def _run_fixture(path: str) -> dict:
    hf_cfg, tensors = load_hf_dir(os.path.join(path, "vae"))
    cfg = vae_config_from_hf(hf_cfg, dtype="float32")
    params = vae_params_from_hf(tensors, cfg)
    c = np.load(os.path.join(path, "cases.npz"))
    model = TextVAE(cfg)
    run = jax.jit(
        lambda p, *a, method: model.apply({"params": p}, *a, method=method),
        static_argnames="method",
    )
    res = {}

    if "vae_encode/input_ids" in c:
        ids, lengths = c["vae_encode/input_ids"], c["vae_encode/lengths"]
        seg = segments_from_lengths(jnp.asarray(lengths), ids.shape[1])
        valid = np.asarray(seg) > 0
        mean, logvar_raw = run(params, jnp.asarray(ids), seg, method=TextVAE.encode)
        res["encode_mean"] = (mean, c["vae_encode/mean"], valid)
        res["encode_logvar"] = (clamp_logvar(logvar_raw), c["vae_encode/logvar"], valid)
        res["encode_logvar_raw"] = (logvar_raw, c["vae_encode/logvar_raw"], valid)

    if "vae_decode/latents" in c:
        z, lengths = c["vae_decode/latents"], c["vae_decode/lengths"]
        seg = segments_from_lengths(jnp.asarray(lengths), z.shape[1])
        logits = run(params, jnp.asarray(z), seg, method=TextVAE.decode)
        res["decode"] = (logits, c["vae_decode/logits"], np.asarray(seg) > 0)

    if "vae_decode_cached/prefix" in c:
        prefix, block = c["vae_decode_cached/prefix"], c["vae_decode_cached/block"]
        plen = jnp.asarray(c["vae_decode_cached/prefix_lengths"], jnp.int32)
        kv = init_decoder_cache(cfg, prefix.shape[0], prefix.shape[1] + block.shape[1])
        _, kv = run(params, jnp.asarray(prefix), kv, plen, method=TextVAE.decode_cached)
        np.testing.assert_array_equal(np.asarray(kv["end"]), np.asarray(plen))
        logits, kv = run(params, jnp.asarray(block), kv, method=TextVAE.decode_cached)
        np.testing.assert_array_equal(np.asarray(kv["end"]), np.asarray(plen) + block.shape[1])
        valid = np.ones(block.shape[:2], bool)
        res["decode_cached"] = (logits, c["vae_decode_cached/logits"], valid)
    return res


def test_fixtures_found():
    if not FIXTURES:
        pytest.skip(f"no parity fixtures under {PARITY_DIR} (set COLAJAX_PARITY_DIR)")
    assert all(os.path.isfile(os.path.join(f, "vae", "config.json")) for f in FIXTURES)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fixture", FIXTURES, ids=[os.path.basename(f) for f in FIXTURES])
def test_vae_parity(fixture, case, outputs, record_property):
    res = outputs(fixture)
    if case not in res:
        pytest.skip(f"{fixture}/cases.npz has no inputs for {case}")
    port, expected, valid = res[case]
    port = np.asarray(port)
    assert port.shape == expected.shape, (port.shape, expected.shape)
    assert port.dtype == np.float32
    err = float(np.max(np.abs(port[valid] - expected[valid])))
    print(f"\n[vae parity] {os.path.basename(fixture)} {case}: max abs err {err:.3e}")
    record_property(f"max_abs_err_{case}", err)
    np.testing.assert_allclose(port[valid], expected[valid], **TOL)
