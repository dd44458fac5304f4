"""The Cola DLM family: a Text VAE (Stage 1), then the VAE and a block-causal DiT prior
(Stage 2, `config.stage2.vae_mode`), generating block by block with the latent sampler.

Sections read: `vae`, `dit`, `block_size`, `objective`, `stage2`. With `config.stage='all'` a
run trains Stage 1 in `<workdir>/vae` and Stage 2 in `<workdir>/prior` (initialised from the
newest Stage-1 checkpoint unless the VAE mode starts from scratch). The budget axis counts
Stage 2 only (the paper's EFLOPs exclude VAE pretraining); N is the DiT's parameter count.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp

from colajax import flops
from colajax.families.base import Family, GenOptions, StagePlan, record_seeds
from colajax.generate import cola as sampler
from colajax.generate.tokens import TokenChoice
from colajax.models.config import DiTConfig, VAEConfig, check_compatible, cola_configs
from colajax.models.dit import DiT
from colajax.models.vae import TextVAE
from colajax.train import objectives, stages
from colajax.train.vae_modes import vae_mode

IMPORTED_FORMAT = "hf-safetensors"  # meta["source"]["format"] of `colajax import-hf` outputs
DEFAULT_STEPS, DEFAULT_CFG, DEFAULT_PENALTY = 16, 7.0, 1.1  # the official benchmark settings


def _vae_from(d: dict) -> VAEConfig:
    return VAEConfig.from_dict(d)


class ColaFamily(Family):
    name = "cola"
    stages = ("vae", "prior")
    main_stage = "prior"

    # ---- config -------------------------------------------------------------------------
    def models(self, config) -> dict:
        vae, dit = cola_configs(config)
        return {"vae": vae, "dit": dit}

    def validate(self, config) -> None:
        models = self.models(config)
        bs, tr = models["dit"].block_size, config.train
        if tr.seq_len % bs:
            raise ValueError(
                f"config.train.seq_len ({tr.seq_len}) must be a multiple of config.block_size "
                f"({bs})."
            )
        vae_mode(config.stage2.vae_mode)
        from colajax.train import optim

        try:
            objective = objectives.ObjectiveConfig.from_config(config.objective)
            objective.round_dit_inputs(models["dit"].dtype)
            s1 = optim.stage_optim(config, "vae")
        except ValueError as e:
            raise ValueError(f"config.{e}" if str(e).startswith("objective.") else str(e)) from None
        if s1.warmup_steps < 0 or s1.decay_steps < s1.warmup_steps:
            raise ValueError(
                "config.optim: Stage 1 needs 0 <= stage1_warmup_steps <= stage1_decay_steps (-1: "
                f"derived from train.vae_steps); got {s1.warmup_steps} / {s1.decay_steps}."
            )

    def vocab_size(self, models: dict) -> int:
        return models["vae"].vocab_size

    def row_multiple(self, models: dict) -> int:
        return models["vae"].block_size

    def stage_names(self, config) -> list[str]:
        if config.stage == "both":  # the name Stage 1 + Stage 2 had before 'all'
            return list(self.stages)
        return super().stage_names(config)

    def stage_steps(self, config, name: str) -> int:
        return int(config.train.vae_steps if name == "vae" else config.train.steps)

    def plan(self, config, workdir: str) -> list[StagePlan]:
        names = self.stage_names(config)
        from_stage1 = vae_mode(config.stage2.vae_mode).from_stage1
        init_from = config.stage2.init_from if from_stage1 else ""
        out = []
        for name in names:
            where = os.path.join(workdir, name) if len(names) > 1 else workdir
            start = ""
            if name == "prior":
                start = init_from or (os.path.join(workdir, "vae") if len(names) > 1 else "")
                start = start if from_stage1 else ""
            steps = self.stage_steps(config, name)
            out.append(StagePlan(name, where, steps, start, main=name == self.main_stage))
        return out

    def describe(self, config, stage: str) -> dict:
        return {"vae_mode": config.stage2.vae_mode if stage == "prior" else None}

    def make_stage(self, config, name: str):
        return stages.make_stage(config, name)

    # ---- sizes and FLOPs ------------------------------------------------------------------
    def param_counts(self, models: dict) -> dict[str, int]:
        vae, dit = models["vae"], models.get("dit")
        shapes = jax.eval_shape(lambda r: self.init_params(models, r), jax.random.key(0))
        count = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))
        vae_n = count(shapes["vae"])
        emb = (vae.vocab_size + 1) * vae.dim + vae.dim * vae.vocab_size
        emb += vae.vocab_size if vae.bias else 0  # decoder head bias
        out = {"vae": vae_n, "embedding": emb, "total": vae_n}
        if dit is not None:
            out["dit"] = flops.dit_param_count(dit)
            out["total"] += out["dit"]
            out["budget"] = out["dit"]
        return out

    # ---- checkpoints and generation ---------------------------------------------------------
    def models_from_meta(self, meta: dict) -> dict:
        """`meta['models']`; older checkpoints: `vae_config`/`dit_config` (import-hf) or the
        trainer's `vae`/`dit` sections (their block_size inside each section)."""
        src = meta.get("models")
        if not isinstance(src, dict):
            cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
            for vkey, dkey, d in (("vae_config", "dit_config", meta), ("vae", "dit", meta),
                                  ("vae", "dit", cfg)):  # fmt: skip
                if isinstance(d.get(vkey), dict):
                    src = {"vae": d[vkey]}
                    if isinstance(d.get(dkey), dict) and d[dkey]:  # Stage 1: no / empty dit
                        src["dit"] = d[dkey]
                    if "block_size" not in src["vae"] and "block_size" in cfg:
                        src = {k: {**v, "block_size": cfg["block_size"]} for k, v in src.items()}
                    break
        if not isinstance(src, dict) or "vae" not in src:
            raise ValueError(
                f"checkpoint meta holds no Cola model configs (keys: {sorted(meta)}); expected "
                "'models' with 'vae' (and 'dit'), as colajax train and import-hf write."
            )
        models = {"vae": VAEConfig.from_dict(src["vae"])}
        if isinstance(src.get("dit"), dict):
            models["dit"] = DiTConfig.from_dict(src["dit"])
            check_compatible(models["vae"], models["dit"])
        return models

    def init_params(self, models: dict, rng) -> dict:
        vae = models["vae"]
        r_vae, r_dit = jax.random.split(rng)
        ids = jnp.zeros((1, vae.block_size), jnp.int32)
        params = {"vae": TextVAE(vae).init(r_vae, ids)["params"]}
        if "dit" in models:
            dit = models["dit"]
            x = jnp.zeros((1, dit.block_size, dit.txt_in_channels))
            params["dit"] = DiT(dit).init(r_dit, x, jnp.zeros((1, dit.block_size)))["params"]
        return params

    def sampler_config(self, models: dict, meta: dict, tok, opts: GenOptions):
        opts.reject(self.name, "block_length", "remasking")
        dit = models["dit"]
        rnd = {"on": True, "off": False}.get(opts.bf16_inputs)
        if rnd is None:  # auto: the official numerics for imported and bf16 models
            source = meta.get("source")
            imported = isinstance(source, dict) and source.get("format") == IMPORTED_FORMAT
            rnd = imported or dit.dtype == "bfloat16"
        penalty = DEFAULT_PENALTY if opts.repetition_penalty is None else opts.repetition_penalty
        pad = tok.pad_id if tok is not None and tok.pad_id is not None and tok.pad_id >= 0 else 0
        return sampler.SamplerConfig(
            steps=DEFAULT_STEPS if opts.steps is None else opts.steps,
            guidance_scale=DEFAULT_CFG if opts.cfg is None else opts.cfg,
            max_new_tokens=opts.max_new_tokens,
            choice=TokenChoice(opts.temperature, opts.top_k, opts.top_p, penalty),
            pad_id=pad,
            eos_id=None if tok is None else tok.eos_id,
            truncate_at_eos=opts.truncate_at_eos,
            round_dit_inputs_bf16=rnd,
        )

    def with_dtype(self, models: dict, dtype: str | None) -> dict:
        if not dtype:
            return models
        return {k: dataclasses.replace(m, dtype=dtype) for k, m in models.items()}

    def generator(
        self, params: dict, models: dict, meta: dict, tok, opts: GenOptions, *, batch_sharding=None
    ):
        if "dit" not in models:
            raise ValueError(
                "this is a Stage-1 (VAE-only) checkpoint; generation needs the DiT prior: point "
                "at a Stage-2 run (e.g. <workdir>/prior) or an import-hf checkpoint."
            )
        models = self.with_dtype(models, opts.dtype)
        vae, dit = models["vae"], models["dit"]
        scfg = self.sampler_config(models, meta, tok, opts)
        n_blocks, bs, c = scfg.n_blocks(dit.block_size), dit.block_size, dit.txt_in_channels

        def generate_fn(prompts: list[list[int]], numbers: list[int]) -> list[list[int]]:
            noise = prompt_noise(opts.seed, numbers, n_blocks, bs, c)
            out = sampler.generate(
                params, vae, dit, prompts, scfg, seeds=record_seeds(opts.seed, numbers),
                noise=noise, batch_sharding=batch_sharding,
            )  # fmt: skip
            return out.generated

        return generate_fn

    def generation_flops(self, models: dict, prompt_len: int, opts: GenOptions) -> float:
        dit = models["dit"]
        bs = dit.block_size
        steps = DEFAULT_STEPS if opts.steps is None else opts.steps
        guided = (DEFAULT_CFG if opts.cfg is None else opts.cfg) != 1.0
        blocks = -(-opts.max_new_tokens // bs)
        rep = flops.generation_flops(
            models["vae"], dit, prompt_len // bs * bs, blocks, steps=steps, cfg=guided
        )
        return float(rep["total"])


def prompt_noise(seed: int, numbers: list[int], n_blocks: int, block_size: int, channels: int):
    """Initial noise [B, n_blocks, bs, C] of each prompt, drawn from (seed, record number)."""
    key = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda n: jax.random.fold_in(key, n))(jnp.asarray(numbers, jnp.uint32))
    shape = (n_blocks, block_size, channels)
    return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


FAMILY = ColaFamily()
