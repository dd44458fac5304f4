"""Sweeps declared as data: an experiment file's `get_sweep()` returns the runs.

    # experiments/my_sweep.py
    def get_config(arg=None): ...                       # the base experiment of every run
    def get_sweep(arg=None):
        return [RunSpec("cola", family="cola", size="2b", budgets=(77.86, 155.7)), ...]

`get_sweep` may return a `Sweep`, or a list of `RunSpec`s / dicts with RunSpec's fields; the
sweep's name defaults to the file's stem. Two kinds of run:

* `checkpoint`: one training run evaluated at each of its budgets (the paper's protocol: its
  budget checkpoints are written and protected from the keep policy);
* `isoflop`: one model size trained to exactly one budget (`steps` = budget / (6 N tokens per
  step), see `colajax.sweep.ladder.isoflop_grid`), a point of an IsoFLOP curve.

A run's config is the experiment's `get_config(arg)` + `model=<family>` + the run's overrides
(`a.b=v` strings, or a dict written as such); `RunSpec.config_overrides()` lists them in the
order to apply. `<root>/<run>/sweep_run.json` (`write_manifest`) records the spec of a trained
run so that `colajax.sweep.report` knows a run's family, size and N without the experiment.
"""

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from colajax.config import _import_file, split_spec

FAMILIES = ("cola", "ar", "llada")
KINDS = ("checkpoint", "isoflop")
MANIFEST = "sweep_run.json"
RESERVED_NAMES = ("report",)  # <root>/report holds the report
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _override_strings(overrides) -> tuple[str, ...]:
    if isinstance(overrides, Mapping):
        return tuple(f"{k}={v!r}" for k, v in overrides.items())
    if isinstance(overrides, str):
        raise ValueError(
            f"overrides must be a list of 'a.b=v' strings or a dict, got {overrides!r}"
        )
    out = tuple(overrides)
    for item in out:
        if not isinstance(item, str) or "=" not in item or not item.partition("=")[0].strip():
            raise ValueError(f"override {item!r} is not of the form 'a.b=value'")
    return out


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a sweep.

    name: directory name under the sweep root (letters, digits, `._-`).
    family: cola | ar | llada.  size: a label (e.g. the ladder's 'd128').
    overrides: `a.b=v` strings or a dict, applied after `model=<family>`.
    budgets: EFLOPs (6 N tokens / 1e18), strictly increasing; or `budget_steps`, not both.
    kind: 'checkpoint' | 'isoflop' (exactly one budget).
    n_params: N of the budget axis (None: the runner's default, e.g. the paper's 1.8e9); needed
        by IsoFLOP fits.
    steps: training steps (None: the config's); IsoFLOP runs train exactly to their budget.
    """

    name: str
    family: str
    size: str = ""
    overrides: tuple[str, ...] = ()
    budgets: tuple[float, ...] = ()
    kind: str = "checkpoint"
    n_params: float | None = None
    steps: int | None = None
    budget_steps: tuple[int, ...] = ()

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise in place
        set_(self, "overrides", _override_strings(self.overrides))
        set_(self, "budgets", tuple(self.budgets))
        set_(self, "budget_steps", tuple(self.budget_steps))
        where = f"run {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"{where}: the name must match [A-Za-z0-9][A-Za-z0-9._-]*")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"{where}: the name is reserved (the sweep root's report folder)")
        if self.family not in FAMILIES:
            raise ValueError(f"{where}: unknown family {self.family!r}; use {'|'.join(FAMILIES)}")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: unknown kind {self.kind!r}; use {'|'.join(KINDS)}")
        if any(o.partition("=")[0].strip() in ("model", "config.model") for o in self.overrides):
            raise ValueError(f"{where}: set the family with family=..., not a model= override")
        _check_increasing(where, "budgets", self.budgets, float)
        _check_increasing(where, "budget_steps", self.budget_steps, int)
        if self.budgets and self.budget_steps:
            raise ValueError(f"{where}: give budgets (EFLOPs) or budget_steps, not both")
        n_budgets = len(self.budgets) + len(self.budget_steps)
        if self.kind == "isoflop" and n_budgets != 1:
            raise ValueError(f"{where}: an isoflop run trains to exactly one budget")
        if self.kind == "checkpoint" and n_budgets == 0:
            raise ValueError(f"{where}: a checkpoint run needs budgets or budget_steps")
        if self.n_params is not None and not self.n_params > 0:
            raise ValueError(f"{where}: n_params must be > 0, got {self.n_params}")
        if self.kind == "isoflop" and self.n_params is None:
            raise ValueError(f"{where}: an isoflop run needs n_params (the N of its size)")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"{where}: steps must be an integer >= 1, got {self.steps!r}")

    def config_overrides(self, family_key: str = "model") -> list[str]:
        """`model=<family>` then the run's overrides, in the order to apply."""
        return [f"{family_key}={self.family}", *self.overrides]

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {
            "overrides": list(self.overrides),
            "budgets": list(self.budgets),
            "budget_steps": list(self.budget_steps),
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "RunSpec":
        if not isinstance(d, Mapping):
            raise ValueError(f"a run must be a RunSpec or a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"run {d.get('name')!r}: unknown field(s) {unknown}; use {sorted(names)}"
            )
        missing = [k for k in ("name", "family") if k not in d]
        if missing:
            raise ValueError(f"run {dict(d)!r}: missing field(s) {missing}")
        return cls(**d)


def _check_increasing(where: str, what: str, values: Sequence, kind: type) -> None:
    for v in values:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and math.isfinite(v)
        if not ok or (kind is int and not isinstance(v, int)):
            raise ValueError(
                f"{where}: {what} must be positive {kind.__name__}s, got {list(values)}"
            )
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{where}: {what} must be strictly increasing, got {list(values)}")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A named set of runs on one base experiment (`experiment` = 'file.py[:arg]')."""

    name: str
    experiment: str
    runs: tuple[RunSpec, ...]

    def __post_init__(self):
        object.__setattr__(self, "runs", tuple(self.runs))
        if not self.runs:
            raise ValueError(f"sweep {self.name!r} has no runs")
        seen = set()
        for run in self.runs:
            if not isinstance(run, RunSpec):
                raise ValueError(f"sweep {self.name!r}: runs must be RunSpecs, got {run!r}")
            if run.name in seen:
                raise ValueError(f"sweep {self.name!r}: duplicate run name {run.name!r}")
            seen.add(run.name)

    def run(self, name: str) -> RunSpec:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(
            f"sweep {self.name!r} has no run {name!r}; runs: {[r.name for r in self.runs]}"
        )

    def of_kind(self, kind: str) -> list[RunSpec]:
        return [r for r in self.runs if r.kind == kind]


def load_sweep(experiment: str) -> Sweep:
    """Import `file.py[:arg]` and build its `Sweep` from `get_sweep(arg)`; clear errors."""
    path, arg = split_spec(experiment)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"experiment file {path!r} does not exist")
    module = _import_file(path)
    get_sweep = getattr(module, "get_sweep", None)
    if not callable(get_sweep):
        raise ValueError(
            f"{path} defines no get_sweep(); an experiment declares its sweep as "
            "`def get_sweep(arg=None) -> list[RunSpec]` (see colajax/sweep/spec.py)"
        )
    out = get_sweep(arg) if arg is not None else get_sweep()
    default_name = os.path.splitext(os.path.basename(path))[0]
    if isinstance(out, Sweep):
        return out
    if isinstance(out, Mapping | str) or not isinstance(out, Sequence):
        raise ValueError(f"{path}: get_sweep() must return a Sweep or a list of runs, got {out!r}")
    runs = [r if isinstance(r, RunSpec) else RunSpec.from_json(r) for r in out]
    return Sweep(default_name, experiment, tuple(runs))


def write_manifest(run_dir: str, run: RunSpec, **extra: Any) -> str:
    """`<run_dir>/sweep_run.json`: the run's spec (+ `extra`, e.g. tokens_per_step)."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(run.to_json() | extra, f, indent=1)
    os.replace(tmp, path)
    return path


def read_manifest(run_dir: str) -> dict | None:
    """The manifest dict of a run directory, or None if it has none."""
    path = os.path.join(run_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
