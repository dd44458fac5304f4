"""`colajax eval`: the generative benchmark from a checkpoint, re-scoring, diagnostics.

    colajax eval --checkpoint DIR --tasks lambada,squad --data DIR --out DIR [--limit N]
    colajax eval score --task T --generations F.jsonl [--out DIR]    (re-score, no model)
    colajax eval diagnostics --checkpoint DIR --text GLOB            (VAE / prior diagnostics)

The runner is `colajax.eval.benchmark` (see its docstring for the outputs).
"""

import argparse
import json
import sys

from colajax import distributed
from colajax.cli.options import add_generation_args, gen_options
from colajax.eval import tasks
from colajax.eval.benchmark import run_benchmark


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colajax eval",
        description="Run the paper's generative benchmark from a checkpoint. Subcommands: "
        "`colajax eval score ...` re-scores generations; `colajax eval diagnostics ...` reports "
        "VAE/prior diagnostics on held-out text.",
    )
    p.add_argument(
        "--checkpoint", required=True, help="run directory or checkpoint root (any family)"
    )
    p.add_argument(
        "--tasks", required=True, help=f"comma-separated, from {','.join(tasks.ALL_TASKS)}"
    )
    p.add_argument(
        "--data",
        default=None,
        help="directory of <task>.jsonl, 'tfds', or 'bundled' (default: the bundled KJV tasks "
        f"{','.join(tasks.BUNDLED_TASKS)}; a directory without them falls back to them too)",
    )
    p.add_argument(
        "--task-data",
        action="append",
        default=[],
        metavar="TASK=SPEC",
        help="per-task data (repeatable): JSONL file, 'tfds' or 'tfds:NAME[@SPLIT]'",
    )
    p.add_argument("--tfds-data-dir", default=None, help="tfds data_dir of prepared datasets")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--limit", type=int, default=None, help="first N records per task")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tokenizer", default=None, help="default: the experiment's tokenizer")
    p.add_argument("--mesh", default="data=-1", help="e.g. data=-1, fsdp=8, data=2,tensor=4")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    p.add_argument(
        "--all-budgets",
        action="store_true",
        help="evaluate every budget checkpoint of the run into OUT/step_<N>/ (done ones skipped)",
    )
    add_generation_args(p, seed=66)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    distributed.add_flag(p)
    return p


def eval_namespace(args) -> argparse.Namespace:
    """The benchmark arguments from a parsed command line (tasks default to the bundled ones)."""
    ns = argparse.Namespace(**vars(args))
    if not getattr(ns, "tasks", None):
        ns.tasks = ",".join(tasks.BUNDLED_TASKS)
    for name, default in (("step", None), ("out", None), ("checkpoint", None)):
        if not hasattr(ns, name):
            setattr(ns, name, default)
    ns.gen = gen_options(args)
    return ns


def main(argv: list[str]) -> int:
    if argv and argv[0] == "score":
        from colajax.cli import eval_score

        return eval_score.main(argv[1:])
    if argv and argv[0] == "diagnostics":
        from colajax.cli import eval_diagnostics

        return eval_diagnostics.main(argv[1:])
    args = parser().parse_args(argv)
    try:
        distributed.maybe_initialize(args.distributed)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        args.gen = gen_options(args)
        if args.all_budgets:
            from colajax.sweep import runner

            if args.step is not None:
                raise ValueError("--all-budgets evaluates every budget step; drop --step.")
            result = {"evaluated_steps": runner.evaluate_run(args.checkpoint, args, args.out)}
        else:
            result = run_benchmark(args)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"colajax eval: error: {err}", file=sys.stderr)
        return 1
    import jax

    if jax.process_index() == 0:  # one line per job, not per process
        print(json.dumps(result))
    return 0
