"""The `make demo` job: Stage 1 then Stage 2 on the bundled KJV corpus, ~10 minutes on 2 CPU cores.

    make demo                                    # = colajax demo --workdir runs/demo
    colajax demo --workdir runs/demo2 --config.train.steps=2000
    colajax train --config experiments/demo.py --workdir runs/demo   # training only

A little wider than tiny.py and trained longer, so that the samples printed at the end read like
(archaic) English. The tokenizer is the bundled 4096-piece SentencePiece model.
"""

import ml_collections

from experiments import tiny


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = tiny.get_config(arg)
    v, d = c.vae, c.dit
    v.dim, v.ffn_dim, v.num_heads = 128, 512, 4
    d.txt_dim = d.emb_dim = 128
    d.heads, d.head_dim, d.rope_dim = 4, 32, 16
    d.num_layers = 3

    c.optim.lr, c.optim.final_lr = 2e-3, 2e-4
    c.optim.warmup_steps, c.optim.decay_steps = 50, 1200
    c.objective.lambda_ref = 0.1  # joint Stage 2 from a short Stage 1: a looser anchor

    t = c.train
    t.batch_size, t.seq_len = 16, 64
    t.vae_steps, t.steps = 600, 600
    t.log_every, t.eval_every, t.eval_batches = 50, 200, 4
    t.ckpt_every, t.keep = 200, 2
    return c
