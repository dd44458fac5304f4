"""Cola DLM at the released size on NVIDIA GPUs (A100 / H100 / H200 nodes, 8 GPUs each).

The model, optimizer and data of experiments/cola_2b.py; the mesh puts FSDP inside a node
(NVLink: parameters and optimizer state sharded over its 8 GPUs) and data parallelism across
nodes (only the gradient all-reduce crosses the network). MFU uses the peak of the GPU present
(colajax.hardware.PEAK_TABLE: A100 312, H100 989, H200 989 bf16 TFLOP/s per GPU).

    python -m launch.slurm --nodes 2 --gpus-per-node 8 --partition PART --time 24:00:00 \\
      --name cola2b -- colajax train --config experiments/cola_2b_gpu.py \\
      --workdir /shared/runs/cola2b --config.data.path=/shared/data/*.array_record \\
      --config.data.tokenizer=/shared/olmo2/tokenizer.json

Argument (comma-separated): `fsdp=N` GPUs per FSDP group (default 8, one node), `accum=N`
micro-batches per step (default 4: 1408 sequences of 512 tokens over 16 GPUs = 22 per GPU per
micro-batch; lower it when memory allows, raise it on 40 GB cards).
"""

import ml_collections

from colajax.config import parse_arg
from experiments import cola_2b


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = parse_arg(arg, fsdp=8, accum=4)
    c = cola_2b.get_config()
    c.mesh.shape.data, c.mesh.shape.fsdp, c.mesh.shape.tensor = -1, args.fsdp, 1
    c.optim.grad_accum = args.accum
    c.data.path = "/shared/data/pretrain/*.array_record"
    c.data.tokenizer = "/shared/olmo2/tokenizer.json"
    return c
