"""Tiny models: Cola DLM (both stages), or the AR / LLaDA baselines at the DiT's width and
depth, on the bundled KJV corpus on a laptop CPU in minutes.

    colajax train --config experiments/tiny.py --workdir runs/tiny
    colajax train --config experiments/tiny.py --config.model=ar --workdir runs/tiny_ar
    colajax train --config experiments/tiny.py --config.model=llada --workdir runs/tiny_llada
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
    c.block_size = 4

    v = c.vae
    v.vocab_size = 4096  # the bundled kjv_sp4096 SentencePiece model
    v.dim, v.ffn_dim, v.num_heads = 64, 256, 2
    v.encoder_num_blocks = v.decoder_num_blocks = 1
    v.latent_dim = 8

    d = c.dit
    d.txt_in_channels = d.txt_out_channels = 8
    d.txt_dim = d.emb_dim = 64
    d.heads, d.head_dim, d.rope_dim = 2, 32, 16
    d.num_layers = 2
    lm_like_dit(c)

    p = c.optim
    p.lr, p.init_lr, p.final_lr = 3e-3, 1e-5, 3e-4
    p.warmup_steps, p.decay_steps = 20, 400

    t = c.train
    t.batch_size, t.seq_len = 8, 64
    t.vae_steps = t.steps = 200
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


def lm_like_dit(c: ml_collections.ConfigDict) -> None:
    """The AR / LLaDA backbone at the DiT's width, depth and heads (FFN 4 x width, SwiGLU), on
    the VAE's vocabulary; LLaDA masks with the SentencePiece unk id (byte fallback never emits
    it)."""
    d, m = c.dit, c.lm
    m.vocab_size = c.vae.vocab_size
    m.dim, m.ffn_dim = d.txt_dim, d.expand_ratio * d.txt_dim
    m.num_heads, m.head_dim, m.num_layers = d.heads, d.head_dim, d.num_layers
    c.llada.mask_id = 1
