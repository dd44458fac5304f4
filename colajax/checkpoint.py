"""The one place that talks to Orbax.

A colajax checkpoint directory is an Orbax `CheckpointManager` root whose numbered steps hold
named items: `params` (always), `opt_state` and `data_iter` (training), `meta` (JSON: the
experiment config, model configs, step). Imported HF weights are a root with step 0 holding
`params` + `meta` only, so `restore_params` serves both trained and imported checkpoints.
"""

import os
import shutil
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

PARAM_ITEMS = ("params", "meta")


def _manager(directory, item_names, **options) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(create=True, **options)
    return ocp.CheckpointManager(epath.Path(directory), options=opts, item_names=item_names)


def save_params_checkpoint(directory: str, params: Any, meta: dict, *, step: int = 0) -> None:
    """Write `params` + `meta` as a new checkpoint root at `directory`, atomically.

    Refuses to touch an existing non-empty directory; writes into a temporary sibling first and
    renames on success, so a failure never leaves a half-written checkpoint behind.
    """
    path = epath.Path(directory)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(
            f"{directory} already exists and is not empty; choose a new output directory "
            "(existing checkpoints are never overwritten)."
        )
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = epath.Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=os.fspath(parent)))
    try:
        mngr = _manager(tmp, PARAM_ITEMS, enable_async_checkpointing=False)
        mngr.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)
            ),
        )
        mngr.wait_until_finished()
        mngr.close()
        if path.exists():
            path.rmdir()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(os.fspath(tmp), ignore_errors=True)
        raise


def latest_step(directory: str) -> int | None:
    """Newest complete step under a checkpoint root, or None."""
    path = epath.Path(directory)
    if not path.exists():
        return None
    mngr = _manager(path, PARAM_ITEMS)
    step = mngr.latest_step()
    mngr.close()
    return step


def restore_params(directory: str, abstract_params: Any = None, step: int | None = None):
    """Restore (params, meta) only (no optimizer state) from a checkpoint root.

    `abstract_params` (a pytree of `jax.ShapeDtypeStruct` with shardings) places the arrays on
    the current mesh; a checkpoint written on N devices restores onto any other mesh.
    Without it, arrays are restored as saved on a single device.
    """
    path = epath.Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist.")
    mngr = _manager(path, None)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(
            f"{directory} holds no complete checkpoint step; point --checkpoint at a colajax "
            "checkpoint root (a training workdir's checkpoints/ or an `import-hf` output)."
        )
    if abstract_params is None:
        meta_tree = mngr.item_metadata(step)["params"]
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract_params = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), meta_tree
        )
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore()
        ),
    )
    mngr.close()
    return restored["params"], restored["meta"]
