"""LLaDA masked-diffusion generation (the official `generate.py` of ML-GSAI/LLaDA), jit-compiled.

The answer region (`max_new_tokens` rows after the prompt) starts fully masked. Each step runs
the bidirectional model over prompt + answer, takes x0 = argmax of the answer logits (Gumbel
noise first when temperature > 0) and scores each masked answer row by the softmax probability
of its x0 ('low_confidence') or a uniform draw ('random'); rows beyond the current
semi-autoregressive block score -inf. The k best-scoring masked rows take their x0, with k from
`transfer_schedule` (the block's masked count split evenly over the block's steps, remainder to
the first steps: `get_num_transfer_tokens`). Defaults: one token per step, one block.

Batching: prompts are left-padded into a bucketed buffer (`bucket * 2^i` columns); padding rows
have segment id 0 (invisible) and each sample's positions start at 0, so a sample gives the same
tokens alone or in a batch. Sample b draws from its own seed (fold_in per step); given a batch
sharding, the batch runs data-parallel over the mesh (`batching`).

Deliberate differences from the official loop (identical tokens otherwise): prompt tokens are
never changed (the official loop would also refill prompt rows equal to the mask id); x0 never
is the mask id itself (its logit is excluded from the argmax, not from the confidence softmax),
so the answer never keeps a mask token; the Gumbel-max draw is computed as
argmax(l - T log(-log u)) in float32 (official: argmax(exp(l) / (-log u)^T) in float64).
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from colajax.generate import batching
from colajax.generate.ar import bucket_length, check_prompts
from colajax.models.config import LMConfig
from colajax.models.llama import Llama, lm_params

TRACES = {"generate": 0}  # incremented each time the generation program is traced (tests)
REMASKING = ("low_confidence", "random")
_RNG_GUMBEL, _RNG_REMASK = range(2)


@dataclasses.dataclass(frozen=True)
class LLaDASamplerConfig:
    """Sampler settings (official names: gen_length = max_new_tokens, steps, block_length)."""

    max_new_tokens: int = 32
    steps: int | None = None  # None = max_new_tokens (one token per step)
    block_length: int | None = None  # None = max_new_tokens (no semi-autoregressive blocks)
    remasking: str = "low_confidence"
    temperature: float = 0.0  # 0 = argmax; > 0 = Gumbel-max sampling
    eos_id: int | None = None
    truncate_at_eos: bool = True  # cut outputs before the first EOS
    pad_id: int = 0  # fills the prompt buffer (padding rows are masked out anyway)
    bucket: int = 32  # prompt buffer lengths: bucket * 2^i

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking must be one of {REMASKING}, got {self.remasking!r}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = argmax), got {self.temperature}.")
        if self.bucket < 1:
            raise ValueError(f"bucket must be >= 1, got {self.bucket}.")
        if not 1 <= self.n_steps <= self.max_new_tokens or self.block < 1:
            raise ValueError(
                f"steps ({self.steps}) must be in [1, max_new_tokens = {self.max_new_tokens}] "
                f"and block_length ({self.block_length}) >= 1."
            )
        if self.max_new_tokens % self.block:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be a multiple of block_length "
                f"({self.block}); change one of them."
            )
        if self.n_steps % self.n_blocks:
            raise ValueError(
                f"steps ({self.n_steps}) must be divisible by the number of blocks "
                f"({self.n_blocks} = max_new_tokens / block_length); change steps or "
                "block_length."
            )

    @property
    def n_steps(self) -> int:
        return self.max_new_tokens if self.steps is None else self.steps

    @property
    def block(self) -> int:
        return self.max_new_tokens if self.block_length is None else self.block_length

    @property
    def n_blocks(self) -> int:
        return self.max_new_tokens // self.block

    @property
    def steps_per_block(self) -> int:
        return self.n_steps // self.n_blocks

    def transfer_schedule(self) -> np.ndarray:
        """Tokens unmasked at each step of a block (official `get_num_transfer_tokens`; every
        block starts with `block` masked rows)."""
        spb = self.steps_per_block
        base, rem = divmod(self.block, spb)
        return (base + (np.arange(spb) < rem)).astype(np.int32)


@dataclasses.dataclass
class LLaDAGeneration:
    """Host-side result."""

    generated: list[list[int]]  # per sample: answer ids (cut before EOS when truncating)
    tokens: np.ndarray  # int32 [B, max_new_tokens]: the full answer region
    unmask_step: np.ndarray  # int32 [B, max_new_tokens]: the step that filled each row


def _keys(seeds_B, step, stream):
    fold = lambda s: jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), step), stream)
    return jax.vmap(fold)(seeds_B)


def _uniform(keys_B, shape):
    return jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32))(keys_B)


def select_ranked(confidence_BG, k):
    """Boolean `[B, G]`: the k highest confidences per row (ties: lower index first)."""
    order = jnp.argsort(-confidence_BG, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1)
    return rank < k


@functools.partial(jax.jit, static_argnames=("cfg", "gen_len", "remasking", "sample"))
def _generate_core(
    params, ids_BT, pos_BT, seg_BT, seeds_B, n_steps, spb, block, sched_G, temperature,
    *, cfg: LMConfig, gen_len: int, remasking: str, sample: bool,
):  # fmt: skip
    """Steps, blocks and temperature are traced: one compile serves every schedule."""
    TRACES["generate"] += 1
    model = Llama(cfg)
    g = gen_len
    p = ids_BT.shape[1] - g
    col = jnp.arange(g)[None, :]

    def answer_logits(m, x):
        return m.head(m.hidden(x, pos_BT, seg_BT)[:, p:])

    not_mask = jnp.arange(cfg.vocab_size) != cfg.mask_id

    def step(s, carry):
        x, when = carry
        blk, i = s // spb, s % spb
        logits = model.apply({"params": params}, x, method=answer_logits)  # [B, G, V]
        ans = x[:, p:]
        masked = ans == cfg.mask_id
        noisy = logits
        if sample:
            u = _uniform(_keys(seeds_B, s, _RNG_GUMBEL), logits.shape[1:])
            noisy = logits - temperature * jnp.log(-jnp.log(u))
        x0 = jnp.argmax(jnp.where(not_mask, noisy, -jnp.inf), axis=-1).astype(x.dtype)
        if remasking == "low_confidence":
            prob = jax.nn.softmax(logits, axis=-1)
            conf = jnp.take_along_axis(prob, x0[..., None], axis=-1)[..., 0]
        else:
            conf = _uniform(_keys(seeds_B, s, _RNG_REMASK), (g,))
        conf = jnp.where(masked & (col < (blk + 1) * block), conf, -jnp.inf)
        take = select_ranked(conf, sched_G[i]) & masked
        return x.at[:, p:].set(jnp.where(take, x0, ans)), jnp.where(take, s, when)

    when = jnp.full((ids_BT.shape[0], g), -1, jnp.int32)
    x, when = jax.lax.fori_loop(0, n_steps, step, (ids_BT, when))
    return x[:, p:], when


def generate(
    params,
    cfg: LMConfig,
    prompts: Sequence[Sequence[int]],
    scfg: LLaDASamplerConfig = LLaDASamplerConfig(),
    *,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    batch_sharding=None,
) -> LLaDAGeneration:
    """Generate `max_new_tokens` answer ids per prompt (>= 0 tokens each) with a bidirectional
    LLaDA model; `params` is a checkpoint's `{"lm": ...}` or the `Llama` param tree. Sample b
    draws from `seeds[b]` (default `seed + b`); `batch_sharding`: run data-parallel."""
    if cfg.causal or cfg.mask_id is None:
        raise ValueError(
            "LLaDA generation needs a bidirectional model with a mask token (LMConfig "
            "causal=False, mask_id set); use colajax.generate.ar for an AR model."
        )
    prompts = check_prompts(prompts, cfg.vocab_size)
    g = scfg.max_new_tokens
    lengths = np.array([len(q) for q in prompts], np.int32)
    p = bucket_length(max(int(lengths.max()), 1), scfg.bucket)
    b = len(prompts)
    ids = np.full((b, p + g), scfg.pad_id, np.int32)
    ids[:, p:] = cfg.mask_id
    col = np.arange(p + g)[None, :]
    start = (p - lengths)[:, None]  # left padding: sample b starts at column p - len_b
    for i, q in enumerate(prompts):
        ids[i, p - len(q) : p] = q
    seg = (col >= start).astype(np.int32)
    pos = np.where(col >= start, col - start, 0).astype(np.int32)
    put = batching.Placer(batch_sharding, b)
    sched = np.zeros(g, np.int32)  # steps_per_block <= block <= g
    sched[: scfg.steps_per_block] = scfg.transfer_schedule()
    shared = [np.int32(scfg.n_steps), np.int32(scfg.steps_per_block), np.int32(scfg.block)]
    toks, when = _generate_core(
        lm_params(params), put.batch(ids), put.batch(pos), put.batch(seg),
        put.seeds(seed, seeds), *map(put.shared_value, shared), put.shared_value(sched),
        put.shared_value(np.float32(scfg.temperature)),
        cfg=cfg, gen_len=g, remasking=scfg.remasking, sample=scfg.temperature > 0,
    )  # fmt: skip
    toks = put.host(toks)
    generated = []
    for row in toks:
        out = row.tolist()
        if scfg.truncate_at_eos and scfg.eos_id is not None and scfg.eos_id in out:
            out = out[: out.index(scfg.eos_id)]
        generated.append(out)
    return LLaDAGeneration(generated=generated, tokens=toks, unmask_step=put.host(when))
