"""Mesh from config, logical rules -> shardings, sharded state init, the fsdp guard."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

from colajax import sharding as shd
from colajax.config import load_config
from colajax.train.setup import setup_stage

MESH_222 = ["mesh.shape.data=2", "mesh.shape.fsdp=2", "mesh.shape.tensor=2"]


def test_mesh_from_config():
    mesh = shd.make_mesh(load_config("experiments/tiny.py:synthetic", ["mesh.shape.tensor=2"]))
    assert dict(mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 2}
    assert all(t == AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="at most one -1"):
        shd.make_mesh(load_config("experiments/tiny.py:synthetic", ["mesh.shape.fsdp=-1"]))


def test_logical_to_spec_rules_and_divisibility():
    mesh = shd.make_mesh(load_config("experiments/tiny.py:synthetic", MESH_222))
    rules = {"embed": ("fsdp",), "mlp": ("tensor",), "vocab": ("tensor",), "batch": ("data",)}
    assert shd.logical_to_spec(("embed", "mlp"), (64, 128), mesh, rules) == PartitionSpec(
        "fsdp", "tensor"
    )
    # 4097 embedding rows do not split over tensor=2: that dimension is replicated
    assert shd.logical_to_spec(("vocab", "embed"), (4097, 64), mesh, rules) == PartitionSpec(
        None, "fsdp"
    )
    # a mesh axis is used once per array; unknown / None logical axes are replicated
    assert shd.logical_to_spec(("embed", "embed", None), (4, 4, 3), mesh, rules) == PartitionSpec(
        "fsdp"
    )
    bs = shd.batch_sharding(mesh, {"batch": ("data", "fsdp"), "length": ()})
    assert bs.spec == PartitionSpec(("data", "fsdp"), None)


@pytest.fixture(scope="module")
def prior_222():
    config = load_config(
        "experiments/tiny.py:synthetic", MESH_222 + ["metrics.min_sharded_size=4096"]
    )
    return setup_stage(config, "prior")


def test_sharded_state_init(prior_222):
    setup = prior_222
    sh = setup.shardings
    qkv = sh.params["dit"]["blocks_0"]["msa"]["proj_qkv"]["kernel"]  # (embed, 3, heads, kv)
    assert qkv.spec == PartitionSpec("fsdp", None, "tensor")
    out = sh.params["dit"]["blocks_0"]["mlp"]["proj_out"]["kernel"]  # (mlp, embed)
    assert out.spec == PartitionSpec("tensor", "fsdp")
    # Adam moments inherit the parameter shardings; counters are replicated
    adam = sh.opt_state[1]  # chain(clip, adam, masked wd)
    assert adam.mu["dit"]["blocks_0"]["msa"]["proj_qkv"]["kernel"] == qkv
    assert adam.count.spec == PartitionSpec()
    assert "vae_ref" in sh.frozen  # joint mode keeps a frozen reference encoder

    state = setup.init_state()
    arr = state.params["dit"]["blocks_0"]["msa"]["proj_qkv"]["kernel"]
    assert arr.sharding.spec == qkv.spec
    assert len(arr.addressable_shards) == 8
    assert arr.addressable_shards[0].data.shape == (32, 3, 1, 32)  # 64/fsdp, heads 2/tensor
    flat_state = jax.tree.leaves(state)
    flat_sh = jax.tree.leaves(sh, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    for a, s in zip(flat_state, flat_sh, strict=True):
        assert a.sharding.is_equivalent_to(s, a.ndim)
    assert int(state.step) == 0
    # every large parameter is split at least fsdp ways (the check ran in setup_stage)
    shd.assert_sufficiently_sharded(state.params, setup.mesh, 4096)


@pytest.mark.slow  # ~40 s; sharded == unsharded steps are in test_trainer (default suite)
def test_step_runs_sharded(prior_222):
    from colajax.train.data import SyntheticTokens

    setup = prior_222
    state = setup.init_state()
    batches = SyntheticTokens(8, 64, 4096, setup.batch_sharding, seed=1)
    batch = next(batches)
    assert batch["tokens"].sharding.spec == PartitionSpec(("data", "fsdp"), None)
    state, m = setup.train_step(state, batch)
    assert int(state.step) == 1 and np.isfinite(float(m["loss"]))
    kernel = state.params["dit"]["blocks_0"]["mlp"]["proj_in"]["kernel"]
    assert kernel.sharding.spec == PartitionSpec("fsdp", "tensor")


def test_insufficient_sharding_fails_loudly():
    mesh = shd.make_mesh(load_config("experiments/tiny.py:synthetic", ["mesh.shape.fsdp=4"]))
    rep = jax.sharding.NamedSharding(mesh, PartitionSpec())
    fs = jax.sharding.NamedSharding(mesh, PartitionSpec("fsdp"))
    tree = {
        "big": jax.ShapeDtypeStruct((4096, 64), jnp.float32, sharding=rep),
        "ok": jax.ShapeDtypeStruct((4096, 64), jnp.float32, sharding=fs),
        "small": jax.ShapeDtypeStruct((64,), jnp.float32, sharding=rep),
    }
    with pytest.raises(ValueError, match=r"big \(4096, 64\)"):
        shd.assert_sufficiently_sharded(tree, mesh, 1024)
    shd.assert_sufficiently_sharded({"ok": tree["ok"], "small": tree["small"]}, mesh, 1024)
    # and from a config whose rules leave the model width unsharded
    config = load_config(
        "experiments/tiny.py:synthetic",
        ["mesh.shape.fsdp=4", "mesh.rules.embed=()", "metrics.min_sharded_size=4096"],
    )
    with pytest.raises(ValueError, match="split fewer than fsdp=4 ways"):
        setup_stage(config, "vae")


def test_cola_2b_is_fsdp_sharded_on_a_pod_mesh():
    """The released sizes on the example 64-chip mesh (abstract: nothing is allocated)."""
    import flax.linen as nn
    from jax.sharding import AbstractMesh, AxisType

    from colajax.train.stages import make_stage

    config = load_config("experiments/cola_2b.py")
    mesh = AbstractMesh((4, 16, 1), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    params, _ = jax.eval_shape(make_stage(config, "prior").init, jax.random.key(0))
    sh = shd.tree_shardings(params, mesh, shd.rules_of(config))
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(params), sh
    )
    shd.assert_sufficiently_sharded(abstract, mesh, config.metrics.min_sharded_size)
    # 100279 embedding rows do not divide: the model width carries the fsdp split instead
    assert sh["vae"]["encoder"]["wte"]["embedding"].spec == PartitionSpec(None, "fsdp")
