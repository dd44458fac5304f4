"""`colajax eval diagnostics`: VAE / prior diagnostics of a checkpoint on held-out text (see
`colajax.eval.diagnostics`; not a generation-quality metric)."""

import argparse
import json
import sys

from colajax.eval import diagnostics


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="colajax eval diagnostics",
        description="Diagnostics of a checkpoint on held-out text (VAE reconstruction token "
        "accuracy of the posterior mean, latent logSNR of paper App. H.7, flow-matching loss). "
        "These are diagnostics, NOT the headline: the paper warns that likelihood is not a "
        "generation-quality metric; the benchmark is `colajax eval`.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint root")
    p.add_argument("--text", required=True, help="text/JSONL file(s) or glob; bundled: allowed")
    p.add_argument("--tokenizer", default=None, help="default: the experiment's tokenizer")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per row (block multiple)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=None, help="at most N batches (default: all)")
    p.add_argument("--seed", type=int, default=0, help="FM noise / timestep / posterior seed")
    p.add_argument("--mesh", default="data=-1", help="e.g. data=-1 or fsdp=8")
    args = p.parse_args(argv)
    try:
        result = diagnostics.diagnose(
            args.checkpoint,
            args.text,
            tokenizer=args.tokenizer,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            batches=args.batches,
            seed=args.seed,
            mesh=args.mesh,
        )
    except (OSError, ValueError) as err:
        print(f"colajax eval diagnostics: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
