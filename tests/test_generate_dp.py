"""Data-parallel sampling: with a batch sharding over 8 devices (the batch split over the mesh,
padded to a multiple of 8 by repeating the last prompt) every sampler gives the same tokens as
on one device, greedy and sampling (each sample's randomness comes from its own seed), and
compiles once per prompt bucket."""

import jax
import numpy as np
import pytest
from tiny_lm import TINY_AR, TINY_LLADA
from tiny_lm import random_params as lm_params
from tiny_models import TINY_DIT, TINY_VAE

from colajax import restore
from colajax.families import cola as cola_family
from colajax.generate import ar, batching, cola, llada
from colajax.generate.tokens import TokenChoice

PROMPTS = [[5, 9, 3], [7], list(range(1, 12)), [4, 4, 4, 4, 4], [60, 2]]  # 5 rows: padded to 8
SEEDS = [101, 7, 55, 3, 900]  # e.g. seed + record number
HOT = TokenChoice(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


def dp8():
    mesh = restore.make_mesh("data=8")
    return batching.batch_sharding(mesh, restore.DEFAULT_RULES)


def cola_params():
    models = {"vae": TINY_VAE, "dit": TINY_DIT}
    shapes = cola_family.FAMILY.abstract_params(models, restore.make_mesh("data=1"), {})
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: 0.05 * rng.standard_normal(s.shape, np.float32), shapes)


def _run(kind, params, scfg, sharding, prompts=PROMPTS, seeds=SEEDS):
    if kind == "cola":
        return cola.generate(params, TINY_VAE, TINY_DIT, prompts, scfg, seeds=seeds,
                             batch_sharding=sharding)  # fmt: skip
    module, cfg = (ar, TINY_AR) if kind == "ar" else (llada, TINY_LLADA)
    return module.generate(params, cfg, prompts, scfg, seeds=seeds, batch_sharding=sharding)


CASES = {
    "cola": (cola_params, lambda hot: cola.SamplerConfig(
        steps=2, max_new_tokens=8, round_dit_inputs_bf16=False,
        choice=HOT if hot else TokenChoice())),
    "ar": (lambda: lm_params(TINY_AR), lambda hot: ar.ARSamplerConfig(
        max_new_tokens=6, choice=HOT if hot else TokenChoice(repetition_penalty=1.0))),
    "llada": (lambda: lm_params(TINY_LLADA), lambda hot: llada.LLaDASamplerConfig(
        max_new_tokens=8, temperature=1.0 if hot else 0.0,
        remasking="random" if hot else "low_confidence")),
}  # fmt: skip
MODULES = {"cola": cola, "ar": ar, "llada": llada}
# Cola draws its noise from each sample's seed even when greedy, so its sampling case covers
# both kinds of per-sample randomness; its greedy case (one more ~15 s compile) is slow-only.
PARAMS = [
    pytest.param(k, hot, marks=[pytest.mark.slow] if (k, hot) == ("cola", False) else [])
    for k in CASES
    for hot in (False, True)
]


@pytest.mark.parametrize("kind, hot", PARAMS)
def test_eight_devices_equal_one(kind, hot):
    make_params, make_scfg = CASES[kind]
    params, scfg, sharding = make_params(), make_scfg(hot), dp8()
    module = MODULES[kind]
    one = _run(kind, params, scfg, None)
    before = module.TRACES["generate"]
    eight = _run(kind, params, scfg, sharding)
    assert eight.generated == one.generated
    np.testing.assert_array_equal(eight.tokens, one.tokens)
    assert eight.tokens.shape[0] == len(PROMPTS)  # the padding rows are dropped
    # other prompts of the bucket, other order and seeds: the same compiled program, and each
    # prompt's output follows its seed, not its row
    order = [4, 2, 0, 3, 1]
    moved = _run(kind, params, scfg, sharding, [PROMPTS[i] for i in order],
                 [SEEDS[i] for i in order])  # fmt: skip
    assert moved.generated == [one.generated[i] for i in order]
    other = _run(kind, params, scfg, sharding, seeds=[s + 1 for s in SEEDS])
    assert module.TRACES["generate"] == before + 1
    if hot or kind == "cola":  # really random: other seeds, other outputs
        assert other.generated != one.generated


def test_padding_and_placement():
    sharding = dp8()
    assert batching.data_parallel_size(sharding) == 8
    assert batching.data_parallel_size(None) == 1
    np.testing.assert_array_equal(batching.padded_rows(5, sharding), [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(batching.padded_rows(3, None), [0, 1, 2])
    mesh = restore.make_mesh("data=2,fsdp=2,tensor=2")
    two_axes = batching.batch_sharding(mesh, restore.DEFAULT_RULES)
    assert batching.data_parallel_size(two_axes) == 4
    put = batching.Placer(two_axes)
    x = put.batch(np.arange(8 * 3).reshape(8, 3))
    assert x.sharding == two_axes and x.addressable_shards[0].data.shape == (2, 3)
    np.testing.assert_array_equal(batching.to_host(x), np.arange(24).reshape(8, 3))
    np.testing.assert_array_equal(batching.sample_seeds(3, None, 3), [3, 4, 5])
    np.testing.assert_array_equal(batching.sample_seeds(0, [-1, 2], 2), [2**32 - 1, 2])
    with pytest.raises(ValueError, match="one per prompt"):
        batching.sample_seeds(0, [1], 2)
