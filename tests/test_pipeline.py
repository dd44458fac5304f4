"""grain pipeline: packing, seeded shuffle, exact resume, global arrays, eval batches, errors."""

import json

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from colajax.data import corpus, packing, pipeline


class CharTokenizer:
    """Toy tokenizer with readable ids: char c -> ord(c) (all test text is lower-case ASCII)."""

    vocab_size, pad_id, bos_id, eos_id = 128, 0, 2, 3

    def __init__(self, bos_id=2, eos_id=3):
        self.bos_id, self.eos_id = bos_id, eos_id

    def encode_batch(self, texts):
        return [[ord(c) for c in t] for t in texts]

    def __repr__(self):
        return f"CharTokenizer({self.bos_id}, {self.eos_id})"


def _jsonl(tmp_path, docs, name="c.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return {"kind": "jsonl", "path": str(path)}


@pytest.fixture
def cfg(tmp_path):
    # 40 docs of 5..14 chars: ~ 40 * 11.5 = 460 tokens -> 57 rows of 8.
    docs = ["".join(chr(97 + (i + j) % 26) for j in range(5 + i % 10)) for i in range(40)]
    return _jsonl(tmp_path, docs)


def _take(it, n):
    return [np.asarray(next(it)["tokens"]) for _ in range(n)]


def test_packing_puts_bos_eos_and_splits_documents(tmp_path):
    cfg = _jsonl(tmp_path, ["ab", "cde", "f"])
    it = pipeline.make_train_iter(cfg, CharTokenizer(), 3, 4, None, 0, 1, seed=0)
    assert it.num_rows == 3
    rows = pipeline.pack_rows(
        pipeline.tokenize_source(pipeline.sources.make_source(cfg, 0, 1), CharTokenizer()), 4
    )
    a, b, c, d, e, f = (ord(x) for x in "abcdef")
    # Stream: <s> a b </s> <s> c d e </s> <s> f </s>; "cde" continues onto the third row.
    np.testing.assert_array_equal(rows, [[2, a, b, 3], [2, c, d, e], [3, 2, f, 3]])
    assert rows.dtype == np.int32
    # The first batch of an epoch holds every row once (shuffled).
    assert sorted(map(tuple, _take(it, 1)[0])) == sorted(map(tuple, rows))


def test_bos_equal_eos_adds_one_separator(tmp_path):
    cfg = _jsonl(tmp_path, ["ab", "c"])
    stream = pipeline.tokenize_source(
        pipeline.sources.make_source(cfg, 0, 1), CharTokenizer(bos_id=1, eos_id=1)
    )
    np.testing.assert_array_equal(stream, [1, ord("a"), ord("b"), 1, ord("c")])


def test_shuffle_is_deterministic_by_seed_and_reshuffles_each_epoch(cfg):
    make = lambda seed: pipeline.make_train_iter(cfg, CharTokenizer(), 4, 8, None, 0, 1, seed=seed)
    run0, run0_again, run1 = _take(make(0), 29), _take(make(0), 29), _take(make(1), 29)
    assert all(np.array_equal(x, y) for x, y in zip(run0, run0_again))
    assert not all(np.array_equal(x, y) for x, y in zip(run0, run1))
    n_rows = make(0).num_rows
    assert n_rows == 57
    epoch0 = np.concatenate(run0)[:n_rows]
    epoch1 = np.concatenate(run0)[n_rows : 2 * n_rows]
    stream = pipeline.tokenize_source(pipeline.sources.make_source(cfg, 0, 1), CharTokenizer())
    all_rows = sorted(map(tuple, pipeline.pack_rows(stream, 8)))
    assert sorted(map(tuple, epoch0)) == sorted(map(tuple, epoch1)) == all_rows  # each row once
    assert not np.array_equal(epoch0, epoch1)  # a new permutation each epoch


def test_get_state_set_state_resumes_exactly(cfg):
    it = pipeline.make_train_iter(cfg, CharTokenizer(), 4, 8, None, 0, 1, seed=3)
    _take(it, 17)  # past the first epoch boundary (57 rows / 4)
    state = json.loads(json.dumps(it.get_state()))  # JSON-serialisable
    assert state == {
        "grain": {"next_index": 17},
        "seed": 3,
        "seq_len": 8,
        "global_batch": 4,
        "process_count": 1,
    }
    expected = _take(it, 6)
    fresh = pipeline.make_train_iter(cfg, CharTokenizer(), 4, 8, None, 0, 1, seed=3)
    fresh.set_state(state)
    assert all(np.array_equal(x, y) for x, y in zip(_take(fresh, 6), expected))
    other = pipeline.make_train_iter(cfg, CharTokenizer(), 4, 8, None, 0, 1, seed=4)
    with pytest.raises(ValueError, match="restore with the same seed"):
        other.set_state(state)


def test_resume_through_orbax_with_grain_checkpoint_handler(cfg, tmp_path):
    it = pipeline.make_train_iter(cfg, CharTokenizer(), 4, 8, None, 0, 1, seed=0)
    _take(it, 5)
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as mngr:
        mngr.save(5, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    expected = _take(it, 3)
    fresh = pipeline.make_train_iter(cfg, CharTokenizer(), 4, 8, None, 0, 1, seed=0)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as mngr:
        mngr.restore(
            5, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(fresh))
        )
    assert all(np.array_equal(x, y) for x, y in zip(_take(fresh, 3), expected))


def test_global_array_on_8_device_mesh_equals_numpy_batch(cfg):
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    sharding = NamedSharding(mesh, PartitionSpec("data", None))
    sharded = pipeline.make_train_iter(cfg, CharTokenizer(), 8, 8, sharding, 0, 1, seed=0)
    plain = pipeline.make_train_iter(cfg, CharTokenizer(), 8, 8, None, 0, 1, seed=0)
    for _ in range(3):
        tokens, expected = next(sharded)["tokens"], next(plain)["tokens"]
        assert isinstance(tokens, jax.Array) and tokens.sharding == sharding
        assert tokens.shape == (8, 8) and tokens.dtype == np.int32
        assert len(tokens.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(tokens), expected)


def test_processes_get_disjoint_local_batches(tmp_path):
    docs = [chr(97 + i) * 7 for i in range(26)]  # 9-token documents, one letter each
    cfg = _jsonl(tmp_path, docs)
    letters = []
    for k in range(2):
        it = pipeline.make_train_iter(cfg, CharTokenizer(), 4, 9, None, k, 2, seed=0)
        rows = np.concatenate(_take(it, 3))
        assert rows.shape == (6, 9)  # local batch = global 4 / 2 processes
        letters.append(set(rows[:, 1].tolist()))
    assert not letters[0] & letters[1]


def test_eval_batches_are_finite_ordered_and_reiterable(cfg):
    tok = CharTokenizer()
    ev = pipeline.make_eval_batches(cfg, tok, 8, 8, None, 0, 1, block_size=4)
    rows = pipeline.pack_rows(pipeline.tokenize_source(pipeline.sources.make_source(cfg), tok), 8)
    assert len(ev) == 57 // 8 == 7
    first, second = [b["tokens"] for b in ev], [b["tokens"] for b in ev]
    assert len(first) == 7 and all(np.array_equal(x, y) for x, y in zip(first, second))
    np.testing.assert_array_equal(np.concatenate(first), rows[:56])  # source order, no shuffle
    assert len(pipeline.make_eval_batches(cfg, tok, 8, 8, None, 0, 1, max_batches=2)) == 2


def test_bad_inputs_give_clear_errors(cfg, tmp_path):
    tok = CharTokenizer()
    with pytest.raises(ValueError, match=r"seq_len=10 is not a positive multiple .*block_size=4"):
        pipeline.make_train_iter(cfg, tok, 4, 10, None, 0, 1, block_size=4)
    with pytest.raises(ValueError, match="global batch 5 is not divisible by the 2 processes"):
        pipeline.make_train_iter(cfg, tok, 5, 8, None, 0, 2)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    with pytest.raises(ValueError, match="process_count=2 but JAX runs 1"):
        pipeline.make_train_iter(cfg, tok, 8, 8, NamedSharding(mesh, PartitionSpec()), 0, 2)
    with pytest.raises(ValueError, match="fewer than one row of seq_len=4096"):
        pipeline.make_train_iter(cfg, tok, 4, 4096, None, 0, 1)
    with pytest.raises(ValueError, match="lower the eval batch"):
        pipeline.make_eval_batches(cfg, tok, 64, 8, None, 0, 1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline.make_train_iter({"kind": "jsonl", "path": str(tmp_path / "x.jsonl")}, tok, 4, 8)


def test_bundled_corpus_with_committed_tokenizer():
    train_cfg = {"kind": "jsonl", "path": "bundled:kjv_train.jsonl.gz"}
    it = pipeline.make_train_iter(train_cfg, corpus.KJV_SP_MODEL, 16, 128, None, 0, 1, seed=0)
    tokens = next(it)["tokens"]
    assert tokens.shape == (16, 128) and tokens.dtype == np.int32
    assert 0 < tokens.min() and tokens.max() < 4096  # no padding in packed rows
    # ~1.05M tokens (1159 documents incl. BOS/EOS) -> 8214 rows of 128.
    assert it.num_rows == 8214
    ev = pipeline.make_eval_batches(
        {"kind": "jsonl", "path": "bundled:kjv_valid.jsonl.gz"}, "bundled:kjv_sp4096.model", 16, 128
    )
    first = next(iter(ev))["tokens"]
    assert first[0, 0] == 2 and len(ev) == 13  # the first row starts a document with BOS


# --------------------------------------------------------------------------------------------
# docstart packing (the released loader's row layout)
# --------------------------------------------------------------------------------------------


def _docs(*lengths):
    """Documents `[100 + i, i, i, ...]` of the given lengths (first token marks the document)."""
    return [np.asarray([100 + i] + [i] * (n - 1), np.int32) for i, n in enumerate(lengths)]


def test_docstart_best_fit_pads_or_crops():
    docs = _docs(5, 3, 6, 2, 9)  # rows of 8
    rows, lengths = packing.pack_docstart(docs, 8, pad_id=0, buffer=1000, fill="pad")
    # row 0: 9 does not fit; best fit 6, then 2 -> full. row 1: 5, then 3 -> full.
    # row 2: only the 9-token document is left: cropped to the row (its tail is dropped).
    np.testing.assert_array_equal(rows[0], [102, 2, 2, 2, 2, 2, 103, 3])
    np.testing.assert_array_equal(rows[1], [100, 0, 0, 0, 0, 101, 1, 1])
    np.testing.assert_array_equal(rows[2], [104] + [4] * 7)
    np.testing.assert_array_equal(lengths, [8, 8, 8])
    rows, lengths = packing.pack_docstart(_docs(5, 6, 2), 8, pad_id=0, fill="pad")
    np.testing.assert_array_equal(rows, [[101, 1, 1, 1, 1, 1, 102, 2], [100, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(lengths, [8, 5])  # the last row is padded (weight 0) ...
    rows, lengths = packing.pack_docstart(_docs(5, 6, 2, 4), 8, pad_id=0, fill="crop")
    # ... or, as released, the shortest buffered document is cropped to fill the row
    np.testing.assert_array_equal(
        rows, [[101, 1, 1, 1, 1, 1, 102, 2], [100, 0, 0, 0, 0, 103, 3, 3]]
    )
    np.testing.assert_array_equal(packing.loss_weights(np.array([8, 5]), 8)[1], [1] * 5 + [0] * 3)
    # a small buffer only sees the next documents: no look-ahead beyond it
    rows, _ = packing.pack_docstart(_docs(5, 6, 2), 8, pad_id=0, buffer=1, fill="pad")
    assert rows[0, 0] == 100 and rows[0, 5] == 0


def test_docstart_iterator_weights_rows_and_exact_resume(cfg):
    make = lambda fill="pad": pipeline.make_train_iter(
        cfg, CharTokenizer(), 4, 8, None, 0, 1, seed=3, packing="docstart", docstart_fill=fill
    )
    it = make()
    first = next(it)
    assert set(first) == {"tokens", "loss_weights"} and first["loss_weights"].dtype == np.float32
    for _ in range(9):
        batch = next(it)
        toks, w = batch["tokens"], batch["loss_weights"]
        assert (toks[:, 0] == CharTokenizer.bos_id).all()  # every row starts a document
        n = w.sum(axis=1).astype(int)  # weights: a prefix of ones, padding (pad id) after
        np.testing.assert_array_equal(w, np.arange(8)[None] < n[:, None])
        assert (toks[w == 0] == CharTokenizer.pad_id).all()
    state = json.loads(json.dumps(it.get_state()))
    assert state["packing"] == "docstart" and state["docstart_fill"] == "pad"
    expected = [next(it) for _ in range(5)]
    fresh = make()
    fresh.set_state(state)
    for want in expected:
        got = next(fresh)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(ValueError, match="packing"):
        make("crop").set_state(state)
    with pytest.raises(ValueError, match="packing"):  # a stream state does not fit either
        pipeline.make_train_iter(cfg, CharTokenizer(), 4, 8, None, 0, 1, seed=3).set_state(state)
    ev = pipeline.make_eval_batches(cfg, CharTokenizer(), 4, 8, None, 0, 1, packing="docstart")
    assert set(next(iter(ev))) == {"tokens", "loss_weights"}
