"""Diagonal Gaussian posterior helpers (the official `DiagonalGaussianDistribution`).

All functions take float32 `[..., C]` arrays and reduce over the channel axis only, so a
`[B, L, C]` input gives per-token `[B, L]` values. Log-variances passed to `sample`, `kl*` and
`neg_entropy` are expected to be clamped already (`clamp_logvar`), as the official code stores them.
"""

import jax
import jax.numpy as jnp
import numpy as np

LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0
_LOG_2PI = float(np.log(2.0 * np.pi))


def clamp_logvar(logvar_raw):
    """Clamp a raw encoder log-variance to [-30, 20] (the official posterior's clamp)."""
    return jnp.clip(logvar_raw.astype(jnp.float32), LOGVAR_MIN, LOGVAR_MAX)


def mode(mean, logvar=None):
    """The posterior mode (= its mean); `logvar` is accepted for symmetry and ignored."""
    del logvar
    return mean


def sample(mean, logvar, rng):
    """Reparameterised draw `mean + exp(logvar / 2) * eps`, eps ~ N(0, I) in float32."""
    eps = jax.random.normal(rng, mean.shape, jnp.float32)
    return mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps


def kl_to_standard_normal(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over channels."""
    mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def kl(mean_p, logvar_p, mean_q, logvar_q):
    """KL(p || q) for diagonal Gaussians p = N(mean_p, e^logvar_p), q = N(mean_q, e^logvar_q)."""
    mean_p, logvar_p = mean_p.astype(jnp.float32), logvar_p.astype(jnp.float32)
    mean_q, logvar_q = mean_q.astype(jnp.float32), logvar_q.astype(jnp.float32)
    ratio = (jnp.exp(logvar_p) + jnp.square(mean_p - mean_q)) * jnp.exp(-logvar_q)
    return 0.5 * jnp.sum(logvar_q - logvar_p + ratio - 1.0, axis=-1)


def neg_entropy(logvar):
    """E_q[log q(z)] = -H(q) = -0.5 * sum(log(2 pi) + logvar + 1), summed over channels."""
    logvar = logvar.astype(jnp.float32)
    return -0.5 * jnp.sum(_LOG_2PI + logvar + 1.0, axis=-1)
