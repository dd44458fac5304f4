"""Parity of the sampler with the official block-wise generation (fixture `generate.npz`).

Every fixture directory under $COLAJAX_PARITY_DIR (default ../shared/reference) holding a
`generate.npz` is imported from its HF weights and checked in the three modes of its README's
"How to test a port": teacher-forced steps (tight), free-running without the bf16 rounding
(tight) and free-running with the official rounding (loose latents, exact tokens).
"""

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colajax.convert.import_hf import import_hf
from colajax.families import cola
from colajax.generate import cola as sample
from colajax.generate.tokens import TokenChoice, add_to_history, choose_tokens

REPO = pathlib.Path(__file__).resolve().parents[1]
PARITY_DIR = pathlib.Path(
    os.environ.get("COLAJAX_PARITY_DIR", REPO.parent / "shared" / "reference")
).resolve()
CASE_DIRS = sorted(p.parent for p in PARITY_DIR.glob("*/generate.npz"))


def _variants(path) -> list[str]:
    with np.load(path / "generate.npz") as d:
        return sorted(k.split("/")[0] for k in d.files if k.endswith("/timestep_num"))


CASES = [(d, v) for d in CASE_DIRS for v in _variants(d)]
IDS = [f"{d.name}-{v}" for d, v in CASES]
pytestmark = pytest.mark.skipif(not CASES, reason=f"no generate.npz under {PARITY_DIR}")


@functools.lru_cache(maxsize=2)
def _model(case_dir: pathlib.Path):
    params, meta = import_hf(str(case_dir / "vae"), str(case_dir / "dit"))
    models = cola.FAMILY.models_from_meta(meta)
    vae_cfg, dit_cfg = models["vae"], models["dit"]
    return jax.device_put(params), vae_cfg, dit_cfg


@functools.lru_cache(maxsize=2)
def _fixture(case_dir: pathlib.Path):
    with np.load(case_dir / "generate.npz") as d:
        return {k: d[k] for k in d.files}


@functools.lru_cache(maxsize=2)
def _step_fns(vae_cfg, dit_cfg):
    """Jitted building blocks of the sampler, shared by every case of one configuration."""
    vae = sample.TextVAE(vae_cfg)

    def encode(p, ids, seg):
        return vae.apply({"params": p["vae"]}, ids, seg, method=sample.TextVAE.encode)

    def prefill(p, prefix, prefix_len, cache_len, rnd, fused):
        return sample.prefill(p, vae_cfg, dit_cfg, prefix, prefix_len, cache_len,
                              round_bf16=rnd, fused=fused)  # fmt: skip

    def velocities(p, x_in, t, cache, fused):
        return sample.velocities(p, dit_cfg, x_in, t, cache, fused=fused)

    def commit(p, x_in, cache, fused):
        return sample.commit_block(p, dit_cfg, x_in, cache, fused=fused)

    return {
        "encode": jax.jit(encode),
        "prefill": jax.jit(prefill, static_argnums=(3, 4, 5)),
        "velocities": jax.jit(velocities, static_argnums=4),
        "decode": jax.jit(lambda p, x, c: sample.decode_block(p, vae_cfg, x, c)),
        "commit": jax.jit(commit, static_argnums=3),
    }


def _case(case_dir, variant):
    f = _fixture(case_dir)
    return f, {k.split("/", 1)[1]: v for k, v in f.items() if k.startswith(variant + "/")}


def _close(name, got, want, tol, errors):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    errors[name] = max(errors.get(name, 0.0), float(np.max(np.abs(got - want))))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


def _report(tag, errors):
    print(f"\nPARITY {tag}: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(errors.items())))


@pytest.mark.parametrize("case_dir,variant", CASES, ids=IDS)
def test_teacher_forced(case_dir, variant):
    """Recorded state in, one step out: v_cond, v_uncond, next state, logits (1e-4), tokens."""
    params, vae_cfg, dit_cfg = _model(case_dir)
    f, c = _case(case_dir, variant)
    rnd = not variant.endswith("_nocast")
    steps, bs = int(c["timestep_num"]), int(f["block_size"])
    n_blocks, lengths = int(f["n_blocks"]), f["prompt_lengths"]
    t_fed, dts, grid = sample.timestep_schedule(steps, float(f["T"]), rnd)
    np.testing.assert_array_equal(grid, c["timesteps_grid"])
    np.testing.assert_array_equal(t_fed, c["timesteps_fed"])
    np.testing.assert_array_equal(dts, np.full(steps, c["dt"], np.float32))

    prefix_len = lengths // bs * bs
    np.testing.assert_array_equal(prefix_len, f["prefix_lengths"])
    pin = np.arange(bs)[None, :] < (lengths - prefix_len)[:, None]
    np.testing.assert_array_equal(pin, f["pinned"])
    scale = np.where(prefix_len == 0, 1.0, float(f["guidance_scale"])).astype(np.float32)
    np.testing.assert_array_equal(scale, f["cfg_scale_first_block"])
    w = np.full_like(scale, float(f["guidance_scale"]))

    errors = {}
    latents = f["prompt_latents"]
    fns = _step_fns(vae_cfg, dit_cfg)
    seg = np.arange(latents.shape[1])[None, :] < f["aligned_lengths"][:, None]
    mean, _ = fns["encode"](params, f["prompt_ids"], seg.astype(np.int32))
    _close("prompt_latents", np.asarray(mean)[seg], latents[seg], 1e-4, errors)

    prefix = np.where((np.arange(latents.shape[1]) < prefix_len[:, None])[..., None], latents, 0)
    padded = np.pad(latents, ((0, 0), (0, bs), (0, 0)))  # a tail may start at the last row
    tail = np.stack([padded[b, prefix_len[b] : prefix_len[b] + bs] for b in range(len(lengths))])
    cache_len = latents.shape[1] + n_blocks * bs
    # Both CFG layouts: split (cached cond + plain uncond call) and fused (one 2B cached call).
    caches = {fused: fns["prefill"](params, prefix, prefix_len, cache_len, rnd, fused)
              for fused in (False, True)}  # fmt: skip
    dec_cache = caches[False][1]
    dit_caches = {fused: c[0] for fused, c in caches.items()}
    vel, decode, commit = fns["velocities"], fns["decode"], fns["commit"]
    choice = TokenChoice(
        temperature=float(f["temperature"]), repetition_penalty=float(f["repetition_penalty"])
    )
    seen = jnp.zeros((len(lengths), vae_cfg.vocab_size), bool)
    for k in range(n_blocks):
        pin_k = pin & (k == 0)
        for i in range(steps):
            x = c["states"][:, k, i]
            x_in = x.astype(jnp.bfloat16).astype(np.float32) if rnd else x
            t = np.where(pin_k, 0.0, t_fed[i]).astype(np.float32)
            for fused in (False, True):
                v_c, v_u = vel(params, x_in, t, dit_caches[fused], fused)
                _close("v_cond", v_c, c["v_cond"][:, k, i], 1e-4, errors)
                _close("v_uncond", v_u, c["v_uncond"][:, k, i], 1e-4, errors)
            x_next = x - sample.cfg_combine(v_c, v_u, scale if k == 0 else w) * dts[i]
            x_next = np.where(pin_k[..., None], tail, x_next)
            _close("next_state", x_next, c["states"][:, k, i + 1], 1e-4, errors)
        lat = c["latents"][:, k]
        logits, dec_cache = decode(params, lat, dec_cache)
        _close("logits", logits, c["logits"][:, k], 1e-4, errors)
        tokens = choose_tokens(logits, seen, None, choice)
        np.testing.assert_array_equal(np.asarray(tokens), c["tokens"][:, k])
        seen = add_to_history(seen, jnp.asarray(c["tokens"][:, k]))
        lat_in = lat.astype(jnp.bfloat16).astype(np.float32) if rnd else lat
        dit_caches = {fu: commit(params, lat_in, dc, fu) for fu, dc in dit_caches.items()}
    _report(f"teacher-forced {case_dir.name}/{variant}", errors)


def _free_run(case_dir, variant):
    params, vae_cfg, dit_cfg = _model(case_dir)
    f, c = _case(case_dir, variant)
    scfg = sample.SamplerConfig(
        steps=int(c["timestep_num"]),
        guidance_scale=float(f["guidance_scale"]),
        max_new_tokens=int(f["max_new_tokens"]),
        choice=TokenChoice(
            temperature=float(f["temperature"]),
            repetition_penalty=float(f["repetition_penalty"]),
        ),
        pad_id=int(f["pad_token_id"]),
        eos_id=int(f["eos_token_id"]),
        truncate_at_eos=False,
        round_dit_inputs_bf16=not variant.endswith("_nocast"),
        timestep_scale=float(f["T"]),
    )
    prompts = [f["prompt_ids"][b, :n].tolist() for b, n in enumerate(f["prompt_lengths"])]
    gen = sample.generate(
        params, vae_cfg, dit_cfg, prompts, scfg, noise=c["noise"], return_logits=True
    )
    np.testing.assert_array_equal(gen.tokens, c["tokens"])
    for b, n in enumerate(c["generated_lengths"]):
        assert gen.generated[b] == c["generated_ids"][b, :n].tolist(), f"sample {b}"
    return gen, c


@pytest.mark.parametrize(
    "case_dir,variant",
    [cv for cv in CASES if cv[1].endswith("_nocast")],
    ids=[i for i, cv in zip(IDS, CASES) if cv[1].endswith("_nocast")],
)
def test_free_running_nocast(case_dir, variant):
    """End to end with the recorded noise, pure float32: latents/logits 1e-3, exact tokens."""
    gen, c = _free_run(case_dir, variant)
    errors = {}
    _close("latents", gen.latents, c["latents"], 1e-3, errors)
    _close("logits", gen.logits, c["logits"], 1e-3, errors)
    _report(f"free-running nocast {case_dir.name}/{variant}", errors)


@pytest.mark.parametrize(
    "case_dir,variant",
    [cv for cv in CASES if not cv[1].endswith("_nocast")],
    ids=[i for i, cv in zip(IDS, CASES) if not cv[1].endswith("_nocast")],
)
def test_free_running_official(case_dir, variant):
    """End to end with the official bf16 rounding: exact tokens, latents/logits within 0.1."""
    gen, c = _free_run(case_dir, variant)
    errors = {}
    for name in ("latents", "logits"):
        got = getattr(gen, name)
        errors[name] = float(np.max(np.abs(got - c[name])))
        np.testing.assert_allclose(got, c[name], rtol=0, atol=0.1, err_msg=name)
    _report(f"free-running official {case_dir.name}/{variant}", errors)
