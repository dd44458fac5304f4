"""Small models (the benchmark size): Cola DiT 8 x 512 + VAE 2+2 x 384, or the AR / LLaDA
backbone at 8 x 512 (`--config.model=ar|llada`); batch 8 x 512, float32.

Benchmarks (one JSON line each; the frozen-VAE Stage-2 step is the official pretraining step):

    colajax bench train --config experiments/small.py --config.stage=prior \
        --config.stage2.vae_mode=frozen --steps 3 --warmup 1
    colajax bench train --config experiments/small.py --config.stage=prior --steps 3 --warmup 1
    colajax bench train --config experiments/small.py --config.stage=vae --steps 3 --warmup 1
    colajax bench train --config experiments/small.py --config.model=ar --steps 3 --warmup 1
    colajax bench train --config experiments/small.py --config.model=llada --steps 3 --warmup 1

Training (synthetic tokens by default; point config.data at a corpus + 8192-token tokenizer):

    colajax train --config experiments/small.py --workdir runs/small
"""

import ml_collections

from experiments import base
from experiments.tiny import lm_like_dit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = base.get_config()
    c.block_size = 16

    v = c.vae
    v.vocab_size = 8192
    v.dim, v.ffn_dim, v.num_heads = 384, 1536, 6
    v.encoder_num_blocks = v.decoder_num_blocks = 2
    v.latent_dim = 16

    d = c.dit
    d.txt_in_channels = d.txt_out_channels = 16
    d.txt_dim = d.emb_dim = 512
    d.heads, d.head_dim, d.rope_dim = 8, 64, 48
    d.num_layers = 8
    lm_like_dit(c)

    p = c.optim
    p.lr, p.init_lr, p.final_lr = 6e-4, 1e-6, 6e-5
    p.warmup_steps, p.decay_steps = 500, 20_000

    t = c.train
    t.batch_size, t.seq_len = 8, 512
    t.vae_steps = t.steps = 20_000
    t.log_every, t.eval_every, t.ckpt_every = 10, 500, 500
    t.keep, t.keep_period = 3, 5000

    c.data.kind = "synthetic"
    return c
