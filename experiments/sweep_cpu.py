"""A scaling sweep that runs on a laptop CPU (`make sweep-demo`, well under 30 min on 2 cores):

* the paper's protocol in miniature: Cola, AR and LLaDA at the tiny sizes on the bundled KJV
  corpus, each evaluated at 4 budgets on the paper's axis 6 N D (each family's own N, so a
  budget is the same compute for all three), on the bundled KJV tasks;
* an IsoFLOP grid for Cola (beyond the paper): 3 DiT sizes x 3 budgets, each trained to its
  budget, with the VAE of the Cola run frozen, so that every run models the same latents and
  their held-out flow-matching losses are comparable. The report fits a parabola per budget
  (loss vs log N) and N_opt, D_opt ~ C^a.

    colajax sweep plan experiments/sweep_cpu.py
    colajax sweep run experiments/sweep_cpu.py --local
    colajax sweep eval experiments/sweep_cpu.py --limit 48 --max-new-tokens 12
    colajax sweep report experiments/sweep_cpu.py        # runs/sweep_cpu/report/
"""

import ml_collections

from colajax.sweep import ladder
from colajax.sweep.spec import RunSpec
from experiments import tiny

BUDGETS = (0.5e-7, 1.0e-7, 1.5e-7, 2.0e-7)  # EFLOPs: 6 N tokens, at 8 x 64 tokens per step
ISO_BUDGETS = (0.6e-7, 1.2e-7, 2.4e-7)
ISO_WIDTHS = (32, 48, 64)  # DiT widths of the grid (head_dim 16, ~32 channels per layer)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = tiny.get_config(arg)  # bundled corpus + tokenizer; Cola, AR and LLaDA at tiny sizes
    t = c.train
    t.vae_steps, t.steps = 300, 1000
    t.log_every, t.eval_every, t.eval_batches = 50, 100_000, 2  # held-out losses at the end
    t.ckpt_every, t.keep = 100_000, 1  # budget checkpoints only (kept by the budget policy)
    c.optim.warmup_steps, c.optim.decay_steps = 20, 600
    return c


def get_sweep(arg: str | None = None) -> list[RunSpec]:
    del arg
    runs = [RunSpec(f, family=f, size="tiny", budgets=BUDGETS) for f in ("cola", "ar", "llada")]
    sizes = ladder.ladder("cola", ISO_WIDTHS, head_dim=16, aspect=32, base_lr=3e-3, base_width=64)
    tps = 8 * 64
    shared_vae = {
        "stage": "prior",
        "stage2.vae_mode": "frozen",
        "stage2.init_from": "{root}/cola/vae",
    }
    runs += ladder.isoflop_grid(
        sizes, ISO_BUDGETS, tps, prefix="iso-", warmup_fraction=0.05, extra_overrides=shared_vae
    )
    return runs
