"""The paper's autoregressive baseline at ~2B (paper Table 9): LLaMA, 27 x 2048, FFN 8192
(SwiGLU), 16 x 128 heads, RoPE, RMSNorm, untied embeddings over the OLMo-2 vocabulary
(410,738,688 embedding + 1,811,939,328 block parameters). Same data, optimizer, schedule, batch
(1408 x 512), seeds and mesh as experiments/cola_2b.py, so the runs are FLOP-matched on the
paper's axis 6 x 1.8e9 x tokens.

TPU VM slice (every worker runs the same command; jax.distributed starts by itself):

    python -m launch.tpu_vm create --name ar --zone ZONE --type v5p-128 --mode spot
    python -m launch.tpu_vm setup --name ar --zone ZONE
    python -m launch.tpu_vm run --name ar --zone ZONE --run ar2b -- colajax train \
      --config experiments/ar_2b.py --workdir gs://$BUCKET/ar_2b \
      --config.data.path=gs://$BUCKET/data/*.array_record \
      --config.data.tokenizer=gs://$BUCKET/olmo2/tokenizer.json

Will it fit? `colajax aot --config experiments/ar_2b.py --topology v5p-128` (README).
"""

import ml_collections

from experiments import cola_2b


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = cola_2b.get_config(arg)  # data, optimizer, batch, mesh, paper_n: shared with Cola
    c.model = "ar"
    c.lm.dtype = "bfloat16"
    c.lm.remat = True
    return c
