"""Released HF `ColaDiTModel` state dict -> colajax `DiT` params (spec §3.2, §12).

Linear weights `(out, in)` are transposed to `(in, out)` and their output axis is reshaped to the
kernel's feature axes: the fused qkv rows `(3, heads, head_dim)` (q|k|v outermost), AdaLN
`*_in` rows `(2, txt_dim)` (shift|scale), attention `proj_out` inputs `(heads, head_dim)`.
LayerNorm `weight/bias` -> `scale/bias`. The persistent RoPE buffers
`blocks.{i}.msa.rope.rope.freqs` are checked against `10000^(-2j/rope_dim)` and dropped.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from colajax.models import attention
from colajax.models.config import DiTConfig
from colajax.models.dit import ROPE_THETA, SINUSOID_DIM, check_config

# hf key -> (param path, hf shape, transform(np.ndarray) -> np.ndarray)
Spec = dict[str, tuple[tuple[str, ...], tuple[int, ...], Callable[[np.ndarray], np.ndarray]]]

ROPE_BUFFER = "blocks.{i}.msa.rope.rope.freqs"
# HF config keys that are not hyper-parameters here: the storage dtype written by transformers
# (the compute dtype is the caller's choice) and our own `remat` flag.
_NOT_HYPERPARAMS = ("dtype", "torch_dtype", "remat")


def dit_config_from_hf(d: dict[str, Any], **overrides) -> DiTConfig:
    """DiTConfig from a released `config.json` dict, validated; `overrides` (dtype=..., remat=...)
    set the fields the HF config does not carry."""
    if d.get("model_type", "cola_dit") != "cola_dit":
        raise ValueError(
            f"config model_type is {d['model_type']!r}, expected 'cola_dit'; point the converter "
            "at the DiT directory (cola_dit/), not the VAE."
        )
    clean = {k: v for k, v in d.items() if k not in _NOT_HYPERPARAMS}
    cfg = dataclasses.replace(DiTConfig.from_hf(clean), **overrides)
    check_config(cfg)
    return cfg


def _linear(prefix: tuple[str, ...], hf: str, out_shape, in_shape, bias: bool, spec: Spec):
    """Register `hf.weight` (and `hf.bias`) of a Linear mapped to kernel `in_shape+out_shape`."""
    n_out, n_in = int(np.prod(out_shape)), int(np.prod(in_shape))

    def kernel(w):
        return np.ascontiguousarray(w.T).reshape(*in_shape, *out_shape)

    spec[f"{hf}.weight"] = (prefix + ("kernel",), (n_out, n_in), kernel)
    if bias:
        spec[f"{hf}.bias"] = (prefix + ("bias",), (n_out,), lambda b: b.reshape(out_shape))


def _norm(prefix: tuple[str, ...], hf: str, width: int, spec: Spec):
    spec[f"{hf}.weight"] = (prefix + ("scale",), (width,), lambda w: w)
    spec[f"{hf}.bias"] = (prefix + ("bias",), (width,), lambda b: b)


def dit_hf_spec(cfg: DiTConfig) -> Spec:
    """Every tensor of the HF state dict (RoPE buffers excluded) and where it goes."""
    check_config(cfg)
    d, c_in, c_out = cfg.txt_dim, cfg.txt_in_channels, cfg.txt_out_channels
    hd, hidden = (cfg.heads, cfg.head_dim), cfg.expand_ratio * cfg.txt_dim
    spec: Spec = {}
    _linear(("txt_in",), "txt_in.proj", (d,), (c_in,), True, spec)
    _linear(("emb_in", "proj_in"), "emb_in.proj_in", (d,), (SINUSOID_DIM,), True, spec)
    _linear(("emb_in", "proj_hid"), "emb_in.proj_hid", (d,), (d,), True, spec)
    _linear(("emb_in", "proj_out"), "emb_in.proj_out", (cfg.emb_dim,), (d,), True, spec)
    for i in range(cfg.num_layers):
        blk, hf = (f"blocks_{i}",), f"blocks.{i}"
        msa = blk + ("msa",)
        _linear(msa + ("proj_qkv",), f"{hf}.msa.proj_qkv", (3, *hd), (d,), cfg.qk_bias, spec)
        _linear(msa + ("proj_out",), f"{hf}.msa.proj_out", (d,), hd, cfg.qk_bias, spec)
        _norm(msa + ("norm_q",), f"{hf}.msa.norm_q", cfg.head_dim, spec)
        _norm(msa + ("norm_k",), f"{hf}.msa.norm_k", cfg.head_dim, spec)
        _linear(blk + ("mlp", "proj_in"), f"{hf}.mlp.proj_in", (hidden,), (d,), True, spec)
        _linear(blk + ("mlp", "proj_out"), f"{hf}.mlp.proj_out", (d,), (hidden,), True, spec)
        for name in ("msa", "mlp"):
            ada = blk + ("ada",)
            _linear(ada + (f"{name}_in",), f"{hf}.ada.{name}_in.1", (2, d), (d,), True, spec)
            _linear(ada + (f"{name}_out",), f"{hf}.ada.{name}_out.1", (d,), (d,), True, spec)
    _norm(("txt_out_norm",), "txt_out_norm", d, spec)
    _linear(("txt_out_ada",), "txt_out_ada.out_in.1", (2, d), (d,), True, spec)
    _linear(("txt_out",), "txt_out.proj", (c_out,), (d,), True, spec)
    return spec


def hf_dit_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Expected HF tensor names and shapes, RoPE buffers included."""
    shapes = {k: v[1] for k, v in dit_hf_spec(cfg).items()}
    for i in range(cfg.num_layers):
        shapes[ROPE_BUFFER.format(i=i)] = (cfg.rope_dim // 2,)
    return shapes


def _check_rope_buffers(tensors, cfg: DiTConfig) -> None:
    expected = attention.inv_freq(cfg.rope_dim, ROPE_THETA)
    for i in range(cfg.num_layers):
        key = ROPE_BUFFER.format(i=i)
        got = np.asarray(tensors[key], np.float64)
        if not np.allclose(got, expected, rtol=1e-5, atol=0.0):
            raise ValueError(
                f"{key} = {got.tolist()} is not 10000^(-2j/{cfg.rope_dim}) = {expected.tolist()}; "
                "this checkpoint uses a different RoPE base/dimension than the released DiT and "
                "cannot be imported as is."
            )


def check_tensors(tensors, shapes: dict[str, tuple[int, ...]], what: str) -> None:
    """Exact key set and shapes, or a ValueError listing every problem by name."""
    missing = sorted(set(shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(shapes))
    if missing or unexpected:
        raise ValueError(
            f"{what} state dict does not match its config: missing {missing}, unexpected "
            f"{unexpected}. Check that config.json belongs to these weights."
        )
    bad = [
        f"{k}: expected {tuple(shapes[k])}, got {tuple(np.shape(tensors[k]))}"
        for k in sorted(shapes)
        if tuple(np.shape(tensors[k])) != tuple(shapes[k])
    ]
    if bad:
        raise ValueError(f"{what} tensor shape mismatch: " + "; ".join(bad))


def dit_params_from_hf(tensors: dict[str, np.ndarray], cfg: DiTConfig) -> dict:
    """Map an HF DiT state dict to the (unboxed, float32) param tree of `DiT(cfg)`."""
    spec = dit_hf_spec(cfg)
    check_tensors(tensors, hf_dit_shapes(cfg), "DiT")
    _check_rope_buffers(tensors, cfg)
    params: dict = {}
    for key, (path, _, transform) in spec.items():
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = transform(np.asarray(tensors[key], np.float32))
    return params
