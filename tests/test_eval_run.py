"""`colajax eval`: restore onto any mesh, the benchmark loop, outputs, dispatch and errors."""

import csv
import dataclasses
import json

import jax
import numpy as np
import pytest
from tiny_models import TINY_DIT, TINY_VAE

from colajax import checkpoint, restore
from colajax.cli import eval as run
from colajax.eval import benchmark, scoring
from colajax.families import cola
from colajax.families.base import GenOptions

VAE = TINY_VAE
DIT = TINY_DIT
TOKENIZER = "bundled:kjv_sp4096.model"
HF_META = {
    "vae_config": dataclasses.asdict(VAE),
    "dit_config": dataclasses.asdict(DIT),
    "source": {"format": "hf-safetensors"},
}


def random_params(vae=VAE, dit=DIT, seed=0, mesh_spec="data=1"):
    """Random float32 params of the right tree, placed as the rules say on `mesh_spec`."""
    models = {"vae": vae} if dit is None else {"vae": vae, "dit": dit}
    mesh = restore.make_mesh(mesh_spec)
    target = cola.FAMILY.abstract_params(models, mesh, restore.DEFAULT_RULES)
    rng = np.random.default_rng(seed)
    host = jax.tree.map(lambda s: 0.05 * rng.standard_normal(s.shape, np.float32), target)
    return jax.device_put(host, jax.tree.map(lambda s: s.sharding, target))


def write_checkpoint(path, meta, **kw):
    checkpoint.save_params_checkpoint(str(path), random_params(**kw), meta)
    return str(path)


def assert_same_values(a, b):
    flat_a, flat_b = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def fsdp_axes(tree):
    return {
        str(path)
        for path, leaf in jax.tree.leaves_with_path(tree)
        if any("fsdp" in (e if isinstance(e, tuple) else (e,)) for e in leaf.sharding.spec if e)
    }


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ck") / "hf", HF_META)


# --- restore ------------------------------------------------------------------------------


def test_restore_fsdp8_checkpoint_onto_one_device(tmp_path):
    saved = random_params(seed=1, mesh_spec="fsdp=8")
    assert fsdp_axes(saved), "the saved params should really be sharded over 8 devices"
    checkpoint.save_params_checkpoint(str(tmp_path / "ck"), saved, HF_META)
    model = restore.load_model(str(tmp_path / "ck"), "data=1")
    assert_same_values(saved, model.params)
    assert {len(x.sharding.device_set) for x in jax.tree.leaves(model.params)} == {1}
    assert model.models == {"vae": VAE, "dit": DIT} and model.mesh.size == 1
    assert model.family.name == "cola"


def test_restore_one_device_checkpoint_onto_fsdp8(tmp_path):
    # training-style meta: model configs and mesh rules inside the experiment config
    rules = dict(restore.DEFAULT_RULES, embed=("fsdp",))
    meta = {
        "config": {
            "stage": "both",
            "vae": HF_META["vae_config"],
            "dit": HF_META["dit_config"],
            "mesh": {"rules": {k: list(v) for k, v in rules.items()}},
        }
    }
    saved = random_params(seed=2, mesh_spec="data=1")
    checkpoint.save_params_checkpoint(str(tmp_path / "ck"), saved, meta)
    model = restore.load_model(str(tmp_path / "ck"), "fsdp=8")
    assert_same_values(saved, model.params)
    assert model.mesh.shape["fsdp"] == 8
    sharded = fsdp_axes(model.params)
    assert any("txt_in" in p for p in sharded) and any("wte" in p or "embed" in p for p in sharded)


def test_stage1_checkpoint_loads_for_diagnostics_only(tmp_path):
    meta = {"config": {"stage": "vae", "vae": HF_META["vae_config"], "dit": {}}}
    path = write_checkpoint(tmp_path / "vae", meta, dit=None)
    model = restore.load_model(path, "data=1")
    assert set(model.params) == {"vae"} and set(model.models) == {"vae"}
    with pytest.raises(ValueError, match="Stage-1"):
        model.family.generator(model.params, model.models, model.meta, None, GenOptions())


def test_joint_stage2_checkpoint_with_reference_encoder_loads(tmp_path):
    """A joint Stage-2 checkpoint also stores the frozen reference encoder ('vae_ref'); the
    loader restores only what the models need (this failed before the one loader)."""
    params = random_params(seed=3)
    stored = {**params, "vae_ref": {"encoder": params["vae"]["encoder"]}}
    meta = {
        "family": "cola",
        "models": {"vae": dataclasses.asdict(VAE), "dit": dataclasses.asdict(DIT)},
    }
    checkpoint.save_params_checkpoint(str(tmp_path / "ck"), stored, meta)
    model = restore.load_model(str(tmp_path / "ck"), "data=1")
    assert set(model.params) == {"vae", "dit"}
    assert_same_values(params, model.params)


def test_parse_mesh():
    assert restore.parse_mesh("data=-1") == {"data": -1, "fsdp": 1, "tensor": 1}
    assert restore.parse_mesh("data=2, tensor=4") == {"data": 2, "fsdp": 1, "tensor": 4}
    for bad in ("model=2", "data", "data=x"):
        with pytest.raises(ValueError, match="AXIS=SIZE"):
            restore.parse_mesh(bad)
    with pytest.raises(ValueError, match="needs 16 devices"):
        restore.make_mesh("fsdp=16")


# --- the benchmark loop with a fake generator ---------------------------------------------


def test_run_task_order_batches_and_scoring():
    records = [
        {
            "id": f"r{i}",
            "question": "x" * (10 - i),
            "context": "",
            "choices": None,
            "ground_truth": f"word{i} more",
        }
        for i in range(5)
    ]
    calls = []

    def fake(prompts, numbers):
        calls.append(list(numbers))
        # right first word for even record numbers only
        return [f" word{n} blah" if n % 2 == 0 else "nope" for n in numbers]

    rows, acc = benchmark.run_task("lambada", records, fake, batch_size=2, progress=False)
    assert all(len(c) == 2 for c in calls)  # the last batch is padded: one shape per task
    assert calls == [[4, 3], [2, 1], [0, 0]]  # shortest prompts first
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(5)]
    assert [r["correct"] for r in rows] == [True, False, True, False, True]
    assert acc == pytest.approx(60.0)
    assert rows[0]["prompt"] == "x" * 10 and rows[2]["generation"] == " word2 blah"
    assert "choices" not in rows[0]


# --- end to end on a tiny random model ------------------------------------------------------

TASK_ROWS = {
    "lambada": [
        {"question": "And God said, Let there be", "answer": "light"},
        {"question": "In the beginning God created the heaven and the", "answer": "earth"},
        {"question": "The Lord is my", "answer": "shepherd"},
    ],
    "obqa": [
        {
            "question": "What gives light by day?",
            "choices": ["sun", "moon", "stars", "lamp"],
            "answer": "sun",
        },
        {
            "question": "Who built the ark?",
            "choices": ["Moses", "Noah", "David", "Paul"],
            "answer": 1,
        },
        {
            "question": "What did Adam eat?",
            "choices": ["bread", "fish", "fruit", "honey"],
            "answer": "fruit",
        },
    ],
    "squad": [
        {
            "context": "Noah built an ark of gopher wood.",
            "question": "What wood?",
            "answer": "gopher wood",
        },
        {
            "context": "David slew Goliath with a stone.",
            "question": "Who slew Goliath?",
            "answer": "David",
        },
    ],
}


def write_tasks(data_dir):
    data_dir.mkdir(parents=True, exist_ok=True)
    for task, rows in TASK_ROWS.items():
        with open(data_dir / f"{task}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return data_dir


def eval_args(ckpt, data, out, *extra):
    return [
        "--checkpoint",
        ckpt,
        "--tasks",
        "lambada,obqa,squad",
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        "2",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--mesh",
        "data=1",
        "--tokenizer",
        TOKENIZER,
        "--no-progress",
        *extra,
    ]


def test_eval_end_to_end(ckpt, tmp_path, capsys):
    data = write_tasks(tmp_path / "data")
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    assert run.main(eval_args(ckpt, data, tmp_path / "out")) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    outputs = [f"{t}_generations.jsonl" for t in TASK_ROWS]
    outputs += ["summary.csv", "summary.md", "result.json"]
    assert names == sorted(outputs)
    accs = {}
    for task, raw in TASK_ROWS.items():
        lines = (tmp_path / "out" / f"{task}_generations.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert [r["id"] for r in rows] == list(range(len(raw)))
        want = {
            "id",
            "prompt",
            "generation",
            "ground_truth",
            "extracted",
            "extracted_gt",
            "correct",
        } | ({"choices"} if task == "obqa" else set())
        for row in rows:
            assert set(row) == want
            assert isinstance(row["generation"], str) and row["generation"]
            rescored = scoring.score_row(
                task, row["generation"], row["ground_truth"], row.get("choices")
            )
            assert {k: row[k] for k in rescored} == rescored
        assert rows[1]["ground_truth"] == (raw[1]["answer"] if task != "obqa" else "Noah")
        assert rows[0]["prompt"].endswith("Answer:") or task == "lambada"
        accs[task] = 100.0 * sum(r["correct"] for r in rows) / len(rows)
        assert result[task] == pytest.approx(accs[task])
    average = sum(accs.values()) / len(accs)
    assert result["average"] == pytest.approx(average)
    with open(tmp_path / "out" / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["task"] for r in table] == [*TASK_ROWS, "average"]
    assert float(table[-1]["accuracy"]) == pytest.approx(average, abs=0.005)
    assert table[-1]["rows"] == str(sum(len(r) for r in TASK_ROWS.values()))
    md = (tmp_path / "out" / "summary.md").read_text()
    assert f"| **average** | 8 | **{average:.2f}** |" in md
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # inputs untouched


def test_generation_depends_only_on_prompt_and_record_number(ckpt):
    opts = GenOptions(steps=2, max_new_tokens=8, seed=66)
    gen = benchmark.model_generate_fn(ckpt, opts, tokenizer=TOKENIZER, mesh="data=1")
    a, b = "And the Lord spake", "Thus saith the Lord of hosts"
    first = gen([a, b], [0, 1])
    assert gen([a, a], [0, 0])[0] == first[0]  # other prompt in the batch does not matter
    assert gen([b, a], [1, 0]) == first[::-1]
    noise = np.asarray(cola.prompt_noise(66, [0, 1, 0], 2, 4, 4))
    np.testing.assert_array_equal(noise[0], noise[2])
    assert not np.allclose(noise[0], noise[1])


# --- dispatch and errors ------------------------------------------------------------------


def test_eval_score_dispatch(tmp_path, capsys):
    gens = tmp_path / "gens.jsonl"
    rows = [
        {"generation": " light and", "ground_truth": "light"},
        {"generation": "dark", "ground_truth": "light"},
    ]
    gens.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run.main(["score", "--task", "lambada", "--generations", str(gens)]) == 0
    assert json.loads(capsys.readouterr().out) == {"task": "lambada", "rows": 2, "accuracy": 50.0}


def test_errors(ckpt, tmp_path, capsys):
    data = write_tasks(tmp_path / "data")
    out = tmp_path / "out"

    def fails(argv, message):
        assert run.main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err

    fails(eval_args(str(tmp_path / "nope"), data, out), "does not exist")
    fails(eval_args(ckpt, tmp_path / "empty", out), "not found")
    bad = eval_args(ckpt, data, out)
    bad[bad.index("--tasks") + 1] = "lambada,trivia"
    fails(bad, "unknown task 'trivia'")
    existing = out / "lambada_generations.jsonl"
    guard = eval_args(ckpt, data, out, "--task-data", f"lambada={existing}")
    out.mkdir()
    existing.write_text(json.dumps(TASK_ROWS["lambada"][0]) + "\n")
    fails(guard, "would overwrite the input")
    small = dataclasses.replace(VAE, vocab_size=64)
    small_meta = {"vae_config": dataclasses.asdict(small), "dit_config": HF_META["dit_config"]}
    small_ckpt = write_checkpoint(tmp_path / "small", small_meta, vae=small)
    fails(eval_args(small_ckpt, data, tmp_path / "o2"), "has 4096 tokens but the model's vocab")
    no_tok = [
        a for a in eval_args(ckpt, data, tmp_path / "o3") if a not in ("--tokenizer", TOKENIZER)
    ]
    fails(no_tok, "pass --tokenizer")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
