"""End to end through the commands a user runs: `colajax train` for every family (and every
Cola Stage-2 VAE mode), then `colajax eval` on the fixture task data and `colajax generate` on
the checkpoint, plus an `import-hf` output. One tiny synthetic training run per case (a couple
of steps): what is tested is that every checkpoint kind restores, picks its family's model and
sampler, and writes the same output files."""

import json
import os
import pathlib

import pytest

from colajax import main as cli
from colajax import restore

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = pathlib.Path(
    os.environ.get("COLAJAX_EVAL_FIXTURES", REPO.parent / "shared" / "eval_fixtures")
)
TOKENIZER = "bundled:kjv_sp4096.model"
TASKS = "lambada,obqa"
TRAIN = [
    "--config", "experiments/tiny.py:synthetic",
    "--config.train.batch_size=8", "--config.train.seq_len=16",
    "--config.train.vae_steps=2", "--config.train.steps=2",
    "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.ckpt_every=2",
    "--config.train.async_ckpt=false",
]  # fmt: skip
GEN = ["--max-new-tokens", "4", "--tokenizer", TOKENIZER]


def _train(workdir, *extra):
    assert cli.run(["train", *TRAIN, "--workdir", str(workdir), *extra]) == 0


def _eval_and_generate(ckpt, out, capsys, *gen_flags):
    argv = ["eval", "--checkpoint", str(ckpt), "--tasks", TASKS, "--data", str(FIXTURES)]
    argv += ["--out", str(out), "--limit", "2", "--batch-size", "2", "--no-progress"]
    assert cli.run([*argv, *GEN, *gen_flags]) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = sorted(p.name for p in out.iterdir())
    want = [f"{t}_generations.jsonl" for t in TASKS.split(",")]
    assert names == sorted([*want, "result.json", "summary.csv", "summary.md"])
    assert set(result["rows"]) == set(TASKS.split(",")) and "average" in result
    argv = ["generate", "--checkpoint", str(ckpt), "--prompt", "And God said", "--json"]
    assert cli.run([*argv, *GEN, *gen_flags]) == 0, capsys.readouterr().err
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["prompt"] == "And God said" and 0 < len(row["ids"]) <= 4
    return result


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("cola")
    _train(root / "s1", "--config.stage=vae")
    return root


@pytest.mark.parametrize("mode", ["joint", "frozen", "scratch", "interval"])
def test_cola_every_stage2_mode(stage1, mode, capsys):
    run = stage1 / mode
    init = [] if mode == "scratch" else [f"--config.stage2.init_from={stage1 / 's1'}"]
    _train(run, "--config.stage=prior", f"--config.stage2.vae_mode={mode}", *init)
    loaded = restore.load_model(str(run), "data=1")
    assert loaded.family.name == "cola" and set(loaded.params) == {"vae", "dit"}
    _eval_and_generate(run, stage1 / f"eval_{mode}", capsys, "--steps", "2")


@pytest.mark.parametrize("family", ["ar", "llada"])
def test_baselines_train_eval_generate(family, tmp_path, capsys):
    _train(tmp_path / "run", f"--config.model={family}")
    meta = restore.load_model(str(tmp_path / "run"), "data=1").meta
    assert meta["family"] == family and set(meta["models"]) == {"lm"}
    assert meta["tokens"] == 2 * 8 * 16 and meta["eflops_full"] > 0
    _eval_and_generate(tmp_path / "run", tmp_path / "eval", capsys)


def test_family_flags_are_checked(tmp_path, capsys):
    _train(tmp_path / "run", "--config.model=ar")
    argv = ["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "x", *GEN, "--cfg", "3"]
    assert cli.run(argv) == 2
    assert "--cfg do(es) not apply to the ar family" in capsys.readouterr().err
