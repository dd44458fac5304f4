"""`colajax sweep plan | run --local | eval | report` end to end on a two-family, two-budget
sweep of very small models (AR and LLaDA, 4 steps, budgets at steps 2 and 4) on the bundled
corpus and KJV tasks: the budget checkpoints, resumable reruns, one eval per budget, and the
report's CSV and PNGs."""

import csv
import json
import os

import pytest

from colajax.cli import sweep as sweep_cli

EXPERIMENT = """
from colajax.sweep.spec import RunSpec
from experiments import tiny


def get_config(arg=None):
    c = tiny.get_config(arg)
    c.lm.dim, c.lm.ffn_dim, c.lm.num_heads, c.lm.num_layers = 32, 64, 2, 1
    c.train.steps, c.train.log_every, c.train.eval_every, c.train.eval_batches = 4, 1, 4, 1
    c.train.ckpt_every, c.train.keep = 100, 1
    c.optim.warmup_steps, c.optim.decay_steps = 1, 4
    c.metrics.peak_flops = 1e11  # skip the peak measurement
    return c


def get_sweep(arg=None):
    return [RunSpec(f, family=f, size="xs", budget_steps=(2, 4)) for f in ("ar", "llada")]
"""
EVAL = ["--limit", "3", "--max-new-tokens", "3", "--batch-size", "3", "--no-progress"]


def _sweep(*argv) -> list[str]:
    assert sweep_cli.main(list(argv)) == 0, argv


def _last_json(capsys) -> dict | list:
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith(("{", "["))]
    return json.loads(lines[-1])


def test_plan_run_eval_report(tmp_path, capsys):
    exp = tmp_path / "two_families.py"
    exp.write_text(EXPERIMENT)
    root = str(tmp_path / "root")
    _sweep("plan", str(exp), "--root", root)
    plan = capsys.readouterr().out
    assert "budget checkpoints of ar" in plan and "budget checkpoints of llada" in plan

    _sweep("run", str(exp), "--root", root, "--local")
    assert [r["status"] for r in _last_json(capsys)] == ["done", "done"]
    for family in ("ar", "llada"):  # keep=1, yet both budget checkpoints are there
        steps = sorted(os.listdir(os.path.join(root, family, "checkpoints")))
        assert [s for s in steps if s.isdigit()] == ["2", "4"], steps
    _sweep("run", str(exp), "--root", root, "--local")  # rerun: nothing to train
    assert [r["status"] for r in _last_json(capsys)] == ["skipped", "skipped"]

    _sweep("eval", str(exp), "--root", root, *EVAL)
    assert _last_json(capsys) == {"ar": [2, 4], "llada": [2, 4]}
    for family in ("ar", "llada"):
        for step in (2, 4):
            out = os.path.join(root, family, "eval", f"step_{step}")
            rows = open(os.path.join(out, "kjv_lastword_generations.jsonl")).read().splitlines()
            assert (
                len(rows) == 3 and json.load(open(os.path.join(out, "result.json")))["step"] == step
            )
    _sweep("eval", str(exp), "--root", root, *EVAL)  # done already: skipped
    assert _last_json(capsys) == {"ar": [], "llada": []}

    _sweep("report", str(exp), "--root", root)
    result = _last_json(capsys)
    rows = list(csv.DictReader(open(result["csv"])))
    assert [(r["family"], int(r["step"])) for r in rows] == [
        ("ar", 2), ("ar", 4), ("llada", 2), ("llada", 4)
    ]  # fmt: skip
    tps = 8 * 64  # tiny: batch 8 x seq 64
    for r in rows:
        assert int(r["tokens"]) == int(r["step"]) * tps
        assert float(r["eflops_paper"]) == pytest.approx(
            6 * float(r["n_params"]) * int(r["tokens"]) / 1e18, rel=1e-3
        )
        for task in ("kjv_lastword", "kjv_nextverse"):
            assert 0.0 <= float(r[task]) <= 100.0
        assert r["average"] != "" and float(r["eval/loss"]) > 0  # held out at every budget
    pngs = sorted(os.path.basename(p) for p in result["pngs"])
    assert {"accuracy_average.png", "accuracy_tasks.png", "loss_vs_compute.png"} <= set(pngs)
    for p in result["pngs"]:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert result["fits"] is None  # no IsoFLOP runs


def test_paper_plan_table(capsys):
    _sweep("plan", "experiments/paper_rq4.py")
    out = capsys.readouterr().out
    for family in ("cola", "ar", "llada"):
        assert f"budget checkpoints of {family}" in out
    for text in ("77.86", "155.7", "1946", "250000"):
        assert text in out
