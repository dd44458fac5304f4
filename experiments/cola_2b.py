"""Cola DLM at the released size (DiT 1.83B + VAE 0.50B): the paper's optimisation recipe, and
the released pretraining script's (`scripts/cola_pretrain.py`) wherever the paper is silent.

Sizes: DiT 24 x 2048 (16 x 128 heads, rope_dim 96, block 16); VAE 4 + 4 x 1536 (ffn 6144,
12 heads, latent 16, vocab 100278 = OLMo-2). Optimizer (paper): AdamW (0.9, 0.95), wd 0.01,
clip 1.0, warmup 5k steps 1e-6 -> 1.5e-4, cosine to 1e-5 at 1M steps; batch 1408 x 512; bf16
compute with float32 masters; remat on. Released recipe: weight decay on every parameter, the
clip over the DiT's gradient, one logit-normal(1, 1) t per sequence, the prompt-block repaint at
p = 0.05, bf16-rounded DiT inputs (a bf16 DiT), rows that start at a document start packed
best-fit from a 1000-document buffer and filled by cropping. The mesh is an example for a
64-chip TPU pod slice (v5p-128): fsdp 16 x data 4. Set config.data to your pretraining corpus
(array_record) and tokenizer.

TPU VM slice (every worker runs the same command; jax.distributed starts by itself):

    python -m launch.tpu_vm create --name cola --zone ZONE --type v5p-128 --mode spot
    python -m launch.tpu_vm setup --name cola --zone ZONE
    python -m launch.tpu_vm run --name cola --zone ZONE --run cola2b -- colajax train \
      --config experiments/cola_2b.py --workdir gs://$BUCKET/cola_2b \
      --config.data.path=gs://$BUCKET/data/*.array_record \
      --config.data.tokenizer=gs://$BUCKET/olmo2/tokenizer.json

Will it fit? `colajax aot --config experiments/cola_2b.py --topology v5p-128` (README).

Stage 1 only / Stage 2 from an existing VAE:

    ... train --config experiments/cola_2b.py --config.stage=vae --workdir gs://$BUCKET/vae
    ... train --config experiments/cola_2b.py --config.stage=prior \
        --config.stage2.init_from=gs://$BUCKET/vae --workdir gs://$BUCKET/prior
"""

import ml_collections

from experiments import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = base.get_config()  # base holds the released sizes and the paper's optimizer
    c.block_size = 16
    c.flops.paper_n = 1.8e9  # the paper's EFLOPs axis: 6 x 1.8e9 x tokens
    c.vae.dtype = c.dit.dtype = "bfloat16"
    c.vae.remat = c.dit.remat = True

    c.mesh.shape.data, c.mesh.shape.fsdp, c.mesh.shape.tensor = -1, 16, 1
    c.optim.grad_accum = 2  # 2 x 704: Stage 2 needs it on v5p-128 (`colajax aot`, README)

    # The released pretraining recipe where the paper does not decide (README "Training
    # fidelity"): objective defaults (t per sequence, repaint 0.05, bf16 inputs: auto) as in base.
    o = c.objective
    o.timestep_sampling, o.prompt_block_prob, o.bf16_inputs = "sequence", 0.05, "auto"
    c.optim.wd_exclude = ()  # optim.DECAY_ALL: the release decays every parameter
    c.optim.clip_scope = "dit"  # the release clips the DiT's gradient (the VAE's is not clipped)

    t = c.train
    t.batch_size, t.seq_len = 1408, 512
    t.log_every, t.eval_every, t.ckpt_every = 100, 5000, 2000
    t.keep, t.keep_period = 3, 50_000

    a = c.data
    a.kind = "array_record"
    a.path = "gs://YOUR_BUCKET/pretrain/*.array_record"
    a.record_format = "auto"
    a.tokenizer = "gs://YOUR_BUCKET/olmo2/tokenizer.json"
    # MFU: the peak of the chip actually present (colajax.hardware.PEAK_TABLE)
    a.packing, a.docstart_fill, a.docstart_buffer = "docstart", "crop", 1000  # released loader
    return c
