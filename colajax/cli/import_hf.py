"""`colajax import-hf`: released HF weights -> a colajax params checkpoint (see
`colajax.convert.import_hf`).

    colajax import-hf --vae cola_vae/ --dit cola_dit/ --out ckpt/ [--dtype bfloat16]
"""

import argparse
import json
import os
import sys

import jax

from colajax import checkpoint
from colajax.convert.import_hf import import_hf, param_count


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colajax import-hf",
        description="Convert released HF Cola DLM weights (cola_vae/, cola_dit/) to a colajax "
        "params checkpoint.",
    )
    p.add_argument("--vae", required=True, help="HF VAE directory (config.json + safetensors)")
    p.add_argument("--dit", required=True, help="HF DiT directory (config.json + safetensors)")
    p.add_argument("--out", required=True, help="new checkpoint directory (must not exist)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="compute dtype recorded in the model configs (bfloat16 = the official autocast "
        "numerics); params are stored in float32 either way",
    )
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
            raise FileExistsError(
                f"{args.out} already exists and is not empty; choose a new --out directory "
                "(existing checkpoints are never overwritten)."
            )
        params, meta = import_hf(args.vae, args.dit, args.dtype)
        # Host (CPU) jax arrays, so a restore without target shapes yields jax arrays too.
        params = jax.device_put(params, jax.devices("cpu")[0])
        checkpoint.save_params_checkpoint(args.out, params, meta)
    except (OSError, ValueError) as e:
        print(f"colajax import-hf: error: {e}", file=sys.stderr)
        return 2
    summary = {
        "out": os.path.abspath(args.out),
        "dtype": args.dtype,
        "vae_tensors": meta["source"]["vae_tensors"],
        "dit_tensors": meta["source"]["dit_tensors"],
        "vae_params": param_count(params["vae"]),
        "dit_params": param_count(params["dit"]),
    }
    print(json.dumps(summary))
    return 0
