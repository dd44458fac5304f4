"""`colajax eval diagnostics`: VAE and prior diagnostics of a checkpoint on held-out text.

    colajax eval diagnostics --checkpoint DIR --text GLOB_OR_JSONL [--tokenizer PATH]
                             [--seq-len 64] [--batch-size 8] [--batches N]

These are diagnostics, not the headline metric: the paper warns that likelihood-type numbers do
not measure generation quality (use `colajax eval` for the benchmark). On packed rows of the
held-out text (documents joined with BOS/EOS, as in training) it reports, as one JSON line:

* `recon_acc`: token accuracy of decoding the posterior mean (argmax of the decoder logits).
* `logsnr`: the latent logSNR of paper App. H.7, log(E[mu^2] / E[sigma^2]) over all valid
  tokens and channels of all batches (sigma^2 = exp of the clamped log-variance).
* `fm_loss`: the flow-matching loss on the training layout (`train.objectives.fm_layout` /
  `fm_loss`, the checkpoint's objective settings: logit-normal t, z0 = posterior sample or mean),
  token-weighted over batches with a fixed `--seed`; null for a VAE-only checkpoint.
"""

import functools
import math

import jax
import jax.numpy as jnp

from colajax import restore
from colajax.data import pipeline
from colajax.models import posterior
from colajax.models.dit import DiT
from colajax.models.vae import TextVAE
from colajax.train import objectives

NOTE = "diagnostics, not a generation-quality metric (see the paper); headline: `colajax eval`"


def batch_stats(encode, decode, dit, tokens_BL, rng, *, vae_config, obj, block_size, weights_BL):
    """Sums of one batch: tokens, correct, mu^2 and sigma^2 (valid tokens x channels), FM * tokens.

    `encode/decode/dit` are the callables of `train.objectives`; `dit` may be None.
    """
    b, length = tokens_BL.shape
    seg = weights_BL.astype(jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    w = weights_BL.astype(jnp.float32)
    mean, logvar_raw = encode(tokens_BL, seg, pos)
    logvar = posterior.clamp_logvar(logvar_raw)
    pred = jnp.argmax(decode(mean, seg, pos), axis=-1)
    out = {
        "tokens": jnp.sum(w),
        "correct": jnp.sum((pred == tokens_BL) * w),
        "mu2": jnp.sum(jnp.square(mean) * w[..., None]),
        "sigma2": jnp.sum(jnp.exp(logvar) * w[..., None]),
    }
    if dit is not None:
        z = posterior.sample(mean, logvar, jax.random.fold_in(rng, 0)) if obj.vae_sample else mean
        layout = objectives.fm_layout(
            objectives.to_dit_space(z, vae_config),
            jax.random.fold_in(rng, 1),
            block_size=block_size,
            t_loc=obj.t_loc,
            t_scale=obj.t_scale,
            segment_ids_BL=seg,
            positions_BL=pos,
        )
        fm, _ = objectives.fm_loss(dit, layout)
        out["fm_sum"] = fm * jnp.sum(w)
    return out


def finalize(totals: dict) -> dict:
    """Ratios of the accumulated sums (see the module docstring)."""
    return {
        "tokens": int(totals["tokens"]),
        "recon_acc": totals["correct"] / totals["tokens"],
        # log(E[mu^2] / E[sigma^2]): both means run over the same tokens x channels
        "logsnr": math.log(totals["mu2"]) - math.log(totals["sigma2"]),
        "fm_loss": totals["fm_sum"] / totals["tokens"] if "fm_sum" in totals else None,
    }


@functools.partial(jax.jit, static_argnames=("vae_cfg", "dit_cfg", "obj"))
def _model_stats(params, tokens_BL, rng, *, vae_cfg, dit_cfg, obj):
    """`batch_stats` of the checkpoint's VAE (and DiT) on one batch of full rows."""
    vae = TextVAE(vae_cfg)

    def encode(ids, seg, pos):
        return vae.apply({"params": params["vae"]}, ids, seg, pos, method=TextVAE.encode)

    def decode(z, seg, pos):
        return vae.apply({"params": params["vae"]}, z, seg, pos, method=TextVAE.decode)

    def dit(x, t, pos, seg, mask):
        return DiT(dit_cfg).apply({"params": params["dit"]}, x, t, pos, seg, mask)

    return batch_stats(
        encode,
        decode,
        dit if dit_cfg is not None else None,
        tokens_BL,
        rng,
        vae_config=vae_cfg,
        obj=obj,
        block_size=vae_cfg.block_size,
        weights_BL=jnp.ones(tokens_BL.shape, jnp.float32),
    )


def _objective(meta: dict):
    section = restore.experiment_config(meta).get("objective")
    return objectives.ObjectiveConfig.from_config(section or {})


def diagnose(
    checkpoint: str,
    text: str,
    *,
    tokenizer=None,
    seq_len=64,
    batch_size=8,
    batches=None,
    seed=0,
    mesh="data=-1",
) -> dict:
    """Restore the checkpoint and compute the diagnostics over the held-out text."""
    model = restore.load_model(checkpoint, mesh)
    if model.family.name != "cola":
        raise ValueError(
            f"{checkpoint} is a {model.family.name} checkpoint; these are the Cola VAE / prior "
            "diagnostics (held-out losses of every family are in its metrics.jsonl)."
        )
    vae_cfg, dit_cfg = model.models["vae"], model.models.get("dit")
    tok = restore.load_tokenizer(tokenizer, model.meta, vae_cfg.vocab_size)
    name = text.split(",")[0].removesuffix(".gz")
    kind = "jsonl" if name.endswith((".jsonl", ".json")) else "text"
    data = pipeline.make_eval_batches(
        {"kind": kind, "path": text},
        tok,
        batch_size,
        seq_len,
        block_size=vae_cfg.block_size,
        max_batches=batches,
    )
    configs = {"vae_cfg": vae_cfg, "dit_cfg": dit_cfg}
    obj = _objective(model.meta)
    totals: dict = {}
    for i, batch in enumerate(data):
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), i)
        tokens = jnp.asarray(batch["tokens"])
        stats = jax.device_get(_model_stats(model.params, tokens, rng, obj=obj, **configs))
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    result = finalize(totals)
    return {
        "checkpoint": checkpoint,
        "sequences": len(data) * batch_size,
        "seq_len": seq_len,
        **result,
        "note": NOTE,
    }
