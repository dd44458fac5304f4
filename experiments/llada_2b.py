"""The paper's LLaDA masked-diffusion baseline at ~2B: the AR backbone of experiments/ar_2b.py
with bidirectional attention and a mask token (the last vocabulary row, OLMo-2's `<|pad|>`,
which padding never feeds in as a real input), trained with LLaDA's masked-diffusion
objective. Same parameter counts, data, optimizer, batch and mesh as AR and Cola.

TPU VM slice (every worker runs the same command; jax.distributed starts by itself):

    python -m launch.tpu_vm create --name llada --zone ZONE --type v5p-128 --mode spot
    python -m launch.tpu_vm setup --name llada --zone ZONE
    python -m launch.tpu_vm run --name llada --zone ZONE --run llada2b -- colajax train \
      --config experiments/llada_2b.py --workdir gs://$BUCKET/llada_2b \
      --config.data.path=gs://$BUCKET/data/*.array_record \
      --config.data.tokenizer=gs://$BUCKET/olmo2/tokenizer.json

Will it fit? `colajax aot --config experiments/llada_2b.py --topology v5p-128` (README).
"""

import ml_collections

from experiments import ar_2b


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ar_2b.get_config(arg)
    c.model = "llada"
    return c
