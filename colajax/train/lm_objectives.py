"""Training objectives of the AR and LLaDA baselines as pure functions.

The model enters as `logits_fn(ids_BL, positions_BL, segment_ids_BL) -> logits_BLV`. Batches
follow the trainer's contract: `tokens` `[B, L]`, optional `segment_ids` (0 = padding; packed
documents carry different non-zero ids) and `loss_weights` (0 = an input row that is not scored).
Positions restart at 0 at the start of every segment run of a row.

- `ar_loss`: next-token cross-entropy; row i + 1 is a target of row i only when both rows are
  real tokens of the same segment; mean over the (weighted) targets.
- `llada_loss`: the LLaDA pre-training estimator (ML-GSAI/LLaDA GUIDELINES.md,
  `forward_process`): per row t ~ U(0, 1), p = (1 - eps) t + eps, each scored real token is
  replaced by `mask_id` with probability p; loss = sum over masked tokens of CE / p, divided by
  the number of scored real tokens (= b * l without padding, exactly LLaDA's normalisation).
  Unscored rows (loss weight 0, e.g. an SFT prompt) are never masked, as in LLaDA's SFT.
"""

import jax
import jax.numpy as jnp
import optax

# rng streams of llada_loss (fold_in constants)
_RNG_T, _RNG_MASK = range(2)


def positions_from_segments(segment_ids_BL):
    """In-segment positions `[B, L]`: 0 at each row start and wherever the segment id changes."""
    b, length = segment_ids_BL.shape
    idx = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    change = jnp.concatenate(
        [jnp.ones((b, 1), bool), segment_ids_BL[:, 1:] != segment_ids_BL[:, :-1]], axis=1
    )
    start = jax.lax.cummax(jnp.where(change, idx, 0), axis=1)
    return idx - start


def _layout(tokens_BL, segment_ids_BL, loss_weights_BL):
    if segment_ids_BL is None:
        segment_ids_BL = jnp.ones(tokens_BL.shape, jnp.int32)
    real = (segment_ids_BL > 0).astype(jnp.float32)
    w = real if loss_weights_BL is None else real * loss_weights_BL.astype(jnp.float32)
    return segment_ids_BL, positions_from_segments(segment_ids_BL), w


def _ce_acc(logits_BLV, targets_BL):
    logits = logits_BLV.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets_BL)
    acc = (jnp.argmax(logits, axis=-1) == targets_BL).astype(jnp.float32)
    return ce, acc


def _mean(x, w):
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1e-9)


def ar_loss(logits_fn, tokens_BL, *, segment_ids_BL=None, loss_weights_BL=None):
    """Next-token CE averaged over scored targets. -> (loss, {loss, ce, acc, scored}).

    `scored` is the (weighted) number of scored targets; the target row's loss weight applies.
    """
    seg, pos, w = _layout(tokens_BL, segment_ids_BL, loss_weights_BL)
    logits = logits_fn(tokens_BL, pos, seg)
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    w_t = w[:, 1:] * same.astype(jnp.float32)
    ce, acc = _ce_acc(logits[:, :-1], tokens_BL[:, 1:])
    loss = _mean(ce, w_t)
    metrics = {"loss": loss, "ce": loss, "acc": _mean(acc, w_t), "scored": jnp.sum(w_t)}
    return loss, metrics


def llada_mask(rng, tokens_BL, maskable_BL, *, mask_id: int, t_eps: float = 1e-3, t_B=None):
    """LLaDA `forward_process` -> (noisy_BL, masked_BL bool, p_B).

    One t per row (drawn unless `t_B` is given); maskable tokens are masked with p. The
    uniforms are drawn per row (key fold_in(row)), so appending padding columns leaves the masks
    of the real tokens unchanged.
    """
    b, length = tokens_BL.shape
    if t_B is None:
        t_B = jax.random.uniform(jax.random.fold_in(rng, _RNG_T), (b,), jnp.float32)
    p_B = (1.0 - t_eps) * jnp.asarray(t_B, jnp.float32) + t_eps
    rows = jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(rng, _RNG_MASK), r))
    u = jax.vmap(lambda k: jax.random.uniform(k, (length,), jnp.float32))(rows(jnp.arange(b)))
    masked = (u < p_B[:, None]) & (maskable_BL > 0)
    noisy = jnp.where(masked, jnp.asarray(mask_id, tokens_BL.dtype), tokens_BL)
    return noisy, masked, p_B


def llada_loss(
    logits_fn,
    tokens_BL,
    rng,
    *,
    mask_id: int,
    t_eps: float = 1e-3,
    segment_ids_BL=None,
    loss_weights_BL=None,
    t_B=None,
):
    """LLaDA masked-diffusion loss. -> (loss, {loss, masked_ce, masked_frac, acc, scored}).

    `t_B` fixes the per-row t (tests, fixed-t evaluation); by default it is drawn from `rng`.
    `masked_ce` / `acc` are the plain (1/p-free) CE and accuracy over the masked tokens;
    `masked_frac` = masked / scored real tokens.
    """
    seg, pos, w = _layout(tokens_BL, segment_ids_BL, loss_weights_BL)
    noisy, masked, p_B = llada_mask(rng, tokens_BL, w, mask_id=mask_id, t_eps=t_eps, t_B=t_B)
    logits = logits_fn(noisy, pos, seg)
    ce, acc = _ce_acc(logits, tokens_BL)
    m = masked.astype(jnp.float32) * w
    n_real = jnp.maximum(jnp.sum(w), 1e-9)
    loss = jnp.sum(ce * m / p_B[:, None]) / n_real
    metrics = {
        "loss": loss,
        "masked_ce": _mean(ce, m),
        "masked_frac": jnp.sum(masked.astype(jnp.float32) * (w > 0)) / n_real,
        "acc": _mean(acc, m),
        "scored": jnp.sum(w),
    }
    return loss, metrics
