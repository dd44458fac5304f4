"""Text sources: text/JSONL/array_record/tfds, per-process shards, decoding policy, errors."""

import gzip
import json

import pytest
import tensorflow_datasets as tfds

from colajax.data import corpus, sources
from colajax.data.corpus import build_kjv
from colajax.data.sources import make_source

DOCS = [f"document {i}: {'word ' * (i % 5)}end" for i in range(23)]


def _all(source):
    return [source[i] for i in range(len(source))]


def _write_jsonl_gz(path, docs, key="text"):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({key: d, "id": 1}) + "\n")


def _write_array_record(path, records):
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), "group_size:1")
    for r in records:
        writer.write(r)
    writer.close()


class ColajaxTinyText(tfds.core.GeneratorBasedBuilder):
    """A tiny self-built tfds dataset (registered as `colajax_tiny_text`)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict({"text": tfds.features.Text()})
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(DOCS)}

    def _generate_examples(self, docs):
        for i, doc in enumerate(docs):
            yield i, {"text": doc}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    ColajaxTinyText(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return str(data_dir)


@pytest.fixture
def configs(tmp_path, tfds_dir):
    """One config per kind, each holding DOCS."""
    (tmp_path / "a.txt").write_text("\n\n".join(DOCS[:10]) + "\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("\n\n\n".join(DOCS[10:]))
    _write_jsonl_gz(tmp_path / "c.jsonl.gz", DOCS, key="body")
    _write_array_record(tmp_path / "d.array_record", [d.encode() for d in DOCS])
    return {
        "text": {"kind": "text", "path": str(tmp_path / "*.txt*")},
        "jsonl": {"kind": "jsonl", "path": str(tmp_path / "c.jsonl.gz"), "text_key": "body"},
        "array_record": {"kind": "array_record", "path": str(tmp_path / "d.array_record")},
        "tfds": {
            "kind": "tfds",
            "name": "colajax_tiny_text",
            "split": "train",
            "data_dir": tfds_dir,
        },
    }


@pytest.mark.parametrize("kind", sources.KINDS)
def test_every_kind_reads_the_documents(configs, kind):
    source = make_source(configs[kind], 0, 1)
    got = _all(source)
    # tfds writes examples in its own (hashed) order; the file kinds keep file order.
    assert (sorted(got) if kind == "tfds" else got) == (sorted(DOCS) if kind == "tfds" else DOCS)
    assert repr(source) == repr(make_source(configs[kind], 0, 1))  # deterministic repr
    assert "shard=0/1" in repr(source)


@pytest.mark.parametrize("kind", sources.KINDS)
@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_are_disjoint_and_cover(configs, kind, count):
    shards = [_all(make_source(configs[kind], k, count)) for k in range(count)]
    flat = [d for shard in shards for d in shard]
    assert sorted(flat) == sorted(DOCS)  # covering and, with unique docs, disjoint
    assert all(shards)
    reprs = {repr(make_source(configs[kind], k, count)) for k in range(count)}
    assert len(reprs) == count


def test_text_files_shard_by_file_when_enough_files(tmp_path):
    for i in range(4):
        (tmp_path / f"f{i}.txt").write_text(f"doc {i} a\n\ndoc {i} b")
    cfg = {"kind": "text", "path": str(tmp_path / "f*.txt")}
    shards = [make_source(cfg, k, 2) for k in range(2)]
    assert [s.paths for s in shards] == [
        [str(tmp_path / "f0.txt"), str(tmp_path / "f2.txt")],
        [str(tmp_path / "f1.txt"), str(tmp_path / "f3.txt")],
    ]
    assert _all(shards[1]) == ["doc 1 a", "doc 1 b", "doc 3 a", "doc 3 b"]


def test_text_split_modes_and_comma_paths(tmp_path):
    (tmp_path / "x.txt").write_text("l1\nl2\n\n  \nl3\n")
    (tmp_path / "y.txt").write_text("other")
    path = f"{tmp_path / 'x.txt'},{tmp_path / 'y.txt'}"
    for split, want in [
        ("paragraph", ["l1\nl2", "l3", "other"]),
        ("line", ["l1", "l2", "l3", "other"]),
        ("file", ["l1\nl2\n\n  \nl3", "other"]),
    ]:
        assert _all(make_source({"kind": "text", "path": path, "text_split": split}, 0, 1)) == want


def test_array_record_json_records_and_formats(tmp_path):
    _write_array_record(tmp_path / "j.ar", [json.dumps({"t": d}).encode() for d in DOCS[:3]])
    cfg = {"kind": "array_record", "path": str(tmp_path / "j.ar"), "text_key": "t"}
    assert _all(make_source(cfg, 0, 1)) == DOCS[:3]
    _write_array_record(tmp_path / "brace.ar", [b"{not json} but text"])
    cfg = {"kind": "array_record", "path": str(tmp_path / "brace.ar")}
    with pytest.raises(ValueError, match="record_format='text'"):
        make_source(cfg, 0, 1)
    assert make_source({**cfg, "record_format": "text"}, 0, 1)[0] == "{not json} but text"


def test_invalid_utf8_is_replaced(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok\n")
    _write_array_record(tmp_path / "bad.ar", [b"\xff\xfeabc"])
    assert (
        make_source({"kind": "text", "path": str(tmp_path / "bad.txt")}, 0, 1)[0] == "caf\ufffd ok"
    )
    src = make_source({"kind": "array_record", "path": str(tmp_path / "bad.ar")}, 0, 1)
    assert src[0] == "\ufffd\ufffdabc"


def test_clear_errors(tmp_path, tfds_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_source({"kind": "jsonl", "path": str(tmp_path / "missing.jsonl")}, 0, 1)
    with pytest.raises(FileNotFoundError, match="matches no file"):
        make_source({"kind": "text", "path": str(tmp_path / "*.txt")}, 0, 1)
    with pytest.raises(ValueError, match="is a directory; give a glob"):
        make_source({"kind": "text", "path": str(tmp_path)}, 0, 1)
    with pytest.raises(ValueError, match="no data path"):
        make_source({"kind": "text"}, 0, 1)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="corpus is empty"):
        make_source({"kind": "text", "path": str(tmp_path / "empty.txt")}, 0, 1)
    with pytest.raises(ValueError, match="unknown data source kind 'parquet'"):
        make_source({"kind": "parquet", "path": "x"}, 0, 1)
    with pytest.raises(ValueError, match=r"unknown data source field\(s\) \['pth'\]"):
        make_source({"kind": "text", "pth": "x"}, 0, 1)
    (tmp_path / "r.jsonl").write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(ValueError, match=r"r.jsonl:2 has no 'text' field \(found \['txt'\]\)"):
        make_source({"kind": "jsonl", "path": str(tmp_path / "r.jsonl")}, 0, 1)
    (tmp_path / "s.jsonl").write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="s.jsonl:2 is not valid JSON"):
        make_source({"kind": "jsonl", "path": str(tmp_path / "s.jsonl")}, 0, 1)
    (tmp_path / "one.txt").write_text("only one document")
    with pytest.raises(ValueError, match="fewer documents than processes"):
        make_source({"kind": "text", "path": str(tmp_path / "one.txt")}, 0, 2)
    with pytest.raises(ValueError, match="process_index 2 not in"):
        make_source({"kind": "text", "path": str(tmp_path / "one.txt")}, 2, 2)
    with pytest.raises(FileNotFoundError, match="cannot open tfds dataset 'nope'"):
        make_source({"kind": "tfds", "name": "nope", "data_dir": tfds_dir}, 0, 1)


def test_config_dict_is_accepted(tmp_path):
    import ml_collections

    (tmp_path / "a.txt").write_text("hello")
    cfg = ml_collections.ConfigDict({"kind": "text", "path": str(tmp_path / "a.txt")})
    cfg.name, cfg.split, cfg.data_dir = "", "train", None  # fields of other kinds are ignored
    assert _all(make_source(cfg, 0, 1)) == ["hello"]


def test_bundled_corpus_loads():
    train = make_source({"kind": "jsonl", "path": "bundled:kjv_train.jsonl.gz"}, 0, 1)
    valid = make_source({"kind": "jsonl", "path": corpus.KJV_VALID}, 0, 1)
    assert (len(train), len(valid)) == (1159, 30)
    assert train[0].startswith(
        "Genesis 1\n\nIn the beginning God created the heaven and the earth."
    )
    assert valid[0].startswith("Genesis 21\n\n")
    assert not {d.split("\n")[0] for d in train} & {d.split("\n")[0] for d in valid}
    with pytest.raises(FileNotFoundError, match="bundled file 'nope.jsonl' does not exist"):
        corpus.resolve("bundled:nope.jsonl")


def test_kjv_parser_on_the_bible_dump_format():
    dump = (
        "\nGenesis 1\n\n  1 In the beginning.\n  2 And the earth was without form,\nand void.\n"
        "\n1 Samuel 2\n\n  1 And Hannah prayed.\n"
    )
    assert build_kjv.parse_kjv(dump) == [
        "Genesis 1\n\nIn the beginning.\nAnd the earth was without form, and void.",
        "1 Samuel 2\n\nAnd Hannah prayed.",
    ]
