"""Tiny Cola DLM: trains both stages on the bundled KJV corpus on a laptop CPU in minutes.

    colajax train --config experiments/tiny.py --workdir runs/tiny
    colajax train --config experiments/tiny.py:synthetic --workdir /tmp/tiny  # no tokenizer
    colajax bench train --config experiments/tiny.py --config.stage=prior

Argument (after the colon, comma-separated): `synthetic` uses in-memory synthetic tokens instead
of the corpus (the tests use it: no tokenisation, fully deterministic).
"""

import ml_collections

from colajax.config import parse_arg
from experiments import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, synthetic=False)
    c = base.get_config()
    c.stage = "both"

    v = c.vae
    v.vocab_size = 4096  # the bundled kjv_sp4096 SentencePiece model
    v.dim, v.ffn_dim, v.num_heads = 64, 256, 2
    v.encoder_num_blocks = v.decoder_num_blocks = 1
    v.latent_dim, v.block_size = 8, 4

    d = c.dit
    d.txt_in_channels = d.txt_out_channels = 8
    d.txt_dim = d.emb_dim = 64
    d.heads, d.head_dim, d.rope_dim = 2, 32, 16
    d.num_layers, d.block_size = 2, 4

    p = c.optim
    p.lr, p.init_lr, p.final_lr = 3e-3, 1e-5, 3e-4
    p.warmup_steps, p.decay_steps = 20, 400

    t = c.train
    t.batch_size, t.seq_len = 8, 64
    t.vae_steps = t.prior_steps = 200
    t.log_every, t.eval_every, t.eval_batches = 20, 100, 2
    t.ckpt_every, t.keep, t.keep_period = 100, 2, 0

    a = c.data
    if args.synthetic:
        a.kind = "synthetic"
    else:
        a.kind = "jsonl"
        a.path = "bundled:kjv_train.jsonl.gz"
        a.valid_path = "bundled:kjv_valid.jsonl.gz"
        a.tokenizer = "bundled:kjv_sp4096.model"
    return c
