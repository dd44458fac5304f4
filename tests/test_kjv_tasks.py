"""Bundled offline eval tasks (held-out KJV): builder, loader, templates, scoring, runner."""

import json
import os

import pytest

from colajax.cli import eval_score
from colajax.data.corpus import build_kjv_tasks
from colajax.eval import benchmark, scoring, tasks, templates


def test_builder_is_deterministic_and_matches_the_bundled_files(tmp_path):
    counts = build_kjv_tasks.build(str(tmp_path))
    assert counts == {"kjv_lastword": 310, "kjv_nextverse": 240, "nextverse_answer_b": 133}
    for name in tasks.BUNDLED_TASKS:
        built = (tmp_path / f"{name}.jsonl").read_bytes()
        with open(os.path.join(tasks.BUNDLED_DIR, f"{name}.jsonl"), "rb") as f:
            assert built == f.read(), f"{name}: rerun python -m colajax.data.corpus.build_kjv_tasks"


def test_items_use_only_held_out_chapters():
    valid = {h for h, _ in build_kjv_tasks.read_chapters()}
    for name in tasks.BUNDLED_TASKS:
        records = tasks.load_task(name, None)
        assert {str(r["id"]).rsplit(":", 1)[0] for r in records} <= valid
        assert len({r["id"] for r in records}) == len(records)


def test_loader_sources(tmp_path):
    last = tasks.load_task("kjv_lastword", None)
    assert len(last) == 310 and tasks.get_task("kjv_lastword").kind == "free"
    assert tasks.load_task("kjv_lastword", "bundled", limit=3) == last[:3]
    assert tasks.load_task("kjv_lastword", str(tmp_path)) == last  # dir without it: bundled
    for r in last:
        assert r["choices"] is None and len(r["ground_truth"]) >= 3
        assert r["ground_truth"].lower() in r["question"].lower()  # the context holds the word
        assert not r["question"].endswith(" ")
    nxt = tasks.load_task("kjv_nextverse", "")
    assert len(nxt) == 240
    for r in nxt:
        assert len(r["choices"]) == 2 and r["ground_truth"] in r["choices"]
    # a file in the data directory wins over the bundled one
    own = {"question": "q", "choices": ["a", "b"], "answer": 1}
    (tmp_path / "kjv_nextverse.jsonl").write_text(json.dumps(own) + "\n")
    assert tasks.load_task("kjv_nextverse", str(tmp_path))[0]["ground_truth"] == "b"
    with pytest.raises(ValueError, match="'mmlu' is not bundled.*colajax data eval-sets"):
        tasks.load_task("mmlu", None)
    assert list(tasks.TASKS)[-1] == "story_cloze" and len(tasks.TASKS) == 8  # paper set intact


def test_templates():
    rec = tasks.load_task("kjv_lastword", None, limit=1)[0]
    assert templates.prompt_for_record("kjv_lastword", rec) == rec["question"]  # 0-shot, raw
    rec = tasks.load_task("kjv_nextverse", None, limit=1)[0]
    prompt = templates.prompt_for_record("kjv_nextverse", rec)
    a, b = rec["choices"]
    query = f"Verse: {rec['question']}\nWhich verse comes next?\n(A) {a}\n(B) {b}\nAnswer:"
    assert prompt.endswith("\n\n" + query)
    prefix = templates.few_shot_prefix("kjv_nextverse")
    assert prefix.count("\nAnswer: ") == 2 == tasks.get_task("kjv_nextverse").shots
    assert prefix.startswith("Verse: And God said, Let there be light")
    for demo in templates.DEMOS["kjv_nextverse"]:
        assert demo.answer in demo.choices


def test_scoring_correct_and_wrong_generations():
    ok = scoring.score_row("kjv_lastword", " Isaac, and he said\nmore", "Isaac")
    assert ok["correct"] and ok["extracted"] == "isaac"
    assert not scoring.score_row("kjv_lastword", " Abraham", "Isaac")["correct"]
    choices = ["The eyes of the LORD are in every place.", "And God saw the light."]
    gold = choices[1]
    for gen, correct in [
        (" And God saw the light.", True),
        (" (B)", True),
        (" and god saw the light\nVerse: x", True),  # first line, normalised text
        (" The eyes of the LORD are in every place.", False),
        (" (A)", False),
        (" something else", False),
    ]:
        got = scoring.score_row("kjv_nextverse", gen, gold, choices)
        assert got["correct"] is correct, gen
    assert "kjv_lastword" not in scoring.SCORED_TASKS  # the official-fixture set stays 8


def test_runner_and_rescoring(tmp_path):
    records = tasks.load_task("kjv_nextverse", None, limit=6)

    def fake(prompts, numbers):  # right answer text for even record numbers, else the other
        out = []
        for n in numbers:
            r = records[n]
            wrong = [c for c in r["choices"] if c != r["ground_truth"]][0]
            out.append(" " + (r["ground_truth"] if n % 2 == 0 else wrong))
        return out

    rows, acc = benchmark.run_task("kjv_nextverse", records, fake, batch_size=4, progress=False)
    assert acc == pytest.approx(50.0)
    assert [r["correct"] for r in rows] == [True, False] * 3
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert eval_score.score_file("kjv_nextverse", str(path))["accuracy"] == 50.0
