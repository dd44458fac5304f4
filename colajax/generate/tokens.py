"""Token choice for one decoded block: the official `sample_with_strategies` (spec §6.2).

Order: NaN/Inf clean-up, repetition penalty over the sample's history (a presence mask of the
ids chosen in earlier blocks), then greedy argmax (temperature < 1e-5; lowest index on ties) or
temperature / top-k / top-p sampling. Rows of a block are independent; tokens of the current
block never penalise each other. Everything is float32 and jit-friendly.
"""

import dataclasses

import jax
import jax.numpy as jnp

GREEDY_BELOW = 1e-5  # official: temperature < 1e-5 -> argmax


@dataclasses.dataclass(frozen=True)
class TokenChoice:
    """Static token-choice settings (hashable, part of the compiled sampler's key)."""

    temperature: float = 0.0
    top_k: int = 50  # 0 = off (only used when sampling, as in the official code)
    top_p: float = 0.9  # 1.0 = off (only used when sampling)
    repetition_penalty: float = 1.1  # 1.0 = off; applied even for greedy decoding

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}.")
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}."
            )

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def clean_logits(logits):
    """NaN -> 0, +Inf -> 1e4, -Inf -> -1e4 (float32)."""
    return jnp.nan_to_num(logits.astype(jnp.float32), nan=0.0, posinf=1e4, neginf=-1e4)


def penalize(logits_BQV, seen_BV, penalty: float):
    """`l * p` if l < 0 else `l / p` for every id present in the sample's history (float32)."""
    if penalty == 1.0:
        return logits_BQV
    p = jnp.float32(penalty)
    hit = jnp.where(logits_BQV < 0, logits_BQV * p, logits_BQV / p)
    return jnp.where(seen_BV[:, None, :], hit, logits_BQV)


def _top_k(logits_NV, k: int):
    if k <= 0 or k >= logits_NV.shape[-1]:
        return logits_NV
    kth = jax.lax.top_k(logits_NV, k)[0][..., -1:]
    return jnp.where(logits_NV < kth, -jnp.inf, logits_NV)


def _top_p(logits_NV, p: float):
    """Nucleus filter: drop the tail whose cumulative probability (exclusive) exceeds p."""
    if p >= 1.0:
        return logits_NV
    order = jnp.argsort(-logits_NV, axis=-1, stable=True)
    sorted_l = jnp.take_along_axis(logits_NV, order, axis=-1)
    cum = jnp.cumsum(jax.nn.softmax(sorted_l, axis=-1), axis=-1)
    remove = cum > p
    remove = jnp.concatenate([jnp.zeros_like(remove[..., :1]), remove[..., :-1]], axis=-1)
    inv = jnp.argsort(order, axis=-1)
    return jnp.where(jnp.take_along_axis(remove, inv, axis=-1), -jnp.inf, logits_NV)


def choose_tokens(logits_BQV, seen_BV, rng_B, choice: TokenChoice):
    """Penalise with the history mask, then argmax or sample. -> int32 `[B, Q]`.

    `rng_B`: one PRNG key per sample (ignored when greedy).
    """
    logits = penalize(clean_logits(logits_BQV), seen_BV, choice.repetition_penalty)
    if choice.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    b, q, v = logits.shape
    flat = (logits / jnp.float32(choice.temperature)).reshape(b * q, v)
    flat = _top_p(_top_k(flat, choice.top_k), choice.top_p)
    keys = jax.vmap(lambda k: jax.random.split(k, q))(rng_B).reshape(b * q, -1)
    toks = jax.vmap(lambda k, lg: jax.random.categorical(k, lg))(keys, flat)
    return toks.reshape(b, q).astype(jnp.int32)


def add_to_history(seen_BV, tokens_BQ):
    """Mark the ids of `tokens_BQ` as seen (unique ids; multiplicity does not matter)."""
    b = tokens_BQ.shape[0]
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], tokens_BQ.shape)
    return seen_BV.at[rows, tokens_BQ].set(True)
