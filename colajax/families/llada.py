"""The LLaDA masked-diffusion baseline (Nie et al. 2025): the AR backbone with bidirectional
attention and a mask token, trained with LLaDA's estimator (t ~ U(0, 1) per sequence, tokens
masked with p = (1 - eps) t + eps, CE on masked tokens / p over the real tokens) and sampled by
the official low-confidence remasking (one token per step, no semi-AR blocks by default).
Sections: `lm`, `llada` (mask_id, t_eps)."""

from colajax import flops
from colajax.families.base import GenOptions, record_seeds
from colajax.families.lm import LMFamily
from colajax.generate import llada as sampler
from colajax.train import lm_objectives


class LLaDAFamily(LMFamily):
    name = "llada"
    causal = False

    def mask_id(self, config, vocab_size: int) -> int:
        mask = int(config.llada.mask_id)
        return vocab_size - 1 if mask == -1 else mask

    def objective(self, config, cfg):
        t_eps = float(config.llada.t_eps)

        def fn(logits_fn, batch, rng):
            return lm_objectives.llada_loss(
                logits_fn,
                batch["tokens"],
                rng,
                mask_id=cfg.mask_id,
                t_eps=t_eps,
                segment_ids_BL=batch.get("segment_ids"),
                loss_weights_BL=batch.get("loss_weights"),
            )

        return fn

    def validate(self, config) -> None:
        super().validate(config)
        if not 0.0 <= float(config.llada.t_eps) < 1.0:
            raise ValueError(f"config.llada.t_eps={config.llada.t_eps} must be in [0, 1).")

    def train_flops_of(self, cfg, batch: int, seq_len: int) -> dict:
        return flops.llada_train_flops(cfg, batch, seq_len)

    def sampler_config(self, tok, opts: GenOptions) -> sampler.LLaDASamplerConfig:
        self.generation_opts_check(opts)
        if opts.repetition_penalty not in (None, 1.0) or opts.top_k != 50 or opts.top_p != 0.9:
            raise ValueError(
                "the LLaDA sampler has no repetition penalty / top-k / top-p (official "
                "generate.py); use --temperature for Gumbel sampling."
            )
        pad, eos = self.special_ids(tok)
        return sampler.LLaDASamplerConfig(
            max_new_tokens=opts.max_new_tokens,
            steps=opts.steps,
            block_length=opts.block_length,
            remasking=opts.remasking or "low_confidence",
            temperature=opts.temperature,
            eos_id=eos,
            truncate_at_eos=opts.truncate_at_eos,
            pad_id=pad,
        )

    def generator(
        self, params: dict, models: dict, meta: dict, tok, opts: GenOptions, *, batch_sharding=None
    ):
        cfg = self.with_dtype(models, opts.dtype)["lm"]
        scfg = self.sampler_config(tok, opts)

        def generate_fn(prompts: list[list[int]], numbers: list[int]) -> list[list[int]]:
            seeds = record_seeds(opts.seed, numbers)
            out = sampler.generate(
                params, cfg, prompts, scfg, seeds=seeds, batch_sharding=batch_sharding
            )
            return out.generated

        return generate_fn

    def generation_flops(self, models: dict, prompt_len: int, opts: GenOptions) -> float:
        steps = opts.max_new_tokens if opts.steps is None else opts.steps
        rep = flops.llada_generation_flops(models["lm"], prompt_len, opts.max_new_tokens, steps)
        return float(rep["total"])


FAMILY = LLaDAFamily()
