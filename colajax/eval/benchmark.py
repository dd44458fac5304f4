"""The runner of `colajax eval`: the paper's 8-task generative benchmark from a checkpoint.

    colajax eval --checkpoint DIR --tasks lambada,squad --data DIR --out DIR [--limit N]
    colajax eval --checkpoint DIR --tasks kjv_lastword,kjv_nextverse --out DIR   (bundled)
    colajax eval score --task T --generations F.jsonl [--out DIR]    (re-score, no model)
    colajax eval diagnostics --checkpoint DIR --text GLOB            (VAE / prior diagnostics)

Parameters only (no optimizer state) are restored onto the mesh of this run (`--mesh`; see
`restore.py`), so a checkpoint written on 8 devices evaluates on 1 and vice versa. Prompts are
the paper's templates (`templates.py`), generation is the block sampler (`colajax.generate.cola`,
benchmark defaults: greedy + repetition penalty 1.1, 16 Euler steps, CFG 7, 32 new tokens),
scoring is the official rules (`scoring.py`). Per prompt, the initial noise is drawn from
(seed, record number), so a generation does not depend on the batch size or on the other
prompts.

Writes into --out: `<task>_generations.jsonl` (id, prompt, generation, ground_truth, choices
(multiple choice only), extracted, extracted_gt, correct), `summary.csv` and `summary.md`
(per-task accuracy and the task average); prints one JSON line. Input files are never written.
"""

import csv
import json
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
from tqdm import tqdm

from colajax import checkpoint, sample_load
from colajax.eval import scoring, tasks, templates
from colajax.eval.restore import Model, load_checked_tokenizer, load_model
from colajax.generate import cola
from colajax.generate.tokens import TokenChoice

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
    """A GenerateFn running `colajax.generate.cola.generate` with per-prompt noise."""
    bs, c = model.dit_config.block_size, model.dit_config.txt_in_channels

    def generate_fn(prompts: list[str], numbers: list[int]) -> list[str]:
        ids = tok.encode_batch(prompts)
        noise = prompt_noise(seed, numbers, scfg.n_blocks(bs), bs, c)
        out = cola.generate(
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
    vocab = sample_load.configs_from_meta(meta, with_dit="dit" in keys)[0].vocab_size
    tok = load_checked_tokenizer(args.tokenizer, meta, vocab)
    model = load_model(args.checkpoint, args.mesh)
    source = model.meta.get("source")
    imported = isinstance(source, dict) and source.get("format") == IMPORTED_FORMAT
    round_bf16 = {"on": True, "off": False, "auto": imported}[args.dit_bf16_inputs]
    choice = TokenChoice(temperature=args.temperature, repetition_penalty=args.repetition_penalty)
    scfg = cola.SamplerConfig(
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
