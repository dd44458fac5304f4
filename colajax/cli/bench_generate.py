"""`colajax bench generate`: time the jit-compiled sampler and print one JSON line.

    colajax bench generate --config experiments/small.py [--batch 8 --prompt-len 64
        --new-tokens 32 --steps 16 --cfg 7 --dtype auto|model|float32|bfloat16]
    colajax bench generate --checkpoint DIR [...]

`--config` builds randomly initialised models of the experiment's sizes (`--config.a.b=v`
overrides allowed); `--checkpoint` restores real weights. Prompts are random token ids of
exactly `--prompt-len` tokens; decoding is greedy with repetition penalty 1.1 (the official
benchmark's choice) and no EOS stop, so every sample generates `--new-tokens` tokens. The first
call (compilation) is timed separately; the reported time is the median of `--repeats` calls.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from colajax import sample_load
from colajax.generate import cola
from colajax.generate.tokens import TokenChoice
from colajax.models.config import DiTConfig, VAEConfig

# Below this DiT width generation is overhead-bound on CPU and bf16 only adds conversions
# (tiny: 2,700 tokens/s in float32 vs 1,300 in bfloat16); above it bf16 matmuls win (small: 1.4x).
BF16_MIN_WIDTH = 256


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="colajax bench generate", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="experiments/X.py[:arg]: random weights of these sizes")
    src.add_argument("--checkpoint", help="colajax checkpoint (trained or import-hf)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--cfg", type=float, default=7.0, help="guidance scale (1 = no CFG)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "model", "float32", "bfloat16"),
        help="compute dtype of both models. auto (default): bfloat16 (bf16 matmuls with f32 "
        "accumulation, the official autocast numerics) when the DiT is wide enough to be "
        f"matmul-bound (txt_dim >= {BF16_MIN_WIDTH}), else the model's own; model: as stored",
    )
    p.add_argument("--no-bf16-inputs", action="store_true", help="feed the DiT unrounded x, t")
    p.add_argument("--fuse-cfg", action="store_true", help="one 2B cached DiT call for CFG")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p


def _models_from_config(spec: str, overrides: Sequence[str], seed: int):
    from colajax import config as config_lib
    from colajax.models.dit import DiT
    from colajax.models.vae import TextVAE

    config = config_lib.load_config(spec, overrides)
    vae_cfg = VAEConfig.from_dict(config.vae.to_dict())
    dit_cfg = DiTConfig.from_dict(config.dit.to_dict())
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    ids = jnp.zeros((1, vae_cfg.block_size), jnp.int32)
    x = jnp.zeros((1, dit_cfg.block_size, dit_cfg.txt_in_channels), jnp.float32)
    t = jnp.zeros((1, dit_cfg.block_size), jnp.float32)
    unbox = lambda tree: jax.tree.map(
        lambda a: getattr(a, "value", a), tree, is_leaf=lambda a: hasattr(a, "value")
    )
    params = {
        "vae": unbox(jax.jit(TextVAE(vae_cfg).init)(k1, ids)["params"]),
        "dit": unbox(jax.jit(DiT(dit_cfg).init)(k2, x, t)["params"]),
    }
    return params, vae_cfg, dit_cfg


def run(argv: Sequence[str]) -> dict:
    args, rest = _parser().parse_known_args(argv)
    if args.checkpoint:
        if rest:
            raise ValueError(f"unknown arguments {rest} (overrides need --config).")
        params, vae_cfg, dit_cfg, _ = sample_load.load_model(args.checkpoint)
    else:
        from colajax import config as config_lib

        params, vae_cfg, dit_cfg = _models_from_config(
            args.config, config_lib.overrides_from_argv(rest), args.seed
        )
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if dit_cfg.txt_dim >= BF16_MIN_WIDTH else "model"
    if dtype != "model":
        vae_cfg = dataclasses.replace(vae_cfg, dtype=dtype)
        dit_cfg = dataclasses.replace(dit_cfg, dtype=dtype)
    for name in ("batch", "prompt_len", "new_tokens", "steps", "repeats"):
        if getattr(args, name) < (0 if name == "prompt_len" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be positive.")
    scfg = cola.SamplerConfig(
        steps=args.steps,
        guidance_scale=args.cfg,
        max_new_tokens=args.new_tokens,
        choice=TokenChoice(
            temperature=args.temperature, repetition_penalty=args.repetition_penalty
        ),
        eos_id=None,
        round_dit_inputs_bf16=not args.no_bf16_inputs,
        fuse_cfg=args.fuse_cfg,
    )
    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(1, vae_cfg.vocab_size, (args.batch, args.prompt_len)).tolist()
    t0 = time.perf_counter()
    gen = cola.generate(params, vae_cfg, dit_cfg, prompts, scfg, seed=args.seed)
    first = time.perf_counter() - t0
    times, cpu = [], []
    for r in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        gen = cola.generate(params, vae_cfg, dit_cfg, prompts, scfg, seed=args.seed + r)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    sec = float(np.median(times))
    new_tokens = sum(len(g) for g in gen.generated)
    dev = jax.devices()[0]
    return {
        "bench": "generate",
        "source": args.checkpoint or args.config,
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "steps": args.steps,
        "cfg": args.cfg,
        "block_size": dit_cfg.block_size,
        "blocks": gen.blocks_run,
        "dtype": {"vae": vae_cfg.dtype, "dit": dit_cfg.dtype},
        "bf16_dit_inputs": scfg.round_dit_inputs_bf16,
        "fused_cfg": scfg.fuse_cfg,
        "greedy_penalty": args.repetition_penalty if args.temperature == 0 else None,
        "seconds_per_batch": sec,
        "prompts_per_s": args.batch / sec,
        "generated_tokens_per_s": new_tokens / sec,
        "block_latency_s": sec / max(gen.blocks_run, 1),
        "first_call_s": first,
        "cpu_seconds_per_batch": float(np.median(cpu)),
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "cpu_count": os.cpu_count(),
    }


def bench_generate(argv: Sequence[str]) -> int:
    try:
        out = run(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"colajax bench generate: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out), flush=True)
    return 0


main = bench_generate
