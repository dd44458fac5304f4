"""The Cola family's stages: Stage 1 (Text VAE) and Stage 2 (prior: VAE + DiT).

They implement the stage contract of `colajax.families.base` (init, loss, param groups and
their learning-rate multipliers, per-step group switches, FLOPs, init from a checkpoint).

Parameter placement by Stage-2 vae_mode:
  joint / interval: params {'vae', 'dit'}, frozen {'vae_ref': {'encoder': ...}}
  scratch:          params {'vae', 'dit'}, frozen {}   (no Stage-1 encoder, no reference KL)
  frozen:           params {'dit'},        frozen {'vae'}
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from colajax import flops
from colajax.models.config import cola_configs
from colajax.models.dit import DiT
from colajax.models.vae import TextVAE
from colajax.train import objectives
from colajax.train.objectives import ObjectiveConfig
from colajax.train.vae_modes import vae_mode

STAGES = ("vae", "prior")


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
        self.vae_config, self.dit_config = cola_configs(config)
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
    init_keys = ("vae",)
    group_lr: dict = {}

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

    def update_enabled(self, step) -> dict:
        del step
        return {}

    def flops_report(self, batch_size: int, seq_len: int) -> dict:
        return flops.stage1_flops(
            self.vae_config, batch_size, seq_len, bert=self.objective.lambda_mask > 0
        )

    def init_from_checkpoint(self, params, frozen, restored):
        """Continue Stage 1 from VAE weights (e.g. imported ones)."""
        params = dict(params)
        params["vae"] = _replace(params["vae"], restored["vae"], "VAEStage")
        return params, frozen


class PriorStage(_VAEMixin):
    """Stage 2: VAE terms + flow matching + reference KL, by `config.stage2.vae_mode`."""

    name = "prior"
    init_keys = ("vae",)

    def __init__(self, config):
        self._setup_vae(config)
        self.dit = DiT(self.dit_config)
        s2 = config.stage2
        self.mode = s2.vae_mode
        self.vae_mode = vae_mode(self.mode)
        self.group_lr = {"vae": float(s2.vae_lr_ratio)}
        self.joint_steps = int(s2.interval_joint_steps)
        self.frozen_steps = int(s2.interval_frozen_steps)
        if self.vae_mode.periodic and (self.joint_steps < 1 or self.frozen_steps < 0):
            raise ValueError(
                "stage2.interval_joint_steps must be >= 1 and interval_frozen_steps >= 0 "
                f"(got {self.joint_steps} / {self.frozen_steps})."
            )
        self.use_ref = self.vae_mode.reference and self.objective.lambda_ref > 0
        self.bf16_inputs = self.objective.round_dit_inputs(self.dit_config.dtype)

    @property
    def vae_trainable(self) -> bool:
        return self.vae_mode.trains_vae

    def init(self, rng):
        r_vae, r_dit = jax.random.split(rng)
        vae = self._init_vae(r_vae)
        bs, c = self.dit_config.block_size, self.dit_config.txt_in_channels
        dit = self.dit.init(r_dit, jnp.zeros((1, bs, c)), jnp.zeros((1, bs)))["params"]
        if not self.vae_mode.trains_vae:
            return {"dit": dit}, {"vae": vae}
        frozen = {"vae_ref": encoder_params(vae)} if self.use_ref else {}
        return {"vae": vae, "dit": dit}, frozen

    def _dit_fn(self, dit_params):
        return dit_fn(self.dit, dit_params)

    def loss(self, params, frozen, batch, rng, step):
        del step  # interval phases switch the VAE group off via update_enabled
        params, frozen = _unbox(params), _unbox(frozen)
        vae_params = params["vae"] if self.vae_mode.trains_vae else frozen["vae"]
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

    def update_enabled(self, step) -> dict:
        """{'vae': whether VAE parameters may be updated at `step`} in interval mode (traced
        bool); {} otherwise (frozen mode has no trained VAE parameters at all)."""
        if not self.vae_mode.periodic:
            return {}
        return {"vae": (step % (self.joint_steps + self.frozen_steps)) < self.joint_steps}

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

    def init_from_checkpoint(self, params, frozen, restored):
        """Load Stage-1 VAE weights (and, for joint/interval, the frozen reference encoder)."""
        restored_vae_params = restored["vae"]
        if not self.vae_mode.from_stage1:
            raise ValueError(
                "stage2.vae_mode='scratch' trains the VAE from random init; do not initialise it "
                "from a Stage-1 checkpoint (clear stage2.init_from, or pick another vae_mode)."
            )
        params, frozen = dict(params), dict(frozen)
        if not self.vae_mode.trains_vae:
            frozen["vae"] = _replace(frozen["vae"], restored_vae_params, "PriorStage(frozen)")
            return params, frozen
        params["vae"] = _replace(params["vae"], restored_vae_params, "PriorStage")
        if self.use_ref:
            ref = encoder_params(_unbox(restored_vae_params))
            frozen["vae_ref"] = _replace(frozen["vae_ref"], _copy(ref), "PriorStage(vae_ref)")
        return params, frozen


def make_stage(config, name: str | None = None):
    """The Stage object for `name` ('vae' | 'prior'; default: `config.stage`)."""
    name = name or config.stage
    if name == "vae":
        return VAEStage(config)
    if name == "prior":
        return PriorStage(config)
    raise ValueError(
        f"unknown Cola stage {name!r}: make_stage builds one of {STAGES} (config.stage 'all' "
        "runs both; build them one by one)."
    )
