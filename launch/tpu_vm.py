"""Cloud TPU VM slices with gcloud: create, set up, run detached, tail logs, stop, delete.

    python -m launch.tpu_vm create --name cola --zone us-east5-a --type v5p-128 --mode spot
    python -m launch.tpu_vm setup  --name cola --zone us-east5-a            # this commit
    python -m launch.tpu_vm run    --name cola --zone us-east5-a --run cola2b -- \\
        colajax train --config experiments/cola_2b.py --workdir gs://BUCKET/cola2b
    python -m launch.tpu_vm logs   --name cola --zone us-east5-a --run cola2b
    python -m launch.tpu_vm stop   --name cola --zone us-east5-a --run cola2b  # SIGTERM: saves
    python -m launch.tpu_vm delete --name cola --zone us-east5-a --mode spot

`--dry-run` prints the exact commands. `setup` ships `git archive` of the commit (default: HEAD)
to every worker (or clones `--repo` there) into ~/colajax/<commit>, with a venv holding
requirements-tpu.lock; `run` starts the same command on every worker (`--worker=all`),
detached, with a log file per worker (~/colajax/logs/<run>.<hostname>.log) and a pid file for
`stop`. Multi-slice (`--num-slices N`, queued resources) nodes are <name>-0 .. <name>-N-1.
"""

import argparse
import shlex
import sys

from launch import common

MODES = ("on-demand", "spot", "queued", "queued-spot")
RUNTIME = {  # default TPU VM software version per family
    "v4": "tpu-ubuntu2204-base",
    "v5e": "v2-alpha-tpuv5-lite",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
HOME = "~/colajax"


def _gcloud(args, *rest: str) -> list[str]:
    cmd = ["gcloud", "compute", "tpus", *rest, f"--zone={args.zone}"]
    return cmd + ([f"--project={args.project}"] if args.project else [])


def nodes(args) -> list[str]:
    return (
        [args.name]
        if args.num_slices == 1
        else [f"{args.name}-{i}" for i in range(args.num_slices)]
    )


def ssh(args, node: str, script: str, worker: str = "all") -> list[str]:
    return _gcloud(args, "tpu-vm", "ssh", node, f"--worker={worker}", f"--command={script}")


def create_cmds(args) -> list[list[str]]:
    family = args.type.split("-")[0]
    version = args.version or RUNTIME.get(family)
    if not version:
        raise SystemExit(f"launch: no default --version for {args.type}; pass one.")
    spot = ["--spot"] if args.mode.endswith("spot") else []
    if args.mode.startswith("queued"):
        node = [f"--node-id={args.name}"]
        if args.num_slices > 1:
            node = [f"--node-count={args.num_slices}", f"--node-prefix={args.name}"]
        cmd = _gcloud(args, "queued-resources", "create", args.name)
        return [cmd + node + [f"--accelerator-type={args.type}", f"--runtime-version={version}"]
                + spot]  # fmt: skip
    if args.num_slices > 1:
        raise SystemExit("launch: multi-slice TPU VMs need --mode queued or queued-spot.")
    cmd = _gcloud(args, "tpu-vm", "create", args.name)
    return [cmd + [f"--accelerator-type={args.type}", f"--version={version}"] + spot]


def setup_script(commit: str, repo: str | None, archive: str | None, python: str) -> str:
    dest = f"{HOME}/{commit}"
    if repo:
        fetch = (
            f"if [ ! -d {dest}/.git ]; then git clone --quiet {shlex.quote(repo)} {dest}; fi; "
            f"git -C {dest} fetch --quiet origin && git -C {dest} checkout --quiet --force {commit}"
        )
    else:
        fetch = f"rm -rf {dest} && mkdir -p {dest} && tar -xzf ~/{archive} -C {dest}"
    return (
        "set -euo pipefail; "
        f"command -v {python} >/dev/null || (sudo apt-get update -qq && "
        f"sudo apt-get install -y -qq {python} {python}-venv); "
        f"mkdir -p {HOME}/logs; {fetch}; "
        f"{python} -m venv {dest}/.venv; "
        f"{dest}/.venv/bin/pip install -q -r {dest}/requirements-tpu.lock; "
        f"{dest}/.venv/bin/pip install -q --no-deps -e {dest}; "
        f"echo colajax {commit} ready on $(hostname)"
    )


def setup_cmds(args, commit: str) -> list[list[str]]:
    cmds, archive = [], None
    if not args.repo:
        archive = f"colajax-{commit}.tar.gz"
        local = f"/tmp/{archive}"
        cmds.append(["git", "-C", common.REPO, "archive", "--format=tar.gz", f"--output={local}",
                     commit])  # fmt: skip
        for node in nodes(args):
            cmds.append(
                _gcloud(args, "tpu-vm", "scp", local, f"{node}:~/{archive}", "--worker=all")
            )
    script = setup_script(commit, args.repo, archive, args.python)
    return cmds + [ssh(args, node, script) for node in nodes(args)]


def run_script(commit: str, run: str, command: list[str], env: dict[str, str]) -> str:
    log = f"{HOME}/logs/{run}.$(hostname).log"
    return (
        f"set -euo pipefail; mkdir -p {HOME}/logs; cd {HOME}/{commit}; "
        f"{common.exports(env)}"
        f"nohup setsid .venv/bin/{shlex.join(command)} > {log} 2>&1 < /dev/null & "
        f"echo $! > {HOME}/logs/{run}.pid; echo started {run} on $(hostname): {log}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m launch.tpu_vm", description=__doc__)
    p.add_argument("action", choices=("create", "setup", "run", "logs", "stop", "delete"))
    p.add_argument("--name", required=True, help="TPU VM (or queued resource) name")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default=None)
    p.add_argument("--type", default="v5p-8", help="accelerator type, e.g. v5p-128, v6e-64")
    p.add_argument("--mode", choices=MODES, default="on-demand")
    p.add_argument("--version", default=None, help="TPU software version (default per type)")
    p.add_argument("--num-slices", type=int, default=1)
    p.add_argument("--commit", default="HEAD", help="commit every worker runs (default HEAD)")
    p.add_argument("--repo", default=None, help="git URL to clone on the workers (else scp)")
    p.add_argument("--python", default="python3.11")
    p.add_argument("--run", default="colajax", help="run name: log and pid file names")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the job")
    p.add_argument("--worker", default="0", help="logs: worker to tail (or 'all')")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    runner = common.Runner(args.dry_run)
    run = common.job_name(args.run, 60)
    if args.action == "create":
        cmds = create_cmds(args)
    elif args.action == "delete":
        if args.mode.startswith("queued"):
            cmds = [_gcloud(args, "queued-resources", "delete", args.name) + ["--force", "--quiet"]]
        else:
            cmds = [_gcloud(args, "tpu-vm", "delete", args.name) + ["--quiet"]]
    elif args.action == "logs":
        tail = f"tail -n 200 -F {HOME}/logs/{run}.*.log"
        cmds = [ssh(args, node, tail, args.worker) for node in nodes(args)[:1]]
    elif args.action == "stop":
        stop = f"kill -TERM $(cat {HOME}/logs/{run}.pid) && echo SIGTERM sent on $(hostname)"
        cmds = [ssh(args, node, stop) for node in nodes(args)]
    else:
        commit = common.git_commit(args.commit)
        if args.action == "setup":
            cmds = setup_cmds(args, commit)
        else:
            job = common.with_slices(common.colajax_command(command), args.num_slices)
            script = run_script(commit, run, job, common.parse_env(args.env))
            cmds = [ssh(args, node, script) for node in nodes(args)]
    for cmd in cmds:
        runner.run(cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
