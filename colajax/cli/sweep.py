"""`colajax sweep plan | run | eval | report EXP`: FLOP-matched sweeps declared as data.

    colajax sweep plan experiments/paper_rq4.py                     # the table, no compute
    colajax sweep run experiments/sweep_cpu.py --local               # train here, resumable
    colajax sweep run experiments/paper_rq4.py --launcher slurm --dry-run -- LAUNCHER FLAGS
    colajax sweep eval experiments/sweep_cpu.py [--tasks ... --data ... --limit N]
    colajax sweep report experiments/sweep_cpu.py                   # CSV + PNGs + IsoFLOP fits

EXP is an experiment file exporting `get_sweep()` (colajax/sweep/spec.py). The sweep root
(`--root`, default runs/<sweep name>) holds one workdir per run, its budget-checkpoint
evaluations (`<run>/eval/step_<N>/`) and the report (`report/`). Rerunning a command skips
what is done (trained runs, evaluated steps).
"""

import argparse
import json
import sys

USAGE = "colajax sweep {plan|run|eval|report} EXP [--root DIR] [options]"


def _common(p: argparse.ArgumentParser) -> None:
    from colajax import distributed

    p.add_argument("experiment", help="experiment file with get_sweep(), optionally :arg")
    p.add_argument("--root", default=None, help="sweep root (default: runs/<sweep name>)")
    distributed.add_flag(p)


def _parser() -> argparse.ArgumentParser:
    from colajax.cli.options import add_generation_args

    p = argparse.ArgumentParser(prog="colajax sweep", usage=USAGE, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _common(sub.add_parser("plan", help="print the plan table (no compute)"))
    r = sub.add_parser("run", help="train every run (--local) or submit one job per run")
    _common(r)
    r.add_argument("--local", action="store_true", help="train here, sequentially")
    r.add_argument("--only", action="append", default=[], help="run name (repeatable)")
    r.add_argument("--launcher", default=None, help="submit one job per run: tpu_vm|xpk|slurm")
    r.add_argument("--dry-run", action="store_true", help="print the launcher commands")
    e = sub.add_parser("eval", help="evaluate every budget checkpoint not evaluated yet")
    _common(e)
    e.add_argument("--tasks", default=None, help="default: the bundled KJV tasks")
    e.add_argument("--data", default=None, help="task data (default: bundled)")
    e.add_argument("--task-data", action="append", default=[], help="TASK=SPEC")
    e.add_argument("--tfds-data-dir", default=None)
    e.add_argument("--limit", type=int, default=None, help="first N records per task")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--tokenizer", default=None)
    e.add_argument("--mesh", default="data=-1")
    e.add_argument("--only", action="append", default=[], help="run name (repeatable)")
    e.add_argument("--isoflop", action="store_true", help="also evaluate the IsoFLOP runs")
    e.add_argument("--no-progress", action="store_true")
    add_generation_args(e, seed=66)
    rep = sub.add_parser("report", help="CSV, PNGs and IsoFLOP fits under <root>/report")
    _common(rep)
    rep.add_argument("--loss-key", default=None, help="IsoFLOP loss (default: per family)")
    rep.add_argument("--paper", choices=("auto", "overlay", "off"), default="auto")
    return p


def _launch(sweep, root, args) -> int:
    """One job per run through `launch/sweep.py` (the repository's launchers, no JAX)."""
    import os

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(repo, "launch", "sweep.py")):
        raise FileNotFoundError("the launchers live in the repository's launch/; run from a clone")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from colajax.sweep import runner
    from launch import sweep as launch_sweep

    jobs = []
    for run in sweep.runs:
        if args.only and run.name not in args.only:
            continue
        r = runner.resolve(sweep, run, root)
        jobs.append((run.name, ["colajax", *runner.train_argv(sweep, r)]))
    return launch_sweep.submit(jobs, args.launcher, args.launcher_args, dry_run=args.dry_run)


def main(argv: list[str]) -> int:
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # after `--`: the launcher's flags
    args = _parser().parse_args(argv[:cut])
    args.launcher_args = argv[cut + 1 :]
    try:
        from colajax import distributed
        from colajax.sweep import runner
        from colajax.sweep.spec import load_sweep

        distributed.maybe_initialize(args.distributed)
        sweep = load_sweep(args.experiment)
        root = args.root or runner.default_root(sweep)
        if args.command == "plan":
            from colajax.sweep.plan import format_plan

            print(format_plan(runner.plan_rows(sweep, root)))
        elif args.command == "run":
            if args.launcher:
                return _launch(sweep, root, args)
            if not args.local:
                raise ValueError("say where: --local (train here) or --launcher NAME.")
            print(json.dumps(runner.run_local(sweep, root, only=args.only)))
        elif args.command == "eval":
            from colajax.cli.eval import eval_namespace

            ns = eval_namespace(args)
            evaluated = runner.evaluate_sweep(sweep, root, ns, args.only, args.isoflop)
            print(json.dumps(evaluated))
        else:
            from colajax.sweep.report import write_report

            keys = args.loss_key or {f: k for f, k in runner.DEFAULT_LOSS_KEYS.items()}
            result = write_report(root, sweep=sweep, loss_key=keys, paper=args.paper)
            for line in result["fit_lines"] + result["notes"]:
                print(line)
            print(json.dumps({k: result[k] for k in ("csv", "pngs", "fits", "rows")}))
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"colajax sweep {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0
