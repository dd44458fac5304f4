"""Stage objects the trainer drives: Stage 1 (Text VAE) and Stage 2 (prior: VAE + DiT).

Interface (trainer contract):
  stage = make_stage(config[, name])        # name 'vae' | 'prior' (default: config.stage)
  stage.init(rng) -> (params, frozen)       # boxed (nn.Partitioned) pytrees
  stage.loss(params, frozen, batch, rng, step) -> (loss, metrics)
  stage.param_groups(params) -> labels 'vae' | 'dit'
  stage.vae_update_mask(step) -> bool       # False in 'interval' frozen phases / 'frozen' mode
  stage.flops_per_step(batch_size, seq_len) -> model FLOPs (fwd + bwd) per optimizer step
  stage.init_from_checkpoint(params, frozen, restored_vae_params) -> (params, frozen)

Parameter placement by Stage-2 vae_mode:
  joint / interval: params {'vae', 'dit'}, frozen {'vae_ref': {'encoder': ...}}
  scratch:          params {'vae', 'dit'}, frozen {}   (no Stage-1 encoder, no reference KL)
  frozen:           params {'dit'},        frozen {'vae'}
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from colajax import flops
from colajax.models.config import DiTConfig, VAEConfig, check_compatible
from colajax.models.dit import DiT
from colajax.models.vae import TextVAE
from colajax.train import objectives
from colajax.train.objectives import ObjectiveConfig

STAGES = ("vae", "prior")


def _as_dict(section: Any) -> dict:
    return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def _unbox(tree):
    return nn.meta.unbox(tree)


def _copy(tree):
    """Fresh buffers (so a donated training state never frees the frozen copy)."""

    def one(x):
        if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
            return jax.device_put(x, x.sharding, may_alias=False)
        return jnp.array(x, copy=True)

    return jax.tree.map(one, tree)


def _replace(old, new, what: str):
    """Put `new` arrays into the structure of `old`, keeping `old`'s partitioning boxes."""
    new = _unbox(new)
    old_s = jax.tree.structure(_unbox(old))
    if jax.tree.structure(new) != old_s:
        raise ValueError(
            f"{what}: the restored VAE parameters do not match this config's VAE (tree "
            "structure differs); check that config.vae matches the Stage-1 checkpoint."
        )
    for a, b in zip(jax.tree.leaves(_unbox(old)), jax.tree.leaves(new), strict=True):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(
                f"{what}: restored VAE parameter shape {tuple(b.shape)} != expected "
                f"{tuple(a.shape)}; check that config.vae matches the Stage-1 checkpoint."
            )
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    return jax.tree.map(
        lambda o, n: o.replace_boxed(n) if is_box(o) else n, old, new, is_leaf=is_box
    )


def dit_fn(model: DiT, dit_params):
    """The DiT as the objectives call it: `dit(x, t, positions, segment_ids, mask) -> v`."""

    def dit(x, t, pos, seg, mask):
        return model.apply({"params": dit_params}, x, t, pos, seg, mask)

    return dit


def encoder_params(vae_params):
    """The encoder subtree of TextVAE params (what `TextVAE.encode` reads)."""
    if "encoder" not in vae_params:
        raise ValueError("VAE params have no 'encoder' subtree; is this a TextVAE param tree?")
    return {"encoder": vae_params["encoder"]}


def _read_batch(batch, block_size: int):
    if "tokens" not in batch:
        raise ValueError(f"batch needs a 'tokens' entry (int32 [B, L]); got keys {sorted(batch)}.")
    tokens = batch["tokens"]
    if tokens.ndim != 2 or tokens.shape[1] % block_size:
        raise ValueError(
            f"batch['tokens'] has shape {tokens.shape}; expected [B, L] with L a multiple of the "
            f"block size {block_size} (set train.seq_len accordingly)."
        )
    return tokens, {
        "segment_ids_BL": batch.get("segment_ids"),
        "positions_BL": batch.get("positions"),
        "loss_weights_BL": batch.get("loss_weights"),  # float32; 0 = an input, not scored
    }


class _VAEMixin:
    """Shared VAE plumbing (config, init, encode/decode closures)."""

    def _setup_vae(self, config):
        self.vae_config = VAEConfig.from_dict(_as_dict(config.vae))
        self.objective = ObjectiveConfig.from_config(config.objective)
        self.vae = TextVAE(self.vae_config)
        self.mask_id = self.vae_config.vocab_size  # the extra embedding row

    def _init_vae(self, rng):
        ids = jnp.zeros((1, self.vae_config.block_size), jnp.int32)
        return self.vae.init(rng, ids)["params"]

    def _encode(self, vae_params):
        def encode(ids, seg, pos):
            return self.vae.apply({"params": vae_params}, ids, seg, pos, method=TextVAE.encode)

        return encode

    def _decode(self, vae_params):
        def decode(z, seg, pos):
            return self.vae.apply({"params": vae_params}, z, seg, pos, method=TextVAE.decode)

        return decode


class VAEStage(_VAEMixin):
    """Stage 1: L_VAE = recon + beta KL(q || N(0, I)) + lambda_mask BERT."""

    name = "vae"

    def __init__(self, config):
        self._setup_vae(config)

    def init(self, rng):
        return {"vae": self._init_vae(rng)}, {}

    def loss(self, params, frozen, batch, rng, step):
        del frozen, step
        vae_params = _unbox(params)["vae"]
        tokens, layout = _read_batch(batch, self.vae_config.block_size)
        return objectives.stage1_loss(
            self._encode(vae_params),
            self._decode(vae_params),
            tokens,
            rng,
            self.objective,
            self.mask_id,
            **layout,
        )

    def param_groups(self, params):
        return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in _unbox(params).items()}

    def vae_update_mask(self, step):
        del step
        return True

    def flops_report(self, batch_size: int, seq_len: int) -> dict:
        return flops.stage1_flops(
            self.vae_config, batch_size, seq_len, bert=self.objective.lambda_mask > 0
        )

    def flops_per_step(self, batch_size: int, seq_len: int) -> float:
        return float(self.flops_report(batch_size, seq_len)["total"])

    def init_from_checkpoint(self, params, frozen, restored_vae_params):
        """Continue Stage 1 from VAE weights (e.g. imported ones)."""
        params = dict(params)
        params["vae"] = _replace(params["vae"], restored_vae_params, "VAEStage")
        return params, frozen


class PriorStage(_VAEMixin):
    """Stage 2: VAE terms + flow matching + reference KL, by `config.stage2.vae_mode`."""

    name = "prior"

    def __init__(self, config):
        self._setup_vae(config)
        self.dit_config = DiTConfig.from_dict(_as_dict(config.dit))
        check_compatible(self.vae_config, self.dit_config)
        self.dit = DiT(self.dit_config)
        s2 = config.stage2
        self.mode = s2.vae_mode
        if self.mode not in objectives.VAE_MODES:
            raise ValueError(f"stage2.vae_mode={self.mode!r} is not one of {objectives.VAE_MODES}.")
        self.joint_steps = int(s2.interval_joint_steps)
        self.frozen_steps = int(s2.interval_frozen_steps)
        if self.mode == "interval" and (self.joint_steps < 1 or self.frozen_steps < 0):
            raise ValueError(
                "stage2.interval_joint_steps must be >= 1 and interval_frozen_steps >= 0 "
                f"(got {self.joint_steps} / {self.frozen_steps})."
            )
        self.use_ref = self.mode in ("joint", "interval") and self.objective.lambda_ref > 0
        self.bf16_inputs = self.objective.round_dit_inputs(self.dit_config.dtype)

    @property
    def vae_trainable(self) -> bool:
        return self.mode != "frozen"

    def init(self, rng):
        r_vae, r_dit = jax.random.split(rng)
        vae = self._init_vae(r_vae)
        bs, c = self.dit_config.block_size, self.dit_config.txt_in_channels
        dit = self.dit.init(r_dit, jnp.zeros((1, bs, c)), jnp.zeros((1, bs)))["params"]
        if self.mode == "frozen":
            return {"dit": dit}, {"vae": vae}
        frozen = {"vae_ref": encoder_params(vae)} if self.use_ref else {}
        return {"vae": vae, "dit": dit}, frozen

    def _dit_fn(self, dit_params):
        return dit_fn(self.dit, dit_params)

    def loss(self, params, frozen, batch, rng, step):
        del step  # interval phases are applied by the trainer via vae_update_mask
        params, frozen = _unbox(params), _unbox(frozen)
        vae_params = frozen["vae"] if self.mode == "frozen" else params["vae"]
        ref = self._encode(frozen["vae_ref"]) if self.use_ref else None
        tokens, layout = _read_batch(batch, self.dit_config.block_size)
        return objectives.stage2_loss(
            self._encode(vae_params),
            self._decode(vae_params),
            ref,
            self._dit_fn(params["dit"]),
            tokens,
            rng,
            self.objective,
            mode=self.mode,
            vae_config=self.vae_config,
            block_size=self.dit_config.block_size,
            mask_id=self.mask_id,
            bf16_inputs=self.bf16_inputs,
            **layout,
        )

    def param_groups(self, params):
        return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in _unbox(params).items()}

    def vae_update_mask(self, step):
        """True when VAE parameters may be updated at `step` (int or traced int)."""
        if self.mode == "frozen":
            return False
        if self.mode != "interval":
            return True
        return (step % (self.joint_steps + self.frozen_steps)) < self.joint_steps

    def flops_report(self, batch_size: int, seq_len: int) -> dict:
        return flops.stage2_flops(
            self.vae_config,
            self.dit_config,
            batch_size,
            seq_len,
            mode=self.mode,
            bert=self.objective.lambda_mask > 0,
            ref=self.use_ref,
        )

    def flops_per_step(self, batch_size: int, seq_len: int) -> float:
        return float(self.flops_report(batch_size, seq_len)["total"])

    def init_from_checkpoint(self, params, frozen, restored_vae_params):
        """Load Stage-1 VAE weights (and, for joint/interval, the frozen reference encoder)."""
        if self.mode == "scratch":
            raise ValueError(
                "stage2.vae_mode='scratch' trains the VAE from random init; do not initialise it "
                "from a Stage-1 checkpoint (clear stage2.init_from, or pick another vae_mode)."
            )
        params, frozen = dict(params), dict(frozen)
        if self.mode == "frozen":
            frozen["vae"] = _replace(frozen["vae"], restored_vae_params, "PriorStage(frozen)")
            return params, frozen
        params["vae"] = _replace(params["vae"], restored_vae_params, "PriorStage")
        if self.use_ref:
            ref = encoder_params(_unbox(restored_vae_params))
            frozen["vae_ref"] = _replace(frozen["vae_ref"], _copy(ref), "PriorStage(vae_ref)")
        return params, frozen


def make_stage(config, name: str | None = None):
    """The Stage object for `name` ('vae' | 'prior'; default `config.stage`)."""
    name = name or config.stage
    if name == "both":
        raise ValueError(
            "config.stage='both' runs two stages; call make_stage(config, 'vae') and then "
            "make_stage(config, 'prior')."
        )
    if name == "vae":
        return VAEStage(config)
    if name == "prior":
        return PriorStage(config)
    raise ValueError(f"unknown stage {name!r}; use one of {STAGES} (or 'both' in config.stage).")
