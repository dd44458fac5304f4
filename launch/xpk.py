"""Print (or submit with --submit) an `xpk workload create` command for a colajax run.

Does not import JAX. Example:
  python launch/xpk.py --cluster my-cluster --tpu-type v5p-256 \
      --config experiments/cola_2b.py --workdir gs://bucket/runs/cola2b \
      --config.train.batch_size=1408
"""

import argparse
import shlex
import subprocess
import sys


def build_command(args, overrides: list[str]) -> list[str]:
    inner = ["colajax", "train", "--config", args.config, "--workdir", args.workdir, *overrides]
    setup = "pip install -q -e '.[tpu]' && "
    return [
        "xpk", "workload", "create",
        "--cluster", args.cluster,
        "--workload", args.name,
        "--tpu-type", args.tpu_type,
        "--num-slices", str(args.num_slices),
        "--docker-image", args.image,
        "--command", setup + shlex.join(inner),
    ]  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", required=True)
    p.add_argument("--tpu-type", required=True)
    p.add_argument("--num-slices", type=int, default=1)
    p.add_argument("--name", default="colajax")
    p.add_argument("--image", default="python:3.11")
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--submit", action="store_true", help="run the command instead of printing it")
    args, overrides = p.parse_known_args(argv)
    cmd = build_command(args, overrides)
    if not args.submit:
        print(shlex.join(cmd))
        return 0
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
