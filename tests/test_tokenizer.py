"""Tokenizers: the committed KJV model, training, pickling, the HF wrapper, the vocab check."""

import gzip
import json
import pickle

import pytest

from colajax.cli import tokenizer as tokenizer_cli
from colajax.data import corpus
from colajax.data.tokenizer import (
    HFTokenizer,
    SentencePieceTokenizer,
    check_vocab,
    load_tokenizer,
    train_sentencepiece,
)

TRICKY = ["Héllo wörld — café 東京 🙂", "  two  spaces\nand a newline ", "x", ""]


def _kjv_docs(split):
    with gzip.open(corpus.KJV_TRAIN if split == "train" else corpus.KJV_VALID, "rt") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def kjv_sp():
    return load_tokenizer("bundled:kjv_sp4096.model")


def test_bundled_tokenizer_ids_and_golden_encoding(kjv_sp):
    assert isinstance(kjv_sp, SentencePieceTokenizer)
    assert (kjv_sp.vocab_size, kjv_sp.pad_id, kjv_sp.bos_id, kjv_sp.eos_id) == (4096, 0, 2, 3)
    pieces = [kjv_sp._proc().id_to_piece(i) for i in range(5)]
    assert pieces == ["<pad>", "<unk>", "<s>", "</s>", "<0x00>"]
    # Golden ids from the committed model: a change means the model file changed.
    assert kjv_sp.encode("In the beginning God created") == [1037, 262, 2047, 393, 3327]


def test_bundled_tokenizer_encodes_the_bundled_corpus(kjv_sp):
    docs = _kjv_docs("valid")
    ids = kjv_sp.encode_batch(docs)
    assert len(docs) == 30
    assert all(kjv_sp.decode(i) == d for i, d in zip(ids, docs))
    flat = [t for row in ids for t in row]
    assert 1 not in flat  # no <unk>: byte fallback covers everything
    assert max(flat) < kjv_sp.vocab_size
    assert 25_000 < len(flat) < 32_000  # ~3.9 bytes per token on 110 kB of text


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_including_non_ascii(kjv_sp, text):
    assert kjv_sp.decode(kjv_sp.encode(text)) == text


def test_lazy_and_picklable(kjv_sp):
    tok = SentencePieceTokenizer(corpus.KJV_SP_MODEL)
    assert tok._sp is None  # nothing loaded until first use
    ids = tok.encode("And God said")
    blob = pickle.dumps(tok)
    assert len(blob) < 500  # the path travels, not the 65 kB model
    clone = pickle.loads(blob)
    assert clone._sp is None and clone.encode("And God said") == ids
    assert repr(clone) == repr(tok)


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_train_sentencepiece_on_jsonl_gz(tmp_path, model_type):
    out = train_sentencepiece(corpus.KJV_VALID, 400, tmp_path / "tok", model_type=model_type)
    tok = SentencePieceTokenizer(out["model"])
    assert out["model"].endswith(f"sp_{model_type}400.model")
    assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (400, 0, 2, 3)
    for text in TRICKY:
        assert tok.decode(tok.encode(text)) == text


def test_train_sentencepiece_on_text_glob(tmp_path):
    for i, doc in enumerate(_kjv_docs("valid")[:10]):
        (tmp_path / f"part{i}.txt").write_text(doc)
    out = train_sentencepiece(str(tmp_path / "part*.txt"), 360, tmp_path / "tok", name="t")
    assert out["lines"] > 200
    assert SentencePieceTokenizer(out["model"]).vocab_size == 360


def test_train_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no file"):
        train_sentencepiece(str(tmp_path / "none*.txt"), 300, tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="non-empty corpus"):
        train_sentencepiece(str(tmp_path / "empty.txt"), 300, tmp_path)
    with pytest.raises(ValueError, match="Vocabulary size is smaller"):
        train_sentencepiece(corpus.KJV_VALID, 50, tmp_path)
    with pytest.raises(ValueError, match="model_type"):
        train_sentencepiece(corpus.KJV_VALID, 300, tmp_path, model_type="wordpiece")


def test_cli_train_prints_paths(tmp_path, capsys):
    rc = tokenizer_cli.main(
        ["train", "--input", corpus.KJV_VALID, "--vocab-size", "400", "--out", str(tmp_path)]
    )
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["vocab_size"] == 400
    assert SentencePieceTokenizer(result["model"]).vocab_size == 400
    rc = tokenizer_cli.main(
        ["train", "--input", str(tmp_path / "x*.txt"), "--vocab-size", "300", "--out", "o"]
    )
    assert rc == 1 and "matches no file" in capsys.readouterr().err


def _write_hf_tokenizer(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["hello world", "the quick brown fox"] * 20, trainer)
    tok.save(str(path))
    return tok.get_vocab_size()


def test_hf_tokenizer(tmp_path):
    n = _write_hf_tokenizer(tmp_path / "tokenizer.json")
    tok = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert isinstance(tok, HFTokenizer) and tok._tok is None
    assert tok.vocab_size == n
    # <|endoftext|> is both BOS and EOS (OLMo-2 convention); <|pad|> is pad.
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 0, 1)
    for text in TRICKY:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(["hello", "world"]) == [tok.encode("hello"), tok.encode("world")]
    clone = pickle.loads(pickle.dumps(tok))
    assert clone._tok is None and clone.encode("hello world") == tok.encode("hello world")
    assert HFTokenizer(str(tmp_path / "tokenizer.json"), pad_id=7).pad_id == 7


def test_load_and_check_vocab_errors(tmp_path, kjv_sp):
    with pytest.raises(ValueError, match="cannot tell the tokenizer type"):
        load_tokenizer("vocab.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing.model")).encode("a")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        load_tokenizer(str(tmp_path / "junk.model")).encode("a")
    check_vocab(kjv_sp, 4096)  # equal is fine
    check_vocab(kjv_sp, 5000)  # a larger model table is fine
    with pytest.raises(ValueError, match=r"has 4096 tokens .* vocab_size is 4000.*set the model"):
        check_vocab(kjv_sp, 4000)
