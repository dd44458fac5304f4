"""`colajax tokenizer train --input GLOB --vocab-size N --out DIR [--model-type bpe|unigram]`.

Trains a SentencePiece model (ids pad=0, unk=1, bos=2, eos=3; byte fallback) on text or JSONL
files (`.gz` ok; JSONL documents come from `--text-key`) and prints one JSON line with the
written paths.
"""

import argparse
import json
import sys

from colajax.data import tokenizer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colajax tokenizer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    train = sub.add_parser("train", help="train a SentencePiece model")
    train.add_argument("--input", required=True, help="file glob(s), comma-separated")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    train.add_argument("--name", help="file name stem (default sp_<type><vocab>)")
    train.add_argument("--text-key", default="text", help="JSONL field holding the text")
    train.add_argument("--no-byte-fallback", action="store_true")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        result = tokenizer.train_sentencepiece(
            args.input,
            args.vocab_size,
            args.out,
            model_type=args.model_type,
            byte_fallback=not args.no_byte_fallback,
            name=args.name,
            text_key=args.text_key,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"colajax tokenizer: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
