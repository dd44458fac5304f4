"""Scoring rules: parity with the official labels in shared/eval_fixtures, and `eval score`."""

import hashlib
import json
import pathlib

import pytest

from colajax.cli import eval_score as score_cli
from colajax.eval import scoring

FIXTURES = pathlib.Path("/work/shared/eval_fixtures")
TASKS = scoring.SCORED_TASKS


def _rows(task):
    return [json.loads(line) for line in (FIXTURES / f"{task}.jsonl").read_text().splitlines()]


def _mismatches(task, rows, scored):
    return [
        f"  id={r['id']!r} case={r['case']} official={r['correct']} ours={s['correct']} "
        f"extracted={s['extracted']!r}/{s['extracted_gt']!r} gen={r['generation']!r} "
        f"gt={r['ground_truth']!r}"
        for r, s in zip(rows, scored)
        if r["correct"] != s["correct"]
    ]


@pytest.mark.parametrize("task", TASKS)
def test_reproduces_every_official_label(task):
    rows = _rows(task)
    scored, accuracy = scoring.score_rows(task, rows)
    bad = _mismatches(task, rows, scored)
    assert not bad, f"{task}: {len(bad)} rows differ from the official verdict:\n" + "\n".join(bad)
    official = 100.0 * sum(r["correct"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(official)
    assert accuracy == pytest.approx(100.0 * 5 / 12)  # README: 5 of 12 correct in every file


@pytest.mark.parametrize("task", TASKS)
def test_first_line_rule_and_idempotence_on_raw_output(task):
    rows = _rows(task)
    for r in rows:
        assert scoring.first_line(r["raw_generation"]) == r["generation"], r["id"]
        assert scoring.first_line(r["generation"]) == r["generation"], r["id"]
    raw_rows = [{**r, "generation": r["raw_generation"]} for r in rows]
    scored, _ = scoring.score_rows(task, raw_rows)
    assert not _mismatches(task, rows, scored)


def test_score_rows_returns_copies_and_leaves_inputs_alone():
    rows = _rows("mmlu")
    before = json.dumps(rows)
    scored, _ = scoring.score_rows("mmlu", rows)
    assert json.dumps(rows) == before
    by_id = {r["id"]: r for r in scored}
    assert (by_id[896]["extracted"], by_id[896]["extracted_gt"]) == ("A", "D")  # r = k [A]^2
    assert (by_id[917]["extracted"], by_id[917]["extracted_gt"]) == ("D", "D")  # " (D)"
    assert by_id[729]["extracted"] == ""  # no letter, no matching option


def test_normalize_and_first_line():
    assert scoring.normalize("  Tiffany &  Co. ") == "tiffany co"
    assert scoring.normalize(" ,  people  Are\tHERE!") == "people are here"
    assert scoring.normalize("Mairi's café") == "mairis café"
    assert scoring.first_line(" \n(B) \n) rest") == " \n(B) "
    assert scoring.first_line(".\n\n she x\nmore") == ".\n\n she x"
    assert scoring.first_line("no newline") == "no newline"
    assert scoring.first_word(' rough."') == "rough"


CHOICES = ["cold", "water", "heat", "humidity"]


@pytest.mark.parametrize(
    "generation, letter",
    [
        (" C", "C"),
        ("(c).", "C"),
        ("[ b ]", "B"),
        (" E", ""),  # beyond the 4 choices; no text match either
        ("The answer is (D).", "D"),
        ("I think so.\nFinal answer: B", "B"),
        ("option c, clearly", "C"),
        ("it is heat", "C"),  # unique option contained
        ("the answer is water", "B"),  # segment after 'answer' matches the option text
        ("correct answer: humidty", "D"),  # fuzzy ratio >= 0.9
        ("wet heat and water", ""),  # two options contained, no fuzzy match
    ],
)
def test_predicted_letter_routes(generation, letter):
    assert scoring.predicted_letter(generation, CHOICES) == letter


def test_letter_task_correctness():
    assert scoring.score_row("obqa", " (C)", "heat", CHOICES)["correct"]
    assert not scoring.score_row("obqa", " (A)", "heat", CHOICES)["correct"]
    # no letter on either side: falls back to exact normalised match
    assert scoring.score_row("siqa", " Heat!", "heat", ["x", "y", "z"])["correct"]


def test_exact_and_first_word_tasks():
    assert scoring.score_row("squad", " The 50th Super Bowl", "the 50th Super Bowl")["correct"]
    assert not scoring.score_row("squad", " In 1946 or 1947", "1946")["correct"]
    assert not scoring.score_row("hellaswag", " (A)", "x", ["x", "y", "z", "w"])["correct"]
    assert scoring.score_row("lambada", " game?” more", "game")["correct"]
    assert not scoring.score_row("lambada", " Mairi's place", "Mairi")["correct"]


def test_score_errors():
    with pytest.raises(ValueError, match="unknown task 'gsm8k'"):
        scoring.score_row("gsm8k", "a", "a")
    with pytest.raises(ValueError, match="needs `choices`"):
        scoring.score_row("mmlu", "a", "a")
    with pytest.raises(ValueError, match="row 0 .*ground_truth"):
        scoring.score_rows("squad", [{"generation": "x"}])
    with pytest.raises(ValueError, match="no rows"):
        scoring.score_rows("squad", [])


def test_summary_reproduces_official_average():
    counts = {
        "lambada": (508, 1000),
        "mmlu": (193, 1000),
        "obqa": (115, 500),
        "hellaswag": (107, 1000),
        "race": (196, 1000),
        "siqa": (289, 1000),
        "squad": (309, 1000),
        "story_cloze": (144, 468),
    }
    out = scoring.summary({t: 100.0 * c / n for t, (c, n) in counts.items()})
    assert f"{out['story_cloze']:.2f}" == "30.77"
    assert f"{out['average']:.2f}" == "26.75"
    with pytest.raises(ValueError):
        scoring.summary({})


# --- colajax eval score ----------------------------------------------------------------------


def _digest(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("task", ["mmlu", "lambada", "squad"])
def test_cli_scores_fixture_file(task, tmp_path, capsys):
    src = FIXTURES / f"{task}.jsonl"
    digest = _digest(src)
    rc = score_cli.main(["--task", task, "--generations", str(src), "--out", str(tmp_path)])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"task": task, "rows": 12, "accuracy": 41.6667}
    assert _digest(src) == digest
    scored = [json.loads(x) for x in (tmp_path / f"{task}_scored.jsonl").read_text().splitlines()]
    official = _rows(task)
    assert [s["correct"] for s in scored] == [r["correct"] for r in official]
    assert all({"extracted", "extracted_gt", "generation", "id"} <= set(s) for s in scored)


def test_cli_accepts_generate_and_answer_keys(tmp_path, capsys):
    path = tmp_path / "g.jsonl"
    rows = [
        {"generate": " France\n\nContext: x", "answer": "France"},
        {"generate": "x", "answer": "y"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert score_cli.main(["--task", "squad", "--generations", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"task": "squad", "rows": 2, "accuracy": 50.0}


def _run_bad(args, capsys):
    rc = score_cli.main(args)
    captured = capsys.readouterr()
    assert rc != 0 and captured.out == ""
    return captured.err


def test_cli_errors(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert "not found" in _run_bad(["--task", "squad", "--generations", str(missing)], capsys)

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"generation": "a", "ground_truth": "a"}\n{"generation": \n')
    err = _run_bad(["--task", "squad", "--generations", str(bad_json)], capsys)
    assert f"{bad_json}:2: invalid JSON" in err

    good = tmp_path / "good.jsonl"
    good.write_text('{"generation": "a", "ground_truth": "a"}\n')
    assert "unknown task 'nope'" in _run_bad(["--task", "nope", "--generations", str(good)], capsys)

    no_gt = tmp_path / "no_gt.jsonl"
    no_gt.write_text('{"generation": "a", "ground_truth": "a"}\n\n{"generation": "b"}\n')
    err = _run_bad(["--task", "squad", "--generations", str(no_gt)], capsys)
    assert f"{no_gt}:3: missing field 'ground_truth'" in err

    err = _run_bad(["--task", "mmlu", "--generations", str(good)], capsys)
    assert f"{good}:1:" in err and "choices" in err


def test_cli_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = tmp_path / "squad_scored.jsonl"
    src.write_text('{"generation": "a", "ground_truth": "a"}\n')
    digest = _digest(src)
    err = _run_bad(["--task", "squad", "--generations", str(src), "--out", str(tmp_path)], capsys)
    assert "overwrite the input" in err
    assert _digest(src) == digest
