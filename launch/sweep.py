"""Submit every run of a sweep, one job each, named after the run, through any launcher.

    python -m launch.sweep --runs runs.json --launcher slurm [--dry-run] -- \\
        --nodes 1 --gpus-per-node 8 --partition gpu --time 12:00:00

`runs.json` is a list of {"name": RUN, "argv": ["colajax", "train", ...]} (what `colajax sweep`
plans); the options after `--` go to the launcher unchanged. Per launcher a run becomes:
slurm: one sbatch job `--name RUN`; xpk: one workload `--name RUN`; tpu_vm: its own queued
TPU VM named <--name>-<RUN> (create, setup, run; wait for the queued resource to be ACTIVE
between create and setup, so use --dry-run to print the plan and run it step by step).
"""

import argparse
import json
import sys

from launch import common, slurm, tpu_vm, xpk

LAUNCHERS = ("slurm", "xpk", "tpu_vm")


def job_argvs(launcher: str, name: str, command: list[str], opts: list[str]) -> list[list[str]]:
    """The launcher argv(s) that submit one run."""
    if launcher in ("slurm", "xpk"):
        return [[*opts, "--name", name, "--", *command]]
    if launcher == "tpu_vm":
        base = argparse.ArgumentParser(add_help=False)
        base.add_argument("--name", required=True)
        known, rest = base.parse_known_args(opts)
        vm = [*rest, "--name", common.job_name(f"{known.name}-{name}"), "--run", name]
        return [["create", *vm], ["setup", *vm], ["run", *vm, "--", *command]]
    raise SystemExit(f"launch: unknown launcher {launcher!r}; use one of {LAUNCHERS}.")


def submit(runs, launcher: str, opts: list[str], dry_run: bool = False) -> int:
    """Submit `runs` ([(name, colajax argv), ...]) with `launcher`; returns 0 or the failure."""
    module = {"slurm": slurm, "xpk": xpk, "tpu_vm": tpu_vm}.get(launcher)
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise SystemExit("launch: run names must be unique (they name the jobs).")
    for name, command in runs:
        for argv in job_argvs(launcher, name, list(command), list(opts)):
            if dry_run:  # before the `--` that starts the colajax command
                cut = argv.index("--") if "--" in argv else len(argv)
                argv = [*argv[:cut], "--dry-run", *argv[cut:]]
            rc = module.main(argv)
            if rc:
                return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = []
    if "--" in argv:
        i = argv.index("--")
        argv, opts = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m launch.sweep", description=__doc__)
    p.add_argument("--runs", required=True, help='JSON list of {"name", "argv"}')
    p.add_argument("--launcher", choices=LAUNCHERS, required=True)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    with open(args.runs, encoding="utf-8") as f:
        runs = [(r["name"], r["argv"]) for r in json.load(f)]
    return submit(runs, args.launcher, opts, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
