"""Tokenizers: a lazy, picklable SentencePiece wrapper and a HuggingFace `tokenizer.json` wrapper.

Both expose the same interface: `encode(text) -> list[int]` (no BOS/EOS added; the packer adds
them), `encode_batch(texts)`, `decode(ids) -> str`, `vocab_size`, `pad_id`, `bos_id`, `eos_id`.
The C++/Rust objects load on first use and are never pickled (grain workers re-load from the
path), so a tokenizer can be passed into a grain `map`.

Special ids of colajax SentencePiece models (`train_sentencepiece`, the bundled
`kjv_sp4096.model`): pad=0, unk=1, bos=2, eos=3.

Mask id: the VAE's BERT-style masking uses id `model vocab_size` (one past the last token). The
model reserves that extra embedding row itself, so tokenizers define no mask piece.
"""

import os
import tempfile
from collections.abc import Sequence

from etils import epath

from colajax.data import corpus

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

# OLMo-2 BPE (the released model's tokenizer.json): `<|endoftext|>` is both the document
# separator (BOS in the pretraining loader) and EOS; `<|pad|>` pads prompts.
HF_EOS_TOKEN = "<|endoftext|>"
HF_PAD_TOKEN = "<|pad|>"


def _read_bytes(path: str) -> bytes:
    p = epath.Path(corpus.resolve(path))
    if not p.exists():
        raise FileNotFoundError(f"tokenizer file {path!r} does not exist; check the path.")
    return p.read_bytes()


class SentencePieceTokenizer:
    """SentencePiece model at `path` (local, gs://, or `bundled:<name>`), loaded lazily."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._sp = None

    def _proc(self):
        if self._sp is None:
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor()
            try:
                sp.LoadFromSerializedProto(_read_bytes(self.path))
            except RuntimeError as e:
                raise ValueError(f"{self.path!r} is not a SentencePiece model: {e}") from e
            self._sp = sp
        return self._sp

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path, self._sp = state["path"], None

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.path!r})"

    @property
    def vocab_size(self) -> int:
        return self._proc().GetPieceSize()

    @property
    def pad_id(self) -> int:
        return self._proc().pad_id()

    @property
    def bos_id(self) -> int:
        return self._proc().bos_id()

    @property
    def eos_id(self) -> int:
        return self._proc().eos_id()

    def encode(self, text: str) -> list[int]:
        return self._proc().EncodeAsIds(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = -1) -> list[list[int]]:
        return self._proc().Encode(list(texts), num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self._proc().DecodeIds([int(i) for i in ids])


class HFTokenizer:
    """HuggingFace `tokenizers` model from a `tokenizer.json` (e.g. the OLMo-2 BPE).

    bos/eos default to `<|endoftext|>` and pad to `<|pad|>` when the file defines them (OLMo-2:
    eos = bos = 100257, pad = 100277); pass ids explicitly for other files.
    """

    def __init__(self, path: str, *, bos_id=None, eos_id=None, pad_id=None):
        self.path = os.fspath(path)
        self._ids = {"bos": bos_id, "eos": eos_id, "pad": pad_id}
        self._tok = None

    def _proc(self):
        if self._tok is None:
            from tokenizers import Tokenizer

            try:
                tok = Tokenizer.from_str(_read_bytes(self.path).decode("utf-8"))
            except Exception as e:  # the Rust side raises its own exception type
                raise ValueError(f"{self.path!r} is not a tokenizers JSON file: {e}") from e
            eos = tok.token_to_id(HF_EOS_TOKEN)
            pad = tok.token_to_id(HF_PAD_TOKEN)
            defaults = {"bos": eos, "eos": eos, "pad": pad}
            for key, value in defaults.items():
                if self._ids[key] is None:
                    self._ids[key] = value
            self._tok = tok
        return self._tok

    def __getstate__(self):
        return {"path": self.path, "ids": dict(self._ids)}

    def __setstate__(self, state):
        self.path, self._ids, self._tok = state["path"], dict(state["ids"]), None

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r})"

    def _special(self, key: str) -> int:
        self._proc()
        if self._ids[key] is None:
            raise ValueError(
                f"{self.path!r} defines no {key} token ({HF_EOS_TOKEN!r}/{HF_PAD_TOKEN!r}); "
                f"pass HFTokenizer(path, {key}_id=...)."
            )
        return self._ids[key]

    @property
    def vocab_size(self) -> int:
        return self._proc().get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._special("pad")

    @property
    def bos_id(self) -> int:
        return self._special("bos")

    @property
    def eos_id(self) -> int:
        return self._special("eos")

    def encode(self, text: str) -> list[int]:
        return self._proc().encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encs = self._proc().encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encs]

    def decode(self, ids: Sequence[int]) -> str:
        return self._proc().decode([int(i) for i in ids], skip_special_tokens=False)


Tokenizer = SentencePieceTokenizer | HFTokenizer


def load_tokenizer(spec: str) -> Tokenizer:
    """`.model` -> SentencePiece, `.json` -> HuggingFace tokenizers; `bundled:` paths allowed."""
    spec = os.fspath(spec)
    if spec.endswith(".model"):
        return SentencePieceTokenizer(spec)
    if spec.endswith(".json"):
        return HFTokenizer(spec)
    raise ValueError(
        f"cannot tell the tokenizer type of {spec!r}: use a SentencePiece '.model' file or a "
        "HuggingFace 'tokenizer.json'."
    )


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int) -> None:
    """Raises ValueError unless every token id fits the model's embedding table."""
    n = tokenizer.vocab_size
    if n > model_vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer!r} has {n} tokens but the model's vocab_size is "
            f"{model_vocab_size}: ids >= {model_vocab_size} would index past the embedding. "
            f"Fix: set the model config's vocab_size to {n} (or more), or use a tokenizer with "
            f"at most {model_vocab_size} tokens."
        )


def _strip_prefix(model_path: str, name: str) -> bytes:
    """The model bytes with the temp-dir `model_prefix` replaced by `name` (reproducible files)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(epath.Path(model_path).read_bytes())
    proto.trainer_spec.model_prefix = name
    return proto.SerializeToString()


def train_sentencepiece(
    input_glob: str | Sequence[str],
    vocab_size: int,
    out_dir: str,
    *,
    model_type: str = "bpe",
    byte_fallback: bool = True,
    name: str | None = None,
    text_key: str = "text",
    num_threads: int = 2,
) -> dict:
    """Trains a SentencePiece model on text/JSONL files (`.gz` ok); returns the written paths.

    Lines of each document are the training sentences. Normalisation is off (identity, spaces
    kept) so decode(encode(text)) == text; unseen characters fall back to bytes.
    """
    import sentencepiece as spm

    from colajax.data import sources

    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}.")
    paths = sources.expand_paths(input_glob)
    lines = [
        line
        for text in sources.iter_file_texts(paths, text_key=text_key)
        for line in text.split("\n")
        if line.strip()
    ]
    if not lines:
        raise ValueError(f"no text in {paths}: the tokenizer needs a non-empty corpus.")
    name = name or f"sp_{model_type}{vocab_size}"
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, name)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_prefix=prefix,
                vocab_size=vocab_size,
                model_type=model_type,
                byte_fallback=byte_fallback,
                character_coverage=1.0,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                split_digits=True,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                num_threads=num_threads,
                minloglevel=2,
            )
        except RuntimeError as e:
            raise ValueError(f"SentencePiece training failed: {e}") from e
        written = {
            "model": os.fspath(out / f"{name}.model"),
            "vocab": os.fspath(out / f"{name}.vocab"),
        }
        epath.Path(written["model"]).write_bytes(_strip_prefix(f"{prefix}.model", name))
        epath.Path(written["vocab"]).write_bytes(epath.Path(f"{prefix}.vocab").read_bytes())
    return {**written, "vocab_size": vocab_size, "model_type": model_type, "lines": len(lines)}
