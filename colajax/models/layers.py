"""Parameterised building blocks shared by the VAE and the DiT.

Mixed precision follows the official contract (official-implementation.md §5): parameters are
float32; a matmul casts its inputs to the compute dtype, accumulates in float32 and rounds the
result once to the compute dtype; LayerNorm always computes in float32 and returns float32.
Every parameter is created with logical axis names (`nn.with_logical_partitioning`).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Axes = tuple[str | None, ...]


def dtype_of(name: str) -> jnp.dtype:
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"compute dtype must be 'float32' or 'bfloat16', got {name!r}.")
    return jnp.dtype(name)


def round_to(x, dtype) -> jax.Array:
    """Round to `dtype` once (float32 arithmetic in, `dtype` out).

    For bfloat16 the rounding is an explicit `reduce_precision`, because XLA
    (xla_allow_excess_precision, on by default on GPU) may drop a plain f32->bf16->f32 pair.
    """
    if jnp.dtype(dtype) == jnp.bfloat16:
        x = jax.lax.reduce_precision(x.astype(jnp.float32), exponent_bits=8, mantissa_bits=7)
    return x.astype(dtype)


def precision_for(dtype) -> jax.lax.Precision:
    """float32 compute means true float32 matmuls (no TF32 / bf16 passes on GPU and TPU)."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def matmul(x, w, contract: int, dtype) -> jax.Array:
    """Contract the last `contract` axes of x with the first of w; f32 accumulation."""
    dims = ((tuple(range(x.ndim - contract, x.ndim)), tuple(range(contract))), ((), ()))
    y = jax.lax.dot_general(
        x.astype(dtype),
        w.astype(dtype),
        dims,
        precision=precision_for(dtype),
        preferred_element_type=jnp.float32,
    )
    return round_to(y, dtype)


class Dense(nn.Module):
    """y = x @ W (+ b) with a multi-axis kernel `in_shape + features` and logical axes.

    `features` may be a tuple (e.g. (3, heads, head_dim) for a fused qkv projection);
    `axes` names every kernel axis (inputs first). `contract` = number of input axes.
    """

    features: Sequence[int]
    axes: Axes
    contract: int = 1
    use_bias: bool = True
    dtype: str = "float32"
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        features = tuple(self.features)
        in_shape = x.shape[x.ndim - self.contract :]
        if len(self.axes) != len(in_shape) + len(features):
            raise ValueError(f"{self.name}: axes {self.axes} do not match {in_shape}+{features}")
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.axes),
            in_shape + features,
            jnp.float32,
        )
        y = matmul(x, kernel, self.contract, dtype_of(self.dtype))
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(self.bias_init, self.axes[self.contract :]),
                features,
                jnp.float32,
            )
            # Bias add happens on the rounded matmul output, as a Linear under autocast does.
            y = round_to(y.astype(jnp.float32) + bias, y.dtype)
        return y


def layer_norm(x, eps: float, reduce: int = 1, scale=None, bias=None) -> jax.Array:
    """LayerNorm over the last `reduce` axes in float32 (affine if `scale`/`bias` are given)."""
    x = x.astype(jnp.float32)
    red = tuple(range(x.ndim - reduce, x.ndim))
    mean = jnp.mean(x, axis=red, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=red, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale + bias
    return y


class LayerNorm(nn.Module):
    """LayerNorm over the last `reduce` axes, float32 in and out (optionally affine)."""

    eps: float
    affine: bool = True
    axes: Axes = ("embed",)
    reduce: int = 1

    @nn.compact
    def __call__(self, x):
        scale = bias = None
        if self.affine:
            shape = x.shape[x.ndim - self.reduce :]
            scale = self.param(
                "scale", nn.with_logical_partitioning(nn.initializers.ones, self.axes), shape
            )
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes), shape
            )
        return layer_norm(x, self.eps, self.reduce, scale, bias)


def truncated_normal(std: float, cutoff: float = 3.0) -> nn.initializers.Initializer:
    """N(0, std^2) truncated at +-cutoff*std (the VAE's init_fn='normal')."""

    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.truncated_normal(key, -cutoff, cutoff, shape, dtype)

    return init
