"""LLaMA backbone of the AR and LLaDA baselines (paper §5.3): RMSNorm pre-norm, SwiGLU, NeoX
(rotate-half) RoPE as in HF `LlamaForCausalLM`, no biases, grouped-query attention, optionally
tied embeddings. `config.causal` selects the AR (causal) or LLaDA (bidirectional) attention;
attention never crosses segments and keys of segment 0 (padding) are invisible.

Parameter tree (HF names; see `colajax/convert/hf_llama.py`):
  embed_tokens.embedding (vocab, embed)
  layers_{i}: input_layernorm.scale (embed), q_proj (embed, heads, kv), k_proj / v_proj
              (embed, heads, kv) with num_kv_heads heads, o_proj (heads, kv, embed),
              post_attention_layernorm.scale, gate_proj / up_proj (embed, mlp), down_proj
              (mlp, embed)
  norm.scale (embed); lm_head.kernel (embed, vocab) unless tie_embeddings

Mixed precision (`dtype='bfloat16'`, the paper's autocast): float32 params and residual stream,
RMSNorm in float32, every matmul with bf16 inputs, float32 accumulation and one bf16 rounding,
float32 RoPE and softmax. float32 compute uses Precision.HIGHEST matmuls.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from colajax.models.attention import (
    attend,
    block_causal_mask,
    cached_layout,
    init_cache,
    rope_half,
    write_rows,
)
from colajax.models.config import LMConfig
from colajax.models.layers import Dense, dtype_of, matmul, round_to

# causal=False: one block covering any position = full attention within a segment.
_ONE_BLOCK = 1 << 30


def rms_norm(x, eps: float, scale):
    """HF LlamaRMSNorm: float32 variance, `scale * normed.to(input dtype)`."""
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    return scale * (x32 * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class RMSNorm(nn.Module):
    eps: float

    @nn.compact
    def __call__(self, x):
        init = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
        scale = self.param("scale", init, (x.shape[-1],), jnp.float32)
        return rms_norm(x, self.eps, scale)


def _dense(cfg: LMConfig, features, axes, contract: int = 1) -> Dense:
    return Dense(
        features=tuple(features),
        axes=axes,
        contract=contract,
        use_bias=False,
        dtype=cfg.dtype,
        kernel_init=nn.initializers.normal(cfg.init_std),
    )


class LlamaBlock(nn.Module):
    """x + Attn(RMSNorm(x)); x + MLP(RMSNorm(x)). Returns (out_BLD, k_BLKD, v_BLKD): the new
    rows' keys (post-RoPE) and values in the compute dtype, what a KV cache stores."""

    config: LMConfig

    def setup(self):
        cfg = self.config
        hd = cfg.head_dim
        self.input_layernorm = RMSNorm(cfg.norm_eps)
        self.q_proj = _dense(cfg, (cfg.num_heads, hd), ("embed", "heads", "kv"))
        self.k_proj = _dense(cfg, (cfg.kv_heads, hd), ("embed", "heads", "kv"))
        self.v_proj = _dense(cfg, (cfg.kv_heads, hd), ("embed", "heads", "kv"))
        self.o_proj = _dense(cfg, (cfg.dim,), ("heads", "kv", "embed"), contract=2)
        self.post_attention_layernorm = RMSNorm(cfg.norm_eps)
        self.gate_proj = _dense(cfg, (cfg.ffn_dim,), ("embed", "mlp"))
        self.up_proj = _dense(cfg, (cfg.ffn_dim,), ("embed", "mlp"))
        self.down_proj = _dense(cfg, (cfg.dim,), ("mlp", "embed"))

    def __call__(self, x_BLD, pos_BL, mask_B1QK, cache_k_BSKD=None, cache_v_BSKD=None):
        cfg = self.config
        dt = dtype_of(cfg.dtype)
        h = self.input_layernorm(x_BLD)
        q = round_to(rope_half(self.q_proj(h), pos_BL, cfg.rope_theta), dt)
        k = round_to(rope_half(self.k_proj(h), pos_BL, cfg.rope_theta), dt)
        v = self.v_proj(h)
        keys, vals = k, v
        if cache_k_BSKD is not None:
            keys = jnp.concatenate([cache_k_BSKD.astype(dt), k], axis=1)
            vals = jnp.concatenate([cache_v_BSKD.astype(dt), v], axis=1)
        rep = cfg.num_heads // cfg.kv_heads  # HF repeat_kv: kv head j serves q heads j*rep..
        if rep > 1:
            keys, vals = jnp.repeat(keys, rep, axis=2), jnp.repeat(vals, rep, axis=2)
        x = x_BLD + self.o_proj(attend(q, keys, vals, mask_B1QK, dt)).astype(jnp.float32)
        h = self.post_attention_layernorm(x)
        gate = round_to(jax.nn.silu(self.gate_proj(h).astype(jnp.float32)), dt)
        act = round_to(gate.astype(jnp.float32) * self.up_proj(h).astype(jnp.float32), dt)
        return x + self.down_proj(act).astype(jnp.float32), k, v


def default_layout(shape, positions_BL=None, segment_ids_BL=None):
    """(positions, segment ids) `[B, L]`: 0..L-1 and all ones unless given."""
    b, length = shape[:2]
    if segment_ids_BL is None:
        segment_ids_BL = jnp.ones((b, length), jnp.int32)
    if positions_BL is None:
        positions_BL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    return positions_BL, segment_ids_BL


class Llama(nn.Module):
    """ids -> float32 logits; `cached` decodes against an explicit KV cache (causal only)."""

    config: LMConfig

    def setup(self):
        cfg = self.config
        emb_init = nn.with_logical_partitioning(
            nn.initializers.normal(cfg.init_std), ("vocab", "embed")
        )
        self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.dim, embedding_init=emb_init)
        block = nn.remat(LlamaBlock) if cfg.remat else LlamaBlock
        self.layers = [block(cfg) for _ in range(cfg.num_layers)]
        self.norm = RMSNorm(cfg.norm_eps)
        if not cfg.tie_embeddings:
            self.lm_head = _dense(cfg, (cfg.vocab_size,), ("embed", "vocab"))

    def _mask(self, q_pos, k_pos, q_seg, k_seg):
        block = 1 if self.config.causal else _ONE_BLOCK
        return block_causal_mask(q_pos, k_pos, block, q_seg, k_seg)

    def _embed(self, ids):
        return self.embed_tokens(ids).astype(jnp.float32)

    def hidden(self, ids_BL, positions_BL=None, segment_ids_BL=None):
        """The final-normed hidden states `[B, L, dim]` (float32), before the LM head."""
        pos, seg = default_layout(ids_BL.shape, positions_BL, segment_ids_BL)
        mask = self._mask(pos, pos, seg, seg)
        x = self._embed(ids_BL)
        for layer in self.layers:
            x, _, _ = layer(x, pos, mask)
        return self.norm(x)

    def head(self, h_BLD):
        """LM head on final-normed hidden states -> float32 logits `[B, L, vocab]`."""
        dt = dtype_of(self.config.dtype)
        if self.config.tie_embeddings:
            logits = matmul(h_BLD, self.embed_tokens.embedding.T, 1, dt)
        else:
            logits = self.lm_head(h_BLD)
        return logits.astype(jnp.float32)

    def __call__(self, ids_BL, positions_BL=None, segment_ids_BL=None):
        """Logits `[B, L, vocab]` float32 (causal or bidirectional per config)."""
        return self.head(self.hidden(ids_BL, positions_BL, segment_ids_BL))

    def cached(self, ids_BQ, cache, new_lengths_B=None, update=True, *, last_only=False):
        """Q new rows per sample at positions end..end+Q-1 against the cache (causal models).

        Rows j < new_lengths_B[b] (default Q) are valid; they see the sample's cached rows and
        the earlier new rows. update=True writes their K/V at `end` and advances `end` by
        new_lengths_B. last_only=True returns the logits of each sample's last valid new row
        only (`[B, 1, vocab]`, e.g. after a prompt prefill). -> (logits, cache).
        """
        cfg = self.config
        if not cfg.causal:
            raise ValueError(
                "Llama.cached needs a causal (AR) model; a bidirectional (LLaDA) model has no "
                "KV-cached decoding: call the model on the whole sequence."
            )
        if len(cache["layers"]) != cfg.num_layers:
            raise ValueError(
                f"cache has {len(cache['layers'])} layers but the model has {cfg.num_layers}; "
                "build it with init_lm_cache(config, ...)."
            )
        b, q_len = ids_BQ.shape
        if new_lengths_B is None:
            new_lengths_B = jnp.full((b,), q_len, jnp.int32)
        new_lengths_B = jnp.asarray(new_lengths_B, jnp.int32)
        q_pos, q_seg, k_pos, k_seg = cached_layout(cache, q_len, new_lengths_B)
        mask = self._mask(q_pos, k_pos, q_seg, k_seg)
        x = self._embed(ids_BQ)
        kvs = []
        for layer, c in zip(self.layers, cache["layers"]):
            x, k, v = layer(x, q_pos, mask, c["k"], c["v"])
            kvs.append((k, v))
        if last_only:
            last = jnp.maximum(new_lengths_B - 1, 0)
            x = jnp.take_along_axis(x, last[:, None, None], axis=1)
        logits = self.head(self.norm(x))
        if not update:
            return logits, cache
        end = cache["end"]
        layers = [
            {"k": write_rows(c["k"], end, k), "v": write_rows(c["v"], end, v)}
            for c, (k, v) in zip(cache["layers"], kvs)
        ]
        return logits, {"end": end + new_lengths_B, "layers": layers}


def init_lm_cache(config: LMConfig, batch: int, max_len: int):
    """An empty KV cache (num_kv_heads heads, compute dtype) for `max_len` rows per sample."""
    return init_cache(
        batch, max_len, config.num_layers, config.kv_heads, config.head_dim, dtype_of(config.dtype)
    )


def lm_params(params):
    """The `Llama` param tree from a checkpoint's `{"lm": ...}` dict (or the tree itself)."""
    if isinstance(params, dict) and "lm" in params and "embed_tokens" not in params:
        return params["lm"]
    return params
