"""`colajax bench generate`: time a family's jit-compiled sampler and print one JSON line.

    colajax bench generate --config experiments/small.py [--config.model=ar|llada]
        [--batch 8 --prompt-len 64 --new-tokens 32 --dtype auto|model|float32|bfloat16]
        [cola: --steps 16 --cfg 7 --no-bf16-inputs]  [llada: --steps N --block-length N]
    colajax bench generate --checkpoint DIR [...]

`--config` builds randomly initialised models of the experiment's sizes (`--config.a.b=v`
overrides allowed); `--checkpoint` restores real weights. Prompts are random token ids of
exactly `--prompt-len` tokens; decoding is greedy (Cola with the official repetition penalty
1.1) and never stops at EOS, so every sample generates `--new-tokens` tokens. The first call
(compilation) is timed separately; the reported time is the median of `--repeats` calls. MFU is
the family's analytic generation FLOPs per second over the matmul peak measured in-process.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from colajax.families.base import GenOptions
from colajax.hardware import measure_peak_flops

# Below this model width generation is overhead-bound on CPU and bf16 only adds conversions
# (tiny Cola: 2,700 tokens/s in float32 vs 1,300 in bfloat16); above it bf16 matmuls win.
BF16_MIN_WIDTH = 256


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="colajax bench generate", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="experiments/X.py[:arg]: random weights of these sizes")
    src.add_argument("--checkpoint", help="colajax checkpoint (trained or import-hf)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="cola: Euler steps; llada: steps")
    p.add_argument("--cfg", type=float, default=None, help="cola: guidance scale (1 = no CFG)")
    p.add_argument("--block-length", type=int, default=None, help="llada: block length")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "model", "float32", "bfloat16"),
        help="compute dtype of the models. auto (default): bfloat16 (bf16 matmuls with f32 "
        "accumulation) when the widest model is matmul-bound (width >= "
        f"{BF16_MIN_WIDTH}), else the model's own; model: as stored",
    )
    p.add_argument("--no-bf16-inputs", action="store_true", help="cola: feed the DiT unrounded")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p


def _width(models: dict) -> int:
    return max(max(getattr(m, "dim", 0), getattr(m, "txt_dim", 0)) for m in models.values())


def _from_config(spec: str, overrides: Sequence[str], seed: int):
    from colajax import config as config_lib
    from colajax import families

    config = config_lib.load_config(spec, overrides)
    family = families.of_config(config)
    models = family.models(config)
    boxed = jax.jit(lambda r: family.init_params(models, r))(jax.random.PRNGKey(seed))
    unbox = lambda tree: jax.tree.map(
        lambda a: getattr(a, "value", a), tree, is_leaf=lambda a: hasattr(a, "value")
    )
    return family, unbox(boxed), models, {}


def run(argv: Sequence[str]) -> dict:
    args, rest = _parser().parse_known_args(argv)
    if args.checkpoint:
        from colajax import restore

        if rest:
            raise ValueError(f"unknown arguments {rest} (overrides need --config).")
        loaded = restore.load_model(args.checkpoint)
        family, params, models, meta = loaded.family, loaded.params, loaded.models, loaded.meta
    else:
        from colajax import config as config_lib

        overrides = config_lib.overrides_from_argv(rest)
        family, params, models, meta = _from_config(args.config, overrides, args.seed)
    for name in ("batch", "prompt_len", "new_tokens", "repeats"):
        if getattr(args, name) < (0 if name == "prompt_len" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be positive.")
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if _width(models) >= BF16_MIN_WIDTH else "model"
    if dtype != "model":
        models = {k: dataclasses.replace(m, dtype=dtype) for k, m in models.items()}
    opts = GenOptions(
        max_new_tokens=args.new_tokens,
        temperature=args.temperature,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        truncate_at_eos=False,
        steps=args.steps,
        cfg=args.cfg,
        block_length=args.block_length,
        bf16_inputs="off" if args.no_bf16_inputs else "on",
    )
    generate = family.generator(params, models, meta, None, opts)
    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(4, family.vocab_size(models), (args.batch, args.prompt_len)).tolist()
    numbers = list(range(args.batch))
    t0 = time.perf_counter()
    out = generate(prompts, numbers)
    first = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = generate(prompts, numbers)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    sec = float(np.median(times))
    new_tokens = sum(len(g) for g in out)
    flops = args.batch * family.generation_flops(models, args.prompt_len, opts)
    peak = measure_peak_flops(family.compute_dtype(models))
    dev = jax.devices()[0]
    return {
        "bench": "generate",
        "model": family.name,
        "source": args.checkpoint or args.config,
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if v is not None},
        "dtype": {k: m.dtype for k, m in models.items()},
        "seconds_per_batch": sec,
        "prompts_per_s": args.batch / sec,
        "generated_tokens_per_s": new_tokens / sec,
        "first_call_s": first,
        "cpu_seconds_per_batch": float(np.median(cpu)),
        "model_flops_per_batch": flops,
        "achieved_flops_per_s": flops / sec,
        "peak_flops_per_s": peak,
        "mfu": flops / sec / peak,
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
