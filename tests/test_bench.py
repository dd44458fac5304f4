"""`colajax bench`: the JSON a benchmark prints, its analytic FLOPs and its error handling."""

import json

import pytest

from colajax import flops
from colajax.cli import bench
from colajax.models.config import cola_configs

KEYS = {
    "step_time_s",
    "tokens_per_s",
    "model_flops_per_step",
    "achieved_flops_per_s",
    "peak_flops_per_s",
    "mfu",
    "peak_rss_bytes",
    "compile_s",
    "loss",
}


def test_bench_train_prints_one_json_line_with_consistent_numbers(capsys):
    argv = ["train", "--config", "experiments/tiny.py", "--stage", "prior", "--steps", "2"]
    assert bench.main([*argv, "--config.stage2.vae_mode=frozen"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert KEYS <= out.keys() and out["stage"] == "prior" and out["vae_mode"] == "frozen"
    assert len(out["step_times_s"]) == 2 and out["step_time_s"] > 0
    # The analytic count of the real config, the same the trainer logs.
    from colajax import config as config_lib

    cfg = config_lib.load_config("experiments/tiny.py", ["stage2.vae_mode=frozen"])
    vae_cfg, dit_cfg = cola_configs(cfg)
    want = flops.stage2_flops(
        vae_cfg,
        dit_cfg,
        cfg.train.batch_size,
        cfg.train.seq_len,
        mode="frozen",
    )["total"]
    assert out["model_flops_per_step"] == pytest.approx(want)
    assert out["achieved_flops_per_s"] == pytest.approx(want / out["step_time_s"])
    assert out["mfu"] == pytest.approx(out["achieved_flops_per_s"] / out["peak_flops_per_s"])
    assert out["tokens_per_s"] == pytest.approx(
        cfg.train.batch_size * cfg.train.seq_len / out["step_time_s"]
    )
    assert out["peak_rss_bytes"] > 0 and out["loss"] == out["loss"]  # not NaN


def test_bench_matmul_and_errors(capsys):
    assert bench.main(["matmul", "--size", "128", "--reps", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["float32_flops"] > 0 and out["bfloat16_f32acc_flops"] > 0
    assert bench.main(["nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    assert bench.main(["train", "--config", "experiments/missing.py"]) == 1
    assert "does not exist" in capsys.readouterr().err
