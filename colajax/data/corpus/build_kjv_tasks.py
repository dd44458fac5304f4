"""Builds the bundled offline eval tasks from the held-out KJV chapters (committed outputs).

    python -m colajax.data.corpus.build_kjv_tasks          # rewrites tasks/*.jsonl here

Both tasks use only `kjv_valid.jsonl.gz` (30 chapters no model trains on); ids name the chapter
and the 1-based verse (`Genesis 21:5`). Deterministic: same corpus, same files (seed `SEED`, no
other randomness).

* `kjv_lastword` (LAMBADA-style, 0-shot, scored by its first-word rule): the target is a word
  that ends a clause (before `: ; . ? !` or at the end of a verse; ids `<chapter>:<verse>.<k>`,
  k the k-th candidate of the verse); the passage is its verse up to that word, after as many
  preceding verses of the chapter as fit in `LASTWORD_MAX_CHARS` (one verse per line, as in
  training). Kept when the word has >= 3 letters, >= 3 words precede it in its verse, and it
  already occurs in the passage (case-insensitive, whole word): LAMBADA keeps words that need
  the wider context, this keeps words the context makes predictable (small models can learn
  to copy them).
* `kjv_nextverse` (two choices, 2-shot, option-text/letter rules like the paper's multiple
  choice tasks): question = a verse (<= `CONTEXT_MAX_CHARS`), choices = the verse that follows
  it and a distractor verse from another held-out chapter of similar length (within +-25%),
  both <= `OPTION_MAX_CHARS` characters so a 32-token generation can spell either out; the
  correct option's position is drawn from the seeded RNG.
"""

import argparse
import gzip
import json
import os
import random
import re
import sys

from colajax.data import corpus

SEED = 6198
LASTWORD_MAX_CHARS = 320  # ~80 tokens of kjv_sp4096
CONTEXT_MAX_CHARS = 200
OPTION_MAX_CHARS = 110  # ~28 tokens
LENGTH_TOLERANCE = 0.25
TASK_DIR = os.path.join(corpus.CORPUS_DIR, "tasks")
# a word that ends a clause: before : ; . ? ! or at the end of the verse
_CLAUSE_END = re.compile(r"([A-Za-z]+)(?=[:;.?!]|[^A-Za-z]*$)")


def read_chapters(path: str = corpus.KJV_VALID) -> list[tuple[str, list[str]]]:
    """[(heading, verses)] of a corpus file (heading, blank line, one verse per line)."""
    chapters = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            head, _, body = json.loads(line)["text"].partition("\n\n")
            chapters.append((head.strip(), [v for v in body.split("\n") if v.strip()]))
    return chapters


def lastword_items(chapters, max_chars: int = LASTWORD_MAX_CHARS) -> list[dict]:
    items = []
    for head, verses in chapters:
        for i, verse in enumerate(verses):
            for k, match in enumerate(_CLAUSE_END.finditer(verse)):
                word, prefix = match.group(1), verse[: match.start(1)].rstrip()
                if len(word) < 3 or len(prefix.split()) < 3:
                    continue
                lines = [prefix]
                for prev in reversed(verses[:i]):
                    if sum(len(x) + 1 for x in lines) + len(prev) > max_chars:
                        break
                    lines.insert(0, prev)
                passage = "\n".join(lines)
                if len(passage) > max_chars:
                    continue
                if not re.search(rf"\b{word}\b", passage, re.IGNORECASE):
                    continue
                items.append({"id": f"{head}:{i + 1}.{k}", "question": passage, "answer": word})
    return items


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def nextverse_items(chapters, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    pool = [
        (c, v)
        for c, (_, verses) in enumerate(chapters)
        for v in verses
        if len(v) <= OPTION_MAX_CHARS
    ]
    items = []
    for c, (head, verses) in enumerate(chapters):
        for i in range(1, len(verses)):
            context, target = verses[i - 1], verses[i]
            if len(context) > CONTEXT_MAX_CHARS or len(target) > OPTION_MAX_CHARS:
                continue
            lo, hi = (1 - LENGTH_TOLERANCE) * len(target), (1 + LENGTH_TOLERANCE) * len(target)
            candidates = [
                v
                for pc, v in pool
                if pc != c
                and lo <= len(v) <= hi
                and _norm(v) not in (_norm(target), _norm(context))
            ]
            if not candidates:
                continue
            distractor = rng.choice(candidates)
            answer = rng.randrange(2)
            choices = [distractor, target] if answer else [target, distractor]
            items.append(
                {"id": f"{head}:{i + 1}", "question": context, "choices": choices, "answer": answer}
            )
    return items


def write_jsonl(path: str, items: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(x, ensure_ascii=False) + "\n" for x in items)


def build(out_dir: str = TASK_DIR, valid_path: str = corpus.KJV_VALID) -> dict:
    """Writes kjv_lastword.jsonl and kjv_nextverse.jsonl into `out_dir`; returns the counts."""
    chapters = read_chapters(valid_path)
    os.makedirs(out_dir, exist_ok=True)
    tasks = {"kjv_lastword": lastword_items(chapters), "kjv_nextverse": nextverse_items(chapters)}
    for name, items in tasks.items():
        write_jsonl(os.path.join(out_dir, f"{name}.jsonl"), items)
    first_b = sum(x["answer"] for x in tasks["kjv_nextverse"])
    return {name: len(items) for name, items in tasks.items()} | {"nextverse_answer_b": first_b}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=TASK_DIR)
    parser.add_argument("--valid", default=corpus.KJV_VALID, help="held-out corpus file")
    args = parser.parse_args(argv)
    print(json.dumps(build(args.out, args.valid)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
