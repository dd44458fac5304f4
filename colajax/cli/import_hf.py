"""`colajax import-hf`: released HF weights -> a colajax params checkpoint (see
`colajax.convert.import_hf`).

    colajax import-hf --vae cola_vae/ --dit cola_dit/ --out ckpt/ [--dtype bfloat16]
    colajax import-hf --llama llama_dir/ [--model ar|llada] [--mask-id N] --out ckpt/
"""

import argparse
import json
import os
import sys

import jax

from colajax import checkpoint
from colajax.convert.import_hf import LM_FAMILIES, import_hf, import_llama, param_count


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colajax import-hf",
        description="Convert released HF Cola DLM weights (cola_vae/, cola_dit/), or a HF "
        "LlamaForCausalLM folder as the AR / LLaDA baseline, to a colajax params checkpoint.",
    )
    p.add_argument("--vae", help="HF VAE directory (config.json + safetensors)")
    p.add_argument("--dit", help="HF DiT directory (config.json + safetensors)")
    p.add_argument("--llama", help="HF LlamaForCausalLM directory (AR or LLaDA baseline)")
    p.add_argument(
        "--model",
        choices=LM_FAMILIES,
        help="with --llama: ar (causal, default) or llada (bidirectional mask predictor)",
    )
    p.add_argument(
        "--mask-id",
        type=int,
        help="with --model llada: the mask token id (default: vocab_size - 1)",
    )
    p.add_argument("--out", required=True, help="new checkpoint directory (must not exist)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="compute dtype recorded in the model configs (bfloat16 = the official autocast "
        "numerics); params are stored in float32 either way",
    )
    return p


def _check_args(p: argparse.ArgumentParser, args) -> None:
    if args.llama is not None:
        if args.vae is not None or args.dit is not None:
            p.error("--llama cannot be combined with --vae/--dit; convert one model per call.")
        if args.mask_id is not None and args.model != "llada":
            p.error("--mask-id is only used with --model llada.")
        return
    if args.model is not None or args.mask_id is not None:
        p.error("--model/--mask-id need --llama DIR.")
    if args.vae is None or args.dit is None:
        p.error("give both --vae DIR and --dit DIR (Cola DLM), or --llama DIR (AR / LLaDA).")


def main(argv: list[str]) -> int:
    p = _parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    try:
        if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
            raise FileExistsError(
                f"{args.out} already exists and is not empty; choose a new --out directory "
                "(existing checkpoints are never overwritten)."
            )
        if args.llama is not None:
            params, meta = import_llama(args.llama, args.model or "ar", args.dtype, args.mask_id)
        else:
            params, meta = import_hf(args.vae, args.dit, args.dtype)
        # Host (CPU) jax arrays, so a restore without target shapes yields jax arrays too.
        params = jax.device_put(params, jax.devices("cpu")[0])
        checkpoint.save_params_checkpoint(args.out, params, meta)
    except (OSError, ValueError) as e:
        print(f"colajax import-hf: error: {e}", file=sys.stderr)
        return 2
    summary = {"out": os.path.abspath(args.out), "dtype": args.dtype}
    if args.llama is not None:
        summary["family"] = meta["family"]
        summary["tensors"] = meta["source"]["tensors"]
        summary["lm_params"] = param_count(params["lm"])
        summary["mask_id"] = meta["models"]["lm"]["mask_id"]
    else:
        summary["vae_tensors"] = meta["source"]["vae_tensors"]
        summary["dit_tensors"] = meta["source"]["dit_tensors"]
        summary["vae_params"] = param_count(params["vae"])
        summary["dit_params"] = param_count(params["dit"])
    print(json.dumps(summary))
    return 0
