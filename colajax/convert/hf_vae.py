"""Released HF Text VAE (`cola_text_vae`: config.json + model.safetensors) -> TextVAE params.

`vae_params_from_hf(tensors, cfg)` maps the 133 state-dict tensors (spec §2.2) onto the param
tree of `TextVAE(cfg)`: Linear weights are transposed to `(in, out)` and reshaped into the
multi-axis kernels (qkv `(embed, 3, heads, kv)`, attn_out `(heads, kv, embed)`, SwiGLU
`(embed, 2, mlp)` = [value | gate], encoder head `(embed, 2, latent)` = [mean | logvar]);
LayerNorm `weight` becomes `scale`. The key set and every shape are checked first.
"""

import dataclasses
from typing import Any

import numpy as np

from colajax.models.config import VAEConfig
from colajax.models.vae import validate_config

# HF config keys that are not model hyper-parameters of this port. `dtype`/`torch_dtype` are the
# storage dtype written by transformers; the compute dtype is chosen by the caller.
_NOT_HYPERPARAMS = ("dtype", "torch_dtype", "remat")


def vae_config_from_hf(d: dict[str, Any], **overrides) -> VAEConfig:
    """VAEConfig from a released `config.json` dict, validated; `overrides` (e.g.
    dtype="bfloat16", remat=True) set fields that the HF config does not carry."""
    if d.get("model_type", "cola_text_vae") != "cola_text_vae":
        raise ValueError(
            f"config model_type is {d['model_type']!r}, expected 'cola_text_vae'; "
            "point the converter at the VAE directory (cola_vae/), not the DiT."
        )
    if d.get("layer_norm_type", "layer_norm") != "layer_norm":
        raise ValueError(
            f"layer_norm_type={d['layer_norm_type']!r} is not supported (only 'layer_norm')."
        )
    if not d.get("rope_full_precision", True):
        raise ValueError("rope_full_precision=False is not supported; RoPE is computed in fp32.")
    clean = {k: v for k, v in d.items() if k not in _NOT_HYPERPARAMS}
    cfg = dataclasses.replace(VAEConfig.from_hf(clean), **overrides)
    validate_config(cfg)
    return cfg


def _entries(cfg: VAEConfig):
    """[(hf_key, hf_shape, param_path, param_shape, kind)], kind in linear|vector|conv1."""
    dim, ffn, c, v, h, hd = (
        cfg.dim,
        cfg.ffn_dim,
        cfg.latent_dim,
        cfg.vocab_size,
        cfg.num_heads,
        cfg.head_dim,
    )
    out = []

    def linear(hf, path, out_shape, in_shape, bias):
        n_out, n_in = int(np.prod(out_shape)), int(np.prod(in_shape))
        out.append(
            (f"{hf}.weight", (n_out, n_in), (*path, "kernel"), in_shape + out_shape, "linear")
        )
        if bias:
            out.append((f"{hf}.bias", (n_out,), (*path, "bias"), out_shape, "vector"))

    def norm(hf, path, shape):
        n = int(np.prod(shape))
        out.append((f"{hf}.weight", (n,), (*path, "scale"), shape, "vector"))
        out.append((f"{hf}.bias", (n,), (*path, "bias"), shape, "vector"))

    def blocks(side, count):
        for i in range(count):
            hf, p = f"{side}.blocks.{i}", (side, f"blocks_{i}")
            if cfg.layer_norm_affine:
                norm(f"{hf}.norm_attn", (*p, "norm_attn"), (dim,))
            linear(f"{hf}.qkv_proj", (*p, "qkv_proj"), (3, h, hd), (dim,), cfg.qk_bias)
            if cfg.qk_norm and cfg.qk_norm_affine:
                norm(f"{hf}.q_norm", (*p, "q_norm"), (h, hd))
                norm(f"{hf}.k_norm", (*p, "k_norm"), (h, hd))
            linear(f"{hf}.attn_out_proj", (*p, "attn_out_proj"), (dim,), (h, hd), cfg.bias)
            norm(f"{hf}.norm_ffn", (*p, "norm_ffn"), (dim,))
            swiglu = cfg.act == "swiglu"
            ffn_out_shape = (2, ffn // 2) if swiglu else (ffn,)
            linear(f"{hf}.ffn_proj", (*p, "ffn_proj"), ffn_out_shape, (dim,), cfg.bias)
            ffn_in = ffn // 2 if swiglu else ffn
            linear(f"{hf}.ffn_out", (*p, "ffn_out"), (dim,), (ffn_in,), cfg.bias)

    out.append(("encoder.wte.weight", (v + 1, dim), ("encoder", "wte", "embedding"), None, "copy"))
    p = cfg.patch_size
    pe = ("encoder", "patch_embedder")
    out.append(("encoder.patch_embedder.weight", (dim, dim, p), (*pe, "kernel"), None, "conv1"))
    out.append(("encoder.patch_embedder.bias", (dim,), (*pe, "bias"), (dim,), "vector"))
    blocks("encoder", cfg.encoder_num_blocks)
    head = (2, c) if cfg.use_variation else (c,)
    linear("encoder.final_layer", ("encoder", "final_layer"), head, (dim,), cfg.bias)
    linear("decoder.in_layer", ("decoder", "in_layer"), (dim,), (c,), cfg.bias)
    blocks("decoder", cfg.decoder_num_blocks)
    linear("decoder.unpatch_layer", ("decoder", "unpatch_layer"), (p * dim,), (dim,), True)
    norm("decoder.final_norm", ("decoder", "final_norm"), (dim,))
    linear("decoder.final_layer", ("decoder", "final_layer"), (v,), (dim,), cfg.bias)
    return out


def hf_vae_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """The exact HF state-dict key -> shape map for a config (133 keys when released)."""
    return {k: shape for k, shape, *_ in _entries(cfg)}


def vae_params_from_hf(tensors: dict[str, np.ndarray], cfg: VAEConfig) -> dict[str, Any]:
    """HF VAE tensors -> nested float32 numpy params matching `TextVAE(cfg).init` (unboxed)."""
    validate_config(cfg)
    entries = _entries(cfg)
    expected = {k for k, *_ in entries}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(
            f"VAE checkpoint does not match the config: missing tensors {missing}, unexpected "
            f"tensors {unexpected}. Check that config.json belongs to these weights."
        )
    bad = [
        f"{k}: expected {shape}, got {tuple(np.shape(tensors[k]))}"
        for k, shape, *_ in entries
        if tuple(np.shape(tensors[k])) != shape
    ]
    if bad:
        raise ValueError("VAE tensor shape mismatch (config vs weights):\n  " + "\n  ".join(bad))
    params: dict[str, Any] = {}
    for key, _, path, shape, kind in entries:
        w = np.asarray(tensors[key], dtype=np.float32)
        if kind == "linear":
            w = w.T.reshape(shape)
        elif kind == "conv1":  # Conv1d (out, in, 1) -> dense kernel (in, out)
            w = w[:, :, 0].T
        elif kind == "vector":
            w = w.reshape(shape)
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = np.ascontiguousarray(w)
    return params
