"""Sampler behaviour on a tiny random model: caches, repaint, guidance switch, EOS, determinism,
batch invariance, bucketing without recompilation, token choice, and the generate CLI."""

import dataclasses
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colajax.cli import bench_generate
from colajax.cli import generate as sample_cli
from colajax.generate import cola as sample
from colajax.generate.tokens import TokenChoice, add_to_history, choose_tokens, penalize
from colajax.models.config import DiTConfig, VAEConfig
from colajax.models.dit import DiT
from colajax.models.vae import TextVAE

BS, C = 4, 4
VAE = VAEConfig(vocab_size=4096, dim=32, ffn_dim=64, num_heads=2, encoder_num_blocks=1,
                decoder_num_blocks=1, latent_dim=C, block_size=BS)  # fmt: skip
DIT = DiTConfig(txt_in_channels=C, txt_out_channels=C, txt_dim=32, emb_dim=32, heads=2,
                head_dim=16, num_layers=2, rope_dim=8, block_size=BS)  # fmt: skip
SCFG = sample.SamplerConfig(steps=3, max_new_tokens=8, pad_id=0, round_dit_inputs_bf16=False)
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]]  # r = 3, 0, 2


@pytest.fixture(scope="module")
def params():
    ids = jnp.zeros((1, 2 * BS), jnp.int32)
    pv = jax.jit(TextVAE(VAE).init)(jax.random.PRNGKey(0), ids)["params"]
    x, t = jnp.zeros((1, 2 * BS, C)), jnp.zeros((1, 2 * BS))
    pd = jax.jit(DiT(DIT).init)(jax.random.PRNGKey(1), x, t)["params"]
    return flax.core.meta.unbox({"vae": pv, "dit": pd})


@jax.jit
def _dit_full(p, x, t, seg):
    return DiT(DIT).apply({"params": p["dit"]}, x, t, segment_ids_BL=seg)


@jax.jit
def _decode_full(p, z, seg):
    return TextVAE(VAE).apply({"params": p["vae"]}, z, seg, method=TextVAE.decode)


def _noise(b, seed=0, blocks=2):
    return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (b, blocks, BS, C)))


def test_timestep_schedule_matches_official_grid():
    fed, dt, grid = sample.timestep_schedule(16)
    want = [1000, 936, 876, 812, 752, 688, 624, 564, 500, 438, 376, 312, 250, 188, 125, 62.5]
    np.testing.assert_array_equal(fed, np.array(want, np.float32))
    np.testing.assert_array_equal(grid, np.linspace(1000, 0, 17).astype(np.float32))
    np.testing.assert_array_equal(dt, np.full(16, 0.0625, np.float32))
    fed_exact, _, _ = sample.timestep_schedule(16, round_bf16=False)
    np.testing.assert_array_equal(fed_exact, grid[:-1])


def test_bucket_length():
    assert sample.bucket_length(4, 4) == 16
    assert sample.bucket_length(16, 4) == 16
    assert sample.bucket_length(20, 4) == 32
    assert sample.bucket_length(64, 16) == 64 and sample.bucket_length(80, 16) == 128


def test_cached_conditional_pass_equals_uncached(params):
    """Prefix + one committed block in the caches; the next block's conditional velocity and
    logits equal a full forward over [prefix | block1 | block2] with t = 0 on the history, in
    both CFG layouts (split calls and the fused 2B cache); v_uncond = the block alone."""
    prefix_len = np.array([0, 4, 8], np.int32)
    rng = np.random.default_rng(0)
    prefix = rng.normal(size=(3, 8, C)).astype(np.float32)
    prefix[np.arange(8)[None, :] >= prefix_len[:, None]] = 0.0
    x1, x2 = rng.normal(size=(2, 3, BS, C)).astype(np.float32)
    t = np.full((3, BS), 688.0, np.float32)

    @jax.jit
    def cached(p):
        out = []
        for fused in (False, True):
            dit_c, dec_c = sample.prefill(p, VAE, DIT, prefix, prefix_len, 20, round_bf16=False,
                                          fused=fused)  # fmt: skip
            dit_c = sample.commit_block(p, DIT, x1, dit_c, fused=fused)
            _, dec_c = sample.decode_block(p, VAE, x1, dec_c)
            v_c, v_u = sample.velocities(p, DIT, x2, t, dit_c, fused=fused)
            logits, _ = sample.decode_block(p, VAE, x2, dec_c)
            out.append((v_c, v_u, logits))
        return out

    seq, tt = np.zeros((3, 16, C), np.float32), np.zeros((3, 16), np.float32)
    for b, n in enumerate(prefix_len):
        seq[b, : n + 2 * BS] = np.concatenate([prefix[b, :n], x1[b], x2[b]])
        tt[b, n + BS : n + 2 * BS] = t[b]
    seg = (np.arange(16)[None] < (prefix_len + 2 * BS)[:, None]).astype(np.int32)
    full = np.asarray(_dit_full(params, seq, tt, seg))
    full_logits = np.asarray(_decode_full(params, seq, seg))
    alone = np.asarray(_dit_full(params, x2, t, np.ones((3, BS), np.int32)))
    for v_c, v_u, logits in cached(params):
        for b, n in enumerate(prefix_len):
            rows = slice(n + BS, n + 2 * BS)
            np.testing.assert_allclose(v_c[b], full[b, rows], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(logits[b], full_logits[b, rows], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(v_u, alone, rtol=1e-5, atol=1e-5)
        assert np.max(np.abs(np.asarray(v_c[1:]) - np.asarray(v_u[1:]))) > 1e-3  # history used


def test_repaint_keeps_prompt_latents_exactly(params):
    g1 = sample.generate(params, VAE, DIT, PROMPTS, SCFG, noise=_noise(3, 0))
    g2 = sample.generate(params, VAE, DIT, PROMPTS, SCFG, noise=_noise(3, 1))
    ids = np.zeros((3, 8), np.int32)
    for i, p in enumerate(PROMPTS):
        ids[i, : len(p)] = p
    aligned = np.array([4, 8, 8])
    seg = (np.arange(8)[None] < aligned[:, None]).astype(np.int32)
    mean, _ = TextVAE(VAE).apply({"params": params["vae"]}, ids, seg, method=TextVAE.encode)
    for b, p in enumerate(PROMPTS):
        r, start = len(p) % BS, len(p) // BS * BS
        np.testing.assert_array_equal(g1.latents[b, 0, :r], g2.latents[b, 0, :r])  # bitwise
        np.testing.assert_allclose(g1.latents[b, 0, :r], mean[b, start : start + r], atol=1e-5)
        assert np.all(np.abs(g1.latents[b, 0, r:] - g2.latents[b, 0, r:]) > 0)
        assert len(g1.generated[b]) == 2 * BS - r  # pinned positions are not output
        assert g1.generated[b] == g1.tokens[b].reshape(-1)[r:].tolist()


def test_guidance_off_only_for_first_block_without_prefix(params):
    noise = _noise(3, 2)
    g7 = sample.generate(params, VAE, DIT, PROMPTS, SCFG, noise=noise)
    g1 = sample.generate(
        params, VAE, DIT, PROMPTS, dataclasses.replace(SCFG, guidance_scale=1.0), noise=noise
    )
    # Sample 0 (3 tokens < one block): empty prefix -> CFG 1 in block 0, so no difference.
    np.testing.assert_allclose(g7.latents[0, 0], g1.latents[0, 0], rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(g7.latents[0, 1] - g1.latents[0, 1])) > 1e-2  # on again in block 1
    for b in (1, 2):  # a prefix: guided from block 0
        assert np.max(np.abs(g7.latents[b, 0] - g1.latents[b, 0])) > 1e-2


def test_eos_truncation_and_early_stop(params):
    prompt = [PROMPTS[1]]
    full = sample.generate(params, VAE, DIT, prompt, SCFG, seed=3)
    eos = full.generated[0][1]
    cut = full.generated[0].index(eos)
    g = sample.generate(params, VAE, DIT, prompt, dataclasses.replace(SCFG, eos_id=eos), seed=3)
    assert g.generated[0] == full.generated[0][:cut]
    assert g.blocks_run == 1  # the only sample finished in block 0: the loop stops
    keep = sample.generate(
        params, VAE, DIT, prompt, dataclasses.replace(SCFG, eos_id=eos, truncate_at_eos=False),
        seed=3,
    )  # fmt: skip
    assert keep.generated[0] == full.generated[0][:BS]


def test_deterministic_given_seed(params):
    a = sample.generate(params, VAE, DIT, PROMPTS, SCFG, seed=7)
    b = sample.generate(params, VAE, DIT, PROMPTS, SCFG, seed=7)
    c = sample.generate(params, VAE, DIT, PROMPTS, SCFG, seed=8)
    np.testing.assert_array_equal(a.latents, b.latents)
    assert a.generated == b.generated
    assert np.max(np.abs(a.latents - c.latents)) > 1e-2


def test_mixed_lengths_batch_equals_one_by_one(params):
    prompts = [[30], PROMPTS[1], list(range(40, 54))]  # 1, 8 and 14 tokens
    batch = sample.generate(params, VAE, DIT, prompts, SCFG, seed=11)
    for b, p in enumerate(prompts):
        alone = sample.generate(params, VAE, DIT, [p], SCFG, seed=11 + b)
        assert alone.generated[0] == batch.generated[b], f"prompt {b}"
        np.testing.assert_allclose(alone.latents[0], batch.latents[b], rtol=1e-4, atol=1e-4)


def test_no_recompilation_within_a_bucket(params):
    sample.generate(params, VAE, DIT, PROMPTS, SCFG)
    traces = sample.TRACES["generate"]
    for lengths in ((9, 1, 4), (16, 6, 11), (13, 13, 13)):
        prompts = [list(range(1, n + 1)) for n in lengths]
        sample.generate(params, VAE, DIT, prompts, SCFG, seed=lengths[0])
    assert sample.TRACES["generate"] == traces  # all lengths <= 16 share the 16-row bucket
    sample.generate(params, VAE, DIT, [list(range(1, 18)), [4], [5]], SCFG)  # next bucket: 32
    assert sample.TRACES["generate"] == traces + 1


def test_repetition_penalty_rule():
    logits = jnp.array([[[2.0, -2.0, 1.0, 0.0]]], jnp.float32)
    seen = jnp.array([[True, True, False, True]])
    got = np.asarray(penalize(logits, seen, 1.1))
    p = np.float32(1.1)
    np.testing.assert_array_equal(got[0, 0], [np.float32(2) / p, np.float32(-2) * p, 1, 0])
    # 2/1.1 = 1.818 > 1 keeps id 0; with penalty 2.5: 0.8 < 1 -> id 2 wins.
    choice = TokenChoice(repetition_penalty=2.5)
    assert int(choose_tokens(logits, seen, None, choice)[0, 0]) == 2
    # Ties: lowest index; the history is a set of ids; block 0 (empty history) is unchanged.
    ties = jnp.array([[[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 1.0, 1.0]]])
    none = jnp.zeros((1, 4), bool)
    np.testing.assert_array_equal(choose_tokens(ties, none, None, TokenChoice()), [[1, 0]])
    hist = add_to_history(none, jnp.array([[1, 1, 1]]))
    np.testing.assert_array_equal(np.asarray(hist), [[False, True, False, False]])
    np.testing.assert_array_equal(choose_tokens(ties, hist, None, TokenChoice()), [[2, 0]])


def test_sampling_respects_top_k_top_p_and_key():
    logits = jnp.log(jnp.array([[[0.5, 0.3, 0.15, 0.05]] * 64]))
    none = jnp.zeros((1, 4), bool)
    key = jax.random.PRNGKey(0)[None]
    topk = TokenChoice(temperature=1.0, top_k=2, top_p=1.0, repetition_penalty=1.0)
    toks = np.asarray(choose_tokens(logits, none, key, topk))
    assert set(toks.ravel()) == {0, 1}
    topp = TokenChoice(temperature=1.0, top_k=0, top_p=0.6, repetition_penalty=1.0)
    assert set(np.asarray(choose_tokens(logits, none, key, topp)).ravel()) == {0, 1}
    again = np.asarray(choose_tokens(logits, none, key, topk))
    np.testing.assert_array_equal(toks, again)
    with pytest.raises(ValueError, match="top_p"):
        TokenChoice(top_p=0.0)


def test_generate_rejects_bad_input(params):
    with pytest.raises(ValueError, match="outside"):
        sample.generate(params, VAE, DIT, [[1, 5000]], SCFG)
    with pytest.raises(ValueError, match="no prompts"):
        sample.generate(params, VAE, DIT, [], SCFG)
    with pytest.raises(ValueError, match="noise has shape"):
        sample.generate(params, VAE, DIT, [[1]], SCFG, noise=np.zeros((1, 1, BS, C)))


def test_generate_cli(params, tmp_path, capsys):
    from colajax import checkpoint

    meta = {"vae_config": dataclasses.asdict(VAE), "dit_config": dataclasses.asdict(DIT),
            "tokenizer": "bundled:kjv_sp4096.model"}  # fmt: skip
    ckpt = tmp_path / "ckpt"
    checkpoint.save_params_checkpoint(str(ckpt), params, meta)
    argv = ["--checkpoint", str(ckpt), "--steps", "3", "--max-new-tokens", "8", "--json"]
    texts = ["In the beginning", "And God said", "Let there be"]
    assert sample_cli.main(argv + [a for t in texts for a in ("--prompt", t)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == texts
    assert all(isinstance(r["generation"], str) and r["ids"] for r in rows)

    assert sample_cli.main(argv + ["--prompt", "  "]) == 2
    assert "empty" in capsys.readouterr().err
    assert sample_cli.main(["--checkpoint", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    small = dataclasses.replace(VAE, vocab_size=64)
    bad = tmp_path / "small_vocab"
    checkpoint.save_params_checkpoint(
        str(bad), params, {**meta, "vae_config": dataclasses.asdict(small)}
    )
    assert sample_cli.main(["--checkpoint", str(bad), "--prompt", "x"]) == 2
    assert "vocab_size" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_generate_prints_one_json_line(capsys):
    argv = ["--config", "experiments/tiny.py:synthetic", "--batch", "2", "--prompt-len", "6",
            "--new-tokens", "8", "--steps", "2", "--repeats", "1"]  # fmt: skip
    assert bench_generate.bench_generate(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["blocks"] == 2 and out["dtype"]["dit"] == "float32"  # tiny: auto keeps float32
    assert out["generated_tokens_per_s"] == pytest.approx(2 * 6 / out["seconds_per_batch"])
    assert bench_generate.bench_generate(["--config", "experiments/tiny.py", "--batch", "0"]) == 2
