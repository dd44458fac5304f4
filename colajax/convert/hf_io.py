"""Read a HuggingFace model directory: `config.json` + safetensors (single file or sharded)."""

import json
import os
from typing import Any

import numpy as np
from safetensors.numpy import load_file

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-download or fix the file.") from None


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(
            f"cannot read safetensors file {path}: {e}. Re-download it (it may be truncated)."
        ) from None


def _load_sharded(directory: str) -> dict[str, np.ndarray]:
    index_path = os.path.join(directory, INDEX)
    index = _read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path} has no 'weight_map' object; it is not a safetensors index.")
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not os.path.isfile(os.path.join(directory, s))]
    if missing:
        raise FileNotFoundError(
            f"shard file(s) {missing} named in {index_path} are missing from {directory}; "
            "download every shard listed in the index."
        )
    tensors: dict[str, np.ndarray] = {}
    for shard in shards:
        part = _load_safetensors(os.path.join(directory, shard))
        dup = sorted(set(part) & set(tensors))
        if dup:
            raise ValueError(f"tensor(s) {dup} appear in more than one shard of {directory}.")
        tensors.update(part)
    absent = sorted(k for k in weight_map if k not in tensors)
    if absent:
        raise ValueError(
            f"tensor(s) {absent} listed in {index_path} are not in their shard files; "
            "the shards do not belong to this index."
        )
    return tensors


def load_hf_dir(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return (config dict, {tensor name: array}) of a HF model directory."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"HF model directory {path} does not exist (expected config.json + safetensors)."
        )
    config_path = os.path.join(path, CONFIG)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} is missing; a HF model directory needs it.")
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object, got {type(config).__name__}.")
    if os.path.isfile(os.path.join(path, SINGLE)):
        tensors = _load_safetensors(os.path.join(path, SINGLE))
    elif os.path.isfile(os.path.join(path, INDEX)):
        tensors = _load_sharded(path)
    else:
        raise FileNotFoundError(
            f"no weights in {path}: expected {SINGLE} or {INDEX} with its shards."
        )
    return config, tensors
