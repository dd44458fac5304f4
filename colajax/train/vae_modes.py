"""The Stage-2 VAE modes (paper RQ2), defined once: the trainer, the objectives, the FLOP
counts and config validation all ask `vae_mode(name)`.

  joint     VAE from Stage 1, trained with the DiT (lr x stage2.vae_lr_ratio), reference KL
  frozen    VAE from Stage 1, frozen; only its encoder runs, the loss is lambda_fm * FM
  scratch   VAE from random init, trained with the DiT; no Stage-1 encoder, no reference KL
  interval  as joint, but VAE updates are switched off in cycles (stage2.interval_*_steps)
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class VAEMode:
    name: str
    trains_vae: bool  # VAE parameters are trained (its terms are in the loss)
    from_stage1: bool  # the VAE starts from the Stage-1 checkpoint
    reference: bool  # a frozen Stage-1 reference encoder and the KL(q || q_ref) term
    periodic: bool = False  # VAE updates alternate on / off (interval)


VAE_MODES = {
    m.name: m
    for m in (
        VAEMode("joint", trains_vae=True, from_stage1=True, reference=True),
        VAEMode("frozen", trains_vae=False, from_stage1=True, reference=False),
        VAEMode("scratch", trains_vae=True, from_stage1=False, reference=False),
        VAEMode("interval", trains_vae=True, from_stage1=True, reference=True, periodic=True),
    )
}


def vae_mode(name: str) -> VAEMode:
    """The mode called `name`; a ValueError listing the modes otherwise."""
    if name not in VAE_MODES:
        raise ValueError(
            f"stage2.vae_mode={name!r} is not a VAE mode; use one of {tuple(VAE_MODES)}."
        )
    return VAE_MODES[name]
