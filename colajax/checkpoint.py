"""The one place that talks to Orbax.

A colajax checkpoint directory is an Orbax `CheckpointManager` root whose numbered steps hold
named items: `params` (always), `opt_state` and `data_iter` (training), `meta` (JSON: the
experiment config, model configs, step). Imported HF weights are a root with step 0 holding
`params` + `meta` only, so `restore_params` serves both trained and imported checkpoints.
"""

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterable
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

PARAM_ITEMS = ("params", "meta")
TRAIN_ITEMS = ("params", "opt_state", "data_iter", "meta")
ARRAY_ITEMS = ("params", "opt_state")  # pytrees of arrays; the others are JSON
READ_HINT = (
    "point --checkpoint at a colajax checkpoint root (a training workdir, its checkpoints/, or "
    "an `import-hf` output)."
)


def as_path(directory) -> epath.Path:
    """An epath for `directory`; local paths are made absolute (Orbax requires it)."""
    d = os.fspath(directory)
    return epath.Path(d if "://" in d else os.path.abspath(d))


def _manager(directory, item_names, **options) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(create=True, **options)
    return ocp.CheckpointManager(as_path(directory), options=opts, item_names=item_names)


def save_params_checkpoint(directory: str, params: Any, meta: dict, *, step: int = 0) -> None:
    """Write `params` + `meta` as a new checkpoint root at `directory`, atomically.

    Refuses to touch an existing non-empty directory; writes into a temporary sibling first and
    renames on success, so a failure never leaves a half-written checkpoint behind.
    """
    path = as_path(directory)
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


def _reader(path: epath.Path) -> ocp.CheckpointManager:
    """A manager (for reading) with a handler for every item a colajax step may hold.

    Knowing them all, Orbax restores just the items asked for and describes the others (steps'
    item metadata) without warning that they "could not be restored", e.g. the opt_state and
    data_iter a params-only restore of a training step skips. The registry (rather than bare
    item names) also makes the params metadata describe the saved arrays.
    """
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item in TRAIN_ITEMS:
        if item in ARRAY_ITEMS:
            registry.add(item, ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())
        else:
            registry.add(item, ocp.args.JsonRestore, ocp.JsonCheckpointHandler())
    options = ocp.CheckpointManagerOptions(create=False)
    return ocp.CheckpointManager(path, options=options, handler_registry=registry)


@contextlib.contextmanager
def _open_step(directory: str, step: int | None, hint: str):
    """Yield (reader, step) for `step` (default: the newest) of the checkpoint root `directory`;
    FileNotFoundError ending in `hint` if there is no such root or no complete step."""
    path = as_path(directory)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist; {hint}")
    mngr = _reader(path)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory} holds no complete checkpoint step; {hint}")
        yield mngr, step
    finally:
        mngr.close()


def _stored_params(mngr: ocp.CheckpointManager, step: int) -> dict:
    """Metadata tree (shape, dtype per array; nothing loaded) of the params stored at `step`."""
    tree = mngr.item_metadata(step)["params"]
    tree = getattr(tree, "tree", tree)
    return dict(tree) if tree is not None else {}


def _restore_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def _params_args(abstract: Any, *, partial: bool = False) -> ocp.args.PyTreeRestore:
    """Restore args placing each array as its `jax.ShapeDtypeStruct` in `abstract` says."""
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
    return ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=partial)


def latest_step(directory: str) -> int | None:
    """Newest complete step under a checkpoint root, or None."""
    path = as_path(directory)
    if not path.exists():
        return None
    mngr = _reader(path)
    step = mngr.latest_step()
    mngr.close()
    return step


def all_steps(directory: str) -> list[int]:
    """Every complete step under a checkpoint root, ascending ([] if there is none)."""
    path = as_path(directory)
    if not path.exists():
        return []
    mngr = _reader(path)
    steps = sorted(mngr.all_steps())
    mngr.close()
    return steps


def resolve_root(directory: str, stage: str | None = None) -> str:
    """A run directory -> its checkpoint root: `<dir>/<stage>/checkpoints` (when `stage` is
    given: stage 'both' keeps each stage in a subdirectory), else `<dir>/checkpoints`, else
    `directory` itself (already a checkpoint root)."""
    subs = ([(stage, "checkpoints")] if stage else []) + [("checkpoints",)]
    for sub in subs:
        cand = as_path(directory).joinpath(*sub)
        if cand.is_dir():
            return os.fspath(cand)
    return os.fspath(directory)


def read_info(directory: str, step: int | None = None) -> tuple[str, int, dict, set[str]]:
    """(checkpoint root, step, meta, top-level keys of the stored params) of `step` (default:
    the newest), reading no arrays.

    `directory` is a checkpoint root or a stage directory (`<dir>/checkpoints`); a run's
    workdir resolves with `colajax.restore.checkpoint_root` first.
    """
    root = resolve_root(directory)
    with _open_step(root, step, READ_HINT) as (mngr, step):
        return root, step, _restore_meta(mngr, step), set(_stored_params(mngr, step))


def restore_params(directory: str, abstract_params: Any = None, step: int | None = None):
    """Restore (params, meta) only (no optimizer state) from a checkpoint root.

    `abstract_params` (a pytree of `jax.ShapeDtypeStruct` with shardings) places the arrays on
    the current mesh; a checkpoint written on N devices restores onto any other mesh.
    Without it, arrays are restored whole on this process's first local device.
    """
    with _open_step(directory, step, READ_HINT) as (mngr, step):
        if abstract_params is None:
            dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            abstract_params = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev),
                _stored_params(mngr, step),
            )
        restored = mngr.restore(
            step,
            args=ocp.args.Composite(
                params=_params_args(abstract_params), meta=ocp.args.JsonRestore()
            ),
        )
    return restored["params"], restored["meta"]


# --------------------------------------------------------------------------------------------
# Training checkpoints: params + opt_state + data_iter + meta, async, keep-last-N + every K.
# --------------------------------------------------------------------------------------------

QUARANTINE_SUFFIX = ".unreadable"


def retention_policy(keep: int | None, keep_period: int = 0, protect: Iterable[int] = ()):
    """Orbax preservation policy: the newest `keep` steps (None: all), every multiple of
    `keep_period` (0: none) and every step in `protect`; a step is kept if any of them keeps it."""
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 (or None for all), got {keep}; set config.train.keep.")
    if keep_period < 0:
        raise ValueError(f"keep_period must be >= 0, got {keep_period}.")
    policies = [ocp.checkpoint_managers.LatestN(n=keep)]
    if keep_period:
        policies.append(ocp.checkpoint_managers.EveryNSteps(keep_period))
    protect = sorted(int(s) for s in protect)
    if protect:
        policies.append(ocp.checkpoint_managers.CustomSteps(protect))
    return ocp.checkpoint_managers.AnyPreservationPolicy(policies)


class TrainCheckpointer:
    """Orbax manager for a training run's checkpoint root (`<workdir>/checkpoints`).

    Keeps the newest `keep` steps plus every step that is a multiple of `keep_period` (> 0),
    plus every step in `protect` (the budget checkpoints of a sweep,
    `colajax.sweep.budgets.BudgetSchedule.steps`): those are never deleted by the keep policy,
    also when an existing root is reopened (pass the same steps again).
    `restore_latest` resumes from the newest step that restores; newer steps that fail (a
    truncated or corrupt save) are moved, never deleted, to `<root>.unreadable/<step>` with a
    warning so that later saves do not collide with them. If no step restores, it raises and
    touches nothing.
    """

    def __init__(
        self,
        directory: str,
        *,
        keep: int = 3,
        keep_period: int = 0,
        protect: Iterable[int] = (),
        async_save=True,
    ):
        self.directory = as_path(directory)
        self.protected_steps = frozenset(int(s) for s in protect)
        self._mngr = _manager(
            self.directory,
            TRAIN_ITEMS,
            preservation_policy=retention_policy(keep, keep_period, self.protected_steps),
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
        if len(steps) > 1:
            _quiet_abandoned_reads()
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


_QUIET = False


def _quiet_abandoned_reads() -> None:
    """Hide the noise of the reads Orbax abandons when a restore fails (once per process).

    Orbax reads a step's arrays concurrently in a fresh event loop and closes it as soon as one
    read fails (a corrupt step); the sibling reads then report "Event loop is closed" (an
    unraisable exception) and "Task exception was never retrieved" (asyncio's log). Their
    results are discarded, so after our own warning both are noise: exactly those are filtered.
    """
    global _QUIET
    if _QUIET:
        return
    _QUIET = True
    previous = sys.unraisablehook

    def hook(u):
        closed = (
            isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"
        )
        if not (closed and u.object is None):
            previous(u)

    def from_orbax(record: logging.LogRecord) -> bool:
        tb = record.exc_info[2] if record.exc_info else None
        frames = traceback.extract_tb(tb) if tb else []
        unretrieved = record.getMessage().startswith("Task exception was never retrieved")
        return not (unretrieved and any("/orbax/" in f.filename for f in frames))

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(from_orbax)


def restore_subtree(directory: str, abstract: dict, step: int | None = None, *, hint=READ_HINT):
    """Restore only the top-level params entries named in `abstract` (e.g. {'vae': ...}).

    Used to load a model for eval / generation and to start a stage from another run's (or an
    imported) checkpoint: the arrays land directly on the shardings of `abstract`; other entries
    on disk (optimizer state, other models) are not read. Returns (params_subset, meta, step).
    `hint` ends the error message when there is no checkpoint.
    """
    root = resolve_root(directory)
    with _open_step(root, step, hint) as (mngr, step):
        on_disk = sorted(_stored_params(mngr, step))
        missing = sorted(set(abstract) - set(on_disk))
        if missing:
            raise ValueError(
                f"checkpoint {root} step {step} has no {missing} parameters (it has {on_disk})."
            )
        out = mngr.restore(
            step,
            args=ocp.args.Composite(
                params=_params_args(abstract, partial=True), meta=ocp.args.JsonRestore()
            ),
        )
    return dict(out["params"]), out["meta"], step
