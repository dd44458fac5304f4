"""The training state pytree and its sharded creation (never materialised unsharded).

`abstract_boxed = jax.eval_shape(stage.init, rng)` gives shapes plus logical axes; the rules
turn those into NamedShardings (the optimizer state inherits them through
`optax.tree_map_params`); `jax.jit(init, out_shardings=...)` then creates every array directly
on its shards.
"""

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from colajax import sharding as shd


class TrainState(flax.struct.PyTreeNode):
    """step: int32 scalar; params: trained pytree; frozen: non-trained pytree; opt_state."""

    step: jax.Array
    params: Any
    frozen: Any
    opt_state: Any


def expand_labels(labels, params) -> Any:
    """Broadcast a (possibly prefix) label tree to the full structure of `params`."""
    return jax.tree.map(lambda lab, sub: jax.tree.map(lambda _: lab, sub), labels, params)


def abstract_boxed(stage, rng) -> tuple[Any, Any]:
    """(params, frozen) of `stage.init` as ShapeDtypeStructs inside `nn.Partitioned` boxes."""
    return jax.eval_shape(stage.init, rng)


def state_shardings(boxed_params, boxed_frozen, optimizer, mesh, rules) -> TrainState:
    """NamedShardings for every leaf of the TrainState (optimizer state follows its params)."""
    params_sh = shd.tree_shardings(boxed_params, mesh, rules)
    frozen_sh = shd.tree_shardings(boxed_frozen, mesh, rules)
    abstract_params = nn.unbox(boxed_params)
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    opt_sh = optax.tree_map_params(
        optimizer.tx,
        lambda _, s: s,
        abstract_opt,
        params_sh,
        transform_non_params=lambda _: shd.replicated(mesh),
    )
    return TrainState(
        step=shd.replicated(mesh), params=params_sh, frozen=frozen_sh, opt_state=opt_sh
    )


def abstract_state(boxed_params, boxed_frozen, optimizer, shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the whole TrainState, e.g. to restore into."""
    params = nn.unbox(boxed_params)
    tree = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        frozen=nn.unbox(boxed_frozen),
        opt_state=jax.eval_shape(optimizer.init, params),
    )
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
    )


def jit_init(stage, optimizer, shardings: TrainState, init_fn=None):
    """A jitted `init(rng, *args) -> TrainState` at step 0 that creates every array sharded.

    `init_fn(params, frozen, *args) -> (params, frozen)` (optional, traced inside the same jit)
    edits the fresh parameters, e.g. to load a Stage-1 VAE before the optimizer state is built;
    its `args` are jit arguments, not constants baked into the program.
    """

    def init(rng, *args):
        params, frozen = nn.unbox(stage.init(rng))
        if init_fn is not None:
            params, frozen = init_fn(params, frozen, *args)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            frozen=frozen,
            opt_state=optimizer.init(params),
        )

    return jax.jit(init, out_shardings=shardings)


def param_count(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))
