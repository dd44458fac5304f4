"""The `colajax` command: one subcommand per job, each implemented in its own module.

Every subcommand module exposes `main(argv: list[str]) -> int`; this file only dispatches, so
that all logic stays importable and testable.
"""

import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("colajax.cli.train", "train a model family (cola: VAE then prior; ar; llada)"),
    "eval": ("colajax.cli.eval", "generative benchmark from a checkpoint; `eval score` re-scores"),
    "generate": ("colajax.cli.generate", "generate text from a checkpoint"),
    "import-hf": (
        "colajax.cli.import_hf",
        "convert released HF weights to a colajax checkpoint",
    ),
    "aot": ("colajax.cli.aot", "will it fit? compile the train step for a TPU slice on CPU"),
    "bench": ("colajax.cli.bench", "benchmarks printing JSON (train, generate, matmul)"),
    "tokenizer": ("colajax.cli.tokenizer", "train a SentencePiece tokenizer"),
    "data": ("colajax.cli.data", "data preparation: `data eval-sets` builds the task JSONL files"),
    "sweep": ("colajax.cli.sweep", "FLOP-matched sweeps: plan, run, eval, report"),
    "demo": ("colajax.cli.demo", "the main job: train the tiny model on the bundled corpus"),
}


def usage() -> str:
    lines = ["usage: colajax <command> [args]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"colajax: unknown command {name!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(run())
