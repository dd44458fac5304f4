"""Text VAE of Cola DLM: block-causal transformer encoder (tokens -> per-token Gaussian latents)
and decoder (latents -> vocabulary logits), numerically faithful to the released PyTorch model
(official-implementation.md §2, §5).

Parameter tree (mirrors the HF state dict; see `colajax/convert/hf_vae.py`):
  encoder: wte, patch_embedder, blocks_{i}, final_layer
  decoder: in_layer, blocks_{i}, unpatch_layer, final_norm, final_layer
  block:   norm_attn, qkv_proj (embed, 3, heads, kv), q_norm / k_norm (heads, kv),
           attn_out_proj (heads, kv, embed), norm_ffn, ffn_proj (embed, 2, mlp) = [value | gate]
           for SwiGLU or (embed, mlp) otherwise, ffn_out (mlp, embed)
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from colajax.models.attention import (
    attend,
    block_causal_mask,
    cached_layout,
    init_cache,
    rope_half,
    write_rows,
)
from colajax.models.config import VAEConfig
from colajax.models.layers import Dense, LayerNorm, dtype_of, round_to, truncated_normal
from colajax.models.posterior import LOGVAR_MIN

INIT_STD = 0.02  # official init_fn="normal": truncated N(0, 0.02^2) at +-3 std
INIT_CUTOFF = 3.0
ACTS = ("swiglu", "silu", "gelu")
# block_causal=False: one block covering any position = full attention within a sample.
_ONE_BLOCK = 1 << 30


def validate_config(cfg: VAEConfig) -> None:
    """Reject configurations this port does not implement (with the reason and the fix)."""
    if cfg.patch_size != 1:
        raise ValueError(
            f"VAE patch_size={cfg.patch_size} is not implemented (only patch_size=1, the released "
            "model); set patch_size to 1."
        )
    if cfg.shared_heads_kv != 1:
        raise ValueError(
            f"VAE shared_heads_kv={cfg.shared_heads_kv} is not implemented (the official GQA path "
            "is broken, spec §11.2); set shared_heads_kv to 1."
        )
    if cfg.act not in ACTS:
        raise ValueError(f"VAE act={cfg.act!r} is not supported; use one of {ACTS}.")
    if cfg.dim % cfg.num_heads or cfg.head_dim % 2:
        raise ValueError(
            f"VAE dim={cfg.dim} must split into num_heads={cfg.num_heads} heads of even width."
        )
    if cfg.act == "swiglu" and cfg.ffn_dim % 2:
        raise ValueError(f"VAE ffn_dim={cfg.ffn_dim} must be even for SwiGLU.")
    if cfg.block_size < 1:
        raise ValueError(f"VAE block_size={cfg.block_size} must be >= 1.")
    dtype_of(cfg.dtype)


def _torch_default_uniform(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default Conv/Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (spec §2.6)."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _dense(cfg: VAEConfig, features, axes, **kw) -> Dense:
    kw.setdefault("kernel_init", truncated_normal(INIT_STD, INIT_CUTOFF))
    return Dense(features=features, axes=axes, dtype=cfg.dtype, **kw)


class TextVAEBlock(nn.Module):
    """One encoder/decoder block with the released `post_norm` residual arrangement:
    x1 = norm_attn(x) + Attn(x); out = x1 + norm_ffn(FFN(x1)) (pre-norm when post_norm=False).
    """

    config: VAEConfig

    def setup(self):
        cfg = self.config
        h, d, eps = cfg.num_heads, cfg.head_dim, cfg.layer_norm_eps
        self.norm_attn = LayerNorm(eps, affine=cfg.layer_norm_affine)
        self.qkv_proj = _dense(cfg, (3, h, d), ("embed", None, "heads", "kv"), use_bias=cfg.qk_bias)
        if cfg.qk_norm:  # LayerNorm over the full width (all heads), not per head
            qk = dict(eps=eps, affine=cfg.qk_norm_affine, axes=("heads", "kv"), reduce=2)
            self.q_norm = LayerNorm(**qk)
            self.k_norm = LayerNorm(**qk)
        self.attn_out_proj = _dense(
            cfg, (cfg.dim,), ("heads", "kv", "embed"), contract=2, use_bias=cfg.bias
        )
        self.norm_ffn = LayerNorm(eps)
        if cfg.act == "swiglu":
            ffn_feat, ffn_axes = (2, cfg.ffn_dim // 2), ("embed", None, "mlp")
        else:
            ffn_feat, ffn_axes = (cfg.ffn_dim,), ("embed", "mlp")
        self.ffn_proj = _dense(cfg, ffn_feat, ffn_axes, use_bias=cfg.bias)
        self.ffn_out = _dense(cfg, (cfg.dim,), ("mlp", "embed"), use_bias=cfg.bias)

    def _ffn(self, x):
        dt = dtype_of(self.config.dtype)
        h = self.ffn_proj(x).astype(jnp.float32)
        if self.config.act == "swiglu":  # [value | gate]; silu(gate) and the product round once
            gate = round_to(jax.nn.silu(h[..., 1, :]), dt).astype(jnp.float32)
            h = h[..., 0, :] * gate
        elif self.config.act == "silu":
            h = jax.nn.silu(h)
        else:  # torch nn.GELU(): exact erf form
            h = jax.nn.gelu(h, approximate=False)
        return self.ffn_out(round_to(h, dt))

    def __call__(self, x_BLD, pos_BL, mask_B1QK, cache_k_BSHD=None, cache_v_BSHD=None):
        """Returns (out_BLD, k_BLHD, v_BLHD); k/v of the new rows are post-norm, post-RoPE in
        the compute dtype (what a KV cache stores). Cached keys/values are prepended if given."""
        cfg = self.config
        dt = dtype_of(cfg.dtype)
        h = x_BLD if cfg.post_norm else self.norm_attn(x_BLD)
        qkv = self.qkv_proj(h)  # [B, L, 3, H, D]
        if cfg.clip_qkv is not None:
            qkv = jnp.clip(qkv, -cfg.clip_qkv, cfg.clip_qkv)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if cfg.qk_norm:  # float32 LayerNorm, cast back to the projection dtype
            q, k = round_to(self.q_norm(q), dt), round_to(self.k_norm(k), dt)
        q = round_to(rope_half(q, pos_BL, cfg.rope_theta), dt)
        k = round_to(rope_half(k, pos_BL, cfg.rope_theta), dt)
        keys, vals = k, v
        if cache_k_BSHD is not None:
            keys = jnp.concatenate([cache_k_BSHD.astype(dt), k], axis=1)
            vals = jnp.concatenate([cache_v_BSHD.astype(dt), v], axis=1)
        attn = self.attn_out_proj(attend(q, keys, vals, mask_B1QK, dt))
        if cfg.post_norm:
            x1 = self.norm_attn(x_BLD) + attn  # residual stream is float32 from here on
            out = x1 + self.norm_ffn(self._ffn(x1))
        else:
            x1 = x_BLD + attn
            out = x1 + self._ffn(self.norm_ffn(x1))
        return out, k, v


def _block_cls(cfg: VAEConfig):
    return nn.remat(TextVAEBlock) if cfg.remat else TextVAEBlock


class TextVAEEncoder(nn.Module):
    """ids -> (mean, logvar_raw), both float32 `[B, L, latent_dim]`."""

    config: VAEConfig

    @nn.compact
    def __call__(self, ids_BL, pos_BL, mask_B1LL):
        cfg = self.config
        emb_init = nn.with_logical_partitioning(
            truncated_normal(INIT_STD, INIT_CUTOFF), ("vocab", "embed")
        )
        x = nn.Embed(cfg.vocab_size + 1, cfg.dim, embedding_init=emb_init, name="wte")(ids_BL)
        x = x.astype(jnp.float32)
        torch_init = _torch_default_uniform(cfg.dim * cfg.patch_size)
        x = _dense(
            cfg,
            (cfg.dim,),
            (None, "embed"),
            kernel_init=torch_init,
            bias_init=torch_init,
            name="patch_embedder",
        )(x)
        for i in range(cfg.encoder_num_blocks):
            x, _, _ = _block_cls(cfg)(cfg, name=f"blocks_{i}")(x, pos_BL, mask_B1LL)
        c = cfg.latent_dim
        final_norm = LayerNorm(cfg.layer_norm_eps, affine=False, name="final_norm")
        if cfg.use_variation:
            y = _dense(
                cfg, (2, c), ("embed", None, "latent"), use_bias=cfg.bias, name="final_layer"
            )
            y = y(x)  # [B, L, 2, C] = [mean | logvar]
            mean, logvar = y[..., 0, :], y[..., 1, :]
            if cfg.encoder_last_ln:
                mean = final_norm(mean)
        else:  # deterministic encoder: LN on the whole head; report the minimum log-variance
            mean = final_norm(
                _dense(cfg, (c,), ("embed", "latent"), use_bias=cfg.bias, name="final_layer")(x)
            )
            logvar = jnp.full(mean.shape, LOGVAR_MIN, jnp.float32)
        return mean.astype(jnp.float32), logvar.astype(jnp.float32)


class TextVAEDecoder(nn.Module):
    """latents -> logits; optionally attends to cached keys/values of earlier rows."""

    config: VAEConfig

    def setup(self):
        cfg = self.config
        self.in_layer = _dense(cfg, (cfg.dim,), ("latent", "embed"), use_bias=cfg.bias)
        self.blocks = [_block_cls(cfg)(cfg) for _ in range(cfg.decoder_num_blocks)]
        self.unpatch_layer = _dense(cfg, (cfg.dim * cfg.patch_size,), (None, "embed"))
        self.final_norm = LayerNorm(cfg.layer_norm_eps)
        self.final_layer = _dense(cfg, (cfg.vocab_size,), ("embed", "vocab"), use_bias=cfg.bias)

    def __call__(self, z_BQC, pos_BQ, mask_B1QK, cache_layers=None):
        x = self.in_layer(z_BQC.astype(jnp.float32))
        kvs = []
        for i, block in enumerate(self.blocks):
            ck = cv = None
            if cache_layers is not None:
                ck, cv = cache_layers[i]["k"], cache_layers[i]["v"]
            x, k, v = block(x, pos_BQ, mask_B1QK, ck, cv)
            kvs.append((k, v))
        logits = self.final_layer(self.final_norm(self.unpatch_layer(x)))
        return logits.astype(jnp.float32), kvs


def _layout(shape, segment_ids_BL, positions_BL):
    b, length = shape[:2]
    if segment_ids_BL is None:
        segment_ids_BL = jnp.ones((b, length), jnp.int32)
    if positions_BL is None:
        positions_BL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    return segment_ids_BL, positions_BL


class TextVAE(nn.Module):
    """Encoder q_phi(z|x) + non-autoregressive block-causal decoder p_theta(x|z)."""

    config: VAEConfig

    def setup(self):
        validate_config(self.config)
        self.encoder = TextVAEEncoder(self.config)
        self.decoder = TextVAEDecoder(self.config)

    def _mask(self, q_pos, k_pos, q_seg, k_seg):
        bs = self.config.block_size if self.config.block_causal else _ONE_BLOCK
        return block_causal_mask(q_pos, k_pos, bs, q_seg, k_seg)

    def encode(self, ids_BL, segment_ids_BL=None, positions_BL=None):
        """-> (mean_BLC, logvar_raw_BLC), float32. Clamp logvar with posterior.clamp_logvar."""
        seg, pos = _layout(ids_BL.shape, segment_ids_BL, positions_BL)
        return self.encoder(ids_BL, pos, self._mask(pos, pos, seg, seg))

    def decode(self, z_BLC, segment_ids_BL=None, positions_BL=None):
        """Full (non-cached) decode -> logits_BLV, float32."""
        seg, pos = _layout(z_BLC.shape, segment_ids_BL, positions_BL)
        logits, _ = self.decoder(z_BLC, pos, self._mask(pos, pos, seg, seg))
        return logits

    def decode_cached(self, z_BQC, cache, new_lengths_B=None, update=True):
        """Decode Q new rows per sample at positions end..end+Q-1 against the cache.

        Rows j < new_lengths_B[b] (default Q) are valid; they see the sample's cached rows and
        each other block-causally. update=True writes their K/V at `end` and advances `end` by
        new_lengths_B (rows past the cache size are dropped). -> (logits_BQV, cache).
        """
        cfg = self.config
        if len(cache["layers"]) != cfg.decoder_num_blocks:
            raise ValueError(
                f"cache has {len(cache['layers'])} layers but the decoder has "
                f"{cfg.decoder_num_blocks}; build it with init_decoder_cache(config, ...)."
            )
        b, q_len = z_BQC.shape[:2]
        if new_lengths_B is None:
            new_lengths_B = jnp.full((b,), q_len, jnp.int32)
        new_lengths_B = jnp.asarray(new_lengths_B, jnp.int32)
        q_pos, q_seg, k_pos, k_seg = cached_layout(cache, q_len, new_lengths_B)
        mask = self._mask(q_pos, k_pos, q_seg, k_seg)
        logits, kvs = self.decoder(z_BQC, q_pos, mask, cache["layers"])
        if not update:
            return logits, cache
        end = cache["end"]
        layers = [
            {"k": write_rows(c["k"], end, k), "v": write_rows(c["v"], end, v)}
            for c, (k, v) in zip(cache["layers"], kvs)
        ]
        return logits, {"end": end + new_lengths_B, "layers": layers}

    def __call__(self, ids_BL, segment_ids_BL=None, positions_BL=None):
        """Encode, then decode the posterior mode -> (logits, mean, logvar_raw)."""
        mean, logvar_raw = self.encode(ids_BL, segment_ids_BL, positions_BL)
        return self.decode(mean, segment_ids_BL, positions_BL), mean, logvar_raw


def init_decoder_cache(config: VAEConfig, batch: int, max_len: int):
    """An empty decoder KV cache (zeros in the compute dtype) for `max_len` rows per sample."""
    validate_config(config)
    return init_cache(
        batch,
        max_len,
        config.decoder_num_blocks,
        config.num_heads,
        config.head_dim,
        dtype_of(config.dtype),
    )
