"""`colajax generate`: text continuations from a checkpoint of any family (trained or imported).

    colajax generate --checkpoint runs/demo --prompt "In the beginning" [--prompt ...]
    colajax generate --checkpoint ckpt/ --tokenizer tokenizer.json --prompts-file prompts.txt \
        [--max-new-tokens 32 --temperature 0 --top-k 50 --top-p 0.9 --repetition-penalty 1.1
         --seed 0 --batch-size 8 --json] [cola: --steps 16 --cfg 7] [llada: --steps, --block-length]

The checkpoint's meta names its family (cola, ar, llada), which picks the model and the sampler.
A prompts file holds one prompt per line (`.jsonl`: one object per line with a `prompt` key).
Output: the generated text of each prompt (with `--json`, one JSON object per prompt).
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence

from colajax import distributed
from colajax.cli.options import add_generation_args, gen_options


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="colajax generate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="training workdir or checkpoint root")
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeatable)")
    p.add_argument("--prompts-file", help="one prompt per line (.jsonl: {'prompt': ...})")
    p.add_argument("--tokenizer", help="tokenizer file (default: the one the run trained with)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    p.add_argument("--mesh", default="data=-1", help="e.g. data=-1 or fsdp=8")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt")
    add_generation_args(p)
    distributed.add_flag(p)
    return p


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        if not os.path.isfile(args.prompts_file):
            raise FileNotFoundError(f"prompts file {args.prompts_file} does not exist.")
        with open(args.prompts_file, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
        if args.prompts_file.endswith(".jsonl"):
            try:
                prompts += [json.loads(line)["prompt"] for line in lines]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{args.prompts_file}: every line must be a JSON object with a 'prompt' key "
                    f"({e})."
                ) from e
        else:
            prompts += lines
    if not prompts:
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {i} is empty; every prompt needs some text.")
    return prompts


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        distributed.maybe_initialize(args.distributed)
    except (ValueError, RuntimeError) as e:
        print(f"colajax generate: error: {e}", file=sys.stderr)
        return 2
    import jax

    try:
        from colajax import restore

        if args.batch_size < 1:
            raise ValueError("--batch-size must be >= 1.")
        prompts = read_prompts(args)
        opts = gen_options(args)
        family, models, meta, _, _ = restore.read_model_info(args.checkpoint, args.step)
        tok = restore.load_tokenizer(args.tokenizer, meta, family.vocab_size(models))
        ids = [tok.encode(p) for p in prompts]
        for p, i in zip(prompts, ids, strict=True):
            if not i:
                raise ValueError(f"prompt {p!r} encodes to no tokens; use a longer prompt.")
        local = jax.process_count() > 1  # each process generates on its own devices
        loaded = restore.load_model(args.checkpoint, args.mesh, step=args.step, local=local)
        generate = loaded.generator(tok, opts)
        outs = []
        for start in range(0, len(ids), args.batch_size):
            chunk = ids[start : start + args.batch_size]
            outs += generate(chunk, list(range(start, start + len(chunk))))
    except (ValueError, FileNotFoundError) as e:
        print(f"colajax generate: error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() != 0:  # every process generated the same text; one prints it
        return 0
    for i, (prompt, out) in enumerate(zip(prompts, outs, strict=True)):
        text = tok.decode(out)
        if args.json:
            print(json.dumps({"prompt": prompt, "generation": text, "ids": out}))
        elif len(prompts) == 1:
            print(text)
        else:
            print(f"=== [{i}] {prompt}\n{text}")
    return 0
