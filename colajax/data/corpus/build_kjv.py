"""Rebuilds the bundled KJV corpus and its tokenizer (a maintainer step; the outputs are committed).

    apt-get update && apt-get install -y bible-kjv
    python -m colajax.data.corpus.build_kjv            # runs `bible gen1:1-rev22:21` itself
    python -m colajax.data.corpus.build_kjv --kjv kjv.txt --out colajax/data/corpus

One document per chapter: the heading ("Genesis 1"), a blank line, then one verse per line
without verse numbers. Every `HOLDOUT_EVERY`-th chapter (index 20, 60, 100, ...) goes to the
validation split. gzip output is written with mtime 0 so rebuilds are byte-identical.
"""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys

from colajax.data import corpus

HOLDOUT_EVERY, HOLDOUT_OFFSET = 40, 20
VOCAB_SIZE = 4096
_VERSE = re.compile(r"^ +\d+ (.*)$")


def parse_kjv(text: str) -> list[str]:
    """Splits the `bible` dump into chapter documents (heading, blank line, verses)."""
    lines = text.splitlines()
    chapters: list[tuple[str, list[str]]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        verse = _VERSE.match(line)
        prev_blank = i == 0 or not lines[i - 1].strip()
        next_blank = i + 1 >= len(lines) or not lines[i + 1].strip()
        if verse:
            chapters[-1][1].append(verse.group(1).strip())
        elif prev_blank and next_blank:
            chapters.append((line.strip(), []))
        else:  # a verse wrapped onto the next line
            chapters[-1][1][-1] += " " + line.strip()
    return [heading + "\n\n" + "\n".join(verses) for heading, verses in chapters]


def write_jsonl_gz(path: str, docs: list[str]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for doc in docs:
            f.write((json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode("utf-8"))


def build(kjv_text: str, out_dir: str, vocab_size: int = VOCAB_SIZE) -> dict:
    """Writes kjv_{train,valid}.jsonl.gz and kjv_sp{vocab_size}.model into `out_dir`."""
    from colajax.data.tokenizer import train_sentencepiece

    docs = parse_kjv(kjv_text)
    valid = [d for i, d in enumerate(docs) if i % HOLDOUT_EVERY == HOLDOUT_OFFSET]
    train = [d for i, d in enumerate(docs) if i % HOLDOUT_EVERY != HOLDOUT_OFFSET]
    os.makedirs(out_dir, exist_ok=True)
    train_path = os.path.join(out_dir, "kjv_train.jsonl.gz")
    write_jsonl_gz(train_path, train)
    write_jsonl_gz(os.path.join(out_dir, "kjv_valid.jsonl.gz"), valid)
    sp = train_sentencepiece(train_path, vocab_size, out_dir, name=f"kjv_sp{vocab_size}")
    return {"chapters": len(docs), "train": len(train), "valid": len(valid), **sp}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kjv", help="text dumped by `bible gen1:1-rev22:21` (default: run it)")
    parser.add_argument("--out", default=corpus.CORPUS_DIR)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    if args.kjv:
        with open(args.kjv, encoding="utf-8") as f:
            text = f.read()
    else:
        try:
            text = subprocess.run(
                ["bible", "gen1:1-rev22:21"], check=True, capture_output=True, text=True
            ).stdout
        except FileNotFoundError:
            print("build_kjv: `bible` not found; apt-get install -y bible-kjv", file=sys.stderr)
            return 1
    print(json.dumps(build(text, args.out, args.vocab_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
