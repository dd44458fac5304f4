"""Gather a sweep directory into one CSV, draw its PNGs and fit its IsoFLOP curves.

Reads (layout of PLAN.md; every piece may be missing):

* `<root>/<run>/sweep_run.json`: the run's spec (`spec.write_manifest`; family, size, kind,
  n_params, budgets, steps, and optionally tokens_per_step). A `Sweep` passed in wins over it.
* `<root>/<run>/eval/step_<N>/summary.csv`: task accuracies (%) of checkpoint step N (rows
  `task,rows,accuracy`, plus `average`; `colajax eval` writes it);
* the run's `metrics.jsonl`: `<run>/prior/metrics.jsonl` (Cola, stage both), else
  `<run>/metrics.jsonl`, else any other under `<run>/` outside `vae/` and `eval/` (Stage 1 is not
  on the budget axis). Rows of one step are merged (later lines win, so a resumed run's re-logged
  steps replace the old ones); `eval/<term>` are held-out losses, `train/tokens`,
  `train/eflops_paper`, `train/eflops_full` the budget counters.

One CSV row per (run, step) for every evaluated step, every budget step reached, an IsoFLOP
run's final step, and (for a run without a spec) its newest held-out losses. Columns: family,
size, run, kind, n_params, budget_eflops (the nominal budget of that step, if known), step,
tokens, eflops_paper, eflops_full (logged at that step, else the run's constant per-step rate
x step, else from the manifest's tokens_per_step and N), each task's accuracy, average (the
summary's, else the mean of the tasks present), loss_step (the step of the held-out losses:
that step, else the nearest earlier eval) and the `eval/*` losses.
Empty cells are unknown.
"""

import csv
import glob
import json
import math
import os

from colajax.eval import tasks as tasks_lib
from colajax.sweep import budgets as budgets_lib
from colajax.sweep import isoflop
from colajax.sweep.spec import RESERVED_NAMES, Sweep, read_manifest

BASE_COLUMNS = (
    "family", "size", "run", "kind", "n_params", "budget_eflops", "step", "tokens",
    "eflops_paper", "eflops_full",
)  # fmt: skip
COUNTERS = ("train/tokens", "train/eflops_paper", "train/eflops_full")
CSV_NAME, FITS_NAME = "sweep.csv", "isoflop_fits.json"
_STEP_DIR = "step_"


# --- reading one run ----------------------------------------------------------------------


def metrics_file(run_dir: str) -> str | None:
    """The run's metrics.jsonl on the budget axis (see the module docstring), or None."""
    for rel in ("prior/metrics.jsonl", "metrics.jsonl"):
        path = os.path.join(run_dir, rel)
        if os.path.isfile(path):
            return path
    others = sorted(glob.glob(os.path.join(run_dir, "**", "metrics.jsonl"), recursive=True))
    skip = (os.sep + "vae" + os.sep, os.sep + "eval" + os.sep)
    others = [p for p in others if not any(s in p[len(run_dir) :] for s in skip)]
    return others[0] if others else None


def read_metrics(path: str | None) -> dict[int, dict]:
    """{step: merged row}; unreadable lines (a torn last write) are skipped."""
    rows: dict[int, dict] = {}
    if path is None:
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.setdefault(row["step"], {}).update(row)
    return rows


def read_summary(path: str) -> dict[str, float]:
    """{task: accuracy %} (and 'average') of an eval summary.csv."""
    out = {}
    with open(path, encoding="utf-8", newline="") as f:
        for rec in csv.DictReader(f):
            try:
                out[rec["task"]] = float(rec["accuracy"])
            except (KeyError, TypeError, ValueError):
                continue
    return out


def read_evals(run_dir: str) -> dict[int, dict[str, float]]:
    """{step: accuracies} of every `eval/step_<N>/summary.csv` of a run."""
    out = {}
    for path in glob.glob(os.path.join(run_dir, "eval", _STEP_DIR + "*", "summary.csv")):
        name = os.path.basename(os.path.dirname(path))[len(_STEP_DIR) :]
        if name.isdigit():
            out[int(name)] = read_summary(path)
    return out


def _rate(metrics: dict[int, dict], key: str) -> float | None:
    """Per-step rate of a cumulative counter (from the newest row that has it)."""
    for step in sorted(metrics, reverse=True):
        value = metrics[step].get(key)
        if step > 0 and isinstance(value, int | float):
            return value / step
    return None


def _counters(step: int, metrics: dict, info: dict) -> dict:
    row = metrics.get(step, {})
    out = {}
    for key in COUNTERS:
        value = row.get(key)
        if value is None and (rate := _rate(metrics, key)) is not None:
            value = rate * step
        out[key.split("/")[1]] = value
    tps, n = info.get("tokens_per_step"), info.get("n_params")
    if out["tokens"] is None and tps:
        out["tokens"] = step * tps
    if out["eflops_paper"] is None and out["tokens"] is not None and n:
        out["eflops_paper"] = budgets_lib.eflops_paper(out["tokens"], n)
    if out["tokens"] is not None:
        out["tokens"] = int(round(out["tokens"]))
    return out


def _losses(step: int, metrics: dict) -> tuple[int | None, dict]:
    """Held-out losses at `step`, else at the nearest earlier step that has them."""
    for s in sorted((s for s in metrics if s <= step), reverse=True):
        losses = {k: v for k, v in metrics[s].items() if k.startswith("eval/")}
        if losses:
            return s, losses
    return None, {}


def _n_params(info: dict, metrics: dict) -> float | None:
    """N of the budget axis: the spec's, else eflops_paper / (6 tokens) of a logged row."""
    if info.get("n_params"):
        return info["n_params"]
    for row in metrics.values():
        tokens, eflops = row.get("train/tokens"), row.get("train/eflops_paper")
        if tokens and eflops:
            return eflops * 1e18 / (6 * tokens)
    return None


def _budget_steps(info: dict, metrics: dict) -> dict[int, float | None]:
    """{step: nominal budget EFLOPs (None if unknown)} of a run's spec.

    Order of trust: the manifest's `schedule_steps` (the steps the trainer protected), the
    spec's `budget_steps`, an IsoFLOP run's `steps`, the budgets converted at the run's tokens
    per step and N (1-step resolution)."""
    budgets = list(info.get("budgets") or ())
    for key in ("schedule_steps", "budget_steps"):
        if info.get(key):
            steps = list(info[key])
            return dict(
                zip(
                    steps,
                    budgets if len(budgets) == len(steps) else [None] * len(steps),
                    strict=True,
                )
            )
    if info.get("kind") == "isoflop" and info.get("steps"):
        return {info["steps"]: budgets[0] if budgets else None}
    tps, n = info.get("tokens_per_step") or _rate(metrics, "train/tokens"), _n_params(info, metrics)
    if not budgets or not tps or not n:
        return {}
    steps = budgets_lib.eflops_to_steps(budgets, int(round(tps)), n)
    return dict(zip(steps, budgets, strict=True))


def run_rows(run_dir: str, info: dict) -> list[dict]:
    """CSV rows of one run directory (`info`: its spec fields, possibly empty)."""
    metrics = read_metrics(metrics_file(run_dir))
    evals = read_evals(run_dir)
    budget_of = _budget_steps(info, metrics)
    n_params = _n_params(info, metrics)
    last = max(metrics, default=-1)
    steps = set(evals) | {s for s in budget_of if s <= last}
    if not budget_of:  # no spec: the newest held-out losses stand for the run
        steps |= set(sorted(s for s, r in metrics.items() if any(k[:5] == "eval/" for k in r))[-1:])
    rows = []
    for step in sorted(steps):
        loss_step, losses = _losses(step, metrics)
        accs = dict(evals.get(step, {}))
        if not accs and not losses:
            continue
        if accs and "average" not in accs:
            accs["average"] = sum(accs.values()) / len(accs)
        rows.append(
            {
                "family": info.get("family", ""),
                "size": info.get("size", ""),
                "run": os.path.basename(os.path.normpath(run_dir)),
                "kind": info.get("kind", ""),
                "n_params": n_params,
                "budget_eflops": budget_of.get(step),
                "step": step,
                **_counters(step, metrics, info | {"n_params": n_params}),
                **accs,
                "loss_step": loss_step,
                **losses,
            }
        )
    return rows


# --- a whole sweep ---------------------------------------------------------------------------


def run_dirs(root: str, sweep: Sweep | None = None) -> dict[str, dict]:
    """{run dir: spec fields} of the sweep's runs (or, without one, every run-like subfolder)."""
    out = {}
    if sweep is not None:
        for run in sweep.runs:
            path = os.path.join(root, run.name)
            spec = {k: v for k, v in run.to_json().items() if v not in (None, [], "")}
            out[path] = (read_manifest(path) or {}) | spec
        return out
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        if name in RESERVED_NAMES or not os.path.isdir(path):
            continue
        manifest = read_manifest(path)
        if manifest is not None or os.path.isdir(os.path.join(path, "eval")) or metrics_file(path):
            out[path] = manifest or {}
    return out


def task_columns(rows: list[dict]) -> list[str]:
    """Task columns present: the benchmark's order first, then others sorted; 'average' last."""
    known = list(tasks_lib.TASKS) + list(getattr(tasks_lib, "BUNDLED_TASKS", {}))
    present = {k for r in rows for k in r if k not in BASE_COLUMNS}
    present -= {"loss_step", "average"} | {k for k in present if k.startswith("eval/")}
    ordered = [t for t in known if t in present] + sorted(present - set(known))
    return ordered + ["average"]


def gather(root: str, sweep: Sweep | None = None) -> tuple[list[dict], list[str]]:
    """(rows, columns) of every run of the sweep directory `root`."""
    rows = []
    for path, info in run_dirs(root, sweep).items():
        if os.path.isdir(path):
            rows += run_rows(path, info)
    losses = sorted({k for r in rows for k in r if k.startswith("eval/")})
    columns = [*BASE_COLUMNS, *task_columns(rows), "loss_step", *losses]
    return rows, columns


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def write_csv(rows: list[dict], columns: list[str], path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)
    return path


def family_loss_key(loss_key: str | dict, family: str) -> str:
    """The loss column of `family`: one key for all, or a {family: key} dict."""
    return loss_key if isinstance(loss_key, str) else loss_key.get(family, "eval/loss")


def isoflop_points(rows: list[dict], loss_key: str | dict) -> list[dict]:
    """IsoFLOP points (family, budget, N, loss) from the final-step rows of isoflop runs;
    `loss_key`: one column for every family or {family: column}."""
    points = []
    for r in rows:
        key = family_loss_key(loss_key, r.get("family", ""))
        if r.get("kind") == "isoflop" and r.get("budget_eflops") and r.get(key) is not None:
            points.append(
                {
                    "family": r["family"],
                    "budget_eflops": r["budget_eflops"],
                    "n_params": r["n_params"],
                    "loss": r[key],
                    "loss_key": key,
                }
            )
    return points


def write_report(
    root: str,
    out_dir: str | None = None,
    sweep: Sweep | None = None,
    *,
    loss_key: str | dict = "eval/loss",
    paper: str = "auto",
) -> dict:
    """Write `<out_dir>/sweep.csv`, the PNGs and `isoflop_fits.json` (default out_dir:
    `<root>/report`). `paper`: 'auto' | 'overlay' | 'off', the digitized paper curves (see
    `plots.plot_accuracy`). Returns {'csv', 'pngs', 'fits', 'fit_lines', 'rows', 'notes'}."""
    from colajax.sweep import plots  # matplotlib only when drawing

    if not os.path.isdir(root):
        raise FileNotFoundError(f"sweep directory {root} does not exist; run the sweep first")
    out_dir = out_dir or os.path.join(root, "report")
    rows, columns = gather(root, sweep)
    notes = [] if rows else [f"no evaluated or logged runs under {root}"]
    csv_path = write_csv(rows, columns, os.path.join(out_dir, CSV_NAME))
    tasks = [c for c in task_columns(rows) if any(r.get(c) is not None for r in rows)]
    pngs = plots.plot_accuracy(rows, tasks, out_dir, paper=paper)
    families = sorted({r["family"] for r in rows if r.get("family")})
    pngs += plots.plot_losses(rows, out_dir, {f: family_loss_key(loss_key, f) for f in families})
    points = isoflop_points(rows, loss_key)
    fits = isoflop.fit_all(points)
    keys = {p["family"]: p["loss_key"] for p in points}  # the column each family's fit used
    fits_path, lines = None, []
    if fits:
        fits_path = os.path.join(out_dir, FITS_NAME)
        with open(fits_path, "w", encoding="utf-8") as f:
            json.dump({"loss_key": keys, "families": fits}, f, indent=1)
        pngs += plots.plot_isoflop(fits, out_dir, keys)
        lines = isoflop.summary_lines(fits)
        notes += [f"{fam}: {n}" for fam, fit in fits.items() for n in fit["notes"]]
    elif any(r.get("kind") == "isoflop" for r in rows):
        notes.append(f"isoflop runs have no loss column {loss_key!r}; pass another --loss-key")
    return {
        "csv": csv_path,
        "pngs": pngs,
        "fits": fits_path,
        "fit_lines": lines,
        "rows": len(rows),
        "notes": notes,
    }
