"""Shared helpers of the AR / LLaDA parity tests: find the fixture folders, import them through
the real `colajax import-hf --llama` CLI and restore the checkpoint."""

import os

import numpy as np
import parity_dirs
import pytest
from parity_dirs import ENV, PARITY_DIR, TOL  # noqa: F401  (TOL: re-exported)

from colajax import checkpoint
from colajax.cli import import_hf as import_hf_cli
from colajax.models.config import LMConfig


def fixture_dirs(prefix: str) -> list[str]:
    """Every `<prefix>*` folder under PARITY_DIR holding cases.npz + config.json."""
    return parity_dirs.fixture_dirs("cases.npz", prefix=prefix)


def require_fixtures(found: list[str], prefix: str) -> None:
    if not found:
        if ENV in os.environ:
            pytest.fail(f"{ENV}={PARITY_DIR} holds no {prefix}* fixture (cases.npz + config.json).")
        pytest.skip(f"no {prefix}* parity fixtures under {PARITY_DIR} (set {ENV})")


def import_fixture(path: str, tmp_root, model: str, mask_id: int | None = None):
    """CLI import (float32) -> (params["lm"], LMConfig, meta)."""
    out = os.path.join(tmp_root, "ckpt")
    argv = ["--llama", path, "--model", model, "--out", out]
    if mask_id is not None:
        argv += ["--mask-id", str(mask_id)]
    assert import_hf_cli.main(argv) == 0
    params, meta = checkpoint.restore_params(out)
    assert meta["family"] == model and meta["source"]["format"] == "hf-safetensors"
    cfg = LMConfig.from_dict(meta["models"]["lm"])
    assert cfg.dtype == "float32" and cfg.causal == (model == "ar")
    return params["lm"], cfg, meta


def prompts_of(c, ids_key: str = "prompt_ids", lens_key: str = "prompt_lens") -> list[list[int]]:
    ids = np.asarray(c[ids_key])
    lens = np.asarray(c[lens_key]) if lens_key in c else np.full(len(ids), ids.shape[1])
    return [row[:n].tolist() for row, n in zip(ids, lens)]


def report(record_property, fixture: str, case: str, err: float) -> None:
    print(f"\n[parity] {os.path.basename(fixture)} {case}: max abs err {err:.3e}")
    record_property(f"max_abs_err_{case}", err)
