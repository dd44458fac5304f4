"""The one checkpoint -> model loader (eval, generate, bench, demo, diagnostics, sweeps).

Accepts a training workdir (any family; a Cola run's Stage-2 checkpoints), a stage directory, a
checkpoint root or an `import-hf` output. The checkpoint's meta names the family and its model
configs; only the parameters the family's models need are restored (no optimizer state, no
Stage-2 reference encoder), each placed as the logical-axis rules of the checkpoint's experiment
(or `DEFAULT_RULES`) say on the mesh `mesh_spec`, so a checkpoint written on 8 devices loads on
1 and vice versa.
"""

import dataclasses
import json
import math
import os
from typing import Any

import jax
import ml_collections
from etils import epath
from jax.sharding import Mesh

from colajax import checkpoint, families, sharding
from colajax.data import tokenizer as tokenizer_lib
from colajax.families.base import Family
from colajax.generate import batching

RUN_FILE = "run.json"  # written by the trainer at a run's workdir: family and stage workdirs

# Logical axis -> mesh axes when the checkpoint's meta carries no experiment config
# (experiments/base.py: FSDP shards the model width, tensor the wide axes).
DEFAULT_RULES = {
    "batch": ("data", "fsdp"),
    "length": (),
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "heads": ("tensor",),
    "kv": (),
    "latent": (),
}


@dataclasses.dataclass
class LoadedModel:
    family: Family
    params: dict  # the models' params ({'vae', 'dit'} for Cola, {'lm'} for AR / LLaDA)
    models: dict  # typed model configs by section
    meta: dict
    mesh: Mesh
    root: str  # the checkpoint root
    step: int

    @property
    def batch_sharding(self):
        """Rows of a generation batch over this mesh's data-parallel axes (rules['batch'])."""
        return batching.batch_sharding(self.mesh, mesh_rules(self.meta))

    def generator(self, tok, opts):
        """The family's id-level GenerateFn, data-parallel over this model's mesh."""
        return self.family.generator(
            self.params, self.models, self.meta, tok, opts, batch_sharding=self.batch_sharding
        )


def write_run_file(workdir: str, family: str, stages: list[tuple[str, str, bool]]) -> None:
    """Record a run's family and stage workdirs ((name, workdir, main) relative to `workdir`)."""
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    rel = lambda d: os.path.relpath(d, workdir) if "://" not in d else d
    entry = {"family": family, "stages": [{"name": n, "workdir": rel(d), "main": m}
                                          for n, d, m in stages]}  # fmt: skip
    (path / RUN_FILE).write_text(json.dumps(entry, indent=1) + "\n")


def checkpoint_root(directory: str) -> str:
    """A run directory -> the checkpoint root of its main stage (via its run.json), a stage
    directory -> `<dir>/checkpoints`, else `directory` itself (already a checkpoint root)."""
    path = epath.Path(checkpoint.as_path(directory))
    run = path / RUN_FILE
    if run.exists():
        entry = json.loads(run.read_text())
        main = [s for s in entry.get("stages", []) if s.get("main")]
        if main:
            cand = path / main[-1]["workdir"] / "checkpoints"
            if cand.is_dir():
                return os.fspath(cand)
    for sub in ("checkpoints", "prior/checkpoints"):  # prior/: Cola runs from before run.json
        if (path / sub).is_dir():
            return os.fspath(path / sub)
    return os.fspath(directory)


def experiment_config(meta: dict) -> dict:
    """The experiment config a training run recorded in its checkpoint meta ({} if none)."""
    config = meta.get("config")
    return config if isinstance(config, dict) else {}


def tokenizer_spec(meta: dict) -> str | None:
    """The tokenizer file a training run used (`config.data.tokenizer`), if recorded."""
    data = experiment_config(meta).get("data") or {}
    return meta.get("tokenizer") or data.get("tokenizer") or None


def parse_mesh(spec: str) -> dict[str, int]:
    """`"data=-1"` / `"data=2,fsdp=4"` -> {"data": ., "fsdp": ., "tensor": .} (unnamed axes: 1)."""
    shape = dict.fromkeys(sharding.MESH_AXES, 1)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, size = item.partition("=")
        if name.strip() not in shape or not sep or not size.strip().lstrip("-").isdigit():
            raise ValueError(
                f"--mesh {spec!r}: expected comma-separated AXIS=SIZE with AXIS in "
                f"{sharding.MESH_AXES} and one SIZE may be -1, e.g. 'data=-1' or 'fsdp=8'."
            )
        shape[name.strip()] = int(size)
    return shape


def make_mesh(spec: str, *, local: bool = False) -> Mesh:
    """Mesh of `spec` over all devices (with a -1 axis) or over the first prod(sizes) devices;
    `local`: this process's devices only (every process holds a whole copy of the model)."""
    shape = parse_mesh(spec)
    devices = jax.local_devices() if local else jax.devices()
    if -1 not in shape.values():
        n = math.prod(shape.values())
        if n > len(devices):
            raise ValueError(f"--mesh {spec!r} needs {n} devices, this run has {len(devices)}.")
        devices = devices[:n]
    config = ml_collections.ConfigDict({"mesh": {"shape": shape}})
    return sharding.make_mesh(config, devices)


def mesh_rules(meta: dict) -> dict[str, tuple[str, ...]]:
    rules = experiment_config(meta).get("mesh", {}).get("rules")
    return {k: tuple(v) for k, v in rules.items()} if rules else dict(DEFAULT_RULES)


def read_model_info(directory: str, step: int | None = None):
    """(family, models, meta, root, step) of a checkpoint, reading no arrays."""
    root, step, meta, _ = checkpoint.read_info(checkpoint_root(directory), step)
    family = families.of_meta(meta)
    return family, family.models_from_meta(meta), meta, root, step


def load_model(
    directory: str, mesh_spec: str = "data=-1", *, step: int | None = None, local: bool = False
) -> LoadedModel:
    """Restore the parameters of a checkpoint's models onto the mesh `mesh_spec` (over this
    process's devices only with `local`)."""
    family, models, meta, root, step = read_model_info(directory, step)
    mesh = make_mesh(mesh_spec, local=local)
    target = family.abstract_params(models, mesh, mesh_rules(meta))
    try:
        params, _, _ = checkpoint.restore_subtree(root, target, step)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{directory}: the stored params do not match the {family.name} model configs in its "
            f"meta ({type(err).__name__}: {str(err)[:300]})"
        ) from None
    return LoadedModel(family, params, models, meta, mesh, root, step)


def load_tokenizer(path: str | None, meta: dict, vocab_size: int) -> Any:
    """--tokenizer, else the one the experiment trained with; must fit the model's vocab."""
    path = path or tokenizer_spec(meta)
    if not path:
        raise ValueError(
            "the checkpoint records no tokenizer; pass --tokenizer (a SentencePiece .model or "
            "a HuggingFace tokenizer.json, e.g. the released model's OLMo-2 tokenizer.json)."
        )
    tok = tokenizer_lib.load_tokenizer(path)
    tokenizer_lib.check_vocab(tok, vocab_size)
    return tok
