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


# Task records in the same schema, for a checkout without the fixtures next to it.
FALLBACK = {
    "lambada": [
        {"question": "The waters covered the earth and every living thing did", "answer": "drown"},
        {"question": "In the beginning God created the heaven and the", "answer": "earth"},
    ],
    "obqa": [
        {"question": "Which is grown without synthetic pesticides?", "answer": "Organic corn",
         "choices": ["Organic corn", "Conventional corn", "Plastic corn", "Stone corn"]},
        {"question": "What gives light by day?", "answer": "The sun",
         "choices": ["The moon", "The sun", "A stone", "Water"]},
    ],
}  # fmt: skip


def fixture_task_data(out: pathlib.Path) -> pathlib.Path:
    """The official fixture rows of `TASKS` as task data (question / choices / answer); the
    `FALLBACK` records where the fixtures are not next to the checkout."""
    from colajax.eval.templates import few_shot_prefix, format_options

    out.mkdir(parents=True, exist_ok=True)
    for task in TASKS.split(","):
        if not (FIXTURES / f"{task}.jsonl").is_file():  # a clone without ../shared
            records = FALLBACK[task]
            (out / f"{task}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
            continue
        rows = [json.loads(x) for x in (FIXTURES / f"{task}.jsonl").read_text().splitlines()]
        records = []
        for r in rows:
            question = r["prompt"][len(few_shot_prefix(task)) :]
            if r.get("choices"):  # "Question: Q\n(A) ...\nAnswer:" -> Q
                tail = "\n" + format_options(r["choices"]) + "\nAnswer:"
                question = question.removeprefix("Question: ").removesuffix(tail)
            record = {"question": question, "answer": r["ground_truth"]}
            records.append(record | ({"choices": r["choices"]} if r.get("choices") else {}))
        (out / f"{task}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
    return out


def _train(workdir, *extra):
    assert cli.run(["train", *TRAIN, "--workdir", str(workdir), *extra]) == 0


def _eval_and_generate(ckpt, out, capsys, *gen_flags):
    data = fixture_task_data(out.parent / "task_data")
    argv = ["eval", "--checkpoint", str(ckpt), "--tasks", TASKS, "--data", str(data)]
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


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "mode", ["joint", *(pytest.param(m, marks=SLOW) for m in ("frozen", "scratch", "interval"))]
)
def test_cola_every_stage2_mode(stage1, mode, capsys):
    run = stage1 / mode
    init = [] if mode == "scratch" else [f"--config.stage2.init_from={stage1 / 's1'}"]
    _train(run, "--config.stage=prior", f"--config.stage2.vae_mode={mode}", *init)
    loaded = restore.load_model(str(run), "data=1")
    assert loaded.family.name == "cola" and set(loaded.params) == {"vae", "dit"}
    _eval_and_generate(run, stage1 / f"eval_{mode}", capsys, "--steps", "2")


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    for family in ("ar", "llada"):
        _train(root / family, f"--config.model={family}")
    return root


@pytest.mark.parametrize("family", ["ar", "llada"])
def test_baselines_train_eval_generate(lm_runs, family, capsys):
    run = lm_runs / family
    meta = restore.load_model(str(run), "data=1").meta
    assert meta["family"] == family and set(meta["models"]) == {"lm"}
    assert meta["tokens"] == 2 * 8 * 16 and meta["eflops_full"] > 0
    _eval_and_generate(run, lm_runs / f"eval_{family}", capsys)


def test_family_flags_are_checked(lm_runs, capsys):
    argv = ["generate", "--checkpoint", str(lm_runs / "ar"), "--prompt", "x", *GEN, "--cfg", "3"]
    assert cli.run(argv) == 2
    assert "--cfg do(es) not apply to the ar family" in capsys.readouterr().err
    argv[2] = str(lm_runs / "llada")
    assert cli.run([*argv[:-2], "--repetition-penalty", "1.2"]) == 2
    assert "no repetition penalty" in capsys.readouterr().err
