"""The autoregressive baseline (paper §5.3): a causal LLaMA trained by next-token cross-entropy
(padding never scored) and decoded with a KV cache (greedy by default). Sections: `lm`."""

from colajax import flops
from colajax.families.base import GenOptions, record_seeds
from colajax.families.lm import LMFamily
from colajax.generate import ar as sampler
from colajax.generate.tokens import TokenChoice
from colajax.train import lm_objectives

DEFAULT_PENALTY = 1.0  # plain greedy (the paper does not give the AR decoding)


class ARFamily(LMFamily):
    name = "ar"
    causal = True

    def objective(self, config, cfg):
        def fn(logits_fn, batch, rng):
            del rng
            return lm_objectives.ar_loss(
                logits_fn,
                batch["tokens"],
                segment_ids_BL=batch.get("segment_ids"),
                loss_weights_BL=batch.get("loss_weights"),
            )

        return fn

    def train_flops_of(self, cfg, batch: int, seq_len: int) -> dict:
        return flops.ar_train_flops(cfg, batch, seq_len)

    def generator(
        self, params: dict, models: dict, meta: dict, tok, opts: GenOptions, *, batch_sharding=None
    ):
        self.generation_opts_check(opts)
        opts.reject(self.name, "steps", "block_length", "remasking")
        cfg = self.with_dtype(models, opts.dtype)["lm"]
        pad, eos = self.special_ids(tok)
        penalty = DEFAULT_PENALTY if opts.repetition_penalty is None else opts.repetition_penalty
        scfg = sampler.ARSamplerConfig(
            max_new_tokens=opts.max_new_tokens,
            choice=TokenChoice(opts.temperature, opts.top_k, opts.top_p, penalty),
            pad_id=pad,
            eos_id=eos,
            truncate_at_eos=opts.truncate_at_eos,
        )

        def generate_fn(prompts: list[list[int]], numbers: list[int]) -> list[list[int]]:
            seeds = record_seeds(opts.seed, numbers)
            out = sampler.generate(
                params, cfg, prompts, scfg, seeds=seeds, batch_sharding=batch_sharding
            )
            return out.generated

        return generate_fn

    def generation_flops(self, models: dict, prompt_len: int, opts: GenOptions) -> float:
        rep = flops.ar_generation_flops(models["lm"], prompt_len, opts.max_new_tokens)
        return float(rep["total"])


FAMILY = ARFamily()
