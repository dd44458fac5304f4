"""The jitted train and eval steps: pure functions of (state, batch), explicit shardings.

Gradient accumulation scans over `grad_accum` micro-batches inside the step (activation memory
stays that of one micro-batch). The step RNG is `fold_in(key(seed), step)`, the micro-batch
RNG folds in its index, so a run is reproducible on any mesh and across restarts.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from colajax.train.state import TrainState

EVAL_RNG_SALT = 0x5EED  # eval batches use fixed keys (comparable across steps)


def _split_micro(batch, n: int):
    """[B, ...] -> [n, B/n, ...] with micro-batch i = rows i, n + i, 2n + i, ...

    Strided (not contiguous) so that every data shard contributes to every micro-batch.
    """

    def one(x):
        if x.shape[0] % n:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {n} micro-batches.")
        return x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(one, batch)


def make_train_step(stage, optimizer, seed: int, grad_accum: int = 1) -> Callable:
    """`step(state, batch) -> (state, metrics)`; metrics are float32 scalars."""
    base_key = jax.random.key(seed)

    def loss_fn(params, frozen, batch, rng, step):
        loss, metrics = stage.loss(params, frozen, batch, rng, step)
        return loss, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict[str, Any]]:
        step = state.step
        rng = jax.random.fold_in(base_key, step)
        if grad_accum == 1:
            (loss, metrics), grads = grad_fn(state.params, state.frozen, batch, rng, step)
        else:
            micro = _split_micro(batch, grad_accum)

            def body(carry, xs):
                i, mb = xs
                (loss_i, m_i), g_i = grad_fn(
                    state.params, state.frozen, mb, jax.random.fold_in(rng, i), step
                )
                acc = jax.tree.map(jnp.add, carry, (g_i, loss_i, m_i))
                return acc, None

            g0 = jax.tree.map(jnp.zeros_like, state.params)
            first = jax.tree.map(lambda x: x[0], micro)
            m_shape = jax.eval_shape(lambda: loss_fn(state.params, state.frozen, first, rng, step))
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape)
            (grads, loss, metrics), _ = jax.lax.scan(
                body, (g0, *zeros), (jnp.arange(grad_accum), micro)
            )
            scale = 1.0 / grad_accum
            grads, loss, metrics = jax.tree.map(lambda x: x * scale, (grads, loss, metrics))
        params, opt_state, stats = optimizer.update(
            grads, state.opt_state, state.params, step, enabled=stage.update_enabled(step)
        )
        out = {**metrics, **stats, "loss": loss}  # the differentiated loss is authoritative
        out = {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}
        new_state = state.replace(step=step + 1, params=params, opt_state=opt_state)
        return new_state, out

    return train_step


def make_eval_step(stage, seed: int) -> Callable:
    """`eval_step(state, batch, index) -> metrics` (loss terms, no gradients)."""
    base_key = jax.random.fold_in(jax.random.key(seed), EVAL_RNG_SALT)

    def eval_step(state: TrainState, batch, index):
        rng = jax.random.fold_in(base_key, index)
        loss, metrics = stage.loss(state.params, state.frozen, batch, rng, state.step)
        out = {**metrics, "loss": loss}
        return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}

    return eval_step


def jit_train_step(train_step, state_shardings, batch_shardings, metrics_sharding) -> Callable:
    """jit with explicit in/out shardings; the state argument is donated."""
    return jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, metrics_sharding),
        donate_argnums=(0,),
    )


def jit_eval_step(eval_step, state_shardings, batch_shardings, metrics_sharding) -> Callable:
    return jax.jit(
        eval_step,
        in_shardings=(state_shardings, batch_shardings, metrics_sharding),
        out_shardings=metrics_sharding,
    )
