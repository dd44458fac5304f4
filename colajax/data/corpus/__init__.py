"""The bundled corpus: King James Bible chapters (public domain) and its SentencePiece model.

Files (committed, no download at run time):

- `kjv_train.jsonl.gz`, `kjv_valid.jsonl.gz`: one chapter per line, `{"text": ...}`.
- `kjv_sp4096.model` / `.vocab`: BPE SentencePiece model trained on the train split
  (ids pad=0, unk=1, bos=2, eos=3; byte fallback).

Config paths may name these files as `bundled:<file name>`, resolved by `resolve()`; see
README.md here for provenance and `build_kjv.py` for the exact build.
"""

import os

CORPUS_DIR = os.path.dirname(os.path.abspath(__file__))
BUNDLED_PREFIX = "bundled:"

KJV_TRAIN = os.path.join(CORPUS_DIR, "kjv_train.jsonl.gz")
KJV_VALID = os.path.join(CORPUS_DIR, "kjv_valid.jsonl.gz")
KJV_SP_MODEL = os.path.join(CORPUS_DIR, "kjv_sp4096.model")


def resolve(path: str) -> str:
    """Maps `bundled:<name>` to the file in this folder; any other path is returned unchanged."""
    path = os.fspath(path)
    if not path.startswith(BUNDLED_PREFIX):
        return path
    name = path[len(BUNDLED_PREFIX) :]
    full = os.path.join(CORPUS_DIR, name)
    if not os.path.exists(full):
        available = sorted(f for f in os.listdir(CORPUS_DIR) if f.startswith("kjv_"))
        raise FileNotFoundError(
            f"bundled file {name!r} does not exist in {CORPUS_DIR}; available: {available}"
        )
    return full
