"""HF `LlamaForCausalLM` (config.json + safetensors) -> colajax `Llama` params.

Linear weights `[out, in]` are transposed to `[in, out]` and reshaped into the multi-axis
kernels: q/k/v `(embed, heads, kv)` (HF rows are head-major: row = head * head_dim + j), o_proj
`(heads, kv, embed)`. RMSNorm `weight` -> `scale`. HF's q/k layout is already the rotate-half
RoPE layout of `attention.rope_half`, so no permutation is needed. `lm_head.weight` is absent
when the embeddings are tied (`tie_word_embeddings`); a tied checkpoint that still stores it is
accepted when it equals the embedding. The same weights serve the AR (causal) and the LLaDA
(bidirectional) model.
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from colajax.convert.hf_dit import check_tensors
from colajax.models.config import LMConfig

# hf key -> (param path, hf shape, transform)
Spec = dict[str, tuple[tuple[str, ...], tuple[int, ...], Callable[[np.ndarray], np.ndarray]]]


def check_hf_llama_config(d: dict[str, Any], path: str = "config.json") -> None:
    """Reject HF LLaMA variants this port does not implement, naming the key and the fix."""
    if d.get("model_type", "llama") != "llama":
        raise ValueError(
            f"{path}: model_type is {d['model_type']!r}, expected 'llama' (a HF "
            "LlamaForCausalLM folder); convert the weights to the LLaMA layout first."
        )
    problems = []
    if d.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={d['hidden_act']!r} (only 'silu' / SwiGLU)")
    for key in ("attention_bias", "mlp_bias"):
        if d.get(key, False):
            problems.append(f"{key}=true (the baselines have no biases)")
    for key in ("rope_scaling", "rope_parameters"):
        rope = d.get(key) or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            problems.append(f"{key}={d[key]!r} (only plain RoPE)")
    if problems:
        raise ValueError(f"{path}: unsupported LLaMA settings: " + "; ".join(problems) + ".")


def _linear(spec: Spec, hf: str, path: tuple[str, ...], in_shape, out_shape) -> None:
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))

    def kernel(w):
        return np.ascontiguousarray(w.T).reshape(*in_shape, *out_shape)

    spec[f"{hf}.weight"] = (path + ("kernel",), (n_out, n_in), kernel)


def llama_hf_spec(cfg: LMConfig, with_lm_head: bool | None = None) -> Spec:
    """Every HF tensor of a `LlamaForCausalLM` with this config and where it goes."""
    d, hd, f = cfg.dim, cfg.head_dim, cfg.ffn_dim
    spec: Spec = {
        "model.embed_tokens.weight": (
            ("embed_tokens", "embedding"),
            (cfg.vocab_size, d),
            lambda w: w,
        ),
        "model.norm.weight": (("norm", "scale"), (d,), lambda w: w),
    }
    for i in range(cfg.num_layers):
        hf, p = f"model.layers.{i}", (f"layers_{i}",)
        spec[f"{hf}.input_layernorm.weight"] = (p + ("input_layernorm", "scale"), (d,), lambda w: w)
        spec[f"{hf}.post_attention_layernorm.weight"] = (
            p + ("post_attention_layernorm", "scale"),
            (d,),
            lambda w: w,
        )
        _linear(spec, f"{hf}.self_attn.q_proj", p + ("q_proj",), (d,), (cfg.num_heads, hd))
        _linear(spec, f"{hf}.self_attn.k_proj", p + ("k_proj",), (d,), (cfg.kv_heads, hd))
        _linear(spec, f"{hf}.self_attn.v_proj", p + ("v_proj",), (d,), (cfg.kv_heads, hd))
        _linear(spec, f"{hf}.self_attn.o_proj", p + ("o_proj",), (cfg.num_heads, hd), (d,))
        _linear(spec, f"{hf}.mlp.gate_proj", p + ("gate_proj",), (d,), (f,))
        _linear(spec, f"{hf}.mlp.up_proj", p + ("up_proj",), (d,), (f,))
        _linear(spec, f"{hf}.mlp.down_proj", p + ("down_proj",), (f,), (d,))
    if with_lm_head is None:
        with_lm_head = not cfg.tie_embeddings
    if with_lm_head:
        _linear(spec, "lm_head", ("lm_head",), (d,), (cfg.vocab_size,))
    return spec


def llama_params_from_hf(tensors: dict[str, np.ndarray], cfg: LMConfig) -> dict:
    """Map a HF LLaMA state dict to the (unboxed, float32) param tree of `Llama(cfg)`.

    Raises a ValueError naming every missing, unexpected or mis-shaped tensor.
    """
    tied_but_stored = cfg.tie_embeddings and "lm_head.weight" in tensors
    spec = llama_hf_spec(cfg, with_lm_head=(not cfg.tie_embeddings) or tied_but_stored)
    check_tensors(tensors, {k: v[1] for k, v in spec.items()}, "LLaMA")
    if tied_but_stored:
        head = np.asarray(tensors["lm_head.weight"], np.float32)
        emb = np.asarray(tensors["model.embed_tokens.weight"], np.float32)
        if not np.array_equal(head, emb):
            raise ValueError(
                "tie_word_embeddings is true but lm_head.weight differs from "
                "model.embed_tokens.weight; set tie_word_embeddings to false in config.json."
            )
        del spec["lm_head.weight"]
    params: dict = {}
    for key, (path, _, transform) in spec.items():
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = transform(np.asarray(tensors[key], np.float32))
    return params
