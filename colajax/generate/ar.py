"""Autoregressive generation for the AR (LLaMA) baseline: KV-cached, batched, jit-compiled.

Prompts are right-padded into a bucketed buffer (`bucket * 2^i` columns) so prompts of
different lengths share one compiled program. One cached pass prefills every prompt (per-sample
lengths) and yields the first token from each prompt's last row; then one token per step
against the cache, until `max_new_tokens` or every sample has emitted EOS. Token choice is
`generate.tokens.choose_tokens` (greedy / temperature, top-k, top-p; the repetition penalty
covers the generated ids only, as in the Cola sampler). Sample b draws from its own seed
(fold_in per step), so a prompt gives the same output alone or in a batch; given a batch
sharding, the batch runs data-parallel over the mesh (`batching`).
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from colajax.generate import batching
from colajax.generate.tokens import TokenChoice, add_to_history, choose_tokens
from colajax.models.config import LMConfig
from colajax.models.llama import Llama, init_lm_cache, lm_params

TRACES = {"generate": 0}  # incremented each time the generation program is traced (tests)


@dataclasses.dataclass(frozen=True)
class ARSamplerConfig:
    """Generation settings; `choice` defaults to greedy without repetition penalty."""

    max_new_tokens: int = 32
    choice: TokenChoice = TokenChoice(repetition_penalty=1.0)
    pad_id: int = 0  # fills the prompt buffer (padding rows are masked out anyway)
    eos_id: int | None = None
    truncate_at_eos: bool = True  # cut outputs before the first EOS
    bucket: int = 32  # prompt buffer lengths: bucket * 2^i

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.bucket < 1:
            raise ValueError(f"bucket must be >= 1, got {self.bucket}.")


@dataclasses.dataclass
class ARGeneration:
    """Host-side result."""

    generated: list[list[int]]  # per sample: new ids (cut before EOS when truncating)
    tokens: np.ndarray  # int32 [B, max_new_tokens]; -1 for steps not run (early EOS stop)
    steps_run: int  # tokens produced per sample


def bucket_length(length: int, bucket: int) -> int:
    """Smallest `bucket * 2^i` >= length."""
    out = bucket
    while out < length:
        out *= 2
    return out


def check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int, *, min_len: int = 0):
    """Prompts as lists of ints; ids must lie in [0, vocab_size)."""
    if len(prompts) == 0:
        raise ValueError("no prompts given: pass at least one prompt (a list of token ids).")
    out = [[int(t) for t in p] for p in prompts]
    for i, p in enumerate(out):
        if len(p) < min_len:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens; this sampler needs at least {min_len} "
                "(start an empty prompt with the BOS id)."
            )
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(
                f"prompt {i} has token ids {bad[:5]} outside [0, {vocab_size}): the tokenizer "
                "does not match the model's vocabulary."
            )
    return out


def _keys(seeds_B, step):
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), step))(seeds_B)


@functools.partial(jax.jit, static_argnames=("cfg", "scfg"))
def _generate_core(params, ids_BL, lengths_B, seeds_B, eos_id, *, cfg: LMConfig, scfg):
    TRACES["generate"] += 1
    model = Llama(cfg)
    b, lp = ids_BL.shape
    n = scfg.max_new_tokens

    def cached(ids, cache, new_lengths=None, last_only=False):
        return model.apply(
            {"params": params}, ids, cache, new_lengths, True,
            last_only=last_only, method=Llama.cached,
        )  # fmt: skip

    cache = init_lm_cache(cfg, b, lp + n)
    logits, cache = cached(ids_BL, cache, lengths_B, last_only=True)
    seen = jnp.zeros((b, cfg.vocab_size), bool)
    tok = choose_tokens(logits, seen, _keys(seeds_B, 0), scfg.choice)  # [B, 1]
    seen = add_to_history(seen, tok)
    toks = jnp.full((b, n), -1, jnp.int32).at[:, 0].set(tok[:, 0])
    finished = tok[:, 0] == eos_id

    def step(carry):
        i, cache, seen, finished, toks, tok = carry
        logits, cache = cached(tok, cache)
        tok = choose_tokens(logits, seen, _keys(seeds_B, i), scfg.choice)
        seen = add_to_history(seen, tok)
        toks = toks.at[:, i].set(tok[:, 0])
        return i + 1, cache, seen, finished | (tok[:, 0] == eos_id), toks, tok

    def more(carry):
        return (carry[0] < n) & ~jnp.all(carry[3])

    carry = (jnp.int32(1), cache, seen, finished, toks, tok)
    i, _, _, _, toks, _ = jax.lax.while_loop(more, step, carry)
    return toks, i


def generate(
    params,
    cfg: LMConfig,
    prompts: Sequence[Sequence[int]],
    scfg: ARSamplerConfig = ARSamplerConfig(),
    *,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    batch_sharding=None,
) -> ARGeneration:
    """Continue token-id prompts (>= 1 token each) with a causal model; `params` is a
    checkpoint's `{"lm": ...}` or the `Llama` param tree itself. Sample b draws from `seeds[b]`
    (default `seed + b`); `batch_sharding` (`batching.batch_sharding`): run data-parallel."""
    if not cfg.causal:
        raise ValueError(
            "AR generation needs a causal model (LMConfig.causal=True); use "
            "colajax.generate.llada for a LLaDA model."
        )
    prompts = check_prompts(prompts, cfg.vocab_size, min_len=1)
    n = len(prompts)
    lengths = np.array([len(p) for p in prompts], np.int32)
    lp = bucket_length(int(lengths.max()), scfg.bucket)
    ids = np.full((n, lp), scfg.pad_id, np.int32)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = p
    put = batching.Placer(batch_sharding, n)
    eos = -1 if scfg.eos_id is None else scfg.eos_id  # host-side settings leave the static key
    core_cfg = dataclasses.replace(scfg, pad_id=0, eos_id=None, truncate_at_eos=False)
    toks, steps = _generate_core(
        lm_params(params), put.batch(ids), put.batch(lengths), put.seeds(seed, seeds),
        put.shared_value(np.int32(eos)), cfg=cfg, scfg=core_cfg,
    )  # fmt: skip
    toks, steps = put.host(toks), int(batching.to_host(steps))
    generated = []
    for row in toks:
        out = row[:steps].tolist()
        if scfg.truncate_at_eos and scfg.eos_id is not None and scfg.eos_id in out:
            out = out[: out.index(scfg.eos_id)]
        generated.append(out)
    return ARGeneration(generated=generated, tokens=toks, steps_run=steps)
