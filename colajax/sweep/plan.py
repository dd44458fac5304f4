"""The plan of a sweep as a table: what each run trains, and where its budget checkpoints are.

`run_plan` needs only numbers (the caller resolves a run's config through the model families:
its N, its full analytic FLOPs per step, its training steps), so it is testable without models:

    row = run_plan(run, batch_size=1408, seq_len=512, n_params=1.8e9,
                   full_flops_per_step=flops.stage2_flops(...)["total"], train_steps=250_000)
    print(format_plan([row, ...]))
"""

from colajax.sweep import budgets as budgets_lib
from colajax.sweep.spec import RunSpec

PLAN_COLUMNS = (
    "run", "family", "size", "kind", "n_params", "batch", "seq_len", "steps", "tokens",
    "eflops_paper", "eflops_full", "budgets",
)  # fmt: skip


def schedule_of(run: RunSpec, tps: int, n_params: float, step_multiple: int = 1):
    """The run's BudgetSchedule (its N: `run.n_params`, else `n_params`)."""
    n = run.n_params or n_params
    if run.budget_steps:
        return budgets_lib.BudgetSchedule.from_steps(run.budget_steps, tps, n)
    if run.kind == "isoflop" and run.steps:
        return budgets_lib.BudgetSchedule.from_steps([run.steps], tps, n)
    return budgets_lib.BudgetSchedule.from_eflops(run.budgets, tps, n, step_multiple=step_multiple)


def run_plan(
    run: RunSpec,
    *,
    batch_size: int,
    seq_len: int,
    n_params: float,
    full_flops_per_step: float | None = None,
    train_steps: int | None = None,
    step_multiple: int = 1,
) -> dict:
    """One plan row: the run trains `run.steps`, else `train_steps`, else to its last budget."""
    tps = budgets_lib.tokens_per_step(batch_size, seq_len)
    sched = schedule_of(run, tps, n_params, step_multiple)
    steps = run.steps or train_steps or sched.last_step
    if sched.last_step > steps:
        raise ValueError(
            f"run {run.name!r}: budget step {sched.last_step} is after its last training step "
            f"{steps}; raise the run's steps or drop that budget"
        )
    return {
        "run": run.name,
        "family": run.family,
        "size": run.size,
        "kind": run.kind,
        "n_params": sched.n_params,
        "batch": batch_size,
        "seq_len": seq_len,
        "steps": steps,
        "tokens": steps * tps,
        "eflops_paper": budgets_lib.eflops_paper(steps * tps, sched.n_params),
        "eflops_full": None if full_flops_per_step is None else steps * full_flops_per_step / 1e18,
        "schedule": sched,
    }


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_plan(rows: list[dict]) -> str:
    """The runs table, then each run's budget checkpoints (k, step, tokens, EFLOPs to 4 s.f.)."""
    head = [c for c in PLAN_COLUMNS if c != "budgets"] + ["budgets"]
    body = [[_fmt(r[c]) for c in head[:-1]] + [str(len(r["schedule"].steps))] for r in rows]
    out = _table(head, body)
    for r in rows:
        out += ["", f"budget checkpoints of {r['run']} (N = {r['n_params']:.4g}):"]
        budget_rows = [
            [str(b["k"]), str(b["step"]), str(b["tokens"]), b["label"]]
            for b in r["schedule"].rows()
        ]
        out += _table(["k", "step", "tokens", "EFLOPs"], budget_rows)
    return "\n".join(out)
