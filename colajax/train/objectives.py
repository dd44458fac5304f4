"""Training objectives of Cola DLM as pure functions (paper §3.2.1-3.2.2, digest §2).

Models enter as callables so the losses stay model-agnostic and testable:
  encode(ids_BL, segment_ids_BL, positions_BL) -> (mean_BLC, logvar_raw_BLC)
  decode(z_BLC, segment_ids_BL, positions_BL) -> logits_BLV
  dit(x_BSC, t_BS, positions_BS, segment_ids_BS, mask_B1SS) -> v_BSC   (t on the 0..1000 scale)

Choices the paper leaves open (paper digest §8), made here and documented in the README:
- BERT-style loss: each valid token is replaced by MASK_ID (= vocab_size, the extra embedding
  row) independently with probability `mask_ratio`; the decoder reads a posterior sample of the
  masked copy's latents and the cross-entropy against the ORIGINAL tokens covers ALL valid
  positions (the masked-only CE is reported as the metric `bert_masked_ce`).
- Reconstruction and BERT branches decode a posterior sample (the ELBO's E_q); KL and E_q log q
  are analytic per token (summed over channels) and averaged over valid tokens.
- Flow matching: one logit-normal timestep per noisy block, rectified-flow path, velocity target
  eps - sg(z0); the clean history is sg(z0); whether FM gradients reach the encoder through z_t
  is the flag `fm_grad_to_vae` (default True).

Speed: with default positions (the trainer's batches) `fm_loss` gives the DiT the compact layout
(`train_attention.CleanNoisyLayout`, `dit.GroupedTimesteps`) instead of the dense `[S, S]` mask and
per-row timesteps: the same numbers with far less memory and compute.
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from colajax.models import attention, posterior, train_attention
from colajax.models.dit import GroupedTimesteps
from colajax.train.vae_modes import vae_mode

T_SCALE = 1000.0  # the DiT is told 1000 * t


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Loss weights and sampling options (`config.objective`). None of the weights, nor the
    mask ratio, is given by the paper: the defaults are this port's choices."""

    beta: float = 1e-3  # Stage 1: weight of KL(q || N(0, I))
    stage2_beta: float = 1e-3  # Stage 2: weight of E_q[log q]
    mask_ratio: float = 0.15  # BERT-style masking probability per token
    lambda_mask: float = 1.0  # weight of the BERT-style loss (both stages)
    lambda_vae: float = 1.0  # Stage 2: weight of the VAE terms
    lambda_fm: float = 1.0  # Stage 2: flow-matching weight
    lambda_ref: float = 1.0  # Stage 2: KL(q_phi || q_phi_ref) weight
    t_loc: float = 1.0  # logit-normal timestep location (paper: 1.0 for d = 16)
    t_scale: float = 1.0  # logit-normal scale (paper "scale 0" read as sigma = 1)
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
        if not 0.0 <= obj.mask_ratio < 1.0:
            raise ValueError(f"objective.mask_ratio={obj.mask_ratio} must be in [0, 1).")
        if obj.t_scale < 0:
            raise ValueError(f"objective.t_scale={obj.t_scale} must be >= 0.")
        return obj


# --------------------------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------------------------


def masked_mean(x, weights):
    """sum(w x) / max(sum w, 1) over all axes (x and weights broadcast)."""
    w = jnp.broadcast_to(weights.astype(jnp.float32), x.shape)
    return jnp.sum(x.astype(jnp.float32) * w) / jnp.maximum(jnp.sum(w), 1.0)


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


def logit_normal(rng, shape, loc: float, scale: float):
    """t = sigmoid(loc + scale * u), u ~ N(0, 1); float32 in (0, 1)."""
    return jax.nn.sigmoid(loc + scale * jax.random.normal(rng, shape, jnp.float32))


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


# --------------------------------------------------------------------------------------------
# VAE terms (Stage 1 and the VAE part of Stage 2)
# --------------------------------------------------------------------------------------------

# rng streams (fold_in constants; fixed so golden values stay put when streams are added)
_RNG_POST, _RNG_MASK, _RNG_POST_MASKED, _RNG_T, _RNG_EPS = range(5)


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
) -> dict:
    """Encode the clean (and masked) copy and decode posterior samples.

    Returns a dict of scalars (recon, recon_acc, kl, neg_entropy, logsnr[, bert, bert_acc,
    bert_masked_ce]) and arrays (mean, logvar, z: the clean posterior sample, weights).
    """
    seg, pos = _layout(tokens_BL, segment_ids_BL, positions_BL)
    w = (seg > 0).astype(jnp.float32)
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
# Flow matching on the clean/noisy training layout
# --------------------------------------------------------------------------------------------


class FMLayout(NamedTuple):
    """DiT inputs of the training layout (S = 2L - bs rows) and the FM target.

    `attn` / `t_groups` (None for packed batches with explicit positions) are the compact
    equivalents of `mask_B1SS` / `t_BS` that `fm_loss` prefers.
    """

    x_BSC: jax.Array  # [sg(z0) without the last block | z_t]
    t_BS: jax.Array  # DiT timesteps, 0..1000 (clean rows 0)
    positions_BS: jax.Array
    segment_ids_BS: jax.Array
    mask_B1SS: jax.Array
    target_BLC: jax.Array  # eps - sg(z0)
    weights_BL: jax.Array  # loss weights of the noisy rows
    t_BL: jax.Array  # per-row t in (0, 1) of the noisy rows
    attn: train_attention.CleanNoisyLayout | None = None  # the mask without materialising it
    t_groups: GroupedTimesteps | None = None  # one DiT timestep per group (clean, noisy blocks)


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
) -> FMLayout:
    """Build the paper's training layout from DiT-space clean latents `z0_BLC`.

    One t per noisy block (rows share the t drawn at their block's first row, so packed samples
    that restart positions get their own blocks); z_t = (1 - t) z0 + t eps. With default
    positions and `compact`, the layout also carries `attn` and `t_groups`.
    """
    b, length, _ = z0_BLC.shape
    compact = compact and positions_BL is None  # blocks are row-aligned
    if length % block_size:
        raise ValueError(
            f"sequence length {length} is not a multiple of the DiT block size {block_size}; "
            "use a seq_len divisible by the block size."
        )
    seg, pos = _layout(z0_BLC[..., 0], segment_ids_BL, positions_BL)
    z0 = z0_BLC.astype(jnp.float32)
    z0_sg = jax.lax.stop_gradient(z0)
    u_BL = logit_normal(jax.random.fold_in(rng, _RNG_T), (b, length), t_loc, t_scale)
    rows = jnp.arange(length)[None, :]
    start = jnp.clip(rows - pos % block_size, 0, length - 1)  # first row of each row's block
    t_BL = jnp.take_along_axis(u_BL, start, axis=1)
    eps = jax.random.normal(jax.random.fold_in(rng, _RNG_EPS), z0.shape, jnp.float32)
    z_src = z0 if grad_to_vae else z0_sg
    z_t = (1.0 - t_BL[..., None]) * z_src + t_BL[..., None] * eps
    n_clean = length - block_size
    x = jnp.concatenate([z0_sg[:, :n_clean], z_t], axis=1)
    t_rows = jnp.concatenate([jnp.zeros((b, n_clean), jnp.float32), T_SCALE * t_BL], axis=1)
    pos2, copy, seg2 = train_attention.layout_rows(pos, seg, block_size)
    mask = attention.clean_noisy_mask(pos2, copy, block_size, seg2)
    attn = t_groups = None
    if compact:  # group 0: the clean rows (t = 0); group 1 + j: noisy block j (runs of bs rows)
        n = length // block_size
        t_BG = T_SCALE * jnp.pad(t_BL[:, ::block_size], ((0, 0), (1, 0)))
        group = jnp.concatenate(
            [jnp.zeros(n - 1, jnp.int32), jnp.arange(1, n + 1, dtype=jnp.int32)]
        )
        attn = train_attention.CleanNoisyLayout(seg)
        t_groups = GroupedTimesteps(t_BG, jnp.broadcast_to(group, (b, group.size)))
    return FMLayout(
        x_BSC=x,
        t_BS=t_rows,
        positions_BS=pos2,
        segment_ids_BS=seg2,
        mask_B1SS=mask,
        target_BLC=eps - z0_sg,
        weights_BL=(seg > 0).astype(jnp.float32),
        t_BL=t_BL,
        attn=attn,
        t_groups=t_groups,
    )


def fm_loss(dit, layout: FMLayout):
    """Mean over valid noisy tokens and channels of (v - (eps - z0))^2. -> (loss, v_BLC).

    The DiT gets the compact layout (`layout.attn`, `layout.t_groups`) where there is one.
    """
    t = layout.t_BS if layout.t_groups is None else layout.t_groups
    if layout.attn is None:
        v = dit(layout.x_BSC, t, layout.positions_BS, layout.segment_ids_BS, layout.mask_B1SS)
    else:
        v = dit(layout.x_BSC, t, None, None, layout.attn)
    length = layout.target_BLC.shape[1]
    v = v[:, -length:].astype(jnp.float32)
    err = jnp.mean(jnp.square(v - layout.target_BLC), axis=-1)
    return masked_mean(err, layout.weights_BL), v


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
):
    """Stage-2 objective for a VAE mode. -> (loss, metrics).

    joint / interval: lambda_vae * (recon + stage2_beta * E_q log q + lambda_mask * BERT)
                      + lambda_fm * FM + lambda_ref * KL(q_phi || q_ref)
    scratch:          the same without the reference KL (there is no Stage-1 encoder)
    frozen:           lambda_fm * FM only; the encoder runs under stop_gradient
    `ref_encode` may be None unless mode is joint/interval with lambda_ref > 0.
    """
    m = vae_mode(mode)
    seg, pos = _layout(tokens_BL, segment_ids_BL, positions_BL)
    metrics = {}
    if not m.trains_vae:
        mean, logvar_raw = jax.lax.stop_gradient(encode(tokens_BL, seg, pos))
        logvar = posterior.clamp_logvar(logvar_raw)
        z = posterior.sample(mean, logvar, jax.random.fold_in(rng, _RNG_POST))
        metrics["logsnr"] = log_snr(mean, logvar, (seg > 0).astype(jnp.float32))
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
    )
    fm, _ = fm_loss(dit, layout)
    loss = vae_loss + obj.lambda_fm * fm
    metrics["fm"] = fm
    if m.reference and obj.lambda_ref > 0:
        if ref_encode is None:
            raise ValueError(f"vae_mode={mode!r} with lambda_ref > 0 needs the reference encoder.")
        r_mean, r_logvar_raw = jax.lax.stop_gradient(ref_encode(tokens_BL, seg, pos))
        ref = posterior.kl(mean, logvar, r_mean, posterior.clamp_logvar(r_logvar_raw))
        metrics["ref_kl"] = masked_mean(ref, (seg > 0).astype(jnp.float32))
        loss = loss + obj.lambda_ref * metrics["ref_kl"]
    metrics["loss"] = loss
    return loss, metrics
