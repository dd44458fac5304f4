"""`colajax import-hf`: released HF Cola DLM weights -> a colajax params checkpoint.

    colajax import-hf --vae cola_vae/ --dit cola_dit/ --out ckpt/ [--dtype bfloat16]

Reads both HF directories (`config.json` + `model.safetensors` or a sharded index), checks
that the VAE and DiT agree (latent width, block size), maps the tensors onto the colajax
param trees and writes `{"vae": ..., "dit": ...}` + meta (both model configs, source) with
`checkpoint.save_params_checkpoint` (atomic; an existing non-empty OUT is refused).
`--dtype` sets the recorded compute dtype; parameters are always stored in float32.

    colajax import-hf --llama llama_dir/ --model ar|llada [--mask-id N] --out ckpt/

reads a HF `LlamaForCausalLM` folder as the AR (causal) or LLaDA (bidirectional) baseline and
writes `{"lm": ...}` + meta (`family`, `models.lm`, source).
"""

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from colajax.convert.hf_dit import dit_config_from_hf, dit_params_from_hf
from colajax.convert.hf_io import load_hf_dir
from colajax.convert.hf_llama import check_hf_llama_config, llama_params_from_hf
from colajax.convert.hf_vae import vae_config_from_hf, vae_params_from_hf
from colajax.models.config import LMConfig, check_compatible

MODEL_TYPES = {"vae": "cola_text_vae", "dit": "cola_dit"}
LM_FAMILIES = ("ar", "llada")


def _check_model_type(config: dict, which: str, path: str) -> None:
    got, want = config.get("model_type"), MODEL_TYPES[which]
    if got is not None and got != want:
        other = {v: k for k, v in MODEL_TYPES.items()}.get(got)
        hint = f"; it looks like the {other.upper()}, pass it as --{other}" if other else ""
        raise ValueError(f"{path}: model_type is {got!r}, expected {want!r}{hint}.")


def param_count(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def import_hf(vae_dir: str, dit_dir: str, dtype: str = "float32"):
    """Convert both HF directories in memory -> (params {"vae", "dit"}, meta)."""
    vae_hf, vae_tensors = load_hf_dir(vae_dir)
    dit_hf, dit_tensors = load_hf_dir(dit_dir)
    _check_model_type(vae_hf, "vae", vae_dir)
    _check_model_type(dit_hf, "dit", dit_dir)
    # The compute dtype is ours to choose; the HF `dtype`/`torch_dtype` is the storage dtype.
    vae_cfg = dataclasses.replace(vae_config_from_hf(vae_hf), dtype=dtype)
    dit_cfg = dit_config_from_hf(dit_hf, dtype=dtype)
    check_compatible(vae_cfg, dit_cfg)
    params = {
        "vae": vae_params_from_hf(vae_tensors, vae_cfg),
        "dit": dit_params_from_hf(dit_tensors, dit_cfg),
    }
    meta = {
        "family": "cola",
        "models": {"vae": dataclasses.asdict(vae_cfg), "dit": dataclasses.asdict(dit_cfg)},
        "source": {
            "format": "hf-safetensors",
            "vae_dir": os.path.abspath(vae_dir),
            "dit_dir": os.path.abspath(dit_dir),
            "vae_tensors": len(vae_tensors),
            "dit_tensors": len(dit_tensors),
            "vae_model_type": vae_hf.get("model_type"),
            "dit_model_type": dit_hf.get("model_type"),
        },
    }
    return params, meta


def import_llama(
    llama_dir: str, model: str = "ar", dtype: str = "float32", mask_id: int | None = None
):
    """Convert a HF LLaMA directory in memory -> (params {"lm"}, meta).

    model='ar' builds a causal LMConfig; model='llada' a bidirectional one whose mask id
    defaults to the last vocabulary row (vocab_size - 1).
    """
    if model not in LM_FAMILIES:
        raise ValueError(f"unknown LM family {model!r}; use one of {LM_FAMILIES}.")
    hf, tensors = load_hf_dir(llama_dir)
    check_hf_llama_config(hf, os.path.join(llama_dir, "config.json"))
    causal = model == "ar"
    if not causal and mask_id is None:
        mask_id = int(hf.get("vocab_size", LMConfig.vocab_size)) - 1
    cfg = LMConfig.from_hf(hf, causal=causal, mask_id=mask_id, dtype=dtype)
    params = {"lm": llama_params_from_hf(tensors, cfg)}
    meta = {
        "family": model,
        "models": {"lm": dataclasses.asdict(cfg)},
        "source": {
            "format": "hf-safetensors",
            "llama_dir": os.path.abspath(llama_dir),
            "tensors": len(tensors),
            "model_type": hf.get("model_type"),
            "architectures": hf.get("architectures"),
        },
    }
    return params, meta
