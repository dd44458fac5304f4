"""The runner of `colajax eval`: the paper's 8-task generative benchmark from a checkpoint.

    colajax eval --checkpoint DIR --tasks lambada,squad --data DIR --out DIR [--limit N]
    colajax eval --checkpoint DIR --tasks kjv_lastword,kjv_nextverse --out DIR   (bundled)
    colajax eval score --task T --generations F.jsonl [--out DIR]    (re-score, no model)
    colajax eval diagnostics --checkpoint DIR --text GLOB            (VAE / prior diagnostics)

Any family's checkpoint: parameters only (no optimizer state) are restored onto the mesh of
this run (`--mesh`; `colajax.restore`), so a checkpoint written on 8 devices evaluates on 1 and
vice versa. Each batch runs data-parallel: its prompts are split over the mesh's data-parallel
axes (rules 'batch' -> data, fsdp). In a multi-process job (`colajax.distributed`) every
process loads the tasks and restores the model onto the global mesh, all run the same batches
(each process's devices hold their rows of every batch), the generations are gathered, and
process 0 alone shows progress and writes the outputs, byte-identical to a one-process run.

Prompts are the paper's templates (`templates.py`), the same for every family;
generation is the family's (Cola: the block sampler with the official benchmark defaults, greedy
+ repetition penalty 1.1, 16 Euler steps, CFG 7; AR: KV-cached greedy; LLaDA: low-confidence
remasking), 32 new tokens; scoring is the official rules (`scoring.py`). Per prompt, randomness
is drawn from (seed, record number), so a generation does not depend on the batch size, the
other prompts, or the device and process count.

Writes into --out: `<task>_generations.jsonl` (id, prompt, generation, ground_truth, choices
(multiple choice only), extracted, extracted_gt, correct), `summary.csv` and `summary.md`
(per-task accuracy and the task average), `result.json`; prints one JSON line. Input files are
never written.
"""

import csv
import json
import os
import sys
from collections.abc import Callable

import jax
from tqdm import tqdm

from colajax import restore
from colajax.eval import scoring, tasks, templates
from colajax.families.base import GenOptions

# generate_fn(prompts, record_numbers) -> generations (one string per prompt)
GenerateFn = Callable[[list[str], list[int]], list[str]]


def text_generate_fn(generate_ids, tok) -> GenerateFn:
    """A text GenerateFn over a family's id-level one (prompts encoded without BOS, as the
    official harness does)."""

    def generate_fn(prompts: list[str], numbers: list[int]) -> list[str]:
        out = generate_ids(tok.encode_batch(prompts), numbers)
        return [tok.decode(g) for g in out]

    return generate_fn


def model_generate_fn(directory: str, opts: GenOptions, *, tokenizer=None, mesh="data=-1",
                      step=None) -> GenerateFn:  # fmt: skip
    """Restore a checkpoint (any family) and return its text GenerateFn; the tokenizer is
    checked before any array is read."""
    family, models, meta, _, _ = restore.read_model_info(directory, step)
    tok = restore.load_tokenizer(tokenizer, meta, family.vocab_size(models))
    loaded = restore.load_model(directory, mesh, step=step)
    return text_generate_fn(loaded.generator(tok, opts), tok)


def run_task(task, records, generate_fn: GenerateFn, batch_size: int, progress: bool = True):
    """Generate for every record (batches of similar prompt length) and score -> (rows, acc%)."""
    prompts = [templates.prompt_for_record(task, r) for r in records]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    size = min(batch_size, len(order))
    generations: list[str | None] = [None] * len(prompts)
    show = progress and jax.process_index() == 0
    with tqdm(
        total=len(prompts), desc=task, unit="prompt", disable=not show, file=sys.stderr
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


def task_sources(names: list[str], data: str | None, overrides: list[str]) -> dict[str, str | None]:
    """Data spec per task: --data (None: the bundled tasks), or a `--task-data TASK=SPEC`."""
    for name in names:
        tasks.get_task(name)
    sources = dict.fromkeys(names, data)
    for item in overrides:
        name, sep, spec = item.partition("=")
        if not sep or name not in sources:
            raise ValueError(f"--task-data {item!r}: expected TASK=SPEC for a task in --tasks")
        sources[name] = spec
    return sources


def _check_outputs(out_dir: str, names: list[str], sources: dict[str, str | None]) -> None:
    inputs = [tasks.resolve_source(t, s) for t, s in sources.items()]
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
        generate_fn = model_generate_fn(
            args.checkpoint, args.gen, tokenizer=args.tokenizer, mesh=args.mesh, step=args.step
        )
    writes = jax.process_index() == 0  # every process has every generation; one writes them
    if writes:
        os.makedirs(args.out, exist_ok=True)
    counts, accs = {}, {}
    for t in names:
        rows, accs[t] = run_task(t, records[t], generate_fn, args.batch_size, not args.no_progress)
        counts[t] = len(rows)
        if writes:
            _write_jsonl(os.path.join(args.out, f"{t}_generations.jsonl"), rows)
    summ = scoring.summary(accs)
    result = {"out": os.path.abspath(args.out), "rows": counts, **summ}
    if writes:
        write_summary(args.out, counts, accs)
        source = {
            "checkpoint": getattr(args, "checkpoint", None),
            "step": getattr(args, "step", None),
        }
        with open(os.path.join(args.out, "result.json"), "w", encoding="utf-8") as f:
            json.dump({**result, **source}, f, indent=1)
    return result
