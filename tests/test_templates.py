"""Prompt templates: byte-exact parity with the official prompts in shared/eval_fixtures."""

import json
import pathlib

import pytest

from colajax.eval import tasks, templates
from colajax.eval.templates import apply_prompt_template, few_shot_prefix

FIXTURES = pathlib.Path("/work/shared/eval_fixtures")


def _rows(task):
    return [json.loads(line) for line in (FIXTURES / f"{task}.jsonl").read_text().splitlines()]


def _split_query(task, query, choices):
    """(question, context) of an official query, given the known head and option block.

    The fixtures hold only the full prompt, so the question is cut out between the task's
    head (`Question: `, ...) and its option block; asserting the head and tail exist checks
    the query layout, and regenerating the prompt from the pieces checks everything else.
    """
    if task == "squad":
        assert query.startswith("Context: ") and query.endswith("\nAnswer:")
        context, sep, question = query[len("Context: ") : -len("\nAnswer:")].rpartition(
            "\nQuestion: "
        )
        assert sep
        return question, context
    head = {"hellaswag": "Context: ", "race": "Article: ", "story_cloze": "Story: "}.get(
        task, "Question: "
    )
    options = ("\nOptions:\n" if task == "race" else "\n") + templates.format_options(choices)
    tail = options + ("\nEnd:" if task == "story_cloze" else "\nAnswer:")
    assert query.startswith(head) and query.endswith(tail)
    return query[len(head) : -len(tail)], None


@pytest.mark.parametrize("task", [t for t in tasks.TASKS if t != "lambada"])
def test_prompts_match_official_fixture_prompts(task):
    prefix = few_shot_prefix(task)
    for row in _rows(task):
        assert row["prompt"].startswith(prefix), f"{task} id={row['id']}: few-shot prefix differs"
        choices = row.get("choices")
        question, context = _split_query(task, row["prompt"][len(prefix) :], choices)
        assert question and "\n(A) " not in question
        got = apply_prompt_template(task, question, context=context, choices=choices)
        assert got == row["prompt"], f"{task} id={row['id']}"


def test_lambada_prompt_is_the_passage():
    for row in _rows("lambada"):
        assert apply_prompt_template("lambada", row["prompt"]) == row["prompt"]
    assert few_shot_prefix("lambada") == ""


def test_unknown_task_returns_raw_question():
    assert apply_prompt_template("openai", "hi\nthere", choices=["x"]) == "hi\nthere"


@pytest.mark.parametrize("task", list(tasks.TASKS))
def test_shot_counts_match_registry(task):
    prefix = few_shot_prefix(task)
    assert len(templates.DEMOS.get(task, [])) == tasks.TASKS[task].shots
    anchor = "\nEnd: " if task == "story_cloze" else "\nAnswer: "
    assert prefix.count(anchor) == tasks.TASKS[task].shots
    assert prefix == "" or prefix.endswith("\n\n")


GOLDEN_QUERIES = {
    "mmlu": (
        ("Q?", None, ["a", "b", "c", "d"]),
        "Question: Q?\n(A) a\n(B) b\n(C) c\n(D) d\nAnswer:",
    ),
    "obqa": (
        ("Q?", None, ["a", "b", "c", "d"]),
        "Question: Q?\n(A) a\n(B) b\n(C) c\n(D) d\nAnswer:",
    ),
    "siqa": (("Q?", None, ["a", "b", "c"]), "Question: Q?\n(A) a\n(B) b\n(C) c\nAnswer:"),
    "hellaswag": (
        ("He", None, ["a", "b", "c", "d"]),
        "Context: He\n(A) a\n(B) b\n(C) c\n(D) d\nAnswer:",
    ),
    "race": (
        ("Art. Q?", None, ["a", "b", "c", "d"]),
        "Article: Art. Q?\nOptions:\n(A) a\n(B) b\n(C) c\n(D) d\nAnswer:",
    ),
    "story_cloze": (("S.", None, ["e1", "e2"]), "Story: S.\n(A) e1\n(B) e2\nEnd:"),
    "squad": (("Q?", "P.", None), "Context: P.\nQuestion: Q?\nAnswer:"),
}


@pytest.mark.parametrize("task", list(GOLDEN_QUERIES))
def test_golden_query_layout(task):
    (question, context, choices), query = GOLDEN_QUERIES[task]
    prompt = apply_prompt_template(task, question, context=context, choices=choices)
    assert prompt == few_shot_prefix(task) + query


def test_golden_demonstration_texts():
    assert few_shot_prefix("squad").endswith(
        "Question: In what country is Normandy located?\nAnswer: France\n\n"
    )
    assert few_shot_prefix("race").startswith(
        "Read the following article and answer the question.\n\nArticle: Mary went to the store"
    )
    assert "\n(C) screwdriver\n(D) paintbrush\nAnswer: screwdriver\n\n" in few_shot_prefix("obqa")
    assert few_shot_prefix("story_cloze").endswith("End: He won the gold medal.\n\n")


def test_template_errors():
    with pytest.raises(ValueError, match="needs `choices`"):
        apply_prompt_template("mmlu", "Q?")
    with pytest.raises(ValueError, match="exactly 2 choices"):
        apply_prompt_template("story_cloze", "S.", choices=["a", "b", "c"])
    with pytest.raises(ValueError, match="context"):
        apply_prompt_template("squad", "Q?")
    with pytest.raises(ValueError, match="question must be a string"):
        apply_prompt_template("mmlu", None, choices=["a"])


def test_prompt_for_record_uses_record_fields():
    record = {"question": "Q?", "context": "", "choices": ["a", "b", "c"], "ground_truth": "a"}
    assert templates.prompt_for_record("siqa", record) == apply_prompt_template(
        "siqa", "Q?", choices=["a", "b", "c"]
    )
