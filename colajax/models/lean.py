"""Memory-lean reverse-mode autodiff for the DiT training step.

Autodiff keeps every forward intermediate that the backward pass reads alive from the forward
pass until the backward pass reaches it. For cheap elementwise code (GELU, LayerNorm + AdaLN
modulation, q/k norm + RoPE) those intermediates cost several full-size tensors per layer, far
more memory (and memory traffic) than recomputing them. The helpers here store only the inputs
and recompute in the backward pass; the forward numbers are the plain functions' own.

XLA schedules work as early as its inputs exist, so recomputation that depends only on stored
inputs would run during the forward pass (all layers at once, defeating the purpose). `after`
ties such work to the output cotangent.
"""

import jax
import jax.numpy as jnp
import numpy as np


def after(xs, dep):
    """The float pytree `xs` made data-dependent on the pytree `dep`, so that computation on the
    result cannot be scheduled before `dep` exists nor merged (CSE) with computation on `xs`.

    Adds `0 * min(dep leaf)` (XLA does not fold `0 * x` for floats). A reduction, not an element
    read, so a sharded `dep` costs one scalar all-reduce instead of a gather. (An optimization
    barrier would do the same without arithmetic, but XLA:CPU then keeps more buffers alive:
    +60% temp memory on the tiny training step.)
    """
    zero = 0.0 * jnp.min(jax.tree.leaves(dep)[0])
    return jax.tree.map(lambda x: x + zero.astype(x.dtype), xs)


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def recompute_in_backward(f):
    """`f` (a pure function of arrays / pytrees) whose VJP stores only the inputs of `f` and
    recomputes `f` once the output cotangent exists. Non-float inputs get no cotangent."""

    @jax.custom_vjp
    def g(*args):
        return f(*args)

    def fwd(*args):
        return f(*args), args

    def bwd(args, ct):
        leaves, tree = jax.tree.flatten(args)
        floats = [_is_float(x) for x in leaves]
        diff = after([x for x, fl in zip(leaves, floats, strict=True) if fl], ct)

        def on_floats(*xs):
            it = iter(xs)
            full = [next(it) if fl else x for x, fl in zip(leaves, floats, strict=True)]
            return f(*jax.tree.unflatten(tree, full))

        _, vjp = jax.vjp(on_floats, *diff)
        grads = iter(vjp(ct))
        out = [next(grads) if fl else None for fl in floats]
        return tuple(jax.tree.unflatten(tree, out))

    g.defvjp(fwd, bwd)
    return g


@jax.custom_vjp
def gelu_tanh(x):
    """`jax.nn.gelu(x, approximate=True)`; the backward pass keeps only `x` (autodiff would
    store four more hidden-size intermediates per layer)."""
    return jax.nn.gelu(x, approximate=True)


def _gelu_fwd(x):
    return gelu_tanh(x), x


def _gelu_bwd(x, g):
    c, a = np.sqrt(2.0 / np.pi).astype(x.dtype), np.asarray(0.044715, x.dtype)
    t = jnp.tanh(c * (x + a * x * x * x))
    return (g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * a * x * x)),)


gelu_tanh.defvjp(_gelu_fwd, _gelu_bwd)
