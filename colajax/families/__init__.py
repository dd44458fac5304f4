"""Model families: Cola DLM and the paper's baselines (AR, LLaDA), behind one interface
(`colajax.families.base.Family`). `config.model` and a checkpoint's `meta['family']` name one.

Adding a family: a module exposing `FAMILY` (a `Family`) and one line in `FAMILIES`.
"""

import importlib

from colajax.families.base import Family

FAMILIES = {
    "cola": "colajax.families.cola",
    "ar": "colajax.families.ar",
    "llada": "colajax.families.llada",
}


def get(name: str) -> Family:
    """The family called `name` (ValueError listing the families otherwise)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; use one of {tuple(FAMILIES)}.")
    return importlib.import_module(FAMILIES[name]).FAMILY


def of_config(config) -> Family:
    """The family an experiment config selects (`config.model`)."""
    return get(config.model)


def of_meta(meta: dict) -> Family:
    """The family a checkpoint recorded (checkpoints from before families are Cola)."""
    return get(meta.get("family", "cola"))
