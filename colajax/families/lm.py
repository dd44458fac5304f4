"""The shared part of the AR and LLaDA families: one LLaMA backbone (`config.lm`), one training
stage ('lm', trained in the run's workdir), parameter counts and restore. The subclasses in
`ar.py` / `llada.py` choose the attention, the objective and the sampler."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from colajax import flops
from colajax.families.base import Family, GenOptions
from colajax.models.config import LMConfig
from colajax.models.llama import Llama


class LMStage:
    """The one training stage of a token-level family (see the stage contract in base.py)."""

    name = "lm"
    init_keys = ("lm",)
    group_lr: dict = {}

    def __init__(self, family: "LMFamily", config, cfg: LMConfig):
        self.family, self.config, self.cfg = family, config, cfg
        self.model = Llama(cfg)

    def init(self, rng):
        return {"lm": self.model.init(rng, jnp.zeros((1, 1), jnp.int32))["params"]}, {}

    def loss(self, params, frozen, batch, rng, step):
        del frozen, step
        lm = nn.meta.unbox(params)["lm"]
        if "tokens" not in batch or batch["tokens"].ndim != 2:
            raise ValueError(f"batch needs 'tokens' int32 [B, L]; got keys {sorted(batch)}.")

        def logits_fn(ids, positions, segment_ids):
            return self.model.apply({"params": lm}, ids, positions, segment_ids)

        return self.family.objective(self.config, self.cfg)(logits_fn, batch, rng)

    def param_groups(self, params):
        return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in nn.meta.unbox(params).items()}

    def update_enabled(self, step) -> dict:
        del step
        return {}

    def flops_report(self, batch_size: int, seq_len: int) -> dict:
        return self.family.train_flops_of(self.cfg, batch_size, seq_len)

    def init_from_checkpoint(self, params, frozen, restored):
        """Start from another run's (or an imported) backbone of the same sizes."""
        old, new = nn.meta.unbox(params["lm"]), nn.meta.unbox(restored["lm"])
        if jax.tree.structure(old) != jax.tree.structure(new) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new))
        ):
            raise ValueError("the restored backbone does not match config.lm (sizes differ).")
        is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
        lm = jax.tree.map(
            lambda o, n: o.replace_boxed(n) if is_box(o) else n, params["lm"], new, is_leaf=is_box
        )
        return {**params, "lm": lm}, frozen


class LMFamily(Family):
    stages = ("lm",)
    main_stage = "lm"
    causal = True

    # ---- family-specific (subclasses) --------------------------------------------------------
    def mask_id(self, config, vocab_size: int) -> int | None:
        return None

    def objective(self, config, cfg: LMConfig):
        """`fn(logits_fn, batch, rng) -> (loss, metrics)`."""
        raise NotImplementedError

    def train_flops_of(self, cfg: LMConfig, batch: int, seq_len: int) -> dict:
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------------
    def models(self, config) -> dict:
        d = config.lm.to_dict() if hasattr(config.lm, "to_dict") else dict(config.lm)
        mask = self.mask_id(config, int(d.get("vocab_size", 0)))
        try:
            cfg = LMConfig.from_dict({**d, "causal": self.causal, "mask_id": mask})
        except (TypeError, ValueError) as e:
            raise ValueError(f"config.lm: {e}") from None
        return {"lm": cfg}

    def vocab_size(self, models: dict) -> int:
        return models["lm"].vocab_size

    def make_stage(self, config, name: str):
        if name != "lm":
            raise ValueError(f"the {self.name} family has one stage, 'lm' (got {name!r}).")
        return LMStage(self, config, self.models(config)["lm"])

    def param_counts(self, models: dict) -> dict[str, int]:
        counts = dict(flops.lm_param_counts(models["lm"]))
        counts["budget"] = counts["non_embedding"]
        return counts

    def models_from_meta(self, meta: dict) -> dict:
        src = meta.get("models")
        if not isinstance(src, dict) or not isinstance(src.get("lm"), dict):
            raise ValueError(
                f"checkpoint meta holds no 'models': {{'lm': ...}} (keys: {sorted(meta)}); it is "
                f"not a {self.name} checkpoint written by colajax train or import-hf --llama."
            )
        cfg = LMConfig.from_dict(src["lm"])
        if cfg.causal != self.causal:
            raise ValueError(f"meta['models']['lm'] has causal={cfg.causal}: not {self.name}.")
        return {"lm": cfg}

    def init_params(self, models: dict, rng) -> dict:
        ids = jnp.zeros((1, 1), jnp.int32)
        return {"lm": Llama(models["lm"]).init(rng, ids)["params"]}

    def with_dtype(self, models: dict, dtype: str | None) -> dict:
        if not dtype:
            return models
        return {"lm": dataclasses.replace(models["lm"], dtype=dtype)}

    @staticmethod
    def special_ids(tok) -> tuple[int, int | None]:
        """(pad id, eos id) of a tokenizer (pad 0 and no EOS without one)."""
        if tok is None:
            return 0, None
        pad = tok.pad_id if tok.pad_id is not None and tok.pad_id >= 0 else 0
        return pad, tok.eos_id

    def generation_opts_check(self, opts: GenOptions) -> None:
        opts.reject(self.name, "cfg")
        if opts.bf16_inputs not in ("auto", "on", "off"):
            raise ValueError(f"bf16_inputs={opts.bf16_inputs!r}")
