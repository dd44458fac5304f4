"""AR (LLaMA) parity with HF `LlamaForCausalLM` through the real `import-hf --llama` path.

A fixture is any `llama_*` folder under $COLAJAX_PARITY_DIR (default ../shared/reference)
holding config.json + safetensors + cases.npz (see llama_tiny_a/README.md); every size, RoPE
theta and norm eps comes from its config.json. Logits (full forward and the KV-cached path) are
compared at rtol = atol = 1e-4 and the KV-cached greedy continuations exactly.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lm_fixtures import TOL, fixture_dirs, import_fixture, prompts_of, report, require_fixtures

from colajax.generate import ar
from colajax.models.llama import Llama, init_lm_cache

FIXTURES = fixture_dirs("llama_")
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
            params, cfg, _ = import_fixture(path, tmp_path_factory.mktemp("ar"), "ar")
            done[path] = (params, cfg, np.load(os.path.join(path, "cases.npz")))
        return done[path]

    return get


def test_fixtures_found():
    require_fixtures(FIXTURES, "llama_")


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_logits(fixture, imported, record_property):
    params, cfg, c = imported(fixture)
    logits = np.asarray(Llama(cfg).apply({"params": params}, jnp.asarray(c["input_ids"])))
    assert logits.shape == c["logits"].shape and logits.dtype == np.float32
    report(record_property, fixture, "logits", float(np.max(np.abs(logits - c["logits"]))))
    np.testing.assert_allclose(logits, c["logits"], **TOL)


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_cached_logits(fixture, imported, record_property):
    """Prefill a per-sample prefix, then the rest of each row through the KV cache."""
    params, cfg, c = imported(fixture)
    ids = jnp.asarray(c["input_ids"], jnp.int32)
    b, length = ids.shape
    model = Llama(cfg)
    cached = lambda *a: model.apply({"params": params}, *a, method=Llama.cached)
    split = np.array([length // 2 + i % 3 for i in range(b)], np.int32)  # per-sample prefixes
    cache = init_lm_cache(cfg, b, length)
    first, cache = cached(ids, cache, jnp.asarray(split))
    rest_ids = np.zeros_like(c["input_ids"])
    for i, s in enumerate(split):
        rest_ids[i, : length - s] = c["input_ids"][i, s:]
    rest, cache = cached(jnp.asarray(rest_ids, jnp.int32), cache, jnp.asarray(length - split))
    np.testing.assert_array_equal(np.asarray(cache["end"]), length)
    got = np.zeros_like(c["logits"])
    for i, s in enumerate(split):
        got[i, :s] = np.asarray(first)[i, :s]
        got[i, s:] = np.asarray(rest)[i, : length - s]
    report(record_property, fixture, "cached_logits", float(np.max(np.abs(got - c["logits"]))))
    np.testing.assert_allclose(got, c["logits"], **TOL)


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_greedy_continuations(fixture, imported):
    params, cfg, c = imported(fixture)
    want = np.asarray(c["greedy_ids"])
    scfg = ar.ARSamplerConfig(max_new_tokens=want.shape[1])
    out = ar.generate(params, cfg, prompts_of(c), scfg)  # all prompts in one batch
    assert out.steps_run == want.shape[1]
    np.testing.assert_array_equal(np.asarray(out.generated), want)
