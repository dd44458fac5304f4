"""PNGs of a sweep report (matplotlib, Agg canvas: no display, no pyplot global state).

* `accuracy_tasks.png`: one panel per task (+ the average), accuracy (%) vs paper EFLOPs (log
  x), one line per checkpoint run, coloured by family; `accuracy_average.png`: the average only.
* The paper's digitized Fig. 10 (`paper_rq4.csv`, Appendix A of the paper digest: x = 77.86 k
  EFLOPs; occluded and derived cells are empty, `~` readings are kept and listed in `approx`)
  is drawn dashed in the same panels when the sweep's EFLOPs overlap the paper's range
  (`paper='auto'`, or always with 'overlay'), else in `accuracy_paper_rq4.png` beside them.
* `loss_vs_compute.png`: each family's held-out loss vs paper EFLOPs (one panel per family).
* `isoflop_<family>.png`: held-out loss vs N per budget with the fitted parabolas, and N_opt /
  D_opt vs compute with their power laws.
"""

import csv
import math
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from colajax.sweep import budgets as budgets_lib

PAPER_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_rq4.csv")
PAPER_TASKS = (
    "lambada", "mmlu", "siqa", "squad", "story_cloze", "obqa", "race", "hellaswag", "average"
)  # fmt: skip
FAMILY_COLORS = {"cola": "tab:blue", "ar": "tab:orange", "llada": "tab:green"}
LINESTYLES = ("-", "-.", ":", (0, (5, 1)))


def paper_rows(path: str = PAPER_CSV) -> list[dict]:
    """The digitized paper curves as report rows (family, run='paper', step, eflops_paper,
    task accuracies; missing cells are absent)."""
    per_step = budgets_lib.eflops_per_step(
        budgets_lib.tokens_per_step(budgets_lib.PAPER_BATCH_SIZE, budgets_lib.PAPER_SEQ_LEN)
    )
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for rec in csv.DictReader(f):
            step = int(rec["step"])
            row = {"family": rec["family"], "run": "paper", "step": step}
            row["eflops_paper"] = step * per_step
            row |= {t: float(rec[t]) for t in PAPER_TASKS if rec.get(t)}
            rows.append(row)
    return rows


def _figure(n_panels: int, ncols: int, size=(4.2, 3.2), top_in: float = 0.9):
    """A figure of n panels with fixed margins in inches (`top_in`: room for legend/title);
    a layout engine would measure every tick label (seconds per figure)."""
    nrows = math.ceil(n_panels / ncols)
    width, height = size[0] * ncols, size[1] * nrows + top_in
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.2 / width,
        bottom=0.6 / height,
        top=1 - top_in / height,
        wspace=0.35,
        hspace=0.6,
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _legend(fig, axes) -> None:
    """One legend for the figure (every line label once), above the panels."""
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()), list(seen), loc="upper center", ncol=min(6, len(seen)),
            fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1 - 0.05 / fig.get_figheight()),
        )  # fmt: skip


def _series(rows: list[dict], task: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        x, y = r.get("eflops_paper"), r.get(task)
        if x is not None and y is not None and x > 0:
            out.setdefault((r.get("family") or "?", r["run"]), []).append((x, y))
    return {k: sorted(v) for k, v in sorted(out.items())}


def _draw(ax, rows, task, paper, title=True, ylabel="accuracy (%)"):
    styles: dict[str, int] = {}
    for (family, run), pts in _series(rows, task).items():
        k = styles.setdefault(family, 0)
        styles[family] += 1
        xs, ys = zip(*pts, strict=True)
        ax.plot(
            xs,
            ys,
            marker="o",
            ms=3,
            ls=LINESTYLES[k % len(LINESTYLES)],
            color=FAMILY_COLORS.get(family, "tab:gray"),
            label=run if run != family else family,
        )
    for (family, _), pts in _series(paper, task).items():
        xs, ys = zip(*pts, strict=True)
        color = FAMILY_COLORS.get(family, "tab:gray")
        ax.plot(xs, ys, ls="--", lw=1, alpha=0.6, color=color, label=f"paper {family}")
    ax.set_xscale("log")
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(task)
    ax.set_xlabel("EFLOPs (6 N D)")
    ax.set_ylabel(ylabel)


def _overlaps(rows: list[dict], paper: list[dict]) -> bool:
    xs = [r["eflops_paper"] for r in rows if r.get("eflops_paper")]
    px = [r["eflops_paper"] for r in paper]
    return bool(xs) and max(xs) >= min(px) and min(xs) <= max(px)


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=110)
    return path


def plot_accuracy(rows: list[dict], tasks: list[str], out_dir: str, paper: str = "auto"):
    """Accuracy PNGs of the non-IsoFLOP runs (see the module docstring); returns their paths."""
    if paper not in ("auto", "overlay", "off"):
        raise ValueError(f"paper must be auto|overlay|off, got {paper!r}")
    rows = [r for r in rows if r.get("kind") != "isoflop"]
    tasks = [t for t in tasks if _series(rows, t)]
    if not tasks:
        return []
    os.makedirs(out_dir, exist_ok=True)
    digitized = paper_rows() if paper != "off" else []
    overlay = paper == "overlay" or (paper == "auto" and _overlaps(rows, digitized))
    ref = digitized if overlay else []
    fig, axes = _figure(len(tasks), min(3, len(tasks)))
    for ax, task in zip(axes, tasks, strict=True):
        _draw(ax, rows, task, ref)
    _legend(fig, axes)
    paths = [_save(fig, os.path.join(out_dir, "accuracy_tasks.png"))]
    if "average" in tasks:
        fig, axes = _figure(1, 1, size=(6, 4))
        _draw(axes[0], rows, "average", ref, title=False)
        axes[0].set_title("task average", fontsize=10)
        _legend(fig, axes)
        paths.append(_save(fig, os.path.join(out_dir, "accuracy_average.png")))
    if digitized and not overlay:
        fig, axes = _figure(len(PAPER_TASKS), 3)
        for ax, task in zip(axes, PAPER_TASKS, strict=True):
            _draw(ax, [], task, digitized)
        _legend(fig, axes)
        fig.text(0.01, 0.99, "paper Fig. 10 (digitized), 2B models", va="top", fontsize=9)
        paths.append(_save(fig, os.path.join(out_dir, "accuracy_paper_rq4.png")))
    return paths


def plot_losses(rows: list[dict], out_dir: str, keys: dict[str, str]) -> list[str]:
    """`loss_vs_compute.png`: each family's held-out loss (`keys[family]`, e.g. Cola's eval/fm)
    vs paper EFLOPs at its budget checkpoints, one panel per family (the families' losses are
    different quantities); [] when no run logged one."""
    rows = [r for r in rows if r.get("kind") != "isoflop"]
    panels = []
    for family, key in sorted(keys.items()):
        own = [r for r in rows if r.get("family") == family]
        if _series(own, key):
            panels.append((family, key, own))
    if not panels:
        return []
    os.makedirs(out_dir, exist_ok=True)
    fig, axes = _figure(len(panels), min(3, len(panels)))
    for ax, (family, key, own) in zip(axes, panels, strict=True):
        _draw(ax, own, key, [], title=False, ylabel=f"held-out {key}")
        ax.set_title(family)
    _legend(fig, axes)
    return [_save(fig, os.path.join(out_dir, "loss_vs_compute.png"))]


def _law_panel(ax, budgets, key, law, label):
    pts = [(b["budget_flops"], b[key]) for b in budgets if b.get(key)]
    if pts:
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, "o", color="tab:blue")
    if law and pts:
        grid = np.geomspace(min(xs), max(xs), 50)
        ax.plot(grid, law["coefficient"] * grid ** law["exponent"], "--", color="tab:red")
        label += f" ~ C^{law['exponent']:.3f}"
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(label)
    ax.set_xlabel("compute C (FLOPs)")
    ax.grid(True, which="major", alpha=0.3)


def plot_isoflop(fits: dict, out_dir: str, loss_key: str | dict = "eval/loss") -> list[str]:
    """One `isoflop_<family>.png` per fitted family; returns their paths. `loss_key`: the loss
    column (one for all or {family: column}), for the axis label."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for family, fit in fits.items():
        budgets = fit["budgets"]
        if not budgets:
            continue
        fig, (ax, ax_n, ax_d) = _figure(3, 3, size=(4.5, 3.6), top_in=0.4)
        colors = [_budget_color(i, len(budgets)) for i in range(len(budgets))]
        for b, color in zip(budgets, colors, strict=True):
            ns, losses = b["n_params"], b["losses"]
            ax.plot(ns, losses, "o", color=color, label=f"{b['budget_flops']:.2e} FLOPs")
            if b.get("parabola"):
                grid = np.geomspace(min(ns) / 1.3, max(ns) * 1.3, 60)
                ax.plot(grid, np.polyval(b["parabola"], np.log10(grid)), "-", color=color)
            if b.get("n_opt"):
                ax.plot([b["n_opt"]], [b["loss_opt"]], "*", ms=10, color=color)
        ax.set_xscale("log")
        ax.set_xlabel("parameters N")
        key = loss_key if isinstance(loss_key, str) else loss_key.get(family, "loss")
        ax.set_ylabel(f"held-out {key}")
        ax.set_title(f"{family}: IsoFLOP curves")
        ax.legend(fontsize=7)
        ax.grid(True, which="major", alpha=0.3)
        _law_panel(ax_n, budgets, "n_opt", fit.get("n_opt_law"), "N_opt")
        _law_panel(ax_d, budgets, "d_opt", fit.get("d_opt_law"), "D_opt")
        paths.append(_save(fig, os.path.join(out_dir, f"isoflop_{family}.png")))
    return paths


def _budget_color(i: int, n: int):
    """The i-th of n colours along viridis (budgets from small to large)."""
    return colormaps["viridis"](0.1 + 0.8 * i / max(1, n - 1))
