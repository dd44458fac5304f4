"""Task data of the paper's 8-task generative benchmark: registry, JSONL loader, tfds readers.

Where each benchmark comes from (the official inputs, `generate_task_data/<task>.jsonl`, are not
published; the rows it scored are in the official `eval_output/`, from which the question,
choices and answer of every scored row can be rebuilt):

| task        | benchmark (paper)                   | rows | tfds builder (default split)   |
|-------------|-------------------------------------|------|--------------------------------|
| lambada     | LAMBADA, last-word prediction       | 1000 | `lambada` (test)               |
| mmlu        | MMLU, 4-option exam questions       | 1000 | none: JSONL only               |
| obqa        | OpenBookQA, 4 options               | 500  | `openbookqa` (test)            |
| hellaswag   | HellaSwag, 4 continuations          | 1000 | `hellaswag` (validation)       |
| race        | RACE reading comprehension, 4 opts  | 1000 | `race/high`, `race/middle` (test) |
| siqa        | Social IQa, 3 options               | 1000 | none: JSONL only               |
| squad       | SQuAD v1.1 extractive QA, 1 ref.    | 1000 | `squad/v1.1` (validation)      |
| story_cloze | Story Cloze Test, 2 endings         | 468  | `story_cloze/2016` (validation)* |

(* needs a manual download. "rows": how many the official run scored; which split and which
rows it used is not published.)

Bundled offline tasks (`BUNDLED_TASKS`, built from the held-out KJV chapters by
`colajax/data/corpus/build_kjv_tasks.py`; no download, for CPU sweeps):

| task          | what                                               | rows | scored like       |
|---------------|----------------------------------------------------|------|-------------------|
| kjv_lastword  | LAMBADA-style: predict the word ending a clause    | 310  | lambada           |
| kjv_nextverse | which of 2 verses follows the given one (2-shot)   | 240  | mmlu (letter/text) |

They load from `colajax/data/corpus/tasks/` when `data` is None, '' or 'bundled', or when a
data directory has no `<task>.jsonl` of its own. The 8 benchmark tasks are never bundled
(`colajax data eval-sets` builds their JSONL files from copies already on disk).

JSONL schema (one object per line; blank lines are skipped), `<data_dir>/<task>.jsonl`:

* `id` (int or str, optional): sample id; default the 0-based record number.
* `question` (str): lambada: the passage without its last word; race: article + " " + question;
  hellaswag: the context to continue; story_cloze: the four-sentence story; siqa: the question
  only (the official prompts leave out the situation); otherwise the question.
* `context` (str): squad only, required there: the paragraph.
* `choices` (list[str]): multiple-choice tasks: exactly `TASKS[task].n_choices` option texts.
* `answer` or `ground_truth` (str, or an int index into `choices`): the reference answer *text*
  (for multiple choice, an option's text, never a letter).

`load_task` returns dicts with keys `id`, `question`, `context` (str, '' if none), `choices`
(list or None) and `ground_truth` (str).

tfds: `load_task(task, "tfds:<name>[@<split>]", tfds_data_dir=...)` reads a prepared tfds dataset
through `tfds.data_source` (array_record files, no TensorFlow needed) and maps its records to the
schema above; `load_task(task, "tfds")` uses the table's default builder and split. Nothing is
downloaded here: prepare the dataset first, e.g.
`tfds.builder("squad/v1.1", data_dir=D).download_and_prepare(file_format="array_record")` (needs
network access, and TensorFlow for race's nested `options` feature).
"""

import json
import os
from typing import NamedTuple

from colajax.eval import scoring


class TaskSpec(NamedTuple):
    name: str
    kind: str  # "choice" (options shown, answer is an option text) or "free"
    n_choices: int | None
    shots: int  # demonstrations in the official prompt (paper Table 7 lists RACE as 2-shot)
    benchmark: str
    tfds_name: str | None
    tfds_split: str | None


TASKS = {
    spec.name: spec
    for spec in (
        TaskSpec("lambada", "free", None, 0, "LAMBADA", "lambada", "test"),
        TaskSpec("mmlu", "choice", 4, 2, "MMLU", None, None),
        TaskSpec("obqa", "choice", 4, 2, "OpenBookQA", "openbookqa", "test"),
        TaskSpec("hellaswag", "choice", 4, 2, "HellaSwag", "hellaswag", "validation"),
        TaskSpec("race", "choice", 4, 1, "RACE", "race/high", "test"),
        TaskSpec("siqa", "choice", 3, 2, "Social IQa", None, None),
        TaskSpec("squad", "free", None, 1, "SQuAD v1.1", "squad/v1.1", "validation"),
        TaskSpec("story_cloze", "choice", 2, 2, "Story Cloze", "story_cloze/2016", "validation"),
    )
}


BUNDLED_TASKS = {
    spec.name: spec
    for spec in (
        TaskSpec("kjv_lastword", "free", None, 0, "KJV last word (bundled)", None, None),
        TaskSpec("kjv_nextverse", "choice", 2, 2, "KJV next verse (bundled)", None, None),
    )
}
ALL_TASKS = TASKS | BUNDLED_TASKS
BUNDLED_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "corpus", "tasks"
)
BUNDLED = "bundled"


def get_task(task: str) -> TaskSpec:
    if task not in ALL_TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(ALL_TASKS)}")
    return ALL_TASKS[task]


def resolve_source(task: str, data: str | None) -> str:
    """The JSONL file (or tfds spec) `load_task` reads for `task` given `data`."""
    get_task(task)
    if data is None or data in ("", BUNDLED):
        if task not in BUNDLED_TASKS:
            raise ValueError(
                f"task {task!r} is not bundled; give --data DIR holding {task}.jsonl (build it "
                "with `colajax data eval-sets`) or --data tfds. Bundled tasks: "
                + ", ".join(BUNDLED_TASKS)
            )
        return os.path.join(BUNDLED_DIR, f"{task}.jsonl")
    if data == "tfds" or data.startswith("tfds:"):
        return data
    if os.path.isdir(data):
        path = os.path.join(data, f"{task}.jsonl")
        if task in BUNDLED_TASKS and not os.path.exists(path):
            return os.path.join(BUNDLED_DIR, f"{task}.jsonl")
        return path
    return data


def _answer_text(spec: TaskSpec, raw: dict, choices) -> str:
    if "answer" in raw and "ground_truth" in raw and raw["answer"] != raw["ground_truth"]:
        raise ValueError("'answer' and 'ground_truth' differ; give only one")
    answer = raw.get("ground_truth", raw.get("answer"))
    if answer is None:
        raise ValueError("missing 'answer' (or 'ground_truth'), the reference answer text")
    if spec.kind == "choice" and isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise ValueError(f"answer index {answer} is outside the {len(choices)} choices")
        return choices[answer]
    if not isinstance(answer, str):
        raise ValueError(f"answer must be a string, got {type(answer).__name__}")
    if spec.kind == "choice":
        norms = [scoring.normalize(c) for c in choices]
        if scoring.normalize(answer) not in norms:
            raise ValueError(
                f"answer {answer!r} is not one of the choices; give the option text "
                "(or its 0-based index), not a letter"
            )
    return answer


def validate_record(task: str, raw: dict, index: int) -> dict:
    """Check one raw record against the schema; returns the normalised record."""
    spec = get_task(task)
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    question = raw.get("question")
    if not isinstance(question, str):
        raise ValueError("missing or non-string 'question'")
    context = raw.get("context", "")
    if context is None:
        context = ""
    if not isinstance(context, str):
        raise ValueError("'context' must be a string")
    if task == "squad" and not context:
        raise ValueError("task 'squad' needs a non-empty 'context' (the paragraph)")
    choices = None
    if spec.kind == "choice":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise ValueError("missing 'choices', a list of option strings")
        if len(choices) != spec.n_choices:
            raise ValueError(f"{task} needs {spec.n_choices} choices, got {len(choices)}")
    record_id = raw.get("id", index)
    if not isinstance(record_id, int | str):
        raise ValueError("'id' must be an int or a string")
    return {
        "id": record_id,
        "question": question,
        "context": context,
        "choices": choices,
        "ground_truth": _answer_text(spec, raw, choices),
    }


def _check_limit(limit):
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def load_jsonl(task: str, path: str, limit: int | None = None) -> list[dict]:
    """Validated records of a task JSONL file (the first `limit` if given)."""
    get_task(task)
    _check_limit(limit)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task file {path} not found; write {task}.jsonl (see schema)")
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
            try:
                records.append(validate_record(task, raw, len(records)))
            except ValueError as err:
                raise ValueError(f"{path}:{line_no}: {err}") from None
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


def load_task(
    task: str, data: str | None, limit: int | None = None, *, tfds_data_dir: str | None = None
) -> list[dict]:
    """Records of `task` from `<data>/<task>.jsonl`, a JSONL file, `tfds[:<name>[@<split>]]`,
    or (bundled tasks; `data` None, '' or 'bundled') the bundled file (`resolve_source`)."""
    source = resolve_source(task, data)
    if source == "tfds" or source.startswith("tfds:"):
        name, _, split = source[len("tfds:") :].partition("@")
        return load_tfds(task, name or None, split or None, tfds_data_dir, limit)
    return load_jsonl(task, source, limit)


# --- tfds readers: map one decoded tfds record to raw records of the JSONL schema -------------


def _map_lambada(rec: dict, index: int) -> list[dict]:
    head, sep, last = rec["passage"].strip().rpartition(" ")
    if not sep:
        raise ValueError("lambada passage has no last word to predict")
    return [{"id": index, "question": head, "answer": last}]


def _map_squad(rec: dict, index: int) -> list[dict]:
    answers = rec["answers"]["text"]
    if not answers:
        raise ValueError("squad record without an answer")
    return [
        {
            "id": rec["id"],
            "context": rec["context"],
            "question": rec["question"],
            "answer": answers[0],
        }
    ]


def _map_obqa(rec: dict, index: int) -> list[dict]:
    q = rec["question"]
    choices = [q[f"choice_{letter}"] for letter in "ABCD"]
    return [{"id": index, "question": q["stem"], "choices": choices, "answer": rec["answerKey"]}]


def _map_endings(rec: dict, index: int, label_offset: int) -> list[dict]:
    label = int(rec["label"]) - label_offset
    if label < 0:
        raise ValueError("record has no label (an unlabelled split?); use a labelled split")
    return [{"id": index, "question": rec["context"], "choices": rec["endings"], "answer": label}]


def _map_race(rec: dict, index: int) -> list[dict]:
    article = rec["article"].strip()
    rows = []
    for k, (question, options, letter) in enumerate(
        zip(rec["questions"], rec["options"], rec["answers"], strict=True)
    ):
        rows.append(
            {
                "id": f"{rec['example_id']}-{k}",
                "question": f"{article} {question.strip()}",
                "choices": list(options),
                "answer": ord(letter.strip().upper()) - ord("A"),
            }
        )
    return rows


TFDS_MAPPERS = {
    "lambada": _map_lambada,
    "squad": _map_squad,
    "obqa": _map_obqa,
    "hellaswag": lambda rec, i: _map_endings(rec, i, 0),
    "story_cloze": lambda rec, i: _map_endings(rec, i, 1),  # AnswerRightEnding is 1-based
    "race": _map_race,
}


def _to_python(value):
    """Decoded tfds values (bytes, numpy scalars/arrays, nested) as plain Python."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _to_python(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_to_python(v) for v in value]
    return value


def load_tfds(
    task: str,
    name: str | None = None,
    split: str | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Validated records of `task` from a prepared tfds dataset (via `tfds.data_source`)."""
    spec = get_task(task)
    _check_limit(limit)
    if task not in TFDS_MAPPERS:
        raise ValueError(f"task {task!r} has no tfds reader; give a JSONL file (see schema)")
    name, split = name or spec.tfds_name, split or spec.tfds_split
    import tensorflow_datasets as tfds  # lazy: only this path needs it

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises many types for a missing / unprepared dataset
        raise FileNotFoundError(
            f"tfds dataset {name!r} split {split!r} is not available in data_dir={data_dir!r} "
            f"({type(err).__name__}: {err}); prepare it first (array_record) or give a JSONL file"
        ) from None
    records = []
    for i in range(len(source)):
        if limit is not None and len(records) >= limit:
            break
        try:
            rows = TFDS_MAPPERS[task](_to_python(source[i]), i)
            records += [validate_record(task, raw, len(records) + k) for k, raw in enumerate(rows)]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"tfds {name}[{split}] record {i} does not fit the {task} reader: {err!r}"
            ) from None
    records = records[:limit]
    if not records:
        raise ValueError(f"tfds {name}[{split}] holds no records")
    return records
