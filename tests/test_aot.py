"""`colajax aot`: compile the real train step for a TPU slice on this CPU host (needs the libtpu
wheel, `pip install 'colajax[aot]'`), and a clear error without it."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from colajax.cli import aot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


@pytest.mark.skipif(HAS_LIBTPU, reason="libtpu is installed (the compile test runs instead)")
def test_without_libtpu_says_what_to_install(capsys):
    rc = aot.main(["--config", "experiments/tiny.py:synthetic", "--topology", "v5e-4"])
    err = capsys.readouterr().err
    assert rc == 1 and "pip install 'colajax[aot]'" in err and "Traceback" not in err


def test_bad_topology(capsys):
    if not HAS_LIBTPU:
        pytest.skip("needs libtpu: the topology is checked after it")
    rc = aot.main(["--config", "experiments/tiny.py", "--topology", "v3-8"])
    assert rc == 1 and "unknown TPU slice 'v3-8'" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_LIBTPU, reason="needs the libtpu wheel: pip install 'colajax[aot]'")
def test_tiny_stage1_compiles_for_a_v5e_4(tmp_path):
    """The tiny Stage-1 step on a 2x2 v5e slice: per-chip memory well under 16 GiB HBM."""
    cmd = [sys.executable, "-m", "colajax.main", "aot", "--config", "experiments/tiny.py:synthetic"]
    cmd += ["--topology", "v5e-4", "--stage", "vae", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert row["stage"] == "vae" and row["chips"] == 4 and row["fits"]
    assert row["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
    assert 0 < row["total_bytes"] < 2**30 and row["hbm_bytes"] == 16 * 2**30
    assert row["argument_bytes"] > 4 * 600_000  # 0.6M float32 params (+ Adam) per chip
    assert row["xla_flops_per_chip"] > 0 and row["model_flops_per_step"] > 0


@pytest.mark.skipif(not HAS_LIBTPU, reason="needs the libtpu wheel: pip install 'colajax[aot]'")
def test_a_step_that_does_not_fit_is_reported_with_exit_3():
    """XLA refuses the program (RESOURCE_EXHAUSTED): one line saying what it needs, exit 3."""
    cmd = [sys.executable, "-m", "colajax.main", "aot", "--config", "experiments/tiny.py:synthetic"]
    cmd += ["--topology", "v5e-1", "--stage", "vae", "--config.train.batch_size=16384"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 3, out.stderr[-3000:]
    assert "DOES NOT FIT" in out.stdout and "exceeds available HBM" in out.stdout
    assert "Traceback" not in out.stderr


def test_stages_follow_the_family():
    """Every family's stages compile: Cola's two ('all' or one), the baselines' one 'lm'."""
    from colajax.config import load_config

    load = lambda *o: load_config("experiments/tiny.py:synthetic", list(o))
    assert aot.stages_of(load()) == ["vae", "prior"]
    assert aot.stages_of(load("stage=prior")) == ["prior"]
    assert aot.stages_of(load("model=ar")) == ["lm"]
    assert aot.stages_of(load("model=llada", "stage=lm")) == ["lm"]
    with pytest.raises(ValueError, match="not a stage of the ar family"):
        aot.stages_of(load("model=ar", "stage=vae"))


@pytest.mark.skipif(not HAS_LIBTPU, reason="needs the libtpu wheel: pip install 'colajax[aot]'")
def test_tiny_ar_compiles_for_a_v5e_4():
    cmd = [sys.executable, "-m", "colajax.main", "aot", "--config", "experiments/tiny.py:synthetic"]
    cmd += ["--topology", "v5e-4", "--config.model=ar", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert row["stage"] == "lm" and row["fits"] and row["model_flops_per_step"] > 0
