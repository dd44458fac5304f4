"""AR sampler: KV-cached greedy equals argmax of repeated full forwards, batch = alone, EOS,
repetition penalty over generated ids only, one compile per prompt bucket."""

import jax
import numpy as np
import pytest
from tiny_lm import TINY_AR, TINY_LLADA, random_params

from colajax.generate import ar
from colajax.generate.tokens import TokenChoice
from colajax.models.llama import Llama

PROMPTS = [[5, 9, 3], [7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
N = 6


@pytest.fixture(scope="module")
def params():
    return random_params(TINY_AR)


@pytest.fixture(scope="module")
def greedy(params):
    return ar.generate(params, TINY_AR, PROMPTS, ar.ARSamplerConfig(max_new_tokens=N))


def test_greedy_equals_argmax_of_full_forwards(params, greedy):
    width = 32  # one compiled forward: right-padded rows, padding is segment 0
    fwd = jax.jit(lambda ids, seg: Llama(TINY_AR).apply({"params": params}, ids, None, seg))
    for prompt, got in zip(PROMPTS, greedy.generated):
        seq = list(prompt)
        for _ in range(N):
            ids = np.zeros((1, width), np.int32)
            ids[0, : len(seq)] = seq
            seg = (np.arange(width) < len(seq)).astype(np.int32)[None]
            seq.append(int(np.argmax(np.asarray(fwd(ids, seg))[0, len(seq) - 1])))
        assert got == seq[len(prompt) :]
    assert greedy.steps_run == N and greedy.tokens.shape == (3, N)


def test_batch_equals_alone_and_no_retrace(params, greedy):
    scfg = ar.ARSamplerConfig(max_new_tokens=N)
    before = ar.TRACES["generate"]
    for i, prompt in enumerate(PROMPTS):  # B = 1, one bucket: one compile for all three
        assert ar.generate(params, TINY_AR, [prompt], scfg).generated == [greedy.generated[i]]
    assert ar.TRACES["generate"] == before + 1
    ar.generate(params, TINY_AR, [[4] * 20], ar.ARSamplerConfig(max_new_tokens=N, eos_id=3))
    assert ar.TRACES["generate"] == before + 1  # same bucket, EOS id is not part of the key
    # sampling: sample b draws from seed + b, so a prompt gives the same tokens at any batch
    # position (same compiled program: B = 3, one bucket)
    hot = ar.ARSamplerConfig(max_new_tokens=N, choice=TokenChoice(1.0, 0, 1.0, 1.0))
    batch = ar.generate(params, TINY_AR, PROMPTS, hot, seed=11)
    moved = ar.generate(params, TINY_AR, PROMPTS[::-1], hot, seed=13)
    assert moved.generated[0] == batch.generated[2]
    assert batch.generated != greedy.generated  # it really samples


def test_eos_truncation_and_early_stop(params, greedy):
    row = greedy.generated[0]
    eos = row[2]
    first = row.index(eos)
    scfg = ar.ARSamplerConfig(max_new_tokens=N, eos_id=eos)
    out = ar.generate(params, TINY_AR, [PROMPTS[0]], scfg)
    assert out.generated == [row[:first]]
    assert out.steps_run == first + 1  # stopped once the only sample emitted EOS
    assert (out.tokens[0, first + 1 :] == -1).all() and out.tokens[0, first] == eos
    keep = ar.ARSamplerConfig(max_new_tokens=N, eos_id=eos, truncate_at_eos=False)
    assert ar.generate(params, TINY_AR, [PROMPTS[0]], keep).generated == [row[: first + 1]]


def test_repetition_penalty_covers_generated_ids_only(params, greedy):
    pen = ar.ARSamplerConfig(max_new_tokens=N, choice=TokenChoice(repetition_penalty=1e3))
    # the prompt includes the unpenalised first tokens: they are still chosen first
    prompts = [p + [g[0]] for p, g in zip(PROMPTS, greedy.generated)]
    plain = ar.generate(params, TINY_AR, prompts, ar.ARSamplerConfig(max_new_tokens=N))
    out = ar.generate(params, TINY_AR, prompts, pen)
    assert [o[0] for o in out.generated] == [o[0] for o in plain.generated]
    assert all(len(set(o)) == N for o in out.generated)  # generated ids never repeat
    assert any(len(set(o)) < N for o in plain.generated)


def test_errors(params):
    with pytest.raises(ValueError, match="at least 1"):
        ar.generate(params, TINY_AR, [[1, 2], []])
    with pytest.raises(ValueError, match="outside"):
        ar.generate(params, TINY_AR, [[1, 64]])
    with pytest.raises(ValueError, match="causal"):
        ar.generate(params, TINY_LLADA, [[1]])
    with pytest.raises(ValueError, match="max_new_tokens"):
        ar.ARSamplerConfig(max_new_tokens=0)
