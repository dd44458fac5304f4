"""Multi-host for real: several `colajax train` JAX processes on localhost (gloo collectives,
coordinator 127.0.0.1, 2 fake CPU devices per process), started through the automatic
`jax.distributed` initialisation (COLAJAX_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID).

The mesh is data=2 x tensor=2 on 4 devices either way: every cross-device reduction then has two
participants, which sum identically in any order, so 2 processes x 2 devices and 1 process x 4
devices agree bitwise (with 4 participants gloo and XLA's in-process all-reduce order the sum
differently and Adam turns that into ~1e-6 parameter noise). Compiled programs are shared
through the persistent XLA cache, so the resumed runs do not recompile.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from colajax import checkpoint as ck
from colajax.train import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(tempfile.gettempdir(), "colajax-test-xla-cache")
TRAIN = [
    "--config=experiments/tiny.py:synthetic",
    "--config.stage=vae",
    "--config.mesh.shape.data=2",
    "--config.mesh.shape.tensor=2",
    "--config.train.eval_every=0",
    "--config.train.log_every=1",
    "--config.metrics.peak_flops=1e11",  # no peak measurement
    "--config.optim.warmup_steps=2",
    "--config.optim.decay_steps=8",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(nproc: int, i: int, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLAJAX_", "SLURM_", "TPU_"))}
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={4 // nproc}",
        JAX_COMPILATION_CACHE_DIR=CACHE,
        PYTHONUNBUFFERED="1",
    )
    if nproc > 1:
        env.update(
            COLAJAX_COORDINATOR=f"127.0.0.1:{port}",
            COLAJAX_NUM_PROCESSES=str(nproc),
            COLAJAX_PROCESS_ID=str(i),
        )
    return env


def _start(nproc: int, argv: list[str]) -> list[subprocess.Popen]:
    port = _free_port()
    return [
        subprocess.Popen(
            argv,
            cwd=REPO,
            env=_env(nproc, i, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(nproc)
    ]


def _finish(procs, timeout=900) -> list[str]:
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    return outs


def _train(workdir: str, nproc: int, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "colajax.main", "train", f"--workdir={workdir}", *TRAIN, *extra]
    return _finish(_start(nproc, argv))


def _params(workdir: str, step: int):
    params, meta = ck.restore_params(f"{workdir}/checkpoints", step=step)
    assert meta["step"] == step
    return jax.tree.map(np.asarray, params)


def _losses(workdir: str) -> list[float]:
    return [r["train/loss"] for r in metrics.read_jsonl(workdir)]


def _equal(a, b) -> None:
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _resume_copy(src: str, dst: str, step: int) -> None:
    """`dst` = `src`'s checkpoints up to `step` (a run that was stopped there)."""
    shutil.copytree(f"{src}/checkpoints", f"{dst}/checkpoints")
    for s in os.listdir(f"{dst}/checkpoints"):
        if s.isdigit() and int(s) > step:
            shutil.rmtree(f"{dst}/checkpoints/{s}")


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """The reference: 1 process x 4 devices, steps 1..3, a checkpoint after every step."""
    workdir = str(tmp_path_factory.mktemp("ref") / "one")
    _train(workdir, 1, "--config.train.vae_steps=3", *EVERY_STEP)
    return workdir


EVERY_STEP = ["--config.train.ckpt_every=1", "--config.train.keep=3"]


def test_two_processes_equal_one_and_checkpoints_cross_over(tmp_path, one_process_run):
    """2 processes x 2 devices train to the same losses and parameters as 1 x 4 (bitwise);
    their checkpoint resumes in 1 process and continues bitwise; process 0 alone logs."""
    one, two = one_process_run, str(tmp_path / "two")
    out0, out1 = _train(two, 2, "--config.train.vae_steps=2", *EVERY_STEP)
    assert _losses(two) == _losses(one)[:2]  # one row per step: written once
    for step in (1, 2):
        _equal(_params(two, step), _params(one, step))
    assert "[vae] step 2/2" in out0 and "[vae] step" not in out1
    assert len(os.listdir(f"{two}/tb")) == 1
    # a 2-process checkpoint -> 1 process
    resumed = str(tmp_path / "two_to_one")
    _resume_copy(two, resumed, 2)
    out = _train(resumed, 1, "--config.train.vae_steps=3", *EVERY_STEP)[0]
    assert "resumed from step 2" in out, out
    _equal(_params(resumed, 3), _params(one, 3))
    assert _losses(resumed) == _losses(one)[2:]


def _wait_for_rows(workdir: str, n: int, procs, timeout=600) -> None:
    deadline = time.time() + timeout
    while len(metrics.read_jsonl(workdir)) < n:
        for p in procs:
            assert p.poll() is None, p.stdout.read()
        assert time.time() < deadline, "training did not start in time"
        time.sleep(0.5)


def test_sigterm_to_one_process_saves_the_same_step_on_all(tmp_path, one_process_run):
    """A 1-process checkpoint resumes in 2 processes (continuing bitwise); SIGTERM to process 1
    only: both stop at the same step, save it and exit 0; the rerun, again with a different
    process count, resumes there."""
    workdir = str(tmp_path / "run")
    _resume_copy(one_process_run, workdir, 1)
    long = ["--config.train.vae_steps=100000", "--config.train.ckpt_every=100000"]
    argv = [sys.executable, "-m", "colajax.main", "train", f"--workdir={workdir}", *TRAIN, *long]
    procs = _start(2, argv)
    _wait_for_rows(workdir, 2, procs)
    procs[1].send_signal(signal.SIGTERM)
    outs = _finish(procs, timeout=300)
    assert "resumed from step 1" in outs[0]
    assert _losses(workdir)[:2] == _losses(one_process_run)[1:3]
    saved = []
    for i, out in enumerate(outs):
        line = [s for s in out.splitlines() if f"process {i}/2: preempted (SIGTERM)" in s]
        assert len(line) == 1, out
        saved.append(int(line[0].split("saved step ")[1].split(";")[0]))
    assert saved[0] == saved[1] >= 3
    step = saved[0]
    c = ck.TrainCheckpointer(f"{workdir}/checkpoints")
    assert c.all_steps() == [1, step]
    c.close()
    out = _train(workdir, 1, f"--config.train.vae_steps={step + 1}")[0]
    assert f"resumed from step {step}" in out and f"step {step + 1}/{step + 1}" in out, out


SHARD_SCRIPT = """
import json, sys
from colajax import distributed
distributed.maybe_initialize("auto")
import jax
from colajax.data import sources
out = {}
for name, path in json.loads(sys.argv[1]).items():
    src = sources.make_source({"kind": "jsonl", "path": path, "text_key": "text"})
    out[name] = [src[i] for i in range(len(src))]
print("RESULT", jax.process_index(), jax.process_count(), json.dumps(out))
"""


def test_data_shards_are_disjoint_and_cover_the_corpus(tmp_path):
    """Each process of a 2-process job reads its own part of the corpus (split by file when
    there are enough files, else by document): disjoint, and together everything."""
    docs = [f"document number {i}" for i in range(23)]
    paths = {"one_file": str(tmp_path / "all.jsonl"), "three_files": str(tmp_path / "p*.jsonl")}
    with open(paths["one_file"], "w") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    for k in range(3):
        with open(tmp_path / f"p{k}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in docs[k::3])
    outs = _finish(_start(2, [sys.executable, "-c", SHARD_SCRIPT, json.dumps(paths)]), 300)
    parts = {}
    for out in outs:
        line = next(s for s in out.splitlines() if s.startswith("RESULT"))
        _, index, count, payload = line.split(" ", 3)
        assert int(count) == 2
        parts[int(index)] = json.loads(payload)
    for name in paths:
        a, b = parts[0][name], parts[1][name]
        assert a and b and not set(a) & set(b), name
        assert sorted(a + b) == sorted(docs), name


# --- colajax eval / generate over processes -------------------------------------------------

TOKENIZER = "bundled:kjv_sp4096.model"
EVAL = ["--tasks", "kjv_lastword", "--limit", "5", "--batch-size", "3", "--max-new-tokens", "4"]
EVAL_OUTPUTS = ["kjv_lastword_generations.jsonl", "result.json", "summary.csv", "summary.md"]


def _random_checkpoint(path: str, family_name: str, models: dict, std: float = 0.5) -> str:
    """Random float32 params of a family's models, written as a checkpoint with its meta."""
    import dataclasses

    from colajax import families, restore

    family = families.get(family_name)
    target = family.abstract_params(models, restore.make_mesh("data=1"), restore.DEFAULT_RULES)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: std * rng.standard_normal(s.shape, np.float32), target)
    meta = {
        "family": family_name,
        "models": {k: dataclasses.asdict(m) for k, m in models.items()},
        "tokenizer": TOKENIZER,
    }
    ck.save_params_checkpoint(path, params, meta)
    return path


def _eval(ckpt: str, out: str, nproc: int, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "colajax.main", "eval", "--checkpoint", ckpt, "--out", out]
    return _finish(_start(nproc, [*argv, *EVAL, "--no-progress", *extra]), timeout=600)


def _files(out: str) -> dict[str, bytes]:
    names = sorted(os.listdir(out))
    return {n: open(os.path.join(out, n), "rb").read() for n in names}


def _same_eval_files(tmp_path, ckpt: str, *extra: str) -> dict:
    """`colajax eval` in 1 process x 4 devices and in 2 processes x 2 devices: the same files,
    written by process 0 alone (which alone prints the JSON line)."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    (out,) = _eval(ckpt, one, 1, *extra)
    out0, out1 = _eval(ckpt, two, 2, *extra)
    files = _files(one)
    assert sorted(files) == EVAL_OUTPUTS
    two_files = _files(two)
    result = json.loads(two_files.pop("result.json"))
    assert result.pop("out") == os.path.abspath(two)
    ref = json.loads(files.pop("result.json"))
    assert ref.pop("out") == os.path.abspath(one) and ref == result
    assert two_files == files  # byte-identical generations and summaries
    rows = [json.loads(x) for x in files["kjv_lastword_generations.jsonl"].splitlines()]
    assert len(rows) == 5 and len({r["generation"] for r in rows}) >= 3  # not all alike
    printed = lambda s: [x for x in s.splitlines() if x.startswith('{"out"')]
    assert len(printed(out)) == len(printed(out0)) == 1 and not printed(out1)
    return result


def test_eval_two_processes_write_what_one_writes(tmp_path):
    """Cola: 5 prompts in batches of 3 (padded to the 4 data-parallel devices)."""
    from tiny_models import TINY_DIT, TINY_VAE

    ckpt = _random_checkpoint(str(tmp_path / "cola"), "cola", {"vae": TINY_VAE, "dit": TINY_DIT})
    _same_eval_files(tmp_path, ckpt, "--steps", "2")


def test_ar_eval_on_an_fsdp_mesh_and_generate(tmp_path):
    """AR with its params sharded over fsdp (data=2 x fsdp=2: data across the processes, fsdp
    within each): the same files. `colajax generate` in 2 processes: process 0 alone prints,
    the same text as 1 process."""
    from colajax.models.config import LMConfig

    lm = LMConfig(vocab_size=4096, dim=32, ffn_dim=64, num_heads=2, head_dim=16, num_layers=1)
    ckpt = _random_checkpoint(str(tmp_path / "ar"), "ar", {"lm": lm})
    _same_eval_files(tmp_path, ckpt, "--mesh", "data=2,fsdp=2")
    argv = [sys.executable, "-m", "colajax.main", "generate", "--checkpoint", ckpt, "--json"]
    argv += ["--prompt", "And God said", "--prompt", "In the beginning", "--max-new-tokens", "4"]
    (one,) = _finish(_start(1, argv), timeout=300)
    out0, out1 = _finish(_start(2, argv), timeout=300)
    rows = lambda s: [x for x in s.splitlines() if x.startswith('{"prompt"')]
    assert len(rows(one)) == 2 and rows(out0) == rows(one) and not rows(out1)
