"""Prompt templates and fixed few-shot demonstrations of the 8-task benchmark (spec §8.2).

Every task has one query format; each demonstration is rendered with that same format followed
by `" " + answer text + "\\n\\n"` (the answers are option *texts*, never letters), so a prompt is

    INSTRUCTIONS[task] + demonstrations + query(question, context, choices)

and ends at the anchor (`Answer:`, or `End:` for story_cloze) without a trailing space. The
demonstration texts are the official harness's, byte for byte (checked against the prompts in
`shared/eval_fixtures/`). lambada, kjv_lastword and unknown task names (e.g. a chat adapter's
"openai") use the raw question. The bundled kjv_nextverse task's two demonstrations are verse
pairs from the KJV *training* chapters (Genesis 1:3-4, John 11:5-6).
"""

from typing import NamedTuple


class Demo(NamedTuple):
    question: str
    choices: tuple[str, ...] = ()
    answer: str = ""
    context: str = ""


QUERY_FORMATS = {
    "squad": "Context: {context}\nQuestion: {question}\nAnswer:",
    "obqa": "Question: {question}\n{options}\nAnswer:",
    "mmlu": "Question: {question}\n{options}\nAnswer:",
    "hellaswag": "Context: {question}\n{options}\nAnswer:",
    "race": "Article: {question}\nOptions:\n{options}\nAnswer:",
    "siqa": "Question: {question}\n{options}\nAnswer:",
    "story_cloze": "Story: {question}\n{options}\nEnd:",
    "kjv_nextverse": "Verse: {question}\nWhich verse comes next?\n{options}\nAnswer:",
}

INSTRUCTIONS = {"race": "Read the following article and answer the question.\n\n"}

_NORMANS = (
    "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in "
    "the 10th and 11th centuries gave their name to Normandy, a region in France. They were "
    "descended from Norse raiders and pirates from Denmark, Iceland and Norway."
)

DEMOS = {
    "squad": [Demo("In what country is Normandy located?", (), "France", _NORMANS)],
    "obqa": [
        Demo(
            "Which tool is best for tightening a screw?",
            ("spoon", "hammer", "screwdriver", "paintbrush"),
            "screwdriver",
        ),
        Demo(
            "What do plants absorb from the air during photosynthesis?",
            ("carbon dioxide", "oxygen", "helium", "salt"),
            "carbon dioxide",
        ),
    ],
    "mmlu": [
        Demo(
            "Which gas do plants absorb from the air during photosynthesis?",
            ("Oxygen", "Carbon dioxide", "Nitrogen", "Hydrogen"),
            "Carbon dioxide",
        ),
        Demo(
            "A triangle has angles 50 degrees and 60 degrees. What is the third angle?",
            ("60 degrees", "70 degrees", "80 degrees", "90 degrees"),
            "70 degrees",
        ),
    ],
    "hellaswag": [
        Demo(
            "The girl puts the bread into the toaster and pushes the lever down. The bread",
            (
                "becomes a slice of pizza.",
                "starts to toast and turn brown.",
                "disappears immediately.",
                "turns into a glass of water.",
            ),
            "starts to toast and turn brown.",
        ),
        Demo(
            "The goalkeeper sees the ball coming towards the net. He dives and",
            (
                "catches the ball with his hands.",
                "starts dancing in the field.",
                "opens a laptop to check email.",
                "runs away from the stadium.",
            ),
            "catches the ball with his hands.",
        ),
    ],
    "race": [
        Demo(
            "Mary went to the store to buy some fruits. She bought five apples and two oranges. "
            "She paid 5 dollars in total. What did Mary buy?",
            ("Bananas", "Apples and oranges", "Grapes", "Watermelon"),
            "Apples and oranges",
        ),
    ],
    "siqa": [
        Demo(
            "Jordan wanted to tell a joke to his friends. What does Jordan need to do before this?",
            ("ignore his friends", "think of a funny story", "leave the room"),
            "think of a funny story",
        ),
        Demo(
            "Kai helped his neighbor carry heavy groceries inside. How would the neighbor feel?",
            ("angry", "grateful", "scared"),
            "grateful",
        ),
    ],
    "story_cloze": [
        Demo(
            "I wanted to make an omelet. I cracked two eggs into a bowl and whisked them. "
            "Then I poured them into a hot pan.",
            ("I ate a delicious omelet for breakfast.", "I decided to order a pizza instead."),
            "I ate a delicious omelet for breakfast.",
        ),
        Demo(
            "The runner tied his shoes tight. He sprinted as fast as he could during the race. "
            "He crossed the finish line first.",
            ("He was sad that he lost the race.", "He won the gold medal."),
            "He won the gold medal.",
        ),
    ],
    "kjv_nextverse": [
        Demo(
            "And God said, Let there be light: and there was light.",
            (
                "And God saw the light, that it was good: and God divided the light from the "
                "darkness.",
                "A soft answer turneth away wrath: but grievous words stir up anger.",
            ),
            "And God saw the light, that it was good: and God divided the light from the darkness.",
        ),
        Demo(
            "Now Jesus loved Martha, and her sister, and Lazarus.",
            (
                "The eyes of the LORD are in every place, beholding the evil and the good.",
                "When he had heard therefore that he was sick, he abode two days still in the "
                "same place where he was.",
            ),
            "When he had heard therefore that he was sick, he abode two days still in the same "
            "place where he was.",
        ),
    ],
}


def format_options(choices) -> str:
    """`(A) first\\n(B) second...`, one option per line."""
    return "\n".join(f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(choices))


def _query(task: str, question: str, context, choices) -> str:
    if task == "squad":
        if context is None:
            raise ValueError("task 'squad' needs a context passage")
        return QUERY_FORMATS[task].format(context=context, question=question)
    if choices is None or isinstance(choices, str):
        raise ValueError(f"task {task!r} needs `choices`, a list of option strings")
    choices = list(choices)
    if task == "story_cloze" and len(choices) != 2:
        raise ValueError(f"task 'story_cloze' needs exactly 2 choices, got {len(choices)}")
    return QUERY_FORMATS[task].format(question=question, options=format_options(choices))


def few_shot_prefix(task: str) -> str:
    """Instruction plus rendered demonstrations of `task` ('' for lambada / unknown tasks)."""
    if task not in QUERY_FORMATS:
        return ""
    shots = "".join(
        f"{_query(task, d.question, d.context, d.choices)} {d.answer}\n\n" for d in DEMOS[task]
    )
    return INSTRUCTIONS.get(task, "") + shots


def apply_prompt_template(task: str, question: str, context=None, choices=None) -> str:
    """The full benchmark prompt for one question (the raw question for lambada/unknown tasks)."""
    if not isinstance(question, str):
        raise ValueError(f"question must be a string, got {type(question).__name__}")
    if task not in QUERY_FORMATS:
        return question
    return few_shot_prefix(task) + _query(task, question, context, choices)


def prompt_for_record(task: str, record: dict) -> str:
    """`apply_prompt_template` on a task record (`question`, `context`, `choices` keys)."""
    return apply_prompt_template(
        task, record["question"], record.get("context"), record.get("choices")
    )
