"""`colajax aot --config experiments/X.py --topology v5p-128 [--num-slices N] [--config.a.b=v]`.

Will it fit? Compiles the real train step of every stage of the config (`setup_stage` on a mesh
of the slice's TPU devices, lowered with abstract state and batch) on this CPU host for a TPU
slice, via `jax.experimental.topologies` and the `libtpu` wheel (`pip install 'colajax[aot]'`;
no TPU needed). Prints per chip the argument / output / temporary bytes XLA allocates, their
total against the chip's HBM, and the step's FLOPs (XLA's count per chip and the analytic
model FLOPs). Exit status: 0 when every stage fits, 3 when one does not, 1 on bad input.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

USAGE = "colajax aot --config experiments/X.py[:arg] --topology v5p-128 [--num-slices N] [...]"
LIBTPU_HINT = (
    "colajax aot needs the libtpu wheel to compile for TPUs: pip install 'colajax[aot]' "
    "(libtpu 0.0.42.1 matches jax 0.10.2)."
)


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 / 10 else f"{n / 1024**2:.1f} MiB"


def compile_stage(config, stage: str, devices) -> dict:
    """Lower + compile `stage`'s train step on a mesh of `devices`; memory and FLOPs per chip."""
    import jax
    import numpy as np

    from colajax import sharding as shd
    from colajax.train.setup import setup_stage

    mesh = shd.make_mesh(config, devices)
    setup = setup_stage(config, stage, mesh=mesh)
    tr = setup.config.train
    batch = {
        "tokens": jax.ShapeDtypeStruct(
            (tr.batch_size, tr.seq_len), np.int32, sharding=setup.batch_sharding
        )
    }
    t0 = time.perf_counter()
    lowered = setup.train_step.lower(setup.abstract, batch)
    t1 = time.perf_counter()
    print(
        f"[{stage}] lowered in {t1 - t0:.0f} s; compiling for {len(devices)} chips", file=sys.stderr
    )
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:  # XLA refuses a program that cannot fit the HBM
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return _oom(stage, mesh, setup, str(e))
    print(f"[{stage}] compiled in {time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    arg, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
    temp, alias = mem.temp_size_in_bytes, mem.alias_size_in_bytes
    code = mem.generated_code_size_in_bytes
    return {
        "stage": stage,
        "mesh": dict(mesh.shape),
        "argument_bytes": int(arg),
        "output_bytes": int(out),
        "temp_bytes": int(temp),
        "alias_bytes": int(alias),
        "code_bytes": int(code),
        # donated state: outputs reuse the argument buffers (alias), so count them once
        "total_bytes": int(arg + out - alias + temp + code),
        # XLA counts a loop body once: the grad_accum scan runs it grad_accum times
        "xla_flops_per_chip": float((cost or {}).get("flops", 0.0)) * int(cfg_accum(setup)),
        "model_flops_per_step": float(setup.flops_per_step()),
        "tokens_per_step": int(tr.batch_size * tr.seq_len),
    }


def cfg_accum(setup) -> int:
    return max(1, int(setup.config.optim.grad_accum))


def _oom(stage, mesh, setup, message: str) -> dict:
    """The result row of a step XLA rejected as too large ('... required for HLO temporaries
    (77.40G) exceeds available HBM (31.25G)')."""
    import re

    need = re.search(r"required for [^(]*\(([\d.]+)([KMGT])\)", message)
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    temp = int(float(need.group(1)) * scale[need.group(2)]) if need else 0
    tr = setup.config.train
    return {
        "stage": stage,
        "mesh": dict(mesh.shape),
        "argument_bytes": 0,
        "output_bytes": 0,
        "temp_bytes": temp,
        "alias_bytes": 0,
        "code_bytes": 0,
        "total_bytes": temp,
        "xla_flops_per_chip": 0.0,
        "model_flops_per_step": float(setup.flops_per_step()),
        "tokens_per_step": int(tr.batch_size * tr.seq_len),
        "error": message.strip().splitlines()[0][:300],
    }


def stages_of(config) -> list[str]:
    """The stages `config.stage` selects, in the family's order (Cola: vae, prior; AR/LLaDA: lm)."""
    from colajax import families

    return families.of_config(config).stage_names(config)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="colajax aot", usage=USAGE, description=__doc__)
    p.add_argument("--config", required=True, help="experiment file, optionally :arg")
    p.add_argument("--topology", required=True, help="TPU slice, e.g. v5p-128, v5e-256, v6e-64")
    p.add_argument("--num-slices", type=int, default=None, help="slices (default: the config's)")
    p.add_argument("--stage", help="one stage of the family (default: config.stage)")
    p.add_argument("--json", action="store_true", help="one JSON object per stage")
    args, rest = p.parse_known_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile for the TPU; run nothing on it
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no chip is used: skip the lock
    from colajax import config as config_lib
    from colajax import tpu_topology

    try:
        if importlib.util.find_spec("libtpu") is None:
            raise ValueError(LIBTPU_HINT)
        tpu = tpu_topology.parse(args.topology)
        overrides = config_lib.overrides_from_argv(rest)
        if args.num_slices is not None:
            overrides.append(f"mesh.num_slices={args.num_slices}")
        if args.stage:
            overrides.append(f"stage={args.stage}")
        config = config_lib.load_config(args.config, overrides)
        slices = int(config.mesh.num_slices)
        devices = _topology_devices(tpu, slices)
        config_lib.validate(config, num_devices=len(devices))
        results = [compile_stage(config, s, devices) for s in stages_of(config)]
    except (ValueError, FileNotFoundError) as e:
        print(f"colajax aot: {e}", file=sys.stderr)
        return 1
    fits = True
    for r in results:
        r.update(topology=tpu.name, num_slices=slices, chips=tpu.chips * slices)
        fit = "error" not in r and r["total_bytes"] <= tpu.hbm_bytes
        r.update(hbm_bytes=tpu.hbm_bytes, fits=fit)
        fits &= r["fits"]
        print(json.dumps(r) if args.json else _describe(r), flush=True)
    return 0 if fits else 3


def _topology_devices(tpu, slices: int):
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(
            platform="tpu",
            topology_name=tpu.topology_name,
            chip_config_name=tpu.chip_config_name,
            chips_per_host_bounds=tpu.chips_per_host_bounds,
            num_slices=slices,
            wrap=tpu.wrap,
        )
    except Exception as e:  # noqa: BLE001 -- libtpu reports a bad topology in many ways
        raise ValueError(f"libtpu cannot describe {tpu.name} x {slices}: {e}") from None
    return list(desc.devices)


def _describe(r: dict) -> str:
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    if "error" in r:  # XLA refused to compile it
        return (
            f"[{r['stage']}] {r['topology']} x {r['num_slices']} slice(s) = {r['chips']} chips, "
            f"mesh {r['mesh']}: DOES NOT FIT ({r['error']}). Raise config.optim.grad_accum, "
            "shard more (mesh.shape.fsdp) or take a larger slice."
        )
    tflop = r["xla_flops_per_chip"] / 1e12
    return "\n".join(
        [
            f"[{r['stage']}] {r['topology']} x {r['num_slices']} slice(s) = {r['chips']} chips, "
            f"mesh {r['mesh']}",
            f"  per chip: arguments {_gib(r['argument_bytes'])}, outputs {_gib(r['output_bytes'])}"
            f" (aliased {_gib(r['alias_bytes'])}), temporaries {_gib(r['temp_bytes'])}, "
            f"code {_gib(r['code_bytes'])}",
            f"  total {_gib(r['total_bytes'])} of {_gib(r['hbm_bytes'])} HBM: {verdict}",
            f"  FLOPs per step: {tflop:.4g} TFLOP per chip (XLA), "
            f"{r['model_flops_per_step'] / 1e12:.4g} TFLOP model total "
            f"({r['tokens_per_step']} tokens)",
        ]
    )
