"""A colajax workload on GKE TPUs with xpk, in an image that contains this exact commit.

    python -m launch.xpk --cluster C --tpu-type v5p-128 --num-slices 2 --name cola2b \\
        --image-repo us-docker.pkg.dev/PROJECT/colajax/colajax -- \\
        colajax train --config experiments/cola_2b.py --workdir gs://BUCKET/cola2b

Default (`--image-repo`): `git archive` of the commit (default HEAD) is the docker build
context of launch/Dockerfile (python 3.11 + requirements-tpu.lock + this colajax), tagged
<repo>:<commit> and pushed; the workload runs that image. `--script-dir` instead lets xpk build
the image: the archive is unpacked into a directory that xpk copies onto `--base-image`, and
the command installs requirements-tpu.lock first. `--image IMAGE` runs an image you built.
Multi-slice: `--num-slices N` (xpk sets the MEGASCALE_* variables; colajax then initialises
jax.distributed itself and the launcher adds --config.mesh.num_slices=N). `--dry-run` prints
the exact commands; nothing imports JAX.
"""

import argparse
import os
import shlex
import sys

from launch import common


def build_cmds(args, commit: str) -> tuple[list[tuple[list[str], dict]], str, list[str]]:
    """(commands with Runner kwargs, image flag value, xpk image flags) for the chosen mode."""
    tar = f"/tmp/colajax-{commit}.tar"
    archive = ["git", "-C", common.REPO, "archive", "--format=tar", f"--output={tar}", commit]
    if args.image:
        return [], args.image, ["--docker-image", args.image]
    if args.script_dir:
        folder = f"/tmp/colajax-{commit}"
        cmds = [
            (archive, {}),
            (["mkdir", "-p", folder], {}),
            (["tar", "-xf", tar, "-C", folder], {}),
        ]
        return cmds, folder, ["--base-docker-image", args.base_image, "--script-dir", folder]
    if not args.image_repo:
        raise SystemExit("launch: pass --image-repo REGISTRY/PATH, --image IMAGE or --script-dir.")
    tag = f"{args.image_repo}:{commit[:12]}"
    dockerfile = "launch/Dockerfile"
    cmds = [
        (archive, {}),
        (["docker", "build", "--tag", tag, "--file", dockerfile, "-"], {"stdin": tar}),
        (["docker", "push", tag], {}),
    ]
    return cmds, tag, ["--docker-image", tag]


def workload_command(args, command: list[str], env: dict[str, str]) -> str:
    job = common.with_slices(command, args.num_slices)
    setup = ""
    if args.script_dir:
        setup = "pip install -q -r requirements-tpu.lock && pip install -q --no-deps -e . && "
    return f"{common.exports(env)}{setup}{shlex.join(job)}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m launch.xpk", description=__doc__)
    p.add_argument("--cluster", required=True)
    p.add_argument("--tpu-type", required=True, help="e.g. v5p-128, v5litepod-256, v6e-256")
    p.add_argument("--num-slices", type=int, default=1)
    p.add_argument("--name", required=True, help="workload name (the run name)")
    p.add_argument("--project", default=None)
    p.add_argument("--zone", default=None)
    p.add_argument("--commit", default="HEAD")
    p.add_argument("--image-repo", default=os.environ.get("COLAJAX_IMAGE_REPO"))
    p.add_argument("--image", default=None, help="an existing image holding colajax")
    p.add_argument("--script-dir", action="store_true", help="let xpk build the image")
    p.add_argument("--base-image", default="python:3.11-slim", help="with --script-dir")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the job")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    job = common.colajax_command(command)
    commit = common.git_commit(args.commit)
    cmds, _, image_flags = build_cmds(args, commit)
    xpk = ["xpk", "workload", "create", "--cluster", args.cluster,
           "--workload", common.job_name(args.name), "--tpu-type", args.tpu_type,
           "--num-slices", str(args.num_slices), *image_flags,
           "--command", workload_command(args, job, common.parse_env(args.env))]  # fmt: skip
    xpk += [f"--project={args.project}"] if args.project else []
    xpk += [f"--zone={args.zone}"] if args.zone else []
    runner = common.Runner(args.dry_run)
    for cmd, kw in [*cmds, (xpk, {})]:
        runner.run(cmd, **kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
