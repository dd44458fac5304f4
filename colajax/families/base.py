"""The model-family interface: what the trainer, checkpoints, eval, generate, bench and sweeps
ask of a family, and nothing else.

A family (Cola, AR, LLaDA) is one object implementing `Family`. It owns its config sections,
model configs, stages (objects the trainer drives, see `Stage`), FLOP and parameter counts and
its generation. Generic code never branches on the family name; it calls these methods.

Stage contract (what `colajax.train.setup` / `trainer` / `step` use):
  stage.name; stage.init(rng) -> (params, frozen)          boxed (nn.Partitioned) pytrees
  stage.loss(params, frozen, batch, rng, step) -> (loss, metrics)
  stage.param_groups(params) -> label tree; stage.group_lr: {group: lr multiplier}
  stage.update_enabled(step) -> {group: bool}               groups switched off this step
  stage.flops_report(batch_size, seq_len) -> {"total", "total_dense", "components"}
  stage.init_keys; stage.init_from_checkpoint(params, frozen, restored) -> (params, frozen)
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from colajax import sharding

# generate_fn(prompt_ids, record_numbers) -> generated ids per prompt. Record numbers seed
# per-prompt randomness (seed + record number), so an output does not depend on batching, on
# the data-parallel size or on the process count.
GenerateFn = Callable[[list[list[int]], list[int]], list[list[int]]]


def record_seeds(seed: int, numbers: list[int]) -> list[int]:
    """Per-prompt sampler seeds: seed + record number (uint32), so a prompt's randomness does
    not depend on its batch or its place in it."""
    return [(seed + int(n)) % 2**32 for n in numbers]


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One stage of a run: where it trains, how long, and what it starts from."""

    name: str  # stage name ('vae', 'prior', 'lm')
    workdir: str  # its workdir (checkpoints/, metrics.jsonl, tb/)
    steps: int  # optimizer steps
    init_from: str = ""  # checkpoint root whose `stage.init_keys` params it starts from
    main: bool = True  # its tokens and FLOPs are the run's budget axis


@dataclasses.dataclass(frozen=True)
class GenOptions:
    """Generation settings common to the CLIs; None means the family's default. A family
    rejects the options that do not apply to it (e.g. `cfg` for AR)."""

    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 50  # 0 = off (sampling only)
    top_p: float = 0.9  # 1 = off (sampling only)
    repetition_penalty: float | None = None  # None: the family's default
    seed: int = 0
    truncate_at_eos: bool = True
    steps: int | None = None  # cola: Euler steps per block; llada: denoising steps
    cfg: float | None = None  # cola: guidance scale
    block_length: int | None = None  # llada: semi-autoregressive block length
    remasking: str | None = None  # llada: low_confidence | random
    bf16_inputs: str = "auto"  # cola: round DiT inputs to bf16 (auto | on | off)
    dtype: str | None = None  # override the compute dtype of the model configs

    def reject(self, family: str, *names: str) -> None:
        """Raise if any option in `names` was set (they do not apply to `family`)."""
        bad = [n for n in names if getattr(self, n) is not None]
        if bad:
            flags = ", ".join("--" + n.replace("_", "-") for n in bad)
            raise ValueError(f"{flags} do(es) not apply to the {family} family; drop it.")


class Family:
    """Base class; subclasses fill in the model-specific parts."""

    name: str = ""
    stages: tuple[str, ...] = ()  # every stage, in training order
    main_stage: str = ""  # the stage whose tokens / FLOPs count toward the budget

    # ---- config -------------------------------------------------------------------------
    def models(self, config) -> dict[str, Any]:
        """Typed model configs by section name (strict: unknown fields fail)."""
        raise NotImplementedError

    def validate(self, config) -> None:
        """Family-specific checks of an experiment config (ValueError naming the fix)."""
        self.models(config)

    def vocab_size(self, models: dict) -> int:
        raise NotImplementedError

    def row_multiple(self, models: dict) -> int:
        """Sequence lengths must be multiples of this (the block size of block models)."""
        return 1

    def compute_dtype(self, models: dict) -> str:
        dtypes = {getattr(m, "dtype", "float32") for m in models.values()}
        return "bfloat16" if "bfloat16" in dtypes else "float32"

    def stage_names(self, config) -> list[str]:
        """The stages `config.stage` selects ('all' = every stage)."""
        if config.stage == "all":
            return list(self.stages)
        if config.stage not in self.stages:
            raise ValueError(
                f"config.stage={config.stage!r} is not a stage of the {self.name} family; use "
                f"'all' or one of {self.stages}."
            )
        return [config.stage]

    def plan(self, config, workdir: str) -> list[StagePlan]:
        """The stages of a run, in order (single-stage families train in `workdir` itself)."""
        return [
            StagePlan(n, workdir, self.stage_steps(config, n), main=n == self.main_stage)
            for n in self.stage_names(config)
        ]

    def stage_steps(self, config, name: str) -> int:
        return int(config.train.steps)

    def make_stage(self, config, name: str):
        raise NotImplementedError

    # ---- sizes and FLOPs ------------------------------------------------------------------
    def param_counts(self, models: dict) -> dict[str, int]:
        """At least `total`, `embedding` and `budget` (the family's N of the 6 N D axis)."""
        raise NotImplementedError

    def paper_n(self, config) -> float:
        """N of the paper's EFLOPs axis 6 N D: `config.flops.paper_n`, else the family's own."""
        if config.flops.paper_n:
            return float(config.flops.paper_n)
        return float(self.param_counts(self.models(config))["budget"])

    def describe(self, config, stage: str) -> dict:
        """Extra fields that identify a stage's setup in reports (e.g. Cola's VAE mode)."""
        return {}

    def train_flops(self, config, stage: str | None = None) -> dict:
        """Analytic FLOPs of one optimizer step of `stage` (default: the main stage)."""
        st = self.make_stage(config, stage or self.main_stage)
        return st.flops_report(config.train.batch_size, config.train.seq_len)

    # ---- checkpoints and generation ---------------------------------------------------------
    def models_from_meta(self, meta: dict) -> dict[str, Any]:
        """Model configs recorded in a checkpoint's meta (`meta['models']`)."""
        raise NotImplementedError

    def init_params(self, models: dict, rng) -> dict:
        """Boxed params `{section: ...}` of the models a generator needs (eval_shape-able)."""
        raise NotImplementedError

    def abstract_params(self, models: dict, mesh, rules) -> dict:
        """`jax.ShapeDtypeStruct` tree of `init_params` with NamedShardings on `mesh`."""
        boxed = jax.eval_shape(lambda r: self.init_params(models, r), jax.random.key(0))
        shapes = nn.meta.unbox(boxed)
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            shapes,
            sharding.tree_shardings(boxed, mesh, rules),
        )

    def generator(
        self, params: dict, models: dict, meta: dict, tok, opts: GenOptions, *, batch_sharding=None
    ):
        """A GenerateFn for these params and settings; with `batch_sharding`
        (`generate.batching.batch_sharding` of the params' mesh) it runs data-parallel."""
        raise NotImplementedError

    def generation_flops(self, models: dict, prompt_len: int, opts: GenOptions) -> float:
        """Forward FLOPs to generate `opts.max_new_tokens` tokens after one prompt."""
        raise NotImplementedError
