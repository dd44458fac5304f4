"""`colajax eval score`: re-score a generations JSONL file with the official rules.

    colajax eval score --task T --generations F.jsonl [--out DIR]

Each line of F.jsonl is one JSON object with `generation` (or `generate`), `ground_truth` (or
`answer`) and, for mmlu/obqa/race/siqa, `choices`. Prints exactly one JSON line
`{"task": T, "rows": N, "accuracy": pct}`; with `--out`, also writes `DIR/<T>_scored.jsonl`
(each row plus `correct`, `extracted`, `extracted_gt`). The input file is never modified.
"""

import argparse
import json
import os
import sys

from colajax.eval import scoring


def read_generations(path: str) -> list[dict]:
    """JSON objects of a JSONL file; errors name the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"generations file {path} not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object per line")
            rows.append((line_no, row))
    if not rows:
        raise ValueError(f"{path} holds no rows to score")
    return rows


def score_file(task: str, path: str, out_dir: str | None = None) -> dict:
    """Score a generations file; returns `{"task", "rows", "accuracy"}` (accuracy in %)."""
    if task not in scoring.ALL_TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(scoring.ALL_TASKS)}")
    scored = []
    for line_no, row in read_generations(path):
        try:
            scored.append({**row, **scoring.score_row(task, *scoring.row_fields(row))})
        except ValueError as err:
            raise ValueError(f"{path}:{line_no}: {err}") from None
    accuracy = 100.0 * sum(r["correct"] for r in scored) / len(scored)
    if out_dir is not None:
        out_path = os.path.join(out_dir, f"{task}_scored.jsonl")
        if os.path.exists(out_path) and os.path.samefile(out_path, path):
            raise ValueError(f"--out would overwrite the input {path}; choose another directory")
        os.makedirs(out_dir, exist_ok=True)
        with open(out_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in scored)
    return {"task": task, "rows": len(scored), "accuracy": round(accuracy, 4)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="colajax eval score", description="Score benchmark generations (official rules)."
    )
    parser.add_argument("--task", required=True, help=", ".join(scoring.ALL_TASKS))
    parser.add_argument("--generations", required=True, help="JSONL file of generations")
    parser.add_argument("--out", default=None, help="directory for <task>_scored.jsonl")
    args = parser.parse_args(argv)
    try:
        result = score_file(args.task, args.generations, args.out)
    except (OSError, ValueError) as err:
        print(f"colajax eval score: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
