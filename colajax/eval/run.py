"""`colajax eval`: the paper's 8-task generative benchmark from a checkpoint, on any mesh.

    colajax eval --checkpoint DIR --tasks lambada,squad --data DIR --out DIR [--limit N]
    colajax eval score --task T --generations F.jsonl [--out DIR]    (re-score, no model)
    colajax eval diagnostics --checkpoint DIR --text GLOB            (VAE / prior diagnostics)

Parameters only (no optimizer state) are restored onto the mesh of this run (`--mesh`; see
`restore.py`), so a checkpoint written on 8 devices evaluates on 1 and vice versa. Prompts are
the paper's templates (`templates.py`), generation is the block sampler (`colajax.sample`,
benchmark defaults: greedy + repetition penalty 1.1, 16 Euler steps, CFG 7, 32 new tokens),
scoring is the official rules (`scoring.py`). Per prompt, the initial noise is drawn from
(seed, record number), so a generation does not depend on the batch size or on the other
prompts.

Writes into --out: `<task>_generations.jsonl` (id, prompt, generation, ground_truth, choices
(multiple choice only), extracted, extracted_gt, correct), `summary.csv` and `summary.md`
(per-task accuracy and the task average); prints one JSON line. Input files are never written.
"""

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
from tqdm import tqdm

from colajax import checkpoint, sample
from colajax.eval import score_cli, scoring, tasks, templates
from colajax.eval.restore import (  # noqa: F401 -- re-exported: the restore API of `colajax eval`
    DEFAULT_RULES,
    Model,
    abstract_params,
    experiment_config,
    load_checked_tokenizer,
    load_model,
    make_mesh,
    parse_mesh,
)
from colajax.sampling_tokens import TokenChoice

IMPORTED_FORMAT = "hf-safetensors"  # meta["source"]["format"] of `colajax import-hf` outputs

# generate_fn(prompts, record_numbers) -> generations (one string per prompt)
GenerateFn = Callable[[list[str], list[int]], list[str]]


def prompt_noise(seed: int, numbers: list[int], n_blocks: int, block_size: int, channels: int):
    """Initial noise [B, n_blocks, bs, C] of each prompt, drawn from (seed, record number)."""
    key = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda n: jax.random.fold_in(key, n))(jnp.asarray(numbers, jnp.uint32))
    shape = (n_blocks, block_size, channels)
    return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def model_generate_fn(model: Model, tok, scfg, seed: int) -> GenerateFn:
    """A GenerateFn running `colajax.sample.generate` with per-prompt noise."""
    bs, c = model.dit_config.block_size, model.dit_config.txt_in_channels

    def generate_fn(prompts: list[str], numbers: list[int]) -> list[str]:
        ids = tok.encode_batch(prompts)
        noise = prompt_noise(seed, numbers, scfg.n_blocks(bs), bs, c)
        out = sample.generate(
            model.params, model.vae_config, model.dit_config, ids, scfg, seed=seed, noise=noise
        )
        return [tok.decode(g) for g in out.generated]

    return generate_fn


def run_task(task, records, generate_fn: GenerateFn, batch_size: int, progress: bool = True):
    """Generate for every record (batches of similar prompt length) and score -> (rows, acc%)."""
    prompts = [templates.prompt_for_record(task, r) for r in records]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    size = min(batch_size, len(order))
    generations: list[str | None] = [None] * len(prompts)
    with tqdm(
        total=len(prompts), desc=task, unit="prompt", disable=not progress, file=sys.stderr
    ) as bar:
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            padded = chunk + [chunk[-1]] * (size - len(chunk))  # one batch shape per task
            outs = generate_fn([prompts[i] for i in padded], padded)
            if len(outs) != len(padded):
                raise RuntimeError(f"generate_fn returned {len(outs)} texts for {len(padded)}")
            for i, text in zip(chunk, outs, strict=False):
                generations[i] = text
            bar.update(len(chunk))
    rows = [
        {"id": r["id"], "prompt": p, "generation": g, "ground_truth": r["ground_truth"]}
        | ({"choices": r["choices"]} if r["choices"] is not None else {})
        for r, p, g in zip(records, prompts, generations, strict=True)
    ]
    return scoring.score_rows(task, rows)


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_summary(out_dir: str, counts: dict[str, int], accs: dict[str, float]) -> dict:
    """summary.csv + summary.md (per task and the plain mean of task accuracies)."""
    summ = scoring.summary(accs)
    total = sum(counts.values())
    lines = [(t, counts[t], accs[t]) for t in accs] + [("average", total, summ["average"])]
    with open(os.path.join(out_dir, "summary.csv"), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "rows", "accuracy"])
        writer.writerows((t, n, f"{a:.2f}") for t, n, a in lines)
    md = ["| task | rows | accuracy (%) |", "|---|---:|---:|"]
    md += [f"| {t} | {n} | {a:.2f} |" for t, n, a in lines[:-1]]
    md.append(f"| **average** | {total} | **{summ['average']:.2f}** |")
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    return summ


def task_sources(names: list[str], data: str, overrides: list[str]) -> dict[str, str]:
    """Data spec per task: --data, or a `--task-data TASK=SPEC` override."""
    for name in names:
        tasks.get_task(name)
    sources = dict.fromkeys(names, data)
    for item in overrides:
        name, sep, spec = item.partition("=")
        if not sep or name not in sources:
            raise ValueError(f"--task-data {item!r}: expected TASK=SPEC for a task in --tasks")
        sources[name] = spec
    return sources


def _check_outputs(out_dir: str, names: list[str], sources: dict[str, str]) -> None:
    inputs = [os.path.join(s, f"{t}.jsonl") if os.path.isdir(s) else s for t, s in sources.items()]
    outputs = [f"{t}_generations.jsonl" for t in names] + ["summary.csv", "summary.md"]
    for out in (os.path.join(out_dir, o) for o in outputs):
        for path in inputs:
            if os.path.exists(out) and os.path.exists(path) and os.path.samefile(out, path):
                raise ValueError(f"--out would overwrite the input {path}; choose another --out")


def run_benchmark(args, generate_fn: GenerateFn | None = None) -> dict:
    """The benchmark run of `main` (a `generate_fn` replaces the model, e.g. in tests)."""
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise ValueError("--tasks is empty; give e.g. --tasks lambada,squad")
    sources = task_sources(names, args.data, args.task_data)
    records = {
        t: tasks.load_task(t, sources[t], args.limit, tfds_data_dir=args.tfds_data_dir)
        for t in names
    }
    _check_outputs(args.out, names, sources)
    if generate_fn is None:
        generate_fn = _model_generate_fn(args)
    os.makedirs(args.out, exist_ok=True)
    counts, accs = {}, {}
    for t in names:
        rows, accs[t] = run_task(t, records[t], generate_fn, args.batch_size, not args.no_progress)
        counts[t] = len(rows)
        _write_jsonl(os.path.join(args.out, f"{t}_generations.jsonl"), rows)
    summ = write_summary(args.out, counts, accs)
    return {"out": os.path.abspath(args.out), "rows": counts, **summ}


def _model_generate_fn(args) -> GenerateFn:
    _, _, meta, keys = checkpoint.read_info(args.checkpoint)  # tokenizer errors before restoring
    vocab = sample.configs_from_meta(meta, with_dit="dit" in keys)[0].vocab_size
    tok = load_checked_tokenizer(args.tokenizer, meta, vocab)
    model = load_model(args.checkpoint, args.mesh)
    source = model.meta.get("source")
    imported = isinstance(source, dict) and source.get("format") == IMPORTED_FORMAT
    round_bf16 = {"on": True, "off": False, "auto": imported}[args.dit_bf16_inputs]
    choice = TokenChoice(temperature=args.temperature, repetition_penalty=args.repetition_penalty)
    scfg = sample.SamplerConfig(
        steps=args.steps,
        guidance_scale=args.cfg,
        max_new_tokens=args.max_new_tokens,
        choice=choice,
        pad_id=tok.pad_id,
        eos_id=tok.eos_id,
        truncate_at_eos=not args.keep_after_eos,
        round_dit_inputs_bf16=round_bf16,
    )
    return model_generate_fn(model, tok, scfg, args.seed)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colajax eval",
        description="Run the paper's generative benchmark from a checkpoint. Subcommands: "
        "`colajax eval score ...` re-scores generations; `colajax eval diagnostics ...` reports "
        "VAE/prior diagnostics on held-out text.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint root (training or import-hf)")
    p.add_argument("--tasks", required=True, help=f"comma-separated, from {','.join(tasks.TASKS)}")
    p.add_argument("--data", required=True, help="directory of <task>.jsonl, or 'tfds'")
    p.add_argument(
        "--task-data",
        action="append",
        default=[],
        metavar="TASK=SPEC",
        help="per-task data (repeatable): JSONL file, 'tfds' or 'tfds:NAME[@SPLIT]'",
    )
    p.add_argument("--tfds-data-dir", default=None, help="tfds data_dir of prepared datasets")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--limit", type=int, default=None, help="first N records per task")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=16, help="Euler steps per block")
    p.add_argument("--cfg", type=float, default=7.0, help="classifier-free guidance scale")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (benchmark)")
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=66, help="noise seed (per record number)")
    p.add_argument("--tokenizer", default=None, help="default: the experiment's tokenizer")
    p.add_argument("--mesh", default="data=-1", help="e.g. data=-1, fsdp=8, data=2,tensor=4")
    p.add_argument(
        "--dit-bf16-inputs",
        choices=("auto", "on", "off"),
        default="auto",
        help="official bf16 rounding of DiT inputs (auto: on for import-hf)",
    )
    p.add_argument(
        "--keep-after-eos",
        action="store_true",
        help="keep text after EOS (official harness); default: cut at EOS",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str]) -> int:
    if argv and argv[0] == "score":
        return score_cli.main(argv[1:])
    if argv and argv[0] == "diagnostics":
        from colajax.eval import diagnostics

        return diagnostics.main(argv[1:])
    args = parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        result = run_benchmark(args)
    except (OSError, ValueError) as err:
        print(f"colajax eval: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
