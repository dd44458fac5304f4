"""IsoFLOP fits (Hoffmann et al. 2022, "Chinchilla", §3.2 Approach 2).

For each compute budget C (FLOPs = 6 N D), the held-out loss of the runs of several sizes N is
fitted with a parabola in log10 N; its vertex is the compute-optimal size N_opt(C), and
D_opt(C) = C / (6 N_opt) the matching token count. Across budgets, least squares in log-log
space give the power laws N_opt = a C^alpha and D_opt = b C^beta (alpha + beta = 1 by
construction of D_opt). A parabola that opens downwards, or fewer than 3 sizes at a budget,
gives no N_opt for that budget (noted in `notes`); fewer than 2 usable budgets, no power law.
"""

import math
from collections.abc import Sequence

import numpy as np

MIN_SIZES = 3


def fit_parabola(n_params: Sequence[float], losses: Sequence[float]) -> dict:
    """loss ~ a x^2 + b x + c with x = log10 N; `n_opt` = 10^(-b / 2a) (None unless a > 0)."""
    x = np.log10(np.asarray(n_params, np.float64))
    y = np.asarray(losses, np.float64)
    if x.size < MIN_SIZES or np.unique(x).size < MIN_SIZES:
        raise ValueError(f"a parabola needs >= {MIN_SIZES} distinct sizes, got {x.size}")
    a, b, c = np.polyfit(x, y, 2)
    if not a > 0:
        return {"coeffs": [float(a), float(b), float(c)], "n_opt": None, "loss_opt": None}
    x_opt = -b / (2 * a)
    return {
        "coeffs": [float(a), float(b), float(c)],
        "n_opt": float(10**x_opt),
        "loss_opt": float(c - b * b / (4 * a)),
    }


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> dict:
    """y = coefficient * x^exponent by least squares on (log10 x, log10 y)."""
    lx, ly = np.log10(np.asarray(x, np.float64)), np.log10(np.asarray(y, np.float64))
    if lx.size < 2 or np.unique(lx).size < 2:
        raise ValueError("a power law needs >= 2 distinct x values")
    slope, intercept = np.polyfit(lx, ly, 1)
    return {"exponent": float(slope), "coefficient": float(10**intercept)}


def fit_family(points: Sequence[dict]) -> dict:
    """Fits of one family from points {'budget_eflops', 'n_params', 'loss'} (rows with a
    missing or non-finite value are skipped)."""
    by_budget: dict[float, list[tuple[float, float]]] = {}
    for p in points:
        c, n, loss = p.get("budget_eflops"), p.get("n_params"), p.get("loss")
        if any(v is None or not math.isfinite(v) for v in (c, n, loss)) or c <= 0 or n <= 0:
            continue
        by_budget.setdefault(float(c), []).append((float(n), float(loss)))
    budgets, notes = [], []
    for c in sorted(by_budget):
        pts = sorted(by_budget[c])
        entry = {
            "budget_eflops": c,
            "budget_flops": c * 1e18,
            "n_params": [n for n, _ in pts],
            "losses": [loss for _, loss in pts],
        }
        if len({n for n, _ in pts}) < MIN_SIZES:
            notes.append(f"budget {c:.4g} EFLOPs: {len(pts)} size(s), need {MIN_SIZES} to fit")
        else:
            fit = fit_parabola(*zip(*pts, strict=True))
            entry |= {"parabola": fit["coeffs"], "n_opt": fit["n_opt"], "loss_opt": fit["loss_opt"]}
            if fit["n_opt"] is None:
                notes.append(f"budget {c:.4g} EFLOPs: the parabola opens downwards, no N_opt")
            else:
                entry["d_opt"] = entry["budget_flops"] / (6 * fit["n_opt"])
                lo, hi = pts[0][0], pts[-1][0]
                if not lo <= fit["n_opt"] <= hi:
                    notes.append(
                        f"budget {c:.4g} EFLOPs: N_opt {fit['n_opt']:.3g} lies outside the "
                        f"sizes trained ({lo:.3g}..{hi:.3g}); extend the ladder"
                    )
        budgets.append(entry)
    out: dict = {"budgets": budgets, "notes": notes}
    usable = [b for b in budgets if b.get("n_opt")]
    if len(usable) >= 2:
        flops_ = [b["budget_flops"] for b in usable]
        out["n_opt_law"] = fit_power_law(flops_, [b["n_opt"] for b in usable])
        out["d_opt_law"] = fit_power_law(flops_, [b["d_opt"] for b in usable])
    else:
        notes.append(f"{len(usable)} budget(s) with an N_opt; need 2 for the power laws")
    return out


def fit_all(points: Sequence[dict]) -> dict:
    """`fit_family` for each family of points with a 'family' key."""
    families = sorted({p["family"] for p in points})
    return {f: fit_family([p for p in points if p["family"] == f]) for f in families}


def summary_lines(fits: dict) -> list[str]:
    """Human-readable exponents: 'cola: N_opt ~ C^0.50, D_opt ~ C^0.50 (3 budgets)'."""
    lines = []
    for family, fit in fits.items():
        n_law, d_law = fit.get("n_opt_law"), fit.get("d_opt_law")
        used = sum(1 for b in fit["budgets"] if b.get("n_opt"))
        if n_law and d_law:
            lines.append(
                f"{family}: N_opt ~ C^{n_law['exponent']:.3f}, D_opt ~ C^{d_law['exponent']:.3f}"
                f" ({used} budgets)"
            )
        else:
            lines.append(f"{family}: no power law ({'; '.join(fit['notes']) or 'no data'})")
    return lines
