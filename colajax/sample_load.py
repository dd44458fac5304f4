"""Loading a model for generation: colajax checkpoints (trained or `import-hf`) -> params and
model configs, plus the tokenizer a training run recorded.

A training workdir (`<dir>/prior/checkpoints` for stage 'both', `<dir>/checkpoints`), a stage
directory or a checkpoint root are all accepted. Import-hf meta holds `vae_config`/`dit_config`;
trainer meta holds `vae`/`dit` (and the experiment `config`).
"""

from colajax import checkpoint
from colajax.models.config import DiTConfig, VAEConfig, check_compatible


def experiment_config(meta: dict) -> dict:
    """The experiment config a training run recorded in its checkpoint meta ({} if none)."""
    config = meta.get("config")
    return config if isinstance(config, dict) else {}


def configs_from_meta(meta: dict, *, with_dit: bool = True) -> tuple[VAEConfig, DiTConfig | None]:
    """Model configs from checkpoint meta: `vae_config`/`dit_config` (import-hf) or the
    `vae`/`dit` sections written by the trainer (top level or inside `config`).

    `with_dit=False` reads the VAE config alone (DiT config None), e.g. of a Stage-1 checkpoint.
    """
    for vkey, dkey, src in (("vae_config", "dit_config", meta), ("vae", "dit", meta),
                            ("vae", "dit", experiment_config(meta))):  # fmt: skip
        if not with_dit and isinstance(src.get(vkey), dict):
            return VAEConfig.from_dict(src[vkey]), None
        if isinstance(src.get(vkey), dict) and isinstance(src.get(dkey), dict):
            vae_cfg, dit_cfg = VAEConfig.from_dict(src[vkey]), DiTConfig.from_dict(src[dkey])
            check_compatible(vae_cfg, dit_cfg)
            return vae_cfg, dit_cfg
    if with_dit and (isinstance(meta.get("vae"), dict) or meta.get("stage") == "vae"):
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
    return checkpoint.resolve_root(path, "prior")


def load_model(checkpoint_dir: str, step: int | None = None):
    """Restore a colajax checkpoint (trained or imported) -> (params, vae_cfg, dit_cfg, meta)."""
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
    data = experiment_config(meta).get("data") or {}
    return meta.get("tokenizer") or data.get("tokenizer") or None
