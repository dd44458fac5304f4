"""Model-size ladders and IsoFLOP grids (beyond the paper, which trains one size per family).

A ladder step is one width d; everything else follows from fixed rules:

* depth L = max(min_layers, round(d / aspect)). Kaplan et al. 2020 (Scaling Laws for Neural
  Language Models, §3.1, Fig. 5) find the loss at fixed N nearly independent of the aspect
  ratio d/L over a wide range (within a few % for ~20-200); GPT-3 (Brown et al. 2020, Table 2.1)
  and Chinchilla (Hoffmann et al. 2022, Table A9) ladders keep d/L between ~40 and ~130, and
  the paper's 2B models have 2048/24 = 85 (DiT) and 2048/27 = 76 (LLaMA). Default aspect 64
  (GPT-3 Small: 768/12); tiny CPU ladders use a smaller one to vary depth at all;
* heads = d / head_dim (fixed head_dim: 128 in the paper, 64 in GPT-3, 32 in experiments/tiny);
* FFN width 4d (DiT `expand_ratio` 4; LLaMA SwiGLU `ffn_dim` = 4d: the paper's 8,192 at 2,048);
* DiT RoPE on the leading 3/4 of each head (the released 96 of 128), rounded down to even;
* learning rate lr = base_lr * (base_width / d) ** lr_power with lr_power 1: the muP rule for
  Adam on hidden matrices (Yang et al. 2022, Tensor Programs V, Table 3: lr ~ 1/fan_in). Under
  the standard parametrisation used here it is a heuristic for transferring a tuned lr across
  widths (lr_power 0 keeps one lr).

Cola keeps its VAE fixed and varies only the DiT (`dit.*`; the paper's VAE is not part of N);
AR and LLaDA vary the LLaMA backbone (`lm.dim, lm.ffn_dim, lm.num_heads, lm.head_dim,
lm.num_layers`).

N (the budget axis' parameter count) per family, following the paper's convention (1.8e9 for
every 2B model, embeddings excluded): Cola = all DiT parameters (`flops.dit_param_count`: the
released DiT has 1.83e9), AR/LLaDA = the backbone without the embedding and output head.
`cola_n_params(..., per_token=True)` counts only the weights applied to every token (the DiT's
AdaLN and timestep MLP run once per timestep, not per token), closer to the real FLOPs.

IsoFLOP grid: every (size, budget C in EFLOPs) pair trains one run for
steps = C * 1e18 / (6 N tokens_per_step) (rounded to the nearest step), with its cosine schedule
ending there (`optim.decay_steps` = steps: Chinchilla §3.2 matches the cycle to the run).
"""

import dataclasses
from collections.abc import Sequence

from colajax import flops
from colajax.models.config import DiTConfig
from colajax.sweep import budgets as budgets_lib
from colajax.sweep.spec import FAMILIES, RunSpec

ROPE_FRACTION = 0.75  # released DiT: rope_dim 96 of head_dim 128
FFN_RATIO = 4


@dataclasses.dataclass(frozen=True)
class Size:
    """One rung of a ladder: its label, shape, N, learning rate and config overrides."""

    name: str
    family: str
    width: int
    depth: int
    heads: int
    head_dim: int
    n_params: float
    lr: float
    overrides: dict


def lm_n_params(dim: int, ffn_dim: int, num_heads: int, head_dim: int, num_layers: int) -> int:
    """Non-embedding params of a LLaMA backbone: per layer q/k/v/o (4 d x heads*head_dim, no
    bias; MHA), SwiGLU (3 d x ffn) and 2 RMSNorm scales; plus the final norm."""
    inner = num_heads * head_dim
    return num_layers * (4 * dim * inner + 3 * dim * ffn_dim + 2 * dim) + dim


def cola_n_params(dit: DiTConfig, *, per_token: bool = False) -> int:
    """N of a Cola DiT: all its parameters, or (`per_token`) the weights applied per token."""
    return flops.dit_macs_per_row(dit) if per_token else flops.dit_param_count(dit)


def _lr(base_lr: float, base_width: int, width: int, lr_power: float) -> float:
    return base_lr * (base_width / width) ** lr_power


def make_size(
    family: str,
    width: int,
    *,
    head_dim: int = 64,
    aspect: float = 64.0,
    min_layers: int = 1,
    base_lr: float = 1.5e-4,
    base_width: int = 2048,
    lr_power: float = 1.0,
    latent_dim: int = 16,
    name: str | None = None,
) -> Size:
    """The ladder rung of `family` at width `width` (see the module docstring for the rules).

    `latent_dim`: Cola's (fixed) VAE latent width, the DiT's input/output channels.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use {'|'.join(FAMILIES)}")
    if width < 1 or head_dim < 1 or width % head_dim:
        raise ValueError(f"width {width} must be a positive multiple of head_dim {head_dim}")
    if aspect <= 0 or min_layers < 1:
        raise ValueError(f"aspect ({aspect}) must be > 0 and min_layers ({min_layers}) >= 1")
    depth = max(min_layers, round(width / aspect))
    heads = width // head_dim
    lr = _lr(base_lr, base_width, width, lr_power)
    if family == "cola":
        rope = int(head_dim * ROPE_FRACTION) // 2 * 2
        dit = DiTConfig(
            txt_in_channels=latent_dim,
            txt_out_channels=latent_dim,
            txt_dim=width,
            emb_dim=width,
            heads=heads,
            head_dim=head_dim,
            expand_ratio=FFN_RATIO,
            num_layers=depth,
            rope_dim=rope,
            block_size=1,  # N does not depend on it (the experiment's config.block_size)
        )
        n = cola_n_params(dit)
        overrides = {
            "dit.txt_dim": width,
            "dit.emb_dim": width,
            "dit.heads": heads,
            "dit.head_dim": head_dim,
            "dit.expand_ratio": FFN_RATIO,
            "dit.num_layers": depth,
            "dit.rope_dim": rope,
        }
    else:
        ffn = FFN_RATIO * width
        n = lm_n_params(width, ffn, heads, head_dim, depth)
        overrides = {
            "lm.dim": width,
            "lm.ffn_dim": ffn,
            "lm.num_heads": heads,
            "lm.head_dim": head_dim,
            "lm.num_layers": depth,
        }
    overrides["optim.lr"] = lr
    label = name or f"d{width}L{depth}"
    return Size(label, family, width, depth, heads, head_dim, float(n), lr, overrides)


def ladder(family: str, widths: Sequence[int], **rules) -> list[Size]:
    """Rungs at the given widths (ascending), with the rules of `make_size`."""
    if not widths:
        raise ValueError("a ladder needs at least one width")
    sizes = [make_size(family, w, **rules) for w in sorted(widths)]
    names = [s.name for s in sizes]
    if len(set(names)) != len(names):
        raise ValueError(f"ladder widths give duplicate sizes {names}")
    return sizes


def isoflop_steps(budget_eflops: float, n_params: float, tps: int) -> int:
    """Steps that spend `budget_eflops` (6 N tokens) at `tps` tokens per step (nearest, >= 1)."""
    return budgets_lib.eflops_to_steps([budget_eflops], tps, n_params)[0]


def budget_tag(budget_eflops: float) -> str:
    """Budget in FLOPs for run names: 1.20e14."""
    return f"{budget_eflops * 1e18:.2e}".replace("e+", "e")


def isoflop_grid(
    sizes: Sequence[Size],
    budgets: Sequence[float],
    tps: int,
    *,
    prefix: str = "",
    min_steps: int = 1,
    warmup_fraction: float | None = None,
    extra_overrides: dict | None = None,
) -> list[RunSpec]:
    """One `isoflop` RunSpec per (size, budget in EFLOPs), trained to its budget.

    Runs shorter than `min_steps` (a large model at a small budget) are left out. Overrides:
    the size's, `optim.decay_steps` = steps, `optim.warmup_steps` = round(warmup_fraction *
    steps) if given, then `extra_overrides`. Names: `<prefix><family>-<size>-<FLOPs>`.
    """
    if not sizes or not budgets:
        raise ValueError("an IsoFLOP grid needs at least one size and one budget")
    runs = []
    for budget in sorted(budgets):
        for size in sizes:
            steps = isoflop_steps(budget, size.n_params, tps)
            if steps < min_steps:
                continue
            over = dict(size.overrides) | {"optim.decay_steps": steps}
            if warmup_fraction is not None:
                over["optim.warmup_steps"] = max(1, round(warmup_fraction * steps))
            over |= extra_overrides or {}
            runs.append(
                RunSpec(
                    name=f"{prefix}{size.family}-{size.name}-{budget_tag(budget)}",
                    family=size.family,
                    size=size.name,
                    overrides=over,
                    budgets=(float(budget),),
                    kind="isoflop",
                    n_params=size.n_params,
                    steps=steps,
                )
            )
    if not runs:
        raise ValueError(f"every IsoFLOP run is shorter than min_steps={min_steps}")
    return runs
