"""`colajax train --config experiments/X.py[:arg] --workdir DIR [--config.a.b=v ...]`.

Runs `config.stage` (all, or one stage of the family: vae | prior | lm) into DIR and resumes
automatically from DIR's newest readable checkpoint. Exit status: 0 when done or preempted
(SIGTERM: saved, rerun to resume), 1 on bad input or a non-finite loss (message on stderr, no
traceback).

Multi-host: every process of a TPU pod slice, SLURM step or COLAJAX_COORDINATOR job runs the
same command; jax.distributed starts by itself (`--distributed auto|on|off`, colajax.distributed).
SIGTERM on any process saves the same step on all of them.

Compiled programs are cached on disk (XLA persistent cache) in $COLAJAX_COMPILE_CACHE, default
~/.cache/colajax/xla, so a rerun or resume does not recompile; set it to '' to disable.
JAX_COMPILATION_CACHE_DIR, if set, takes precedence.
"""

import argparse
import os
import sys

from colajax import distributed

USAGE = "colajax train --config experiments/X.py[:arg] --workdir DIR [--config.a.b=v ...]"


def check_workdir(workdir: str) -> None:
    """ValueError (one line) if `workdir` cannot be a run directory; local or gs:// (etils)."""
    from etils import epath

    try:
        path = epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))
        is_file = path.exists() and not path.is_dir()
    except ImportError as e:  # gs:// without gcsfs
        raise ValueError(
            f"--workdir {workdir}: gs:// needs the Google Cloud Storage packages ({e}): pip "
            "install 'colajax[gcs]'; the VM's service account needs storage.objectUser on the "
            "bucket."
        ) from None
    if is_file:
        raise ValueError(
            f"--workdir {workdir} is an existing file, not a directory; pass a directory path "
            "(it is created if missing)."
        )
    for parent in [] if "://" in workdir else path.parents:  # a file on the way: mkdir fails
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"--workdir {workdir}: {parent} is a file, so the directory cannot be "
                    "created; choose another path."
                )
            break


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="colajax train", usage=USAGE, description=__doc__)
    p.add_argument("--config", required=True, help="experiment file, optionally :arg")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics)")
    distributed.add_flag(p)
    args, rest = p.parse_known_args(argv)
    try:
        check_workdir(args.workdir)
        distributed.maybe_initialize(args.distributed)
    except (ValueError, RuntimeError) as e:
        print(f"colajax train: {e}", file=sys.stderr)
        return 1

    import jax

    from colajax import config as config_lib
    from colajax.train import metrics, trainer

    cache = os.environ.get("COLAJAX_COMPILE_CACHE", os.path.expanduser("~/.cache/colajax/xla"))
    if cache and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    try:
        overrides = config_lib.overrides_from_argv(rest)
        config = config_lib.load_config(args.config, overrides, num_devices=jax.device_count())
        result = trainer.train(config, args.workdir)
    except (ValueError, FileNotFoundError, FileExistsError, metrics.NonFiniteLossError) as e:
        print(f"colajax train: {e}", file=sys.stderr)
        return 1
    return 0 if result["status"] in ("done", "preempted") else 1
