"""`colajax generate`: text continuations from a colajax checkpoint (trained or imported).

    colajax generate --checkpoint runs/demo --prompt "In the beginning" [--prompt ...]
    colajax generate --checkpoint ckpt/ --tokenizer tokenizer.json --prompts-file prompts.txt \
        [--steps 16 --cfg 7 --max-new-tokens 32 --temperature 0 --top-k 50 --top-p 0.9
         --repetition-penalty 1.1 --seed 0 --batch-size 8 --json]

A prompts file holds one prompt per line (`.jsonl`: one object per line with a `prompt` key).
Output: the generated text of each prompt (with `--json`, one JSON object per prompt).
"""

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

from colajax import distributed, sample_load
from colajax.generate import cola
from colajax.generate.tokens import TokenChoice


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="colajax generate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="training workdir or checkpoint root")
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeatable)")
    p.add_argument("--prompts-file", help="one prompt per line (.jsonl: {'prompt': ...})")
    p.add_argument("--tokenizer", help="tokenizer file (default: the one the run trained with)")
    p.add_argument("--steps", type=int, default=16, help="Euler steps per block")
    p.add_argument("--cfg", type=float, default=7.0, help="guidance scale (1 = off)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50, help="0 = off (sampling only)")
    p.add_argument("--top-p", type=float, default=0.9, help="1 = off (sampling only)")
    p.add_argument("--repetition-penalty", type=float, default=1.1, help="1 = off")
    p.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-eos-stop", action="store_true", help="keep text after EOS (official)")
    p.add_argument(
        "--bf16-inputs",
        choices=("auto", "on", "off"),
        default="auto",
        help="round the DiT inputs to bf16 like the official code (auto: on for imported "
        "checkpoints and bf16 models)",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="override compute dtype")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt")
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


def _tokenizer(args, meta, vocab_size):
    from colajax.data.tokenizer import check_vocab, load_tokenizer

    spec = args.tokenizer or sample_load.tokenizer_spec(meta)
    if not spec:
        raise ValueError(
            "the checkpoint records no tokenizer (e.g. an import-hf checkpoint); pass "
            "--tokenizer PATH (the released model uses its tokenizer.json)."
        )
    tok = load_tokenizer(spec)
    check_vocab(tok, vocab_size)
    return tok


def sampler_config(args, meta, dit_dtype: str, pad_id: int, eos_id) -> cola.SamplerConfig:
    rnd = {"on": True, "off": False}.get(args.bf16_inputs)
    if rnd is None:
        source = meta.get("source")
        imported = isinstance(source, dict) and source.get("format") == "hf-safetensors"
        rnd = imported or dit_dtype == "bfloat16"
    return cola.SamplerConfig(
        steps=args.steps,
        guidance_scale=args.cfg,
        max_new_tokens=args.max_new_tokens,
        choice=TokenChoice(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
        ),
        pad_id=pad_id,
        eos_id=eos_id,
        truncate_at_eos=not args.no_eos_stop,
        round_dit_inputs_bf16=rnd,
    )


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        distributed.maybe_initialize(args.distributed)
    except (ValueError, RuntimeError) as e:
        print(f"colajax generate: error: {e}", file=sys.stderr)
        return 2
    import jax

    try:
        if args.batch_size < 1:
            raise ValueError("--batch-size must be >= 1.")
        prompts = read_prompts(args)
        params, vae_cfg, dit_cfg, meta = sample_load.load_model(args.checkpoint)
        if args.dtype:
            vae_cfg = dataclasses.replace(vae_cfg, dtype=args.dtype)
            dit_cfg = dataclasses.replace(dit_cfg, dtype=args.dtype)
        tok = _tokenizer(args, meta, vae_cfg.vocab_size)
        pad_id = tok.pad_id if tok.pad_id is not None and tok.pad_id >= 0 else tok.eos_id
        scfg = sampler_config(args, meta, dit_cfg.dtype, pad_id, tok.eos_id)
        ids = [tok.encode(p) for p in prompts]
        for p, i in zip(prompts, ids):
            if not i:
                raise ValueError(f"prompt {p!r} encodes to no tokens; use a longer prompt.")
        outs = []
        for start in range(0, len(ids), args.batch_size):
            chunk = ids[start : start + args.batch_size]
            gen = cola.generate(params, vae_cfg, dit_cfg, chunk, scfg, seed=args.seed + start)
            outs += gen.generated
    except (ValueError, FileNotFoundError) as e:
        print(f"colajax generate: error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() != 0:  # every process generated the same text; one prints it
        return 0
    for i, (prompt, out) in enumerate(zip(prompts, outs)):
        text = tok.decode(out)
        if args.json:
            print(json.dumps({"prompt": prompt, "generation": text, "ids": out}))
        elif len(prompts) == 1:
            print(text)
        else:
            print(f"=== [{i}] {prompt}\n{text}")
    return 0
