"""Tiny AR / LLaDA configs and host-side random params (no compiled init: fast on 2 cores)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colajax.models.config import LMConfig
from colajax.models.llama import Llama

# GQA (4 query heads on 2 kv heads) and an attention width (32) unlike dim (24).
TINY_AR = LMConfig(
    vocab_size=64, dim=24, ffn_dim=40, num_heads=4, num_kv_heads=2, head_dim=8, num_layers=2
)
TINY_LLADA = dataclasses.replace(TINY_AR, causal=False, mask_id=63)


def random_params(cfg: LMConfig, seed: int = 0, std: float = 0.2) -> dict:
    """`Llama(cfg)` params drawn on the host: N(0, std^2) weights, RMSNorm scales 1 + 0.1 N(0, 1)
    (std 0.2 gives peaked logits, so argmax decisions are far from ties)."""
    shapes = jax.eval_shape(Llama(cfg).init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        return 1.0 + 0.1 * noise if path[-1].key == "scale" else std * noise

    return jax.tree_util.tree_map_with_path(draw, nn.unbox(shapes)["params"])
