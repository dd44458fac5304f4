"""Scoring rules of the paper's 8-task generative benchmark (official `scripts/acc_calc.py`).

A clean reimplementation of the official rules (spec §8.3); it reproduces every official
`correct` label in `shared/eval_fixtures/`. Nothing here reads or writes files.

* Only the **first line** of a generation is scored: the text up to the first `"\\n"` whose
  preceding text contains a word character (`\\w`). Applying it twice changes nothing, so rows
  that were already cut to their first line score the same.
* `normalize(s)`: lower-case, strip, delete everything that is neither `\\w` nor whitespace,
  collapse whitespace (which also strips). All matching is exact equality of normalised text.
* The bundled KJV tasks reuse these rules: kjv_lastword as lambada, kjv_nextverse as the
  letter tasks (an option letter or the option's text).
* lambada: first word of the normalised generation == first word of the normalised answer.
* hellaswag, story_cloze, squad: normalised generation == normalised answer.
* mmlu, obqa, race, siqa: a predicted option letter (answer segment, bare / keyword / bracketed
  letter, then option-text matching) equal to the gold letter (same steps on the answer text),
  or else normalised generation == normalised answer.
* Task accuracy is in percent; the benchmark average is the plain mean of task accuracies.
"""

import difflib
import re

LETTER_TASKS = ("mmlu", "obqa", "race", "siqa", "kjv_nextverse")
EXACT_TASKS = ("hellaswag", "story_cloze", "squad")
FIRST_WORD_TASKS = ("lambada", "kjv_lastword")
SCORED_TASKS = ("lambada", "mmlu", "obqa", "hellaswag", "race", "siqa", "squad", "story_cloze")
BUNDLED_TASKS = ("kjv_lastword", "kjv_nextverse")  # offline KJV tasks (colajax.eval.tasks)
ALL_TASKS = SCORED_TASKS + BUNDLED_TASKS
FUZZY_MIN_RATIO = 0.9  # option-text fallback: difflib ratio needed to accept the best option
SHORT_TEXT_CHARS = 40  # bracketed letters anywhere count only in texts up to this length

_WORD_RE = re.compile(r"\w")
_NOT_WORD_OR_SPACE_RE = re.compile(r"[^\w\s]")
_SEGMENT_RE = re.compile(r"(?i)\b(?:final\s+answer|answer)\b\s*(?:is|=|:|：)?\s*(.+)$")
_BARE_LETTER_RE = re.compile(r"[\(\[]?\s*([A-Za-z])\s*[\)\]]?\.?")
_KEYWORD_LETTER_RE = re.compile(
    r"(?i)\b(?:final\s+answer|answer|option|choice)\b\s*(?:is|=|:|：)?\s*"
    r"[\(\[]?\s*([A-Za-z])\s*[\)\]]?(?=\s|$|[.,;:!?])"
)
_BRACKET_LETTER_RE = re.compile(r"[\(\[]\s*([A-Za-z])\s*[\)\]]")
_LEADING_PHRASE_RE = re.compile(
    r"(?i)^(the\s+)?(correct\s+)?(final\s+)?(answer|option|choice)\b\s*(is|=|:|：)?\s*"
)


def first_line(text: str) -> str:
    """The scored part of a generation: up to the first newline preceded by a word character."""
    start = 0
    while (idx := text.find("\n", start)) != -1:
        if _WORD_RE.search(text, 0, idx):
            return text[:idx]
        start = idx + 1
    return text


def normalize(text: str) -> str:
    """Lower-case, drop non-word non-space characters, collapse and strip whitespace."""
    return " ".join(_NOT_WORD_OR_SPACE_RE.sub("", text.lower().strip()).split())


def similarity(a: str, b: str) -> float:
    """difflib ratio of the normalised strings (1.0 when both are empty)."""
    a_norm, b_norm = normalize(a), normalize(b)
    if not a_norm and not b_norm:
        return 1.0
    return difflib.SequenceMatcher(None, a_norm, b_norm).ratio()


def first_word(text: str) -> str:
    """First whitespace token of the normalised text ('' if none)."""
    words = normalize(text).split()
    return words[0] if words else ""


def answer_segment(text: str) -> str:
    """Text after the last line's `answer` / `final answer` keyword, else the stripped text."""
    stripped = text.strip()
    lines = [line.strip() for line in stripped.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _SEGMENT_RE.search(line)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return stripped


def _valid(letter: str, n_choices: int) -> str:
    letter = letter.upper()
    return letter if 0 <= ord(letter) - ord("A") < n_choices else ""


def letter_from_text(text: str, n_choices: int) -> str:
    """Steps 1-3: a bare letter, a keyword letter, or a bracketed letter in a short text."""
    stripped = text.strip()
    if not stripped:
        return ""
    bare = _BARE_LETTER_RE.fullmatch(stripped)
    if bare and (letter := _valid(bare.group(1), n_choices)):
        return letter
    keyword = _KEYWORD_LETTER_RE.findall(stripped)
    if keyword and (letter := _valid(keyword[-1], n_choices)):
        return letter
    if len(stripped) <= SHORT_TEXT_CHARS:
        bracketed = _BRACKET_LETTER_RE.findall(stripped)
        if bracketed:
            return _valid(bracketed[-1], n_choices)
    return ""


def letter_from_choices(text: str, choices: list[str]) -> str:
    """Step 4: exact option text, after a leading 'the answer is', unique containment, fuzzy."""
    text_norm = normalize(text)
    if not text_norm or not choices:
        return ""
    choice_norms = [normalize(choice) for choice in choices]
    if text_norm in choice_norms:
        return chr(ord("A") + choice_norms.index(text_norm))
    cleaned = _LEADING_PHRASE_RE.sub("", text).strip()
    cleaned_norm = normalize(cleaned)
    if not cleaned_norm:
        return ""
    if cleaned_norm in choice_norms:
        return chr(ord("A") + choice_norms.index(cleaned_norm))
    contained = [i for i, c in enumerate(choice_norms) if c and c in cleaned_norm]
    if len(contained) == 1:
        return chr(ord("A") + contained[0])
    best_idx, best_ratio = -1, 0.0
    for i, choice in enumerate(choices):
        ratio = similarity(cleaned, choice)
        if ratio > best_ratio:
            best_idx, best_ratio = i, ratio
    return chr(ord("A") + best_idx) if best_ratio >= FUZZY_MIN_RATIO else ""


def predicted_letter(generation: str, choices: list[str]) -> str:
    """Option letter read from a (first-line) generation: answer segment first, then all of it."""
    n_choices = min(len(choices), 26)
    if n_choices == 0:
        return ""
    for candidate in (answer_segment(generation), generation):
        letter = letter_from_text(candidate, n_choices) or letter_from_choices(candidate, choices)
        if letter:
            return letter
    return ""


def gold_letter(ground_truth: str, choices: list[str]) -> str:
    """Option letter of the reference answer text (steps 1-4, no answer segment)."""
    n_choices = min(len(choices), 26)
    if n_choices == 0:
        return ""
    return letter_from_text(ground_truth, n_choices) or letter_from_choices(ground_truth, choices)


def _check_task(task: str) -> None:
    if task not in ALL_TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(ALL_TASKS)}")


def score_row(task: str, generation: str, ground_truth: str, choices=None) -> dict:
    """Score one generation: `{"correct": bool, "extracted": ..., "extracted_gt": ...}`.

    `extracted` is the first word (lambada), the option letter ('' if none; letter tasks) or the
    normalised first line (exact-match tasks); `extracted_gt` is the same for the reference.
    """
    _check_task(task)
    if not isinstance(generation, str) or not isinstance(ground_truth, str):
        raise ValueError("generation and ground_truth must be strings")
    generation = first_line(generation)
    if task in FIRST_WORD_TASKS:
        gen_word, gt_word = first_word(generation), first_word(ground_truth)
        return {"correct": gen_word == gt_word, "extracted": gen_word, "extracted_gt": gt_word}
    exact = normalize(generation) == normalize(ground_truth)
    if task in EXACT_TASKS:
        return {
            "correct": exact,
            "extracted": normalize(generation),
            "extracted_gt": normalize(ground_truth),
        }
    if not isinstance(choices, list | tuple) or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"task {task!r} needs `choices`, a list of option strings")
    pred, gold = predicted_letter(generation, list(choices)), gold_letter(ground_truth, choices)
    correct = bool(pred and gold and pred == gold) or exact
    return {"correct": correct, "extracted": pred, "extracted_gt": gold}


def row_fields(row: dict) -> tuple[str, str, list | None]:
    """(generation, ground_truth, choices) of a result row; raises ValueError naming a gap."""
    generation = row.get("generation", row.get("generate"))
    if generation is None:
        raise ValueError("missing field 'generation' (or 'generate')")
    ground_truth = row.get("ground_truth", row.get("answer"))
    if ground_truth is None:
        raise ValueError("missing field 'ground_truth' (or 'answer')")
    return generation, ground_truth, row.get("choices")


def score_rows(task: str, rows: list[dict]) -> tuple[list[dict], float]:
    """Score result rows; returns (copies of the rows with the score fields added, accuracy %)."""
    _check_task(task)
    if not rows:
        raise ValueError(f"no rows to score for task {task!r}")
    scored = []
    for i, row in enumerate(rows):
        try:
            result = score_row(task, *row_fields(row))
        except ValueError as err:
            raise ValueError(f"row {i} (id {row.get('id')!r}): {err}") from None
        scored.append({**row, **result})
    accuracy = 100.0 * sum(r["correct"] for r in scored) / len(scored)
    return scored, accuracy


def summary(accs: dict[str, float]) -> dict[str, float]:
    """Per-task accuracies plus `average`, the plain mean over the given tasks."""
    if not accs:
        raise ValueError("no task accuracies to summarise")
    return {**accs, "average": sum(accs.values()) / len(accs)}
