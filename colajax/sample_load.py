"""Loading a model for generation: colajax checkpoints (trained or `import-hf`) -> params and
model configs, plus the tokenizer a training run recorded.

A training workdir (`<dir>/prior/checkpoints` for stage 'both', `<dir>/checkpoints`), a stage
directory or a checkpoint root are all accepted. Import-hf meta holds `vae_config`/`dit_config`;
trainer meta holds `vae`/`dit` (and the experiment `config`).
"""

import contextlib
import logging
import os

from colajax import checkpoint
from colajax.models.config import DiTConfig, VAEConfig, check_compatible


def configs_from_meta(meta: dict) -> tuple[VAEConfig, DiTConfig]:
    """Model configs from checkpoint meta: `vae_config`/`dit_config` (import-hf) or the
    `vae`/`dit` sections written by the trainer (top level or inside `config`)."""
    for vkey, dkey, src in (("vae_config", "dit_config", meta), ("vae", "dit", meta),
                            ("vae", "dit", meta.get("config") or {})):  # fmt: skip
        if isinstance(src.get(vkey), dict) and isinstance(src.get(dkey), dict):
            vae_cfg, dit_cfg = VAEConfig.from_dict(src[vkey]), DiTConfig.from_dict(src[dkey])
            check_compatible(vae_cfg, dit_cfg)
            return vae_cfg, dit_cfg
    if isinstance(meta.get("vae"), dict) or meta.get("stage") == "vae":
        raise ValueError(
            "this is a Stage-1 (VAE-only) checkpoint; generation needs a DiT: point at a Stage-2 "
            "run (e.g. <workdir>/prior) or an import-hf checkpoint."
        )
    raise ValueError(
        f"checkpoint meta holds no model configs (keys: {sorted(meta)}); expected "
        "'vae_config'/'dit_config' (import-hf) or 'vae'/'dit' (a colajax training run)."
    )


def checkpoint_root(path: str) -> str:
    """A run directory (stage 'both': `<dir>/prior`), a stage directory or a checkpoint root."""
    for sub in (("prior", "checkpoints"), ("checkpoints",)):
        cand = os.path.join(path, *sub)
        if os.path.isdir(cand):
            return cand
    return path


class _DropUnreadItems(logging.Filter):
    """Orbax warns about every training item (opt_state, data_iter) a params restore skips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "could not be restored" not in record.getMessage()


@contextlib.contextmanager
def _quiet_unread_items():
    logger, filt = logging.getLogger("absl"), _DropUnreadItems()
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)


def load_model(checkpoint_dir: str, step: int | None = None):
    """Restore a colajax checkpoint (trained or imported) -> (params, vae_cfg, dit_cfg, meta)."""
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(
            f"checkpoint directory {checkpoint_dir} does not exist; pass a training workdir or "
            "an `colajax import-hf` output."
        )
    with _quiet_unread_items():
        params, meta = checkpoint.restore_params(checkpoint_root(checkpoint_dir), step=step)
    vae_cfg, dit_cfg = configs_from_meta(meta)
    if not isinstance(params, dict) or not {"vae", "dit"} <= set(params):
        raise ValueError(
            f"{checkpoint_dir}: params hold {sorted(params)}, expected 'vae' and 'dit' "
            "(a Stage-1-only checkpoint cannot generate; use a Stage-2 or imported checkpoint)."
        )
    return {"vae": params["vae"], "dit": params["dit"]}, vae_cfg, dit_cfg, meta


def tokenizer_spec(meta: dict) -> str | None:
    """The tokenizer file a training run used (`config.data.tokenizer`), if recorded."""
    data = (meta.get("config") or {}).get("data") or {}
    return meta.get("tokenizer") or data.get("tokenizer") or None
