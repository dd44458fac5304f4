"""Training objectives of Cola DLM as pure functions (paper §3.2.1-3.2.2, digest §2).

Models enter as callables so the losses stay model-agnostic and testable:
  encode(ids_BL, segment_ids_BL, positions_BL) -> (mean_BLC, logvar_raw_BLC)
  decode(z_BLC, segment_ids_BL, positions_BL) -> logits_BLV
  dit(x_BSC, t_BS, positions_BS, segment_ids_BS, mask_B1SS) -> v_BSC   (t on the 0..1000 scale)

Token weights: a row is scored where its segment id is > 0 and its `loss_weights` entry (batch
key, float32, default 1) is non-zero; weight-0 rows stay model inputs.

Choices the paper leaves open (paper digest §8), made here and documented in the README:
- BERT-style loss: each valid token is replaced by MASK_ID (= vocab_size, the extra embedding
  row) independently with probability `mask_ratio`; the decoder reads a posterior sample of the
  masked copy's latents and the cross-entropy against the ORIGINAL tokens covers ALL valid
  positions (the masked-only CE is reported as the metric `bert_masked_ce`).
- Reconstruction and BERT branches decode a posterior sample (the ELBO's E_q); KL and E_q log q
  are analytic per token (summed over channels) and averaged over scored tokens.
- Flow matching (`flow_matching`), by default as the released pretraining script: one
  logit-normal t per sequence (`timestep_sampling='block'`: one per noisy block), the
  prompt-block repaint with `prompt_block_prob`, rectified-flow path, velocity target
  eps - sg(z0); the clean history is sg(z0); whether FM gradients reach the encoder through z_t
  is the flag `fm_grad_to_vae` (default True).

Speed: with default positions (the trainer's batches) `fm_loss` gives the DiT the compact layout
(`train_attention.CleanNoisyLayout`, `dit.GroupedTimesteps`) instead of the dense `[S, S]` mask and
per-row timesteps: the same numbers with far less memory and compute.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from colajax.models import posterior
from colajax.train import flow_matching
from colajax.train.flow_matching import (  # noqa: F401  (re-exported: the FM API of the objective)
    T_SCALE,
    TIMESTEP_SAMPLING,
    FMLayout,
    build_layout,
    fm_loss,
    logit_normal,
    masked_mean,
)
from colajax.train.vae_modes import vae_mode

BF16_INPUTS = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Loss weights and sampling options (`config.objective`), the one home of their defaults
    (experiments/base.py repeats them; a test checks they agree). None of the weights, nor the
    mask ratio, is given by the paper: the defaults are this port's choices. The FM sampling
    defaults are the released pretraining script's."""

    beta: float = 1e-3  # Stage 1: weight of KL(q || N(0, I))
    stage2_beta: float = 1e-3  # Stage 2: weight of E_q[log q]
    mask_ratio: float = 0.15  # BERT-style masking probability per token
    lambda_mask: float = 1.0  # weight of the BERT-style loss (both stages)
    lambda_vae: float = 1.0  # Stage 2: weight of the VAE terms
    lambda_fm: float = 1.0  # Stage 2: flow-matching weight
    lambda_ref: float = 1.0  # Stage 2: KL(q_phi || q_phi_ref) weight
    t_loc: float = 1.0  # logit-normal timestep location (paper: 1.0 for d = 16)
    t_scale: float = 1.0  # logit-normal scale (paper "scale 0" read as sigma = 1)
    timestep_sampling: str = "sequence"  # one t per 'sequence' (released) or per 'block'
    prompt_block_prob: float = 0.05  # repaint: P(a block pins a clean prefix) (released 0.05)
    bf16_inputs: str = "auto"  # round DiT inputs to bf16: auto (= bf16 DiT) | on | off
    vae_sample: bool = True  # z0 = posterior sample (True) or mean (False)
    fm_grad_to_vae: bool = True  # FM gradient reaches the encoder through z_t (open in paper)

    @classmethod
    def from_config(cls, section: Any) -> "ObjectiveConfig":
        """Build from `config.objective` (ConfigDict or dict); unknown fields are an error."""
        d = section.to_dict() if hasattr(section, "to_dict") else dict(section)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"config.objective has unknown field(s) {unknown}; valid fields are "
                f"{sorted(names)}."
            )
        obj = cls(**d)
        checks = (
            ("mask_ratio", 0.0 <= obj.mask_ratio < 1.0, "[0, 1)"),
            ("t_scale", obj.t_scale >= 0, "[0, inf)"),
            ("timestep_sampling", obj.timestep_sampling in TIMESTEP_SAMPLING, TIMESTEP_SAMPLING),
            ("prompt_block_prob", 0.0 <= obj.prompt_block_prob <= 1.0, "[0, 1]"),
            ("bf16_inputs", obj.bf16_inputs in BF16_INPUTS, BF16_INPUTS),
        )
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"objective.{name}={getattr(obj, name)!r} must be in {want}.")
        return obj

    def round_dit_inputs(self, dit_dtype: str) -> bool:
        """Whether the FM step rounds the DiT's inputs to bf16 (`bf16_inputs` for a DiT that
        computes in `dit_dtype`); a bfloat16 DiT always does (its first matmul rounds them)."""
        if self.bf16_inputs == "off" and dit_dtype == "bfloat16":
            raise ValueError(
                "objective.bf16_inputs='off' with dit.dtype='bfloat16': a bfloat16 DiT rounds its "
                "inputs anyway; use 'auto' (or dit.dtype='float32' for unrounded inputs)."
            )
        return self.bf16_inputs == "on" or dit_dtype == "bfloat16"


# --------------------------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------------------------


def token_ce(logits_BLV, targets_BL, weights_BL):
    """Mean cross-entropy and accuracy over weighted tokens."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BLV.astype(jnp.float32), targets_BL)
    acc = (jnp.argmax(logits_BLV, axis=-1) == targets_BL).astype(jnp.float32)
    return masked_mean(ce, weights_BL), masked_mean(acc, weights_BL), ce


def bert_mask(rng, tokens_BL, mask_ratio: float, mask_id: int, valid_BL):
    """Replace each valid token by `mask_id` with probability `mask_ratio`.

    Returns (masked_tokens_BL, is_masked_BL).
    """
    hit = jax.random.bernoulli(rng, mask_ratio, tokens_BL.shape) & (valid_BL > 0)
    return jnp.where(hit, jnp.asarray(mask_id, tokens_BL.dtype), tokens_BL), hit


def to_dit_space(z, vae_config):
    """VAE latent -> DiT-space latent: (z - shifting_factor) * scaling_factor."""
    return (z - vae_config.shifting_factor) * vae_config.scaling_factor


def from_dit_space(x, vae_config):
    """Inverse of `to_dit_space` (apply before decoding sampled latents)."""
    return x / vae_config.scaling_factor + vae_config.shifting_factor


def log_snr(mean_BLC, logvar_BLC, weights_BL):
    """VAE logSNR = log(E[mu^2] / E[sigma^2]) over valid tokens and channels (paper App. H.7)."""
    w = weights_BL[..., None]
    return jnp.log(masked_mean(jnp.square(mean_BLC), w)) - jnp.log(
        masked_mean(jnp.exp(logvar_BLC), w)
    )


def _layout(tokens_BL, segment_ids_BL, positions_BL):
    b, length = tokens_BL.shape
    if segment_ids_BL is None:
        segment_ids_BL = jnp.ones((b, length), jnp.int32)
    if positions_BL is None:
        positions_BL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    return segment_ids_BL, positions_BL


def _weights(seg_BL, loss_weights_BL):
    """Token weights: segment id > 0 times the batch's `loss_weights` (if any); float32."""
    w = (seg_BL > 0).astype(jnp.float32)
    return w if loss_weights_BL is None else w * loss_weights_BL.astype(jnp.float32)


# --------------------------------------------------------------------------------------------
# VAE terms (Stage 1 and the VAE part of Stage 2)
# --------------------------------------------------------------------------------------------

# rng streams (fold_in constants; fixed so golden values stay put when streams are added;
# 3.. are the flow-matching streams, `flow_matching.RNG_*`)
_RNG_POST, _RNG_MASK, _RNG_POST_MASKED = range(3)


def vae_terms(
    encode,
    decode,
    tokens_BL,
    rng,
    *,
    mask_ratio: float,
    mask_id: int,
    bert: bool = True,
    segment_ids_BL=None,
    positions_BL=None,
    loss_weights_BL=None,
) -> dict:
    """Encode the clean (and masked) copy and decode posterior samples.

    Every row is an encoder/decoder input; the terms average over the scored rows (`_weights`).
    Returns a dict of scalars (recon, recon_acc, kl, neg_entropy, logsnr[, bert, bert_acc,
    bert_masked_ce]) and arrays (mean, logvar, z: the clean posterior sample, weights).
    """
    seg, pos = _layout(tokens_BL, segment_ids_BL, positions_BL)
    w = _weights(seg, loss_weights_BL)
    mean, logvar_raw = encode(tokens_BL, seg, pos)
    logvar = posterior.clamp_logvar(logvar_raw)
    z = posterior.sample(mean, logvar, jax.random.fold_in(rng, _RNG_POST))
    recon, recon_acc, _ = token_ce(decode(z, seg, pos), tokens_BL, w)
    out = {
        "recon": recon,
        "recon_acc": recon_acc,
        "kl": masked_mean(posterior.kl_to_standard_normal(mean, logvar), w),
        "neg_entropy": masked_mean(posterior.neg_entropy(logvar), w),
        "logsnr": jax.lax.stop_gradient(log_snr(mean, logvar, w)),
        "mean": mean,
        "logvar": logvar,
        "z": z,
        "weights": w,
    }
    if bert:
        masked, hit = bert_mask(
            jax.random.fold_in(rng, _RNG_MASK), tokens_BL, mask_ratio, mask_id, w
        )
        m_mean, m_logvar_raw = encode(masked, seg, pos)
        m_z = posterior.sample(
            m_mean, posterior.clamp_logvar(m_logvar_raw), jax.random.fold_in(rng, _RNG_POST_MASKED)
        )
        bert_ce, bert_acc, ce_BL = token_ce(decode(m_z, seg, pos), tokens_BL, w)
        out["bert"] = bert_ce
        out["bert_acc"] = bert_acc
        out["bert_masked_ce"] = jax.lax.stop_gradient(masked_mean(ce_BL, hit))
    return out


def stage1_loss(encode, decode, tokens_BL, rng, obj: ObjectiveConfig, mask_id: int, **layout):
    """L_VAE = recon + beta * KL(q || N(0, I)) + lambda_mask * BERT. -> (loss, metrics)."""
    bert = obj.lambda_mask > 0
    t = vae_terms(
        encode,
        decode,
        tokens_BL,
        rng,
        mask_ratio=obj.mask_ratio,
        mask_id=mask_id,
        bert=bert,
        **layout,
    )
    loss = t["recon"] + obj.beta * t["kl"]
    if bert:
        loss = loss + obj.lambda_mask * t["bert"]
    metrics = {k: v for k, v in t.items() if jnp.ndim(v) == 0}
    metrics["loss"] = loss
    return loss, metrics


# --------------------------------------------------------------------------------------------
# Flow matching on the clean/noisy training layout (the pieces live in `flow_matching`)
# --------------------------------------------------------------------------------------------

_DEFAULTS = ObjectiveConfig()


def fm_layout(
    z0_BLC,
    rng,
    *,
    block_size: int,
    t_loc: float,
    t_scale: float,
    grad_to_vae: bool = True,
    segment_ids_BL=None,
    positions_BL=None,
    compact: bool = True,
    timestep_sampling: str = _DEFAULTS.timestep_sampling,
    prompt_block_prob: float = _DEFAULTS.prompt_block_prob,
    loss_weights_BL=None,
    bf16_inputs: bool = False,
) -> FMLayout:
    """The Stage-2 FM inputs of DiT-space clean latents `z0_BLC`: a random draw (`draw`), the
    noisy copy (`noisy_copy`) and the layout (`build_layout`) that the parity test checks.

    Loss weights: valid rows (segment id > 0) times `loss_weights_BL`, 0 on pinned rows. Blocks
    follow the positions (packed samples that restart positions get their own blocks). With
    default positions and `compact`, the layout also carries `attn` and `t_groups`.
    """
    seg, pos = _layout(z0_BLC[..., 0], segment_ids_BL, positions_BL)
    d = flow_matching.draw(
        rng,
        z0_BLC.shape,
        pos,
        block_size=block_size,
        t_loc=t_loc,
        t_scale=t_scale,
        timestep_sampling=timestep_sampling,
        prompt_block_prob=prompt_block_prob,
    )
    z_t, ts, target = flow_matching.noisy_copy(z0_BLC, d, grad_to_vae=grad_to_vae)
    w = flow_matching.row_weights(_weights(seg, loss_weights_BL), d.pinned_BL)
    t_BL = d.t_BL if d.pinned_BL is None else jnp.where(d.pinned_BL, 0.0, d.t_BL)
    layout = flow_matching.build_layout(
        z0_BLC,
        z_t,
        ts,
        target,
        w,
        d.pinned_BL,
        block_size=block_size,
        bf16_inputs=bf16_inputs,
        segment_ids_BL=seg,
        positions_BL=positions_BL,
        compact=compact,
    )
    return layout._replace(t_BL=t_BL)


# --------------------------------------------------------------------------------------------
# Stage 2
# --------------------------------------------------------------------------------------------


def stage2_loss(
    encode,
    decode,
    ref_encode,
    dit,
    tokens_BL,
    rng,
    obj: ObjectiveConfig,
    *,
    mode: str,
    vae_config,
    block_size: int,
    mask_id: int,
    segment_ids_BL=None,
    positions_BL=None,
    loss_weights_BL=None,
    bf16_inputs: bool = False,
):
    """Stage-2 objective for a VAE mode. -> (loss, metrics).

    joint / interval: lambda_vae * (recon + stage2_beta * E_q log q + lambda_mask * BERT)
                      + lambda_fm * FM + lambda_ref * KL(q_phi || q_ref)
    scratch:          the same without the reference KL (there is no Stage-1 encoder)
    frozen:           lambda_fm * FM only; the encoder runs under stop_gradient
    `ref_encode` may be None unless mode is joint/interval with lambda_ref > 0.
    `bf16_inputs`: the FM step rounds the DiT inputs to bf16 (`ObjectiveConfig.round_dit_inputs`).
    """
    m = vae_mode(mode)
    seg, pos = _layout(tokens_BL, segment_ids_BL, positions_BL)
    w = _weights(seg, loss_weights_BL)
    metrics = {}
    if not m.trains_vae:
        mean, logvar_raw = jax.lax.stop_gradient(encode(tokens_BL, seg, pos))
        logvar = posterior.clamp_logvar(logvar_raw)
        z = posterior.sample(mean, logvar, jax.random.fold_in(rng, _RNG_POST))
        metrics["logsnr"] = log_snr(mean, logvar, w)
        vae_loss = 0.0
    else:
        bert = obj.lambda_mask > 0
        t = vae_terms(
            encode,
            decode,
            tokens_BL,
            rng,
            mask_ratio=obj.mask_ratio,
            mask_id=mask_id,
            bert=bert,
            segment_ids_BL=seg,
            positions_BL=pos,
            loss_weights_BL=loss_weights_BL,
        )
        mean, logvar, z = t["mean"], t["logvar"], t["z"]
        vae_loss = t["recon"] + obj.stage2_beta * t["neg_entropy"]
        if bert:
            vae_loss = vae_loss + obj.lambda_mask * t["bert"]
        metrics.update({k: v for k, v in t.items() if jnp.ndim(v) == 0 and k != "kl"})
        metrics["vae_loss"] = vae_loss
        vae_loss = obj.lambda_vae * vae_loss
    z0 = z if obj.vae_sample else mean
    layout = fm_layout(
        to_dit_space(z0, vae_config),
        rng,
        block_size=block_size,
        t_loc=obj.t_loc,
        t_scale=obj.t_scale,
        grad_to_vae=obj.fm_grad_to_vae and m.trains_vae,
        segment_ids_BL=seg,
        positions_BL=positions_BL,  # None: default positions, compact layout
        timestep_sampling=obj.timestep_sampling,
        prompt_block_prob=obj.prompt_block_prob,
        loss_weights_BL=loss_weights_BL,
        bf16_inputs=bf16_inputs,
    )
    fm, _ = fm_loss(dit, layout)
    loss = vae_loss + obj.lambda_fm * fm
    metrics["fm"] = fm
    if m.reference and obj.lambda_ref > 0:
        if ref_encode is None:
            raise ValueError(f"vae_mode={mode!r} with lambda_ref > 0 needs the reference encoder.")
        r_mean, r_logvar_raw = jax.lax.stop_gradient(ref_encode(tokens_BL, seg, pos))
        ref = posterior.kl(mean, logvar, r_mean, posterior.clamp_logvar(r_logvar_raw))
        metrics["ref_kl"] = masked_mean(ref, w)
        loss = loss + obj.lambda_ref * metrics["ref_kl"]
    metrics["loss"] = loss
    return loss, metrics
