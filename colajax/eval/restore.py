"""Restoring a checkpoint's model onto this run's mesh, for `colajax eval` and its diagnostics.

Parameters only (no optimizer state) are restored, each array placed as the logical-axis rules
of the checkpoint's experiment (or `DEFAULT_RULES`) say on the mesh `--mesh`, so a checkpoint
written on 8 devices evaluates on 1 and vice versa.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from colajax import checkpoint, sharding
from colajax.data import tokenizer as tokenizer_lib
from colajax.models.config import DiTConfig, VAEConfig
from colajax.models.dit import DiT
from colajax.models.vae import TextVAE
from colajax.sample_load import configs_from_meta, experiment_config, tokenizer_spec

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
class Model:
    params: dict  # {"vae": ..., "dit": ...} (no "dit" for a Stage-1 checkpoint)
    vae_config: VAEConfig
    dit_config: DiTConfig | None
    meta: dict
    mesh: Mesh


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


def make_mesh(spec: str) -> Mesh:
    """Mesh of `spec` over all devices (with a -1 axis) or over the first prod(sizes) devices."""
    shape = parse_mesh(spec)
    devices = jax.devices()
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


def abstract_params(vae_cfg: VAEConfig, dit_cfg: DiTConfig | None, mesh: Mesh, rules) -> dict:
    """`jax.ShapeDtypeStruct` tree of the model params with NamedShardings on `mesh`."""

    def init(rng):
        ids = jnp.zeros((1, vae_cfg.block_size), jnp.int32)
        params = {"vae": TextVAE(vae_cfg).init(rng, ids)["params"]}
        if dit_cfg is not None:
            bs, c = dit_cfg.block_size, dit_cfg.txt_in_channels
            x, t = jnp.zeros((1, bs, c)), jnp.zeros((1, bs))
            params["dit"] = DiT(dit_cfg).init(rng, x, t)["params"]
        return params

    boxed = jax.eval_shape(init, jax.random.PRNGKey(0))
    shapes = nn.meta.unbox(boxed)  # no mesh context: plain ShapeDtypeStructs
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        shapes,
        sharding.tree_shardings(boxed, mesh, rules),
    )


def load_model(directory: str, mesh_spec: str = "data=-1", *, need_dit: bool = True) -> Model:
    """Restore params (no optimizer state) of a checkpoint onto the mesh `mesh_spec`.

    `directory` may be a training workdir, a stage directory or a checkpoint root (as for
    `colajax generate`).
    """
    root, step, meta, keys = checkpoint.read_info(directory)
    if "vae" not in keys or (need_dit and "dit" not in keys):
        what = "generation needs the DiT prior" if "vae" in keys else "the VAE is missing"
        raise ValueError(
            f"{directory}: the stored params hold {sorted(keys)}; {what} (a Stage-1 (VAE-only) "
            "checkpoint only serves diagnostics): pass a Stage-2 run or an `import-hf` output."
        )
    vae_cfg, dit_cfg = configs_from_meta(meta, with_dit="dit" in keys)
    mesh = make_mesh(mesh_spec)
    target = abstract_params(vae_cfg, dit_cfg, mesh, mesh_rules(meta))
    if keys != set(target):
        raise ValueError(f"{directory}: stored params {sorted(keys)}, expected {sorted(target)}")
    try:
        params, _ = checkpoint.restore_params(root, target, step=step)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{directory}: the stored params do not match the model configs in its meta "
            f"({type(err).__name__}: {str(err)[:300]})"
        ) from None
    return Model(params, vae_cfg, dit_cfg, meta, mesh)


def load_checked_tokenizer(path: str | None, meta: dict, vocab_size: int):
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
