"""LLaDA parity: the LLaMA backbone with bidirectional attention against the fixture logits
(rtol = atol = 1e-4) and the sampler against the official LLaDA `generate.py` tokens (exact).

A fixture is any `llada_*` folder under $COLAJAX_PARITY_DIR (default ../shared/reference) with
config.json + safetensors + cases.npz (see llada_tiny_a/README.md): `generate_S` holds prompt +
answer of the official sampler for settings `generate_S_settings` = [steps, gen_length,
block_length] (temperature 0, low-confidence remasking).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lm_fixtures import TOL, fixture_dirs, import_fixture, prompts_of, report, require_fixtures

from colajax.generate import llada
from colajax.models.llama import Llama

FIXTURES = fixture_dirs("llada_")
IDS = [os.path.basename(f) for f in FIXTURES]


@pytest.fixture(autouse=True)
def _full_f32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    done = {}

    def get(path):
        if path not in done:
            c = np.load(os.path.join(path, "cases.npz"))
            mask_id = int(c["mask_id"]) if "mask_id" in c else None
            params, cfg, _ = import_fixture(
                path, tmp_path_factory.mktemp("llada"), "llada", mask_id
            )
            done[path] = (params, cfg, c)
        return done[path]

    return get


def test_fixtures_found():
    require_fixtures(FIXTURES, "llada_")


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_logits_full_attention(fixture, imported, record_property):
    params, cfg, c = imported(fixture)
    logits = np.asarray(Llama(cfg).apply({"params": params}, jnp.asarray(c["input_ids"])))
    assert logits.shape == c["logits"].shape and logits.dtype == np.float32
    report(record_property, fixture, "logits", float(np.max(np.abs(logits - c["logits"]))))
    np.testing.assert_allclose(logits, c["logits"], **TOL)


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_sampler_tokens(fixture, imported):
    params, cfg, c = imported(fixture)
    settings = sorted(k[len("generate_") : -len("_settings")] for k in c if k.endswith("_settings"))
    assert settings, f"{fixture}/cases.npz has no generate_*_settings"
    prompts = prompts_of(c)
    for name in settings:
        steps, gen_length, block_length = (int(v) for v in c[f"generate_{name}_settings"])
        scfg = llada.LLaDASamplerConfig(
            max_new_tokens=gen_length, steps=steps, block_length=block_length
        )
        out = llada.generate(params, cfg, prompts, scfg)
        want = [row[len(p) :].tolist() for row, p in zip(c[f"generate_{name}"], prompts)]
        assert out.generated == want, (name, out.generated, want)
