"""Task registry, JSONL loader and tfds readers (with tiny self-built array_record builders)."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.question_answering import qa_utils

from colajax.eval import tasks, templates
from colajax.eval.tasks import TASKS, load_task


def test_registry():
    assert list(TASKS) == [
        "lambada", "mmlu", "obqa", "hellaswag", "race", "siqa", "squad", "story_cloze"
    ]  # fmt: skip
    kinds = {t: (s.kind, s.n_choices, s.shots) for t, s in TASKS.items()}
    assert kinds == {
        "lambada": ("free", None, 0),
        "mmlu": ("choice", 4, 2),
        "obqa": ("choice", 4, 2),
        "hellaswag": ("choice", 4, 2),
        "race": ("choice", 4, 1),
        "siqa": ("choice", 3, 2),
        "squad": ("free", None, 1),
        "story_cloze": ("choice", 2, 2),
    }
    for task, spec in TASKS.items():
        assert (spec.tfds_name is None) == (task not in tasks.TFDS_MAPPERS)
    with pytest.raises(ValueError, match="unknown task 'gsm8k'"):
        tasks.get_task("gsm8k")


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


MMLU_ROWS = [
    {"id": 7, "question": "Q1?", "choices": ["a", "b", "c", "d"], "answer": "c"},
    {"question": "Q2?", "choices": ["a", "b", "c", "d"], "ground_truth": "A."},
    "",
    {"question": "Q3?", "choices": ["w", "x", "y", "z"], "answer": 3},
]


def test_load_task_from_dir_and_file(tmp_path):
    path = _write(tmp_path / "mmlu.jsonl", MMLU_ROWS)
    records = load_task("mmlu", str(tmp_path))
    assert records == [
        {"id": 7, "question": "Q1?", "context": "", "choices": list("abcd"), "ground_truth": "c"},
        {"id": 1, "question": "Q2?", "context": "", "choices": list("abcd"), "ground_truth": "A."},
        {"id": 2, "question": "Q3?", "context": "", "choices": list("wxyz"), "ground_truth": "z"},
    ]
    assert load_task("mmlu", str(path), limit=2) == records[:2]
    prompt = templates.prompt_for_record("mmlu", records[0])
    assert prompt.endswith("Question: Q1?\n(A) a\n(B) b\n(C) c\n(D) d\nAnswer:")


def test_free_tasks(tmp_path):
    _write(
        tmp_path / "squad.jsonl", [{"id": "x1", "context": "P.", "question": "Q?", "answer": "P"}]
    )
    _write(
        tmp_path / "lambada.jsonl", [{"question": "It was a", "answer": "cat", "choices": ["z"]}]
    )
    assert load_task("squad", str(tmp_path)) == [
        {"id": "x1", "question": "Q?", "context": "P.", "choices": None, "ground_truth": "P"}
    ]
    assert load_task("lambada", str(tmp_path))[0]["choices"] is None


@pytest.mark.parametrize(
    "task, row, message",
    [
        ("mmlu", {"choices": list("abcd"), "answer": "a"}, "question"),
        ("mmlu", {"question": "Q", "answer": "a"}, "missing 'choices'"),
        ("mmlu", {"question": "Q", "choices": list("abc"), "answer": "a"}, "needs 4 choices"),
        (
            "mmlu",
            {"question": "Q", "choices": list("wxyz"), "answer": "B"},
            "not one of the choices",
        ),
        ("mmlu", {"question": "Q", "choices": list("abcd"), "answer": 4}, "outside the 4"),
        ("mmlu", {"question": "Q", "choices": list("abcd")}, "missing 'answer'"),
        (
            "siqa",
            {"question": "Q", "choices": list("abc"), "answer": "a", "ground_truth": "b"},
            "differ",
        ),
        ("squad", {"question": "Q", "answer": "a"}, "non-empty 'context'"),
        ("squad", {"question": "Q", "context": "C", "answer": ["a", "b"]}, "must be a string"),
        ("lambada", ["not", "an", "object"], "JSON object"),
        ("lambada", "{oops", "invalid JSON"),
    ],
)
def test_load_errors_name_file_and_line(tmp_path, task, row, message):
    path = _write(tmp_path / "t.jsonl", [{"question": "ok", "answer": "x", "context": "c"}, row])
    if task in ("mmlu", "siqa"):
        path = _write(tmp_path / "t.jsonl", [row])
    with pytest.raises(ValueError, match=message) as info:
        load_task(task, str(path))
    assert f"{path}:" in str(info.value)


def test_load_other_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="race.jsonl"):
        load_task("race", str(tmp_path))
    with pytest.raises(ValueError, match="unknown task"):
        load_task("nope", str(tmp_path))
    empty = _write(tmp_path / "lambada.jsonl", [""])
    with pytest.raises(ValueError, match="no records"):
        load_task("lambada", str(empty))
    with pytest.raises(ValueError, match="positive integer"):
        load_task("lambada", str(empty), limit=0)


# --- tfds readers ------------------------------------------------------------------------------


def test_tfds_mappers_on_decoded_records():
    race = {
        "article": "Tom ran. ",
        "questions": ["Who ran?", "Tom  _  ."],
        "answers": ["B", "A"],
        "options": [["Ann", "Tom", "Bob", "Sue"], ["ran", "sat", "ate", "hid"]],
        "example_id": "high1.txt",
    }
    rows = [tasks.validate_record("race", r, 0) for r in tasks.TFDS_MAPPERS["race"](race, 0)]
    assert [(r["id"], r["question"], r["ground_truth"]) for r in rows] == [
        ("high1.txt-0", "Tom ran. Who ran?", "Tom"),
        ("high1.txt-1", "Tom ran. Tom  _  .", "ran"),
    ]
    lam = tasks.TFDS_MAPPERS["lambada"]({"passage": "he said to the dog\n"}, 3)
    assert lam == [{"id": 3, "question": "he said to the", "answer": "dog"}]
    story = {"context": "A. B. C. D.", "endings": ["e1", "e2"], "label": 2}
    record = tasks.validate_record("story_cloze", tasks.TFDS_MAPPERS["story_cloze"](story, 5)[0], 0)
    assert (record["id"], record["ground_truth"]) == (5, "e2")  # AnswerRightEnding is 1-based


class EvalTinySquad(tfds.core.GeneratorBasedBuilder):
    """Same features as tfds `squad/v1.1`."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=qa_utils.squadlike_features())

    def _split_generators(self, dl_manager):
        return {"validation": self._generate_examples()}

    def _generate_examples(self):
        for i in range(3):
            yield (
                i,
                {
                    "id": f"q{i}",
                    "title": "T",
                    "context": f"Paragraph {i} é.",
                    "question": f"What {i}?",
                    "answers": {"text": [f"ans{i}", "other"], "answer_start": [0, 3]},
                },
            )


class EvalTinyObqa(tfds.core.GeneratorBasedBuilder):
    """Same features as tfds `openbookqa`."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        question = {
            "stem": tfds.features.Text(),
            **{f"choice_{c}": tfds.features.Text() for c in "ABCD"},
        }
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "question": question,
                    "fact1": tfds.features.Text(),
                    "humanScore": tfds.features.Tensor(shape=(), dtype=np.float32),
                    "clarity": tfds.features.Tensor(shape=(), dtype=np.float32),
                    "turkIdAnonymized": tfds.features.Text(),
                    "answerKey": tfds.features.ClassLabel(names=["A", "B", "C", "D"]),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            q = {"stem": f"Stem {i}?", **{f"choice_{c}": f"{c.lower()}{i}" for c in "ABCD"}}
            yield (
                i,
                {
                    "question": q,
                    "fact1": "f",
                    "humanScore": 1.0,
                    "clarity": 1.0,
                    "turkIdAnonymized": "t",
                    "answerKey": "C",
                },
            )


class EvalTinyHellaswag(tfds.core.GeneratorBasedBuilder):
    """Same features as tfds `hellaswag`."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "context": tfds.features.Text(),
            "endings": tfds.features.Sequence(tfds.features.Text()),
            "activity_label": tfds.features.Text(),
            "label": np.int32,
            "split_type": tfds.features.Text(),
            "source_id": tfds.features.Text(),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"validation": self._generate_examples(1), "test": self._generate_examples(-1)}

    def _generate_examples(self, label):
        yield (
            0,
            {
                "context": "A man walks. he",
                "endings": ["sits.", "runs.", "eats.", "flies."],
                "activity_label": "x",
                "label": label,
                "split_type": "indomain",
                "source_id": "s",
            },
        )


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    for builder_cls in (EvalTinySquad, EvalTinyObqa, EvalTinyHellaswag):
        builder_cls(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return str(data_dir)


def test_tfds_squad(tfds_dir):
    records = load_task("squad", "tfds:eval_tiny_squad@validation", tfds_data_dir=tfds_dir)
    assert len(records) == 3
    by_id = {r["id"]: r for r in records}
    assert by_id["q1"] == {
        "id": "q1",
        "question": "What 1?",
        "context": "Paragraph 1 é.",
        "choices": None,
        "ground_truth": "ans1",
    }
    assert (
        len(load_task("squad", "tfds:eval_tiny_squad@validation", 2, tfds_data_dir=tfds_dir)) == 2
    )
    prompt = templates.prompt_for_record("squad", by_id["q1"])
    assert prompt.endswith("Context: Paragraph 1 é.\nQuestion: What 1?\nAnswer:")


def test_tfds_obqa_and_hellaswag(tfds_dir):
    obqa = load_task("obqa", "tfds:eval_tiny_obqa@test", tfds_data_dir=tfds_dir)
    assert sorted((r["question"], r["ground_truth"]) for r in obqa) == [
        ("Stem 0?", "c0"),
        ("Stem 1?", "c1"),
    ]
    assert all(r["choices"] == [f"a{r['question'][5]}", *r["choices"][1:]] for r in obqa)
    hs = load_task("hellaswag", "tfds:eval_tiny_hellaswag", tfds_data_dir=tfds_dir)
    assert hs == [
        {
            "id": 0,
            "question": "A man walks. he",
            "context": "",
            "choices": ["sits.", "runs.", "eats.", "flies."],
            "ground_truth": "runs.",
        }
    ]
    with pytest.raises(ValueError, match="unlabelled split"):
        load_task("hellaswag", "tfds:eval_tiny_hellaswag@test", tfds_data_dir=tfds_dir)


def test_tfds_errors(tfds_dir):
    with pytest.raises(ValueError, match="no tfds reader"):
        load_task("mmlu", "tfds", tfds_data_dir=tfds_dir)
    with pytest.raises(FileNotFoundError, match="not available"):
        load_task("squad", "tfds:eval_tiny_squad@train", tfds_data_dir=tfds_dir)
    with pytest.raises(ValueError, match="does not fit the race reader"):
        load_task("race", "tfds:eval_tiny_squad@validation", tfds_data_dir=tfds_dir)
