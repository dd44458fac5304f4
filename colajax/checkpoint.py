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
    # A handler registry lets item_metadata describe the saved arrays (without it the params
    # metadata is None and Orbax falls back to the saving devices, which may not exist here).
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("params", ocp.args.StandardRestore)
    registry.add("meta", ocp.args.JsonRestore)
    mngr = ocp.CheckpointManager(path, handler_registry=registry)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(
            f"{directory} holds no complete checkpoint step; point --checkpoint at a colajax "
            "checkpoint root (a training workdir's checkpoints/ or an `import-hf` output)."
        )
    if abstract_params is None:
        meta_tree = mngr.item_metadata(step)["params"]
        meta_tree = getattr(meta_tree, "tree", meta_tree)
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


# --------------------------------------------------------------------------------------------
# Training checkpoints: params + opt_state + data_iter + meta, async, keep-last-N + every K.
# --------------------------------------------------------------------------------------------

TRAIN_ITEMS = ("params", "opt_state", "data_iter", "meta")
QUARANTINE_SUFFIX = ".unreadable"


class TrainCheckpointer:
    """Orbax manager for a training run's checkpoint root (`<workdir>/checkpoints`).

    Keeps the newest `keep` steps plus every step that is a multiple of `keep_period` (> 0).
    `restore_latest` resumes from the newest step that restores; newer steps that fail (a
    truncated or corrupt save) are moved, never deleted, to `<root>.unreadable/<step>` with a
    warning so that later saves do not collide with them. If no step restores, it raises and
    touches nothing.
    """

    def __init__(self, directory: str, *, keep: int = 3, keep_period: int = 0, async_save=True):
        self.directory = epath.Path(directory)
        self._mngr = _manager(
            self.directory,
            TRAIN_ITEMS,
            max_to_keep=keep,
            keep_period=keep_period or None,
            enable_async_checkpointing=async_save,
        )

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, params, opt_state, data_state: dict, meta: dict) -> None:
        """Start saving (async by default); returns once the arrays are safe to donate."""
        self._mngr.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                data_iter=ocp.args.JsonSave(data_state or {}),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_params, abstract_opt_state) -> dict:
        """{'step', 'params', 'opt_state', 'data_iter', 'meta'} of `step`, placed as abstracted."""
        out = self._mngr.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_params),
                opt_state=ocp.args.StandardRestore(abstract_opt_state),
                data_iter=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return {"step": step, **{k: out[k] for k in TRAIN_ITEMS}}

    def restore_latest(self, abstract_params, abstract_opt_state, log=print) -> dict | None:
        """Restore the newest readable step (see the class docstring); None if there is none."""
        steps = sorted(self.all_steps(), reverse=True)
        errors = []
        for step in steps:
            try:
                restored = self.restore(step, abstract_params, abstract_opt_state)
            except Exception as e:  # noqa: BLE001 -- any failure means "this step is unreadable"
                errors.append((step, e))
                log(
                    f"WARNING: checkpoint step {step} in {self.directory} cannot be restored "
                    f"({type(e).__name__}: {str(e)[:300]}); trying the previous one."
                )
                continue
            if errors:
                self._quarantine([s for s, _ in errors], log)
            return restored
        if errors:
            detail = "; ".join(f"step {s}: {type(e).__name__}: {str(e)[:200]}" for s, e in errors)
            raise ValueError(
                f"no checkpoint in {self.directory} could be restored ({detail}). Nothing was "
                "changed on disk. If the config changed (model sizes, stage, vae_mode), use the "
                "original config or a fresh --workdir."
            )
        return None

    def _quarantine(self, steps: list[int], log) -> None:
        if jax.process_index() == 0:
            dest = epath.Path(os.fspath(self.directory) + QUARANTINE_SUFFIX)
            dest.mkdir(parents=True, exist_ok=True)
            for step in steps:
                src = self.directory / str(step)
                target = dest / str(step)
                n = 0
                while target.exists():
                    n += 1
                    target = dest / f"{step}.{n}"
                src.rename(target)
                log(f"WARNING: moved unreadable checkpoint step {step} to {target}.")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("colajax_checkpoint_quarantine")
        self._mngr.reload()

    def reached_preemption(self, step: int) -> bool:
        """True on every process once a preemption notice (multi-host sync) has arrived."""
        return self._mngr.reached_preemption(step)

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def resolve_root(directory: str) -> str:
    """A run directory (holding `checkpoints/`) or a checkpoint root -> the checkpoint root."""
    sub = epath.Path(directory) / "checkpoints"
    return os.fspath(sub) if sub.exists() else os.fspath(directory)


def restore_subtree(directory: str, abstract: dict, step: int | None = None):
    """Restore only the top-level params entries named in `abstract` (e.g. {'vae': ...}).

    Used to start Stage 2 from a Stage-1 (or Stage-2, or imported) checkpoint: the arrays land
    directly on the shardings of `abstract`; other entries on disk are not read.
    Returns (params_subset, meta, step).
    """
    path = epath.Path(resolve_root(directory))
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint directory {directory} does not exist; set config.stage2.init_from to a "
            "Stage-1 run directory (or its checkpoints/ root)."
        )
    mngr = ocp.CheckpointManager(
        path,
        item_names=TRAIN_ITEMS,
        item_handlers={  # all items named, so orbax does not warn about the unread ones
            "params": ocp.PyTreeCheckpointHandler(),
            "opt_state": ocp.PyTreeCheckpointHandler(),
            "data_iter": ocp.JsonCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        },
    )
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{path} holds no complete checkpoint step.")
        on_disk = mngr.item_metadata(step)["params"]
        missing = sorted(set(abstract) - set(on_disk.keys() if on_disk is not None else ()))
        if missing:
            raise ValueError(
                f"checkpoint {path} step {step} has no {missing} parameters (it has "
                f"{sorted(on_disk.keys()) if on_disk is not None else []})."
            )
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
        out = mngr.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.PyTreeRestore(
                    abstract, restore_args=restore_args, partial_restore=True
                ),
                meta=ocp.args.JsonRestore(),
            ),
        )
    finally:
        mngr.close()
    return dict(out["params"]), out["meta"], step
