"""Experiment configs: load `experiments/X.py[:arg]`, apply `a.b=v` overrides, lock, validate.

An experiment file defines `get_config(arg: str | None) -> ml_collections.ConfigDict`; the
argument after the colon is free-form (parse it with `parse_arg`). Overrides are type-checked
against the value in the file, unknown keys fail with the closest valid names, and the result
is locked so a typo can never silently add a field.
"""

import ast
import contextlib
import difflib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import ml_collections
from ml_collections import config_dict

MESH_AXES = ("data", "fsdp", "tensor")
LOGICAL_AXES = ("batch", "length", "vocab", "embed", "mlp", "heads", "kv", "latent")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """`"size=s,runlocal"` -> ConfigDict(size='s', runlocal=True), typed by `defaults`.

    A bare word is a flag (True). Values are converted to the type of the default of the same
    name; names without a default are parsed as Python literals, else kept as strings.
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            value: Any = True
        elif key in defaults and defaults[key] is not None:
            value = _convert(raw.strip(), defaults[key], key)
        else:
            value = _literal(raw.strip())
        if defaults and key not in defaults:
            raise ValueError(
                f"config argument {key!r} is not known; valid arguments: {sorted(defaults)}."
            )
        out[key] = value
    return out


def split_spec(spec: str) -> tuple[str, str | None]:
    """`"experiments/tiny.py:size=s"` -> ("experiments/tiny.py", "size=s")."""
    idx = spec.find(".py:")
    if idx >= 0:
        return spec[: idx + 3], spec[idx + 4 :]
    return spec, None


def load_config(
    spec: str, overrides: Sequence[str] = (), *, num_devices: int | None = None
) -> ml_collections.ConfigDict:
    """Import `file.py[:arg]`, call `get_config(arg)`, apply `a.b=v` overrides, lock, validate.

    `num_devices` (if given) also checks that the mesh shape fits that many devices.
    """
    path, arg = split_spec(spec)
    with _config_errors(path):
        module = _import_file(path)
        if not hasattr(module, "get_config"):
            raise ValueError(f"{path} defines no get_config(arg); it is not an experiment config.")
        config = module.get_config(arg) if arg is not None else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"{path}: get_config must return an ml_collections.ConfigDict.")
    apply_overrides(config, overrides)
    config.lock()
    validate(config, num_devices=num_devices)
    return config


@contextlib.contextmanager
def _config_errors(path: str):
    """A broken experiment file -> ValueError `file:line: problem` (no traceback to read)."""
    try:
        yield
    except SyntaxError as e:  # IndentationError too
        where = f"{e.filename or path}:{e.lineno}" + (f":{e.offset}" if e.offset else "")
        code = f" `{e.text.strip()}`" if e.text and e.text.strip() else ""
        raise ValueError(
            f"{where}: {type(e).__name__}: {e.msg}{code}; fix the config file there."
        ) from None
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:  # noqa: BLE001 -- any error while running the user's file
        full = os.path.abspath(path)
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == full]
        where = f"{path}:{frames[-1].lineno}" if frames else path
        raise ValueError(f"{where}: {type(e).__name__}: {e}; fix the config file there.") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Apply `a.b=v` strings in order, converting `v` to the type already stored at `a.b`."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("--config.").removeprefix("config.")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form a.b=value.")
        parent, leaf = _lookup_parent(config, key)
        old = parent[leaf]
        if isinstance(old, ml_collections.ConfigDict):
            raise ValueError(
                f"{key} is a section, not a value; override its fields one by one "
                f"(e.g. {key}.{next(iter(old.keys()), 'x')}=...)."
            )
        nullable = parent.get_ref(leaf).get_type() is not None and old is None
        value = _convert(raw.strip(), old, key, nullable=nullable or old is None)
        try:
            with parent.unlocked():
                parent[leaf] = value
        except TypeError as e:
            raise ValueError(f"override {key}={raw!r}: {e}") from None


def overrides_from_argv(rest: Sequence[str]) -> list[str]:
    """`['--config.a=1', '--config.b', '2']` -> `['a=1', 'b=2']` (other flags are an error)."""
    out, i, rest = [], 0, list(rest)
    while i < len(rest):
        item = rest[i]
        if not item.startswith("--config."):
            raise ValueError(f"unknown argument {item!r}; overrides look like --config.a.b=v.")
        if "=" not in item:
            if i + 1 >= len(rest):
                raise ValueError(f"{item} needs a value (--config.a.b=v).")
            item, i = f"{item}={rest[i + 1]}", i + 1
        out.append(item[len("--config.") :])
        i += 1
    return out


def _lookup_parent(config, key: str):
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            prefix = ".".join(parts[:i])
            known = _flat_keys(config)
            close = difflib.get_close_matches(key, known, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            where = f" in section {prefix!r}" if prefix else ""
            raise ValueError(f"unknown config key {key!r} ({part!r} not found{where}).{hint}")
        if i == len(parts) - 1:
            return node, part
        node = node[part]
    raise AssertionError("unreachable")


def _flat_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        name = f"{prefix}{k}"
        keys.append(name)
        if isinstance(v, ml_collections.ConfigDict):
            keys += _flat_keys(v, name + ".")
    return keys


def _literal(raw: str) -> Any:
    if raw in ("None", "null", "none"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _convert(raw: str, old: Any, key: str, nullable: bool = False) -> Any:
    """Parse `raw` as the type of `old`, with a clear error if it cannot be."""
    if raw in ("None", "null", "none") and (nullable or old is None):
        return None
    bad = ValueError(f"override {key}={raw!r}: expected a {type(old).__name__} (now {old!r}).")
    if old is None:
        return _literal(raw)
    if isinstance(old, bool):
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise bad
    if isinstance(old, int):
        value = _literal(raw)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad
        return value
    if isinstance(old, float):
        value = _literal(raw)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if isinstance(old, str):
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            return raw[1:-1]
        return raw
    if isinstance(old, tuple | list):
        if raw.startswith(("(", "[")):
            value = _literal(raw)
            if not isinstance(value, tuple | list):
                raise bad
        else:
            value = [_literal(p.strip()) for p in raw.split(",") if p.strip()]
        return type(old)(value)
    raise bad


def _import_file(path: str):
    """Import an experiment file; files inside a package import as `package.stem`."""
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise FileNotFoundError(
            f"config file {path!r} does not exist; pass e.g. --config experiments/tiny.py."
        )
    folder, stem = os.path.dirname(full), os.path.splitext(os.path.basename(full))[0]
    if os.path.isfile(os.path.join(folder, "__init__.py")):
        root = os.path.dirname(folder)
        if root not in sys.path:
            sys.path.insert(0, root)
        name = f"{os.path.basename(folder)}.{stem}"
        module = sys.modules.get(name)
        if module is not None and os.path.abspath(getattr(module, "__file__", "")) == full:
            return importlib.reload(module)
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(f"_colajax_config_{stem}", full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def mesh_shape(config, num_devices: int) -> dict[str, int]:
    """Resolve `config.mesh.shape` (one axis may be -1) for `num_devices` devices."""
    shape = dict(config.mesh.shape)
    if set(shape) != set(MESH_AXES):
        raise ValueError(f"config.mesh.shape must have exactly the axes {MESH_AXES}, got {shape}.")
    fill = [k for k, v in shape.items() if v == -1]
    if len(fill) > 1 or any(v == 0 or v < -1 for v in shape.values()):
        raise ValueError(f"config.mesh.shape {shape}: use positive sizes and at most one -1.")
    fixed = 1
    for v in shape.values():
        if v != -1:
            fixed *= v
    if fill:
        if num_devices % fixed:
            raise ValueError(
                f"config.mesh.shape {shape}: {num_devices} devices are not divisible by {fixed}."
            )
        shape[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"config.mesh.shape {shape} uses {fixed} devices but {num_devices} are available; "
            "set one axis to -1 or make the product match."
        )
    return {k: shape[k] for k in MESH_AXES}


def dcn_shape(config, mesh: dict[str, int]) -> dict[str, int]:
    """How `config.mesh.num_slices` slices split the resolved mesh `mesh`: the DCN (between
    slices) factor of each axis from `config.mesh.dcn_shape` (one axis may be -1)."""
    slices = int(config.mesh.get("num_slices", 1) or 1)
    dcn = dict(config.mesh.get("dcn_shape", None) or {"data": -1})
    dcn = {a: int(dcn.get(a, 1)) for a in MESH_AXES}
    fill = [a for a, v in dcn.items() if v == -1]
    fixed = 1
    for v in dcn.values():
        fixed *= v if v != -1 else 1
    if slices < 1 or len(fill) > 1 or any(v == 0 or v < -1 for v in dcn.values()):
        raise ValueError(
            f"config.mesh.num_slices={slices}, dcn_shape={dcn}: use num_slices >= 1 and "
            "positive DCN sizes with at most one -1."
        )
    if fill:
        if slices % fixed:
            raise ValueError(f"config.mesh.dcn_shape {dcn} does not divide {slices} slices.")
        dcn[fill[0]] = slices // fixed
    if _prod(dcn.values()) != slices:
        raise ValueError(
            f"config.mesh.dcn_shape {dcn} spans {_prod(dcn.values())} slices but "
            f"config.mesh.num_slices={slices}; make the product match (or use -1)."
        )
    for a in MESH_AXES:
        if mesh[a] % dcn[a]:
            raise ValueError(
                f"mesh axis {a}={mesh[a]} is not divisible by its DCN factor {dcn[a]} "
                f"(config.mesh.dcn_shape.{a}); each slice must hold an equal part of it."
            )
    return dcn


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def validate(config, num_devices: int | None = None) -> None:
    """Raise ValueError naming the first inconsistent field and how to fix it: the family's
    own checks (`config.model`, its sections, `config.stage`), then the shared sections."""
    from colajax import families

    family = families.of_config(config)
    family.stage_names(config)
    family.validate(config)
    tr, opt = config.train, config.optim
    if opt.grad_accum < 1 or tr.batch_size % opt.grad_accum:
        raise ValueError(
            f"config.train.batch_size ({tr.batch_size}) must be divisible by "
            f"config.optim.grad_accum ({opt.grad_accum} >= 1)."
        )
    if opt.warmup_steps < 0 or opt.decay_steps < opt.warmup_steps:
        raise ValueError("config.optim: need 0 <= warmup_steps <= decay_steps.")
    _validate_recipe(config)
    if tr.keep < 1 or tr.ckpt_every < 1 or tr.log_every < 1:
        raise ValueError("config.train.keep, ckpt_every and log_every must be >= 1.")
    for logical, axes in config.mesh.rules.items():
        if logical not in LOGICAL_AXES:
            raise ValueError(
                f"config.mesh.rules has unknown logical axis {logical!r}; known: {LOGICAL_AXES}."
            )
        if any(a not in MESH_AXES for a in axes):
            raise ValueError(
                f"config.mesh.rules.{logical} = {tuple(axes)}: mesh axes must be in {MESH_AXES}."
            )
    if num_devices is not None:
        shape = mesh_shape(config, num_devices)
        dcn_shape(config, shape)
        per_step = tr.batch_size // opt.grad_accum
        data_par = shape["data"] * shape["fsdp"]
        if per_step % data_par:
            raise ValueError(
                f"micro-batch {per_step} (batch_size / grad_accum) is not divisible by the "
                f"data-parallel size data*fsdp = {data_par}; change the batch or the mesh."
            )


def _validate_recipe(config) -> None:
    """The shared recipe fields: clip scope and packing (a family checks its objective)."""
    from colajax.train import optim

    if config.optim.clip_scope not in optim.CLIP_SCOPES:
        raise ValueError(f"config.optim.clip_scope must be one of {optim.CLIP_SCOPES}.")
    packing = ("stream", "docstart")
    if config.data.packing not in packing or config.data.docstart_fill not in ("pad", "crop"):
        raise ValueError(
            f"config.data.packing must be one of {packing} (got {config.data.packing!r}) and "
            f"config.data.docstart_fill 'pad' or 'crop' (got {config.data.docstart_fill!r})."
        )


def to_dict(config) -> dict:
    """Plain JSON-able dict of a config (for checkpoint metadata)."""
    return config_dict.ConfigDict(config).to_dict() if config is not None else {}
