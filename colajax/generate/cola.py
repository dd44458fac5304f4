"""Block-wise Cola DLM generation (the paper's three-step inference, spec §6.1), jit-compiled.

Per batch: block-align the prompts with the pad id and encode them (posterior mean), map to DiT
space `(z - shift) * scale`, prefill the DiT cache (t = 0) and the VAE decoder cache with the
prefixes. Per block: Euler transport from t = T to 0 with classifier-free guidance
`v = v_u + w (v_c - v_u)` (conditional = block after the cached history, unconditional = block
alone at positions 0..bs-1; w = 1 in block 0 for samples without a prefix), clean-condition
repaint of the pinned prompt-tail rows, decode (updating the decoder cache), token choice, and a
t = 0 commit of the final latents to the DiT cache. Shapes are bucketed so prompts of different
lengths share one compiled program; noise is per sample (its own seed) or supplied explicitly.
Given a batch sharding, the batch runs data-parallel over the mesh (`batching`).
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from colajax.generate import batching
from colajax.generate.tokens import TokenChoice, add_to_history, choose_tokens
from colajax.models.config import DiTConfig, VAEConfig, check_compatible
from colajax.models.dit import DiT, init_dit_cache
from colajax.models.vae import TextVAE, init_decoder_cache

TRACES = {"generate": 0}  # incremented each time the generation program is traced (tests)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static generation settings (defaults: the official benchmark, spec §6.1)."""

    steps: int = 16
    guidance_scale: float = 7.0
    max_new_tokens: int = 32
    choice: TokenChoice = TokenChoice()
    pad_id: int = 0
    eos_id: int | None = None
    truncate_at_eos: bool = True  # cut outputs at the first EOS (official parity: False)
    round_dit_inputs_bf16: bool = True  # official numerics: the DiT sees bf16(x), bf16(t)
    timestep_scale: float = 1000.0
    fuse_cfg: bool = False  # True: cond + uncond as one 2B-batch cached call (slower on CPU)
    bucket_blocks: int = 4  # prompt buckets: bucket_blocks * block_size * 2^i

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.bucket_blocks < 1:
            raise ValueError(f"bucket_blocks must be >= 1, got {self.bucket_blocks}.")

    def n_blocks(self, block_size: int) -> int:
        return -(-self.max_new_tokens // block_size)


@dataclasses.dataclass
class Generation:
    """Host-side result. `tokens`/`latents`/`logits` cover every block row (incl. pinned)."""

    generated: list[list[int]]  # per sample: new ids (prompt tail dropped, EOS/length cut)
    tokens: np.ndarray  # int32 [B, n_blocks, bs]; -1 for blocks not run (early EOS stop)
    latents: np.ndarray  # float32 [B, n_blocks, bs, C], DiT space
    logits: np.ndarray | None  # float32 [B, n_blocks, bs, V] before the penalty (on request)
    blocks_run: int


def timestep_schedule(steps: int, scale: float = 1000.0, round_bf16: bool = True):
    """(t_fed [steps], dt [steps], grid [steps+1]) float32 as the official loop computes them.

    grid = torch.linspace(scale, 0, steps + 1) in float32; the DiT sees bf16(grid[i]) (or the
    exact value); dt = (grid[i] - grid[i + 1]) / scale uses the exact grid.
    """
    n, start, end = steps + 1, np.float32(scale), np.float32(0.0)
    step = np.float32((end - start) / np.float32(n - 1))
    idx = np.arange(n)
    grid = np.where(
        idx < n // 2,
        start + step * idx.astype(np.float32),
        end - step * (n - 1 - idx).astype(np.float32),
    ).astype(np.float32)
    fed = grid[:-1]
    if round_bf16:
        fed = fed.astype(ml_dtypes.bfloat16).astype(np.float32)
    dt = ((grid[:-1] - grid[1:]) / np.float32(scale)).astype(np.float32)
    return fed.astype(np.float32), dt, grid


def bucket_length(max_aligned: int, block_size: int, bucket_blocks: int = 4) -> int:
    """Smallest `bucket_blocks * block_size * 2^i` >= max_aligned (the prompt buffer length)."""
    length = bucket_blocks * block_size
    while length < max_aligned:
        length *= 2
    return length


def _dit_in(x, round_bf16: bool):
    return x.astype(jnp.bfloat16).astype(jnp.float32) if round_bf16 else x


def _dit(dit_cfg: DiTConfig, params, *args, method=None):
    return DiT(dit_cfg).apply({"params": params["dit"]}, *args, method=method)


def prefill(params, vae_cfg, dit_cfg, prefix_BLC, prefix_len_B, cache_len, *, round_bf16, fused):
    """Empty caches of `cache_len` rows, then the prefixes (DiT space) at t = 0 in both.

    Fused mode doubles the DiT cache batch: rows B.. stay empty for the unconditional pass.
    """
    b, length, _ = prefix_BLC.shape
    dit_cache = init_dit_cache(dit_cfg, b, cache_len)
    t0 = jnp.zeros((b,), jnp.float32)  # one timestep per sample: AdaLN once per sample
    x_in = _dit_in(prefix_BLC, round_bf16)
    _, dit_cache = _dit(dit_cfg, params, x_in, t0, dit_cache, prefix_len_B, True, method=DiT.cached)
    if fused:
        dit_cache = jax.tree.map(lambda a: jnp.concatenate([a, jnp.zeros_like(a)]), dit_cache)
    z_vae = prefix_BLC / vae_cfg.scaling_factor + vae_cfg.shifting_factor
    dec_cache = init_decoder_cache(vae_cfg, b, cache_len)
    _, dec_cache = TextVAE(vae_cfg).apply(
        {"params": params["vae"]},
        z_vae,
        dec_cache,
        prefix_len_B,
        True,
        method=TextVAE.decode_cached,
    )
    return dit_cache, dec_cache


def velocities(params, dit_cfg, x_in_BJC, t_BJ, dit_cache, *, fused, guided=True):
    """(v_cond, v_uncond) of a block (inputs already rounded). v_uncond is None if not guided."""
    b = x_in_BJC.shape[0]
    if guided and fused:
        x2, t2 = jnp.concatenate([x_in_BJC, x_in_BJC]), jnp.concatenate([t_BJ, t_BJ])
        v2, _ = _dit(dit_cfg, params, x2, t2, dit_cache, None, False, method=DiT.cached)
        return v2[:b], v2[b:]
    cache_b = jax.tree.map(lambda a: a[:b], dit_cache) if fused else dit_cache
    v_c, _ = _dit(dit_cfg, params, x_in_BJC, t_BJ, cache_b, None, False, method=DiT.cached)
    v_u = _dit(dit_cfg, params, x_in_BJC, t_BJ) if guided else None
    return v_c, v_u


def cfg_combine(v_c, v_u, scale_B):
    """`s * (v_c - v_u) + v_u` in float32 (the official expression, also for s = 1)."""
    if v_u is None:
        return v_c
    return scale_B[:, None, None] * (v_c - v_u) + v_u


def decode_block(params, vae_cfg, x_BJC, dec_cache):
    """Decode a block's DiT-space latents after the cached rows; commits its decoder K/V."""
    z = x_BJC / vae_cfg.scaling_factor + vae_cfg.shifting_factor
    return TextVAE(vae_cfg).apply(
        {"params": params["vae"]}, z, dec_cache, None, True, method=TextVAE.decode_cached
    )


def commit_block(params, dit_cfg, x_in_BJC, dit_cache, *, fused):
    """One t = 0 pass that writes the block's K/V to the DiT cache (conditional half only)."""
    b, j = x_in_BJC.shape[:2]
    new = jnp.full((b,), j, jnp.int32)
    if fused:
        x_in_BJC = jnp.concatenate([x_in_BJC, x_in_BJC])
        new = jnp.concatenate([new, jnp.zeros_like(new)])
    t0 = jnp.zeros(x_in_BJC.shape[:1], jnp.float32)
    _, cache = _dit(dit_cfg, params, x_in_BJC, t0, dit_cache, new, True, method=DiT.cached)
    return cache


@functools.partial(jax.jit, static_argnums=(1, 2))
def draw_noise(seeds_B, n_blocks: int, shape_JC: tuple[int, int]):
    """Initial states [B, n_blocks, bs, C]; sample b, block k: fold_in(key(seed_b), 2k)."""

    def one(seed):
        keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.PRNGKey(seed), 2 * k))(
            jnp.arange(n_blocks)
        )
        return jax.vmap(lambda key: jax.random.normal(key, shape_JC, jnp.float32))(keys)

    return jax.vmap(one)(seeds_B)


def _token_keys(seeds_B, k):
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 2 * k + 1))(seeds_B)


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dit_cfg", "scfg", "return_logits"))
def _generate_core(params, ids_BL, lengths_B, seeds_B, eos_id, noise, *, vae_cfg, dit_cfg, scfg,
                   return_logits):  # fmt: skip
    TRACES["generate"] += 1
    bs, c = dit_cfg.block_size, dit_cfg.txt_in_channels
    b, lp = ids_BL.shape
    n_blocks = scfg.n_blocks(bs)
    rnd, fused = scfg.round_dit_inputs_bf16, scfg.fuse_cfg
    guided = scfg.guidance_scale != 1.0
    fused = fused and guided
    t_fed, dts, _ = timestep_schedule(scfg.steps, scfg.timestep_scale, rnd)

    # 1. Block alignment + encode (posterior mean), DiT-space latents.
    aligned = (lengths_B + bs - 1) // bs * bs
    prefix_len = lengths_B // bs * bs
    n_tail = lengths_B - prefix_len
    rows = jnp.arange(lp)[None, :]
    seg = (rows < aligned[:, None]).astype(jnp.int32)
    mean, _ = TextVAE(vae_cfg).apply({"params": params["vae"]}, ids_BL, seg, method=TextVAE.encode)
    z = (mean - vae_cfg.shifting_factor) * vae_cfg.scaling_factor
    prefix = jnp.where((rows < prefix_len[:, None])[..., None], z, 0.0)
    tail_idx = jnp.minimum(prefix_len[:, None] + jnp.arange(bs)[None, :], lp - 1)
    tail = jnp.take_along_axis(z, tail_idx[..., None], axis=1)  # [B, bs, C]
    pin0 = jnp.arange(bs)[None, :] < n_tail[:, None]

    # 2. Prefill both caches with the prefixes.
    cache_len = lp + n_blocks * bs
    dit_cache, dec_cache = prefill(
        params, vae_cfg, dit_cfg, prefix, prefix_len, cache_len, round_bf16=rnd, fused=fused
    )
    vocab = vae_cfg.vocab_size
    w = jnp.float32(scfg.guidance_scale)

    def euler(x, pin, scale_B, dit_cache, per_row: bool):
        """Transport one block; per_row=False feeds one timestep per sample (no pinned rows)."""

        def step(i, x):
            t_i = jnp.asarray(t_fed)[i]
            t = jnp.where(pin, 0.0, t_i) if per_row else jnp.full((b,), t_i)
            v_c, v_u = velocities(
                params, dit_cfg, _dit_in(x, rnd), t, dit_cache, fused=fused, guided=guided
            )
            x = x - cfg_combine(v_c, v_u, scale_B) * jnp.asarray(dts)[i]
            return jnp.where(pin[..., None], tail, x) if per_row else x

        return jax.lax.fori_loop(0, scfg.steps, step, x)

    def block(carry):
        k, dit_cache, dec_cache, seen, finished, toks, lats, logs = carry
        x = jax.lax.dynamic_index_in_dim(noise, k, axis=1, keepdims=False)
        pin = pin0 & (k == 0)
        x = jnp.where(pin[..., None], tail, x)
        scale_B = jnp.where((k == 0) & (prefix_len == 0), jnp.float32(1.0), w)
        x = jax.lax.cond(
            jnp.any(pin),
            lambda x: euler(x, pin, scale_B, dit_cache, True),
            lambda x: euler(x, pin, scale_B, dit_cache, False),
            x,
        )
        logits, dec_cache = decode_block(params, vae_cfg, x, dec_cache)
        tokens = choose_tokens(logits, seen, _token_keys(seeds_B, k), scfg.choice)
        seen = add_to_history(seen, tokens)
        finished = finished | jnp.any(tokens == eos_id, axis=1)  # official: whole block
        dit_cache = jax.lax.cond(
            k < n_blocks - 1,
            lambda cc: commit_block(params, dit_cfg, _dit_in(x, rnd), cc, fused=fused),
            lambda cc: cc,
            dit_cache,
        )
        toks = toks.at[:, k].set(tokens)
        lats = lats.at[:, k].set(x)
        if return_logits:
            logs = logs.at[:, k].set(logits)
        return k + 1, dit_cache, dec_cache, seen, finished, toks, lats, logs

    def more(carry):
        k, finished = carry[0], carry[4]
        return (k < n_blocks) & ~jnp.all(finished)

    init = (
        jnp.int32(0),
        dit_cache,
        dec_cache,
        jnp.zeros((b, vocab), bool),
        jnp.zeros((b,), bool),
        jnp.full((b, n_blocks, bs), -1, jnp.int32),
        jnp.zeros((b, n_blocks, bs, c), jnp.float32),
        jnp.zeros((b, n_blocks, bs, vocab) if return_logits else (0,), jnp.float32),
    )
    k, _, _, _, _, toks, lats, logs = jax.lax.while_loop(more, block, init)
    return toks, lats, logs if return_logits else None, k


def _check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    if len(prompts) == 0:
        raise ValueError("no prompts given: pass at least one prompt (a list of token ids).")
    out = [[int(t) for t in p] for p in prompts]
    for i, p in enumerate(out):
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(
                f"prompt {i} has token ids {bad[:5]} outside [0, {vocab_size}): the tokenizer "
                "does not match the model's vocabulary."
            )
    return out


def generate(
    params,
    vae_cfg: VAEConfig,
    dit_cfg: DiTConfig,
    prompts: Sequence[Sequence[int]],
    scfg: SamplerConfig = SamplerConfig(),
    *,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    noise=None,
    return_logits: bool = False,
    batch_sharding=None,
) -> Generation:
    """Generate continuations of token-id prompts (any lengths, >= 0 tokens each).

    Sample b draws its noise and token choices from its seed (`seeds[b]`, default `seed + b`;
    fold_in per block), so a prompt gives the same output alone or in a batch. `noise` (float32
    [B, n_blocks, bs, C], DiT space) replaces the noise draws, e.g. for parity tests.
    `batch_sharding` (`batching.batch_sharding`): run data-parallel on its mesh (the batch is
    padded to a multiple of the data-parallel size; the outputs are the same).
    """
    check_compatible(vae_cfg, dit_cfg)
    prompts = _check_prompts(prompts, vae_cfg.vocab_size)
    bs = dit_cfg.block_size
    n_blocks = scfg.n_blocks(bs)
    n = len(prompts)
    lengths = np.array([len(p) for p in prompts], np.int32)
    lp = bucket_length(int(-(-lengths.max() // bs) * bs), bs, scfg.bucket_blocks)
    ids = np.full((n, lp), scfg.pad_id, np.int32)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = p
    if noise is not None:
        want = (n, n_blocks, bs, dit_cfg.txt_in_channels)
        noise = np.asarray(noise, np.float32)  # host copy: runs on whatever devices params use
        if noise.shape != want:
            raise ValueError(f"noise has shape {noise.shape}, expected {want} [B, blocks, bs, C].")
    put = batching.Placer(batch_sharding, n)
    seeds = put.seeds(seed, seeds)
    if noise is None:
        noise = put.reshard(draw_noise(seeds, n_blocks, (bs, dit_cfg.txt_in_channels)))
    else:
        noise = put.batch(noise)
    eos = -1 if scfg.eos_id is None else scfg.eos_id  # host-side settings leave the static key
    core_cfg = dataclasses.replace(scfg, pad_id=0, eos_id=None, truncate_at_eos=False)
    toks, lats, logs, k = _generate_core(
        params, put.batch(ids), put.batch(lengths), seeds,
        put.shared_value(np.int32(eos)), noise,
        vae_cfg=vae_cfg, dit_cfg=dit_cfg, scfg=core_cfg, return_logits=return_logits,
    )  # fmt: skip
    toks, k = put.host(toks), int(batching.to_host(k))
    generated = []
    for i, length in enumerate(lengths):
        out = toks[i, :k].reshape(-1)[int(length % bs) :][: scfg.max_new_tokens].tolist()
        if scfg.truncate_at_eos and scfg.eos_id is not None and scfg.eos_id in out:
            out = out[: out.index(scfg.eos_id)]
        generated.append(out)
    return Generation(
        generated=generated,
        tokens=toks,
        latents=put.host(lats),
        logits=put.host(logs),
        blocks_run=k,
    )
