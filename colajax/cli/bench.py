"""`colajax bench matmul | train | generate`: benchmarks printing one JSON line.

    colajax bench matmul [--size 2048] [--reps 10]
    colajax bench train --config experiments/small.py [--steps 3] [--warmup 1] [--config.a.b=v]

`bench train` builds exactly the training step of `colajax train` (same sharding, optimizer and
stage), feeds it synthetic tokens, runs warm-up steps (compilation), then times `--steps` steps.
Any family (`--config.model=cola|ar|llada`). MFU is model FLOPs (analytic, the stage's
`flops_report`) per second over the matmul peak measured in the same process (f32, or bf16
inputs with f32 accumulation when the config computes in bf16).
"""

import argparse
import json
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from colajax.hardware import measure_peak_flops, peak_rss_bytes


def _memory(compiled) -> dict:
    """XLA's buffer sizes of the compiled step (bytes), where the backend reports them."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 -- not every backend implements it
        return {}
    if stats is None:
        return {}
    names = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
    return {f"xla_{n}": int(getattr(stats, n, 0)) for n in names}


def bench_matmul(argv: Sequence[str]) -> dict:
    p = argparse.ArgumentParser(prog="colajax bench matmul")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args(argv)
    out = {"bench": "matmul", "size": args.size, "devices": jax.device_count()}
    out["float32_flops"] = measure_peak_flops("float32", args.size, args.reps)
    out["bfloat16_f32acc_flops"] = measure_peak_flops("bfloat16", args.size, args.reps)
    out["platform"] = jax.devices()[0].platform
    return out


def bench_train(argv: Sequence[str]) -> dict:
    from colajax import config as config_lib
    from colajax import families
    from colajax.train import data as data_lib
    from colajax.train.setup import setup_stage

    p = argparse.ArgumentParser(prog="colajax bench train")
    p.add_argument("--config", required=True, help="experiments/X.py[:arg]")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps (compilation)")
    p.add_argument("--stage", default=None, help="a stage of the family (default: its main one)")
    args, rest = p.parse_known_args(argv)
    overrides = config_lib.overrides_from_argv(rest)
    config = config_lib.load_config(args.config, overrides, num_devices=jax.device_count())
    family = families.of_config(config)
    stages = family.stage_names(config)
    name = args.stage or (stages[0] if len(stages) == 1 else family.main_stage)
    setup = setup_stage(config, name)
    tr = setup.config.train
    models = family.models(config)
    dtype = family.compute_dtype(models)
    peak = measure_peak_flops(dtype)
    batches = data_lib.SyntheticTokens(
        tr.batch_size, tr.seq_len, family.vocab_size(models), setup.batch_sharding, seed=0
    )
    state = setup.init_state()
    t0 = time.perf_counter()
    batch = next(batches)
    step = setup.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    mem = _memory(step)
    for _ in range(max(args.warmup, 1)):
        state, m = step(state, batch)
        batch = next(batches)
    jax.block_until_ready((state, m))
    times = []
    for _ in range(args.steps):
        jax.block_until_ready(batch)
        t0 = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
        batch = next(batches)
    step_time = float(np.median(times))
    flops = setup.flops_per_step()
    return {
        "bench": "train",
        "config": args.config,
        "overrides": overrides,
        "model": family.name,
        "stage": name,
        **family.describe(config, name),
        "batch_size": tr.batch_size,
        "seq_len": tr.seq_len,
        "dtype": dtype,
        "devices": jax.device_count(),
        "step_time_s": step_time,
        "step_times_s": times,
        "compile_s": compile_s,
        **mem,
        "tokens_per_s": tr.batch_size * tr.seq_len / step_time,
        "model_flops_per_step": flops,
        "achieved_flops_per_s": flops / step_time,
        "peak_flops_per_s": peak,
        "mfu": flops / step_time / peak,
        "peak_rss_bytes": peak_rss_bytes(),
        "loss": float(m["loss"]),
    }


def main(argv: list[str]) -> int:
    usage = "usage: colajax bench {matmul|train|generate} [args]  (-h for a sub-benchmark's flags)"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    which, rest = argv[0], argv[1:]
    try:
        if which == "matmul":
            out = bench_matmul(rest)
        elif which == "train":
            out = bench_train(rest)
        elif which == "generate":
            from colajax.cli import bench_generate

            return int(bench_generate.bench_generate(rest) or 0)
        else:
            print(f"unknown benchmark {which!r}.\n{usage}", file=sys.stderr)
            return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"colajax bench {which}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out), flush=True)
    return 0
