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
from colajax.eval import tasks
from colajax.eval.benchmark import run_benchmark


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colajax eval",
        description="Run the paper's generative benchmark from a checkpoint. Subcommands: "
        "`colajax eval score ...` re-scores generations; `colajax eval diagnostics ...` reports "
        "VAE/prior diagnostics on held-out text.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint root (training or import-hf)")
    p.add_argument("--tasks", required=True, help=f"comma-separated, from {','.join(tasks.TASKS)}")
    p.add_argument("--data", required=True, help="directory of <task>.jsonl, or 'tfds'")
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
    p.add_argument("--steps", type=int, default=16, help="Euler steps per block")
    p.add_argument("--cfg", type=float, default=7.0, help="classifier-free guidance scale")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (benchmark)")
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=66, help="noise seed (per record number)")
    p.add_argument("--tokenizer", default=None, help="default: the experiment's tokenizer")
    p.add_argument("--mesh", default="data=-1", help="e.g. data=-1, fsdp=8, data=2,tensor=4")
    p.add_argument(
        "--dit-bf16-inputs",
        choices=("auto", "on", "off"),
        default="auto",
        help="official bf16 rounding of DiT inputs (auto: on for import-hf)",
    )
    p.add_argument(
        "--keep-after-eos",
        action="store_true",
        help="keep text after EOS (official harness); default: cut at EOS",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    distributed.add_flag(p)
    return p


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
        result = run_benchmark(args)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"colajax eval: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
