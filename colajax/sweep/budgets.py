"""The compute-budget axis of the scaling sweeps: EFLOPs <-> tokens <-> checkpoint steps.

The paper (paper.md §5.2) plots every family against

    EFLOPs(paper) = 6 * N * tokens / 1e18,   N = 1.8e9 (the 2B backbones, embeddings excluded)

with tokens = step * batch * seq_len (1,408 x 512 = 720,896 tokens per step), so one paper budget
of 77.86 EFLOPs is exactly 10k steps and its 25 budgets are 77.86 * k EFLOPs at steps 10k * k.
N is a parameter: the paper uses 1.8e9 for all three families; a small sweep uses its models'
own N (see `colajax.sweep.ladder.n_params`).

Budgets -> steps: steps = budget / (6 N tokens_per_step), in units of `step_multiple` (default
1). When that is an integer (within 1e-9 relative) it is used as is; otherwise it is rounded to
the nearest multiple (default; `rounding='ceil'` gives the first one that has spent the budget,
'floor' the last one within it), never below one multiple. Budgets that land on the same step
are an error. A rounded budget is reported at its realised EFLOPs (`BudgetSchedule.eflops`),
never at the requested value. Budgets copied from a plot with 4 significant figures (77.86,
155.7, ...) are off by up to 0.05%: at 1-step resolution 155.7 lands on step 19,998; with
`step_multiple=1000` they land on the paper's steps (10k, 20k, ...).

Config: `config.train.budgets` (EFLOPs) or `config.train.budget_steps` (steps), one of them
non-empty; `BudgetSchedule.from_config(config.train, n_params=N)` resolves either into the other
with the run's tokens per step (train.batch_size * train.seq_len).
"""

import dataclasses
import math
from collections.abc import Sequence

from colajax import flops

PAPER_N_PARAMS = flops.PAPER_N_PARAMS  # 1.8e9
PAPER_BATCH_SIZE = 1408
PAPER_SEQ_LEN = 512
PAPER_BUDGET_STEP_INTERVAL = 10_000  # one paper budget = 10k steps at 1,408 x 512
PAPER_NUM_BUDGETS = 25  # 77.86 * k EFLOPs, k = 1..25 (up to 250k steps)
ROUNDINGS = ("nearest", "ceil", "floor")
_EXACT_RTOL = 1e-9


def tokens_per_step(batch_size: int, seq_len: int) -> int:
    """Training tokens per optimizer step (batch x sequence length)."""
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size ({batch_size}) and seq_len ({seq_len}) must be >= 1.")
    return int(batch_size) * int(seq_len)


def eflops_paper(tokens: float, n_params: float = PAPER_N_PARAMS) -> float:
    """The paper's budget axis: 6 * N * tokens in EFLOPs (1e18 FLOPs)."""
    return flops.six_nd(tokens, n_params) / 1e18


def eflops_per_step(tps: int, n_params: float = PAPER_N_PARAMS) -> float:
    """Paper EFLOPs spent per optimizer step of `tps` tokens."""
    return eflops_paper(tps, n_params)


def eflops_to_steps(
    budgets: Sequence[float],
    tps: int,
    n_params: float = PAPER_N_PARAMS,
    *,
    rounding: str = "nearest",
    step_multiple: int = 1,
) -> list[int]:
    """Checkpoint steps of the given budgets (EFLOPs; see the module docstring for rounding)."""
    if not isinstance(step_multiple, int) or step_multiple < 1:
        raise ValueError(f"step_multiple must be an integer >= 1, got {step_multiple!r}.")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; use one of {', '.join(ROUNDINGS)}.")
    if n_params <= 0:
        raise ValueError(f"n_params must be > 0, got {n_params}.")
    per_unit = eflops_per_step(tps, n_params) * step_multiple
    steps = []
    for budget in budgets:
        if not isinstance(budget, int | float) or not budget > 0 or math.isinf(budget):
            raise ValueError(f"budget {budget!r} EFLOPs must be a positive number.")
        exact = budget / per_unit
        nearest = round(exact)
        if abs(exact - nearest) <= _EXACT_RTOL * max(1.0, exact):
            step = nearest
        else:
            step = {"nearest": nearest, "ceil": math.ceil(exact), "floor": math.floor(exact)}[
                rounding
            ]
        steps.append(max(1, int(step)) * step_multiple)
    _check_steps(steps, "budgets")
    return steps


def _check_steps(steps: Sequence[int], what: str) -> None:
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(
            f"{what} must be strictly increasing and at least one step apart; got steps "
            f"{list(steps)}. Remove duplicates or space the budgets further apart."
        )


@dataclasses.dataclass(frozen=True)
class BudgetSchedule:
    """Budget checkpoints of one run: steps, and the paper EFLOPs/tokens they realise."""

    steps: tuple[int, ...]
    tokens_per_step: int
    n_params: float = PAPER_N_PARAMS

    def __post_init__(self):
        if not self.steps:
            raise ValueError("a budget schedule needs at least one step.")
        if any(not isinstance(s, int) or s < 1 for s in self.steps):
            raise ValueError(f"budget steps must be integers >= 1, got {list(self.steps)}.")
        _check_steps(self.steps, "budget steps")
        tokens_per_step(self.tokens_per_step, 1)
        if self.n_params <= 0:
            raise ValueError(f"n_params must be > 0, got {self.n_params}.")

    @classmethod
    def from_eflops(
        cls,
        budgets: Sequence[float],
        tps: int,
        n_params: float = PAPER_N_PARAMS,
        *,
        rounding: str = "nearest",
        step_multiple: int = 1,
    ) -> "BudgetSchedule":
        steps = eflops_to_steps(
            budgets, tps, n_params, rounding=rounding, step_multiple=step_multiple
        )
        return cls(tuple(steps), tps, n_params)

    @classmethod
    def from_steps(cls, steps: Sequence[int], tps: int, n_params: float = PAPER_N_PARAMS):
        return cls(tuple(int(s) for s in steps), tps, n_params)

    @classmethod
    def paper(cls, num_budgets: int = PAPER_NUM_BUDGETS) -> "BudgetSchedule":
        """The paper's RQ4 axis: steps 10k..250k at 1,408 x 512 tokens, N = 1.8e9."""
        steps = [PAPER_BUDGET_STEP_INTERVAL * k for k in range(1, num_budgets + 1)]
        return cls.from_steps(steps, tokens_per_step(PAPER_BATCH_SIZE, PAPER_SEQ_LEN))

    @classmethod
    def from_config(cls, train, *, n_params: float, rounding: str = "nearest"):
        """From `config.train` (`budgets` in EFLOPs or `budget_steps`); None if neither is set.

        `train.budget_step_multiple` (default 1) is the step resolution of EFLOPs budgets.
        Missing fields count as empty, so configs written before budgets existed still load.
        """
        budgets = list(getattr(train, "budgets", None) or ())
        steps = list(getattr(train, "budget_steps", None) or ())
        if budgets and steps:
            raise ValueError(
                "config.train.budgets and config.train.budget_steps are both set; give one "
                "(EFLOPs or steps), the other is derived."
            )
        if not budgets and not steps:
            return None
        tps = tokens_per_step(train.batch_size, train.seq_len)
        if budgets:
            multiple = int(getattr(train, "budget_step_multiple", 1) or 1)
            return cls.from_eflops(
                budgets, tps, n_params, rounding=rounding, step_multiple=multiple
            )
        return cls.from_steps(steps, tps, n_params)

    @property
    def tokens(self) -> tuple[int, ...]:
        return tuple(s * self.tokens_per_step for s in self.steps)

    @property
    def eflops(self) -> tuple[float, ...]:
        """Realised paper EFLOPs at each budget step."""
        return tuple(eflops_paper(t, self.n_params) for t in self.tokens)

    @property
    def last_step(self) -> int:
        return self.steps[-1]

    def is_budget_step(self, step: int) -> bool:
        return step in self.steps

    def rows(self) -> list[dict]:
        """One dict per budget: k (1-based), step, tokens, eflops_paper, label (4 s.f.)."""
        return [
            {"k": k, "step": s, "tokens": t, "eflops_paper": e, "label": format_eflops(e)}
            for k, (s, t, e) in enumerate(zip(self.steps, self.tokens, self.eflops), 1)
        ]


def format_eflops(value: float, digits: int = 4) -> str:
    """`digits` significant figures without an exponent from 1e-4 up: 77.86, 155.7, 1946."""
    text = f"{value:#.{digits}g}".rstrip(".")  # '#': keep trailing zeros (545.0)
    if "e+" in text:  # >= 10**digits: keep the integer part, zeros after the digits
        return f"{float(text):.0f}"
    return text


def budget_counters(step: int, tps: int, n_params: float, full_flops_per_step: float) -> dict:
    """The budget counters of a step, as the trainer logs them (metrics.jsonl keys and
    checkpoint meta): `train/tokens`, `train/eflops_paper`, `train/eflops_full` (the analytic
    full count, `colajax.flops` step FLOPs x steps)."""
    tokens = step * tps
    return {
        "train/tokens": tokens,
        "train/eflops_paper": eflops_paper(tokens, n_params),
        "train/eflops_full": step * full_flops_per_step / 1e18,
    }
