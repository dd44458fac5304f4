"""The paper's RQ4 protocol (Fig. 10) as data: Cola DLM, AR and LLaDA at ~2B, trained on the
same data with the same optimizer, schedule, batch and seeds, each evaluated at its 25 budget
checkpoints 77.86 * k EFLOPs (k = 1..25) on the axis 6 x 1.8e9 x tokens: steps 10k..250k at
1408 x 512 tokens per step. The schedule is the paper's (5k warmup to 1.5e-4, cosine to 1e-5 at
1M steps); the runs stop at 250k, where the paper's last point is. Cola's Stage 1 (the VAE) is
not on the axis (train.vae_steps; the paper gives none).

    colajax sweep plan experiments/paper_rq4.py                       # the table (no compute)
    colajax sweep run experiments/paper_rq4.py --root gs://$BUCKET/rq4 --launcher tpu_vm \
        -- --name rq4 --zone $ZONE --type v5p-128 --mode spot      # one TPU VM job per family
    # add --dry-run after --launcher tpu_vm to print the gcloud commands first
    # eval/report read the sweep root as a local path: mount the bucket (gcsfuse) or copy it
    colajax sweep eval experiments/paper_rq4.py --root /mnt/rq4 --data eval_data/ \
        --tasks lambada,mmlu,obqa,hellaswag,race,siqa,squad,story_cloze
    colajax sweep report experiments/paper_rq4.py --root /mnt/rq4

Point config.data at your corpus and tokenizer (here: placeholders of experiments/cola_2b.py),
e.g. `--config.data.path=...` in each run's overrides or by editing cola_2b.py.
"""

import ml_collections

from colajax.sweep.spec import RunSpec
from experiments import cola_2b

PAPER_BUDGETS = tuple(77.86 * k for k in range(1, 26))  # EFLOPs, as the paper labels them


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = cola_2b.get_config(arg)  # Cola sizes, the paper's optimizer, batch 1408 x 512
    c.lm.dtype, c.lm.remat = "bfloat16", True  # the AR / LLaDA 2B backbone (experiments/ar_2b)
    c.train.budget_step_multiple = 1000  # 77.86 * k EFLOPs -> steps 10k * k exactly
    c.train.keep, c.train.keep_period = 3, 0  # budget checkpoints are kept anyway
    return c


def get_sweep(arg: str | None = None) -> list[RunSpec]:
    del arg
    return [
        RunSpec(name, family=name, size="2b", budgets=PAPER_BUDGETS, steps=250_000, n_params=1.8e9)
        for name in ("cola", "ar", "llada")
    ]
