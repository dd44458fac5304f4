"""Device mesh and logical-axis sharding rules (no pmap, no pjit, no `with mesh:`).

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data parallelism with
parameters and optimizer state sharded along it) and `tensor` (model parallelism). Models name
their parameter axes logically ("embed", "mlp", "heads", ...); `config.mesh.rules` maps each
logical axis to a tuple of mesh axes. A mesh axis that does not divide a dimension (e.g. the
vocab_size + 1 embedding rows) is dropped for that dimension, i.e. that dimension is replicated.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from colajax.config import MESH_AXES, dcn_shape, mesh_shape


def make_mesh(config, devices=None) -> Mesh:
    """Mesh (data, fsdp, tensor) from `config.mesh.shape` over `devices` (default: all).

    With `config.mesh.num_slices` > 1 the mesh is hybrid: each axis is split into an ICI part
    (inside a slice) and a DCN part (across slices, `config.mesh.dcn_shape`), so that only
    the DCN axes' collectives cross the slow data-centre network.
    """
    devices = jax.devices() if devices is None else list(devices)
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if _slices(config) > 1:
        return Mesh(device_grid(config, devices), MESH_AXES, axis_types=axis_types)
    shape = mesh_shape(config, len(devices))
    sizes = tuple(shape[a] for a in MESH_AXES)
    try:
        return jax.make_mesh(sizes, MESH_AXES, axis_types=axis_types, devices=devices)
    except NotImplementedError:  # an axis is no product of whole torus axes (16 on 8x8)
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
        return Mesh(grid, MESH_AXES, axis_types=axis_types)


def device_grid(config, devices) -> np.ndarray:
    """The hybrid ICI x DCN device array of a multi-slice mesh (see `make_mesh`). Slices are
    the devices' `slice_index` (TPU), else processes (e.g. one process per GPU node)."""
    from jax.experimental import mesh_utils

    shape = mesh_shape(config, len(devices))
    dcn = dcn_shape(config, shape)
    ici = tuple(shape[a] // dcn[a] for a in MESH_AXES)
    by_slice = all(getattr(d, "slice_index", None) is not None for d in devices)
    granules = {getattr(d, "slice_index", None) if by_slice else d.process_index for d in devices}
    if len(granules) != _slices(config):
        what = "slices (device.slice_index)" if by_slice else "processes"
        raise ValueError(
            f"config.mesh.num_slices={_slices(config)} but the devices form {len(granules)} "
            f"{what}; set num_slices to the job's slice count."
        )
    return mesh_utils.create_hybrid_device_mesh(
        ici, tuple(dcn[a] for a in MESH_AXES), devices, process_is_granule=not by_slice
    )


def _slices(config) -> int:
    return int(config.mesh.get("num_slices", 1) or 1)


def rules_of(config) -> dict[str, tuple[str, ...]]:
    """`config.mesh.rules` as {logical axis: (mesh axes...)}."""
    return {k: tuple(v) for k, v in config.mesh.rules.items()}


def logical_to_spec(logical, shape, mesh: Mesh, rules) -> PartitionSpec:
    """Logical axis names of one array -> mesh PartitionSpec (dropping non-dividing axes)."""
    used: set[str] = set()
    out = []
    for name, dim in zip(logical, shape, strict=True):
        axes = [a for a in rules.get(name, ()) if a not in used] if name is not None else []
        while axes and dim % math.prod(mesh.shape[a] for a in axes):
            axes.pop()
        axes = [a for a in axes if mesh.shape[a] > 1]
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


def tree_shardings(boxed_tree, mesh: Mesh, rules) -> Any:
    """Shardings for an (abstract) tree of `nn.Partitioned` boxes, shaped like its unboxed tree.

    Leaves that are not boxed (no logical axes) are replicated.
    """

    def one(leaf):
        if isinstance(leaf, nn.Partitioned):
            spec = logical_to_spec(leaf.names, leaf.value.shape, mesh, rules)
            return NamedSharding(mesh, spec)
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    """Sharding of `[B, L]` batch arrays: rows over rules['batch'], columns over 'length'."""
    batch = tuple(a for a in rules.get("batch", ()) if mesh.shape[a] > 1)
    length = tuple(a for a in rules.get("length", ()) if mesh.shape[a] > 1 and a not in batch)
    spec = PartitionSpec(batch or None, length or None)
    return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh, rules) -> int:
    return math.prod(mesh.shape[a] for a in rules.get("batch", ()))


def _fmt_path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def assert_sufficiently_sharded(abstract_tree, mesh: Mesh, min_size: int) -> None:
    """Fail loudly if fsdp > 1 and a parameter of >= `min_size` elements is split fewer than
    fsdp ways (so each device would hold more than 1/fsdp of it).

    `abstract_tree` holds arrays or `jax.ShapeDtypeStruct`s carrying their `.sharding`.
    """
    fsdp = mesh.shape.get("fsdp", 1)
    if fsdp <= 1:
        return
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_tree)[0]:
        size = int(np.prod(leaf.shape))
        spec = leaf.sharding.spec if isinstance(leaf.sharding, NamedSharding) else ()
        axes = {
            a for entry in spec if entry for a in ((entry,) if isinstance(entry, str) else entry)
        }
        if size >= min_size and math.prod(mesh.shape[a] for a in axes) < fsdp:
            bad.append(f"{_fmt_path(path)} {tuple(leaf.shape)} -> {spec}")
    if bad:
        raise ValueError(
            f"{len(bad)} parameter(s) with >= {min_size} elements are split fewer than fsdp="
            f"{fsdp} ways, so FSDP would not divide their memory:\n  "
            + "\n  ".join(bad[:20])
            + "\nFix config.mesh.rules (map one of their logical axes to 'fsdp') or raise "
            "config.metrics.min_sharded_size."
        )
