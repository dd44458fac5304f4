"""End-to-end trainer behaviour on the tiny config with the real stages and data pipeline:
resume == uninterrupted (bitwise, data position), SIGTERM, NaN guard, metrics, eval,
sharded == unsharded, for both stages (the Stage-2 ones take about 100 s on 2 cores). XLA's
persistent compilation cache is shared by these tests and the trainer subprocess, so identical
steps compile once.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from colajax import checkpoint as ck
from colajax import families
from colajax import sharding as shd
from colajax.config import load_config
from colajax.train import metrics, optim, trainer
from colajax.train.data import SyntheticTokens
from colajax.train.setup import default_make_stage, setup_stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(tempfile.gettempdir(), "colajax-test-xla-cache")


@pytest.fixture(scope="module", autouse=True)
def compile_cache():
    """Persistent XLA cache for this module and the `colajax train` subprocess."""
    old = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
    jax.config.update("jax_compilation_cache_dir", old)


FAST = [
    "metrics.peak_flops=1e11",  # skip the peak measurement
    "train.log_every=1",
    "optim.warmup_steps=2",
    "optim.decay_steps=8",
]


def _params(run_dir):
    params, meta = ck.restore_params(os.path.join(run_dir, "checkpoints"))
    return jax.tree.map(np.asarray, params), meta


def _latest(run_dir):
    c = ck.TrainCheckpointer(os.path.join(run_dir, "checkpoints"))
    steps = c.all_steps()
    c.close()
    return steps


RESUME = FAST + [
    "train.vae_steps=4",
    "train.steps=4",
    "train.ckpt_every=2",
    "train.eval_every=2",
    "train.eval_batches=1",
]


def _kill_and_resume(config, stage, run_dir, init_from=""):
    """2 steps, 'killed' (no final save), then the same command again up to 4 steps."""
    r = trainer.train_stage(config, stage, run_dir, init_from=init_from, stop_after=2)
    assert r["status"] == "stopped" and _latest(run_dir) == [2]
    assert trainer.train_stage(config, stage, run_dir, init_from=init_from)["step"] == 4


def _assert_same_checkpoints(config, stage, dir_a, dir_b):
    pa, ma = _params(dir_a)
    pb, mb = _params(dir_b)
    assert ma["step"] == mb["step"] == 4 and ma["stage"] == stage
    jax.tree.map(np.testing.assert_array_equal, pa, pb)
    ca = ck.TrainCheckpointer(f"{dir_a}/checkpoints")
    cb = ck.TrainCheckpointer(f"{dir_b}/checkpoints")
    assert ca.all_steps() == cb.all_steps() == [2, 4]  # keep=2
    abs_ = _abstract_opt(config, stage)
    ra, rb = ca.restore(4, *abs_), cb.restore(4, *abs_)
    ca.close(), cb.close()
    assert ra["data_iter"] == rb["data_iter"] and ra["data_iter"]["grain"]  # same data position
    jax.tree.map(np.testing.assert_array_equal, ra["opt_state"], rb["opt_state"])


def _assert_metrics(run_dir, terms):
    """Every loss term, grad norm, lr, throughput and MFU per step; eval rows; TensorBoard."""
    rows = metrics.read_jsonl(run_dir)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for key in (*terms, "grad_norm", "lr", "tokens_per_sec", "step_time", "mfu"):
        assert f"train/{key}" in train_rows[-1], key
    assert [r["step"] for r in rows if "eval/loss" in r] == [2, 4]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(f"{run_dir}/tb"))


def test_resume_is_bitwise_stage1(tmp_path):
    """Stage 1 on the bundled corpus (grain pipeline): 2 + kill + 2 == 4 steps, bitwise."""
    config = load_config("experiments/tiny.py", RESUME + ["stage=vae"])
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert trainer.train(config, a)["status"] == "done"
    _kill_and_resume(config, "vae", b)
    _assert_same_checkpoints(config, "vae", a, b)
    _assert_metrics(a, ("recon", "kl", "bert"))
    assert trainer.train(config, a)["step"] == 4  # rerunning a finished run is a no-op


def test_resume_is_bitwise_for_both_stages(tmp_path):
    """stage=both: Stage 1 then Stage 2 (from the Stage-1 VAE), each 2 + kill + 2 == 4."""
    config = load_config("experiments/tiny.py", RESUME)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert trainer.train(config, a)["status"] == "done"
    _kill_and_resume(config, "vae", f"{b}/vae")
    _kill_and_resume(config, "prior", f"{b}/prior", init_from=f"{b}/vae")
    for stage in ("vae", "prior"):
        _assert_same_checkpoints(config, stage, f"{a}/{stage}", f"{b}/{stage}")
    # Stage 2 started from the Stage-1 VAE: the frozen reference encoder is that encoder
    vae, _ = _params(f"{a}/vae")
    prior, _ = _params(f"{a}/prior")
    jax.tree.map(np.testing.assert_array_equal, prior["vae_ref"]["encoder"], vae["vae"]["encoder"])
    assert set(prior) == {"vae", "dit", "vae_ref"}
    _assert_metrics(f"{a}/prior", ("fm", "recon", "ref_kl"))
    assert trainer.train(config, a)["step"] == 4


def _abstract_opt(config, stage):
    setup = setup_stage(config, stage)
    abs_ = setup.abstract
    return {**abs_.params, **abs_.frozen}, abs_.opt_state


def test_sigterm_saves_a_restorable_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    args = [
        "--config",
        "experiments/tiny.py:synthetic",
        "--workdir",
        workdir,
        "--config.stage=vae",
        "--config.train.vae_steps=100000",
        "--config.train.ckpt_every=100000",
        "--config.train.eval_every=0",
    ] + [f"--config.{o}" for o in FAST]
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=CACHE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "colajax.main", "train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while len(metrics.read_jsonl(workdir)) < 3:
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "trainer did not start in time"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "preempted" in out
    steps = _latest(workdir)
    assert len(steps) == 1 and steps[0] >= 3
    config = load_config("experiments/tiny.py:synthetic", ["stage=vae"] + FAST)
    c = ck.TrainCheckpointer(os.path.join(workdir, "checkpoints"))
    r = c.restore_latest(*_abstract_opt(config, "vae"))
    c.close()
    assert r["step"] == steps[0] == r["meta"]["step"]
    assert r["data_iter"]["kind"] == "synthetic" and r["data_iter"]["index"] == steps[0]
    assert json.loads(json.dumps(r["meta"]["config"]))["stage"] == "vae"


class _NaNAt:
    """Wraps a stage so that the loss is NaN from update `at` on."""

    def __init__(self, stage, at):
        self._stage, self._at = stage, at

    def __getattr__(self, name):
        return getattr(self._stage, name)

    def loss(self, params, frozen, batch, rng, step):
        loss, m = self._stage.loss(params, frozen, batch, rng, step)
        return loss + jnp.where(step >= self._at, jnp.nan, 0.0), m


def _nan_stage(config, name):
    return _NaNAt(default_make_stage(config, name), 3)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = load_config(
        "experiments/tiny.py:synthetic",
        FAST + ["stage=vae", "train.vae_steps=10", "train.ckpt_every=2", "train.eval_every=0"],
    )
    workdir = str(tmp_path / "run")
    with pytest.raises(metrics.NonFiniteLossError, match="at step 4"):
        trainer.train_stage(config, "vae", workdir, make_stage=_nan_stage)
    assert _latest(workdir) == [2]
    params, meta = _params(workdir)
    assert meta["step"] == 2
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def _sgd(config, labels):
    """Plain SGD: Adam would amplify float reduction-order noise (environment.md §3)."""
    del config
    return optim.Optimizer(optax.identity(), optax.constant_schedule(0.05), labels, {})


@pytest.mark.parametrize(
    "model, stage, probe",
    [
        ("cola", "vae", ("vae", "encoder", "patch_embedder", "kernel")),
        ("cola", "prior", ("dit", "txt_in", "kernel")),
        ("ar", "lm", ("lm", "embed_tokens", "embedding")),
        ("llada", "lm", ("lm", "layers_0", "q_proj", "kernel")),
    ],
)
def test_sharded_equals_unsharded(model, stage, probe):
    """data=2, fsdp=2, tensor=2 vs one device: 3 SGD steps (the prior one is the joint step)."""
    overrides = ["mesh.shape.data=2", "mesh.shape.fsdp=2", "mesh.shape.tensor=2", f"model={model}"]
    config = load_config("experiments/tiny.py:synthetic", overrides)
    sharded = setup_stage(config, stage, make_optimizer=_sgd)
    single_device = load_config(
        "experiments/tiny.py:synthetic", ["mesh.shape.data=1", f"model={model}"]
    )
    one = shd.make_mesh(single_device, devices=jax.devices()[:1])
    single = setup_stage(config, stage, mesh=one, make_optimizer=_sgd)
    results = []
    for setup in (sharded, single):
        state = setup.init_state()
        it = SyntheticTokens(8, 64, 4096, setup.batch_sharding, seed=3)
        losses = []
        for _ in range(3):
            state, m = setup.train_step(state, next(it))
            losses.append(float(m["loss"]))
        results.append((jax.tree.map(np.asarray, state.params), losses))
    (p_sh, l_sh), (p_one, l_one) = results
    np.testing.assert_allclose(l_sh, l_one, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), p_sh, p_one)
    # the parameters really moved (the comparison is not between two initial states)
    get = lambda tree: functools.reduce(lambda t, k: t[k], probe, tree)
    init = single.init_state().params
    assert not np.allclose(get(init), get(p_one))


def test_resume_is_bitwise_ar_baseline(tmp_path):
    """The AR baseline on the bundled corpus: 2 + kill + 2 == 4 steps, bitwise."""
    config = load_config("experiments/tiny.py", RESUME + ["model=ar"])
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert trainer.train(config, a)["status"] == "done"
    _kill_and_resume(config, "lm", b)
    _assert_same_checkpoints(config, "lm", a, b)
    _assert_metrics(a, ("ce", "acc"))


def test_budget_checkpoints_survive_the_keep_policy(tmp_path):
    """Budget steps are saved and never deleted (keep=1); counters in metrics and meta."""
    config = load_config(
        "experiments/tiny.py:synthetic",
        FAST + ["model=ar", "train.steps=6", "train.keep=1", "train.ckpt_every=100",
                "train.eval_every=0", "train.budget_steps=(2, 4)"],
    )  # fmt: skip
    run = str(tmp_path / "run")
    assert trainer.train(config, run)["status"] == "done"
    assert _latest(run) == [2, 4, 6]
    _, meta = _params(run)
    tps = config.train.batch_size * config.train.seq_len
    assert meta["budget_steps"] == [2, 4] and meta["tokens"] == 6 * tps
    rows = {r["step"]: r for r in metrics.read_jsonl(run) if "train/loss" in r}
    n = families.of_config(config).paper_n(config)  # the tiny backbone's own non-embedding N
    assert n < 1e6 and rows[4]["train/tokens"] == 4 * tps
    assert rows[4]["train/eflops_paper"] == pytest.approx(6 * n * 4 * tps / 1e18)
    assert rows[6]["train/eflops_full"] == pytest.approx(meta["eflops_full"])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cola", "ar", "llada"])
def test_loss_falls_on_the_bundled_corpus(model, tmp_path):
    """A short CPU run per family: the held-out loss falls (Cola: both stages)."""
    steps = ["train.vae_steps=60", "train.steps=60", "train.eval_every=30", "train.ckpt_every=60"]
    config = load_config("experiments/tiny.py", FAST[:1] + [f"model={model}", *steps])
    run = str(tmp_path / "run")
    assert trainer.train(config, run)["status"] == "done"
    main = f"{run}/prior" if model == "cola" else run
    rows = [r for r in metrics.read_jsonl(main) if "train/loss" in r]
    evals = [r["eval/loss"] for r in metrics.read_jsonl(main) if "eval/loss" in r]
    first, last = rows[0]["train/loss"], np.mean([r["train/loss"] for r in rows[-5:]])
    assert last < 0.8 * first and evals[-1] < evals[0], (first, last, evals)


@pytest.mark.slow  # ~1 min on 2 cores: a new step compile and the docstart packing of the corpus
def test_docstart_batches_with_loss_weights_train_sharded(tmp_path):
    """data.packing=docstart on the bundled corpus: batches {'tokens', 'loss_weights'} go through
    the jitted step with one batch sharding (2x2x2 mesh), and the data state records the
    packing."""
    overrides = FAST + ["stage=vae", "train.vae_steps=2", "train.ckpt_every=2"]
    overrides += ["train.eval_every=0", "data.packing=docstart", "data.docstart_fill=pad"]
    overrides += ["mesh.shape.data=2", "mesh.shape.fsdp=2", "mesh.shape.tensor=2"]
    config = load_config("experiments/tiny.py", overrides)
    run = str(tmp_path / "run")
    result = trainer.train_stage(config, "vae", run)
    assert result["status"] == "done" and np.isfinite(result["metrics"]["loss"])
    c = ck.TrainCheckpointer(os.path.join(run, "checkpoints"))
    r = c.restore_latest(*_abstract_opt(config, "vae"))
    c.close()
    assert r["data_iter"]["packing"] == "docstart" and r["data_iter"]["grain"]["next_index"] == 2
