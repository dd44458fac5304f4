"""`colajax demo`: the main job on the embedded default (what `make demo` runs).

Trains Stage 1 (Text VAE) then Stage 2 (joint VAE + block-causal DiT) on the bundled KJV corpus
with experiments/demo.py, writing checkpoints and TensorBoard logs under the workdir, prints the
loss table, then generates text from a few prompts with the trained model. Rerunning resumes
(finished stages are skipped) and only regenerates the samples.
"""

import argparse
import json
import os
import sys
import time

PROMPTS = (
    "In the beginning God created",
    "And the LORD spake unto Moses, saying,",
    "Blessed are the",
    "And it came to pass, when the king",
)


def _rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_table(workdir: str) -> str:
    """First vs last logged training loss terms (and the last held-out ones) per stage."""
    lines = ["| stage | metric | first | last | held-out (last) |", "|---|---|---|---|---|"]
    for stage in ("vae", "prior"):
        rows = _rows(os.path.join(workdir, stage, "metrics.jsonl"))
        train = [r for r in rows if "train/loss" in r]
        evals = [r for r in rows if "eval/loss" in r]
        if not train:
            continue
        first, last = train[0], train[-1]
        for k in ("loss", "recon", "kl", "bert", "fm", "ref_kl", "recon_acc"):
            if f"train/{k}" not in last:
                continue
            held = evals[-1].get(f"eval/{k}") if evals else None
            held_s = "-" if held is None else f"{held:.4f}"
            a, b = first.get(f"train/{k}", float("nan")), last[f"train/{k}"]
            lines.append(f"| {stage} | {k} | {a:.4f} | {b:.4f} | {held_s} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="colajax demo", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument("--config", default="experiments/demo.py")
    p.add_argument("--max-new-tokens", type=int, default=32)
    args, rest = p.parse_known_args(argv)

    import jax

    from colajax import config as config_lib
    from colajax import restore
    from colajax.families.base import GenOptions
    from colajax.train import metrics, trainer

    t0 = time.time()
    try:
        overrides = config_lib.overrides_from_argv(rest)
        config = config_lib.load_config(args.config, overrides, num_devices=jax.device_count())
        result = trainer.train(config, args.workdir)
    except (ValueError, FileNotFoundError, FileExistsError, metrics.NonFiniteLossError) as e:
        print(f"colajax demo: {e}", file=sys.stderr)
        return 1
    if result["status"] != "done":
        print(f"colajax demo: training stopped ({result['status']}); rerun to resume.")
        return 0
    print(
        f"\ntraining finished in {time.time() - t0:.0f} s; checkpoints and TensorBoard logs "
        f"under {args.workdir}/{{vae,prior}}\n"
    )
    print(loss_table(args.workdir) + "\n")

    loaded = restore.load_model(args.workdir)
    tok = restore.load_tokenizer(None, loaded.meta, loaded.family.vocab_size(loaded.models))
    opts = GenOptions(max_new_tokens=args.max_new_tokens, bf16_inputs="off")
    generate = loaded.generator(tok, opts)
    prompts = [[tok.bos_id, *tok.encode(text)] for text in PROMPTS]
    generated = generate(prompts, list(range(len(prompts))))
    print("samples (the family's benchmark sampler; Cola: 16 Euler steps, CFG 7, greedy + 1.1):")
    for text, ids in zip(PROMPTS, generated, strict=True):
        print(f"  {text!r} -> {tok.decode([int(i) for i in ids])!r}")
    print(f"\ndemo done in {time.time() - t0:.0f} s")
    return 0
