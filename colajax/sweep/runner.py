"""Running a declared sweep: resolve each run's config through its family, plan it, train it
(here, in this process, or as one launcher job per run) and evaluate its budget checkpoints.

A run's config is the sweep experiment's `get_config(arg)` + `model=<family>` + the run's
overrides + `train.steps` (the run's steps, else its last budget step) + `train.budget_steps`
(its resolved budget checkpoints) + `flops.paper_n` (its N). `{root}` in an override is
replaced by the sweep root, so runs can share work (e.g. Cola IsoFLOP runs start Stage 2 from
one Stage-1 run: `stage=prior`, `stage2.init_from={root}/cola/vae`). Runs execute in the
declared order.

Directory layout: `<root>/<run>/` is the run's workdir (plus `sweep_run.json`, its manifest,
with `done` once trained); `<root>/<run>/eval/step_<N>/` the `colajax eval` outputs of budget
step N; `<root>/report/` the report.
"""

import argparse
import dataclasses
import os
import time
from typing import Any

from colajax import config as config_lib
from colajax import families
from colajax.sweep import budgets as budgets_lib
from colajax.sweep import plan as plan_lib
from colajax.sweep.spec import RunSpec, Sweep, read_manifest, write_manifest

DEFAULT_ROOT = "runs"
DEFAULT_LOSS_KEYS = {"cola": "eval/fm", "ar": "eval/loss", "llada": "eval/loss"}


@dataclasses.dataclass
class ResolvedRun:
    """A run with its config, family, N and budget schedule."""

    spec: RunSpec
    workdir: str
    overrides: list[str]
    config: Any
    family: Any
    n_params: float
    schedule: budgets_lib.BudgetSchedule

    @property
    def tokens_per_step(self) -> int:
        tr = self.config.train
        return budgets_lib.tokens_per_step(tr.batch_size, tr.seq_len)

    def manifest_extra(self) -> dict:
        return {
            "n_params": self.n_params,
            "tokens_per_step": self.tokens_per_step,
            "schedule_steps": list(self.schedule.steps),
            "config_overrides": self.overrides,
        }


def default_root(sweep: Sweep) -> str:
    return os.path.join(DEFAULT_ROOT, sweep.name)


def resolve(sweep: Sweep, run: RunSpec, root: str) -> ResolvedRun:
    """The run's config (validated), family, N (the run's, else the family's paper N) and its
    budget schedule (in main-stage steps)."""
    workdir = os.path.join(root, run.name)
    base = [o.replace("{root}", root) for o in run.config_overrides()]
    config = config_lib.load_config(sweep.experiment, base)
    family = families.of_config(config)
    n = float(run.n_params or family.paper_n(config))
    tps = budgets_lib.tokens_per_step(config.train.batch_size, config.train.seq_len)
    multiple = int(config.train.budget_step_multiple)
    schedule = plan_lib.schedule_of(run, tps, n, multiple)
    steps = run.steps or schedule.last_step  # by default a run stops at its last budget
    extra = [f"train.steps={steps}"]
    extra += ["train.budgets=()", f"train.budget_steps={tuple(schedule.steps)!r}"]
    extra += [f"flops.paper_n={n!r}"]
    overrides = base + extra
    config = config_lib.load_config(sweep.experiment, overrides)
    return ResolvedRun(run, workdir, overrides, config, family, n, schedule)


def plan_rows(sweep: Sweep, root: str) -> list[dict]:
    """One `plan.run_plan` row per run (steps, tokens, paper and full EFLOPs, budgets)."""
    rows = []
    for run in sweep.runs:
        r = resolve(sweep, run, root)
        tr = r.config.train
        full = r.family.train_flops(r.config)["total"]
        rows.append(
            plan_lib.run_plan(
                run,
                batch_size=tr.batch_size,
                seq_len=tr.seq_len,
                n_params=r.n_params,
                full_flops_per_step=full,
                train_steps=int(tr.steps),
                step_multiple=int(tr.budget_step_multiple),
            )
        )
    return rows


def is_done(workdir: str) -> bool:
    return bool((read_manifest(workdir) or {}).get("done"))


def train_argv(sweep: Sweep, r: ResolvedRun) -> list[str]:
    """The `colajax train` arguments of a run (what a launcher job runs)."""
    return [
        "train",
        "--config",
        sweep.experiment,
        "--workdir",
        r.workdir,
        *(f"--config.{o}" for o in r.overrides),
    ]


def run_local(sweep: Sweep, root: str, only=(), log=print) -> list[dict]:
    """Train every run (or those in `only`) here, in order; finished runs are skipped, an
    interrupted one resumes from its newest checkpoint."""
    from colajax.train import trainer

    out = []
    for run in sweep.runs:
        if only and run.name not in only:
            continue
        r = resolve(sweep, run, root)
        if is_done(r.workdir):
            log(f"[sweep] {run.name}: done, skipped")
            out.append({"run": run.name, "status": "skipped"})
            continue
        write_manifest(r.workdir, run, **r.manifest_extra())
        t0 = time.perf_counter()
        result = trainer.train(r.config, r.workdir)
        if result["status"] != "done":
            log(f"[sweep] {run.name}: {result['status']} at step {result['step']}; rerun resumes")
            out.append({"run": run.name, "status": result["status"]})
            break
        write_manifest(r.workdir, run, **r.manifest_extra(), done=True)
        minutes = (time.perf_counter() - t0) / 60
        log(f"[sweep] {run.name}: trained ({minutes:.1f} min)")
        out.append({"run": run.name, "status": "done", "minutes": minutes})
    return out


def budget_steps_of(workdir: str) -> list[int]:
    """The budget checkpoint steps of a run present on disk: its sweep manifest's, else those
    its newest checkpoint's meta records (`train.budgets` / `budget_steps` of any run)."""
    from colajax import checkpoint, restore

    root = restore.checkpoint_root(workdir)
    on_disk = checkpoint.all_steps(root)
    steps = (read_manifest(workdir) or {}).get("schedule_steps")
    if not steps and on_disk:
        steps = checkpoint.read_info(root, on_disk[-1])[2].get("budget_steps") or []
    return [s for s in steps or [] if s in set(on_disk)]


def evaluate_sweep(sweep: Sweep, root: str, eval_args, only=(), isoflop=False, log=print):
    """`evaluate_run` for every trained checkpoint run (and IsoFLOP runs with `isoflop`; their
    report uses held-out losses) -> {run: [steps evaluated now]}."""
    out = {}
    for run in sweep.runs:
        workdir = os.path.join(root, run.name)
        if (only and run.name not in only) or (run.kind == "isoflop" and not isoflop):
            continue
        if not os.path.isdir(workdir):
            log(f"[sweep] {run.name}: not trained yet, skipped")
            continue
        out[run.name] = evaluate_run(workdir, eval_args, log=log)
    return out


def evaluate_run(workdir: str, eval_args, out_root: str | None = None, log=print) -> list[int]:
    """`colajax eval` of every budget checkpoint of a run not evaluated yet, into
    `<out_root>/step_<N>/` (default `<workdir>/eval`), in this process: the compiled samplers
    are reused across steps. Returns the steps evaluated now."""
    from colajax.eval import benchmark

    out_root = out_root or os.path.join(workdir, "eval")
    steps = budget_steps_of(workdir)
    if not steps:
        raise ValueError(
            f"{workdir} has no budget checkpoints; train with config.train.budgets (or "
            "budget_steps), or evaluate one step with --step N."
        )
    done = []
    for step in steps:
        out = os.path.join(out_root, f"step_{step}")
        if os.path.isfile(os.path.join(out, "summary.csv")):
            continue
        args = argparse.Namespace(**{**vars(eval_args), "checkpoint": workdir, "step": step})
        args.out = out
        result = benchmark.run_benchmark(args)
        log(f"[sweep] {os.path.basename(workdir)} step {step}: average {result['average']:.2f}")
        done.append(step)
    return done
