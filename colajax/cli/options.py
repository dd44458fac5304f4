"""Flags shared by the commands that generate (`eval`, `generate`, `bench generate`): one
definition, read into a `GenOptions` that the checkpoint's family interprets (a family rejects
the flags that do not apply to it)."""

import argparse

from colajax.families.base import GenOptions


def add_generation_args(p: argparse.ArgumentParser, *, seed: int = 0) -> None:
    g = p.add_argument_group("generation (defaults: the family's benchmark settings)")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=50, help="0 = off (sampling only)")
    g.add_argument("--top-p", type=float, default=0.9, help="1 = off (sampling only)")
    g.add_argument(
        "--repetition-penalty",
        type=float,
        default=None,
        help="1 = off (default: cola 1.1 as the official harness, ar/llada 1.0)",
    )
    g.add_argument("--seed", type=int, default=seed, help="noise / sampling seed")
    g.add_argument("--steps", type=int, default=None, help="cola: Euler steps per block (16); "
                   "llada: denoising steps (= max new tokens)")  # fmt: skip
    g.add_argument("--cfg", type=float, default=None, help="cola: guidance scale (7; 1 = off)")
    g.add_argument("--block-length", type=int, default=None,
                   help="llada: semi-autoregressive block length (= max new tokens)")  # fmt: skip
    g.add_argument("--remasking", choices=("low_confidence", "random"), default=None,
                   help="llada: which predictions to keep (low_confidence)")  # fmt: skip
    g.add_argument(
        "--bf16-inputs",
        choices=("auto", "on", "off"),
        default="auto",
        help="cola: round the DiT inputs to bf16 as the official code (auto: on for imported "
        "and bf16 models)",
    )
    g.add_argument("--dtype", choices=("float32", "bfloat16"), help="override compute dtype")
    g.add_argument(
        "--no-eos-stop",
        action="store_true",
        help="keep text after EOS (the official Cola harness); default: cut at EOS",
    )


def gen_options(args: argparse.Namespace) -> GenOptions:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}.")
    return GenOptions(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        truncate_at_eos=not args.no_eos_stop,
        steps=args.steps,
        cfg=args.cfg,
        block_length=args.block_length,
        remasking=args.remasking,
        bf16_inputs=args.bf16_inputs,
        dtype=args.dtype,
    )
