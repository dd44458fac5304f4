"""Sweep planning: the paper's budget axis, budget schedules, sweep specs, size ladders."""

import json

import ml_collections
import pytest

from colajax.models.config import DiTConfig
from colajax.sweep import budgets, ladder, plan, spec
from colajax.sweep.spec import RunSpec


def test_paper_budget_axis():
    sched = budgets.BudgetSchedule.paper()
    assert sched.tokens_per_step == 1408 * 512 == 720_896
    assert sched.steps == tuple(range(10_000, 250_001, 10_000))
    labels = [r["label"] for r in sched.rows()]
    assert labels[:3] == ["77.86", "155.7", "233.6"]
    assert labels[6] == "545.0" and labels[-1] == "1946"
    assert len(labels) == 25
    for k, e in enumerate(sched.eflops, 1):
        assert e == pytest.approx(77.856768 * k, rel=1e-12)  # 6 * 1.8e9 * 720,896 * 1e4 * k
    assert sched.tokens[-1] == 180_224_000_000  # 180B tokens at 250k steps
    # the paper's numbers resolve back onto its steps (exact) and, typed to 4 s.f., with a
    # 1000-step resolution; at 1-step resolution 155.7 is step 19,998 (documented)
    assert budgets.eflops_to_steps(sched.eflops, 720_896) == list(sched.steps)
    typed = [float(x) for x in labels]
    assert budgets.eflops_to_steps(typed, 720_896, step_multiple=1000) == list(sched.steps)
    assert budgets.eflops_to_steps([155.7], 720_896) == [19_998]


def test_rounding_and_errors():
    tps, n = 100, 1e6  # 6e8 FLOPs per step = 6e-10 EFLOPs
    per = budgets.eflops_per_step(tps, n)
    assert budgets.eflops_to_steps([10.4 * per, 10.6 * per], tps, n) == [10, 11]
    assert budgets.eflops_to_steps([10.4 * per], tps, n, rounding="ceil") == [11]
    assert budgets.eflops_to_steps([10.6 * per], tps, n, rounding="floor") == [10]
    assert budgets.eflops_to_steps([0.1 * per], tps, n) == [1]  # never below one step
    with pytest.raises(ValueError, match="at least one step apart"):
        budgets.eflops_to_steps([10 * per, 10.2 * per], tps, n)
    with pytest.raises(ValueError, match="positive number"):
        budgets.eflops_to_steps([-1.0], tps, n)
    with pytest.raises(ValueError, match="unknown rounding"):
        budgets.eflops_to_steps([1.0], tps, n, rounding="up")


def test_schedule_from_config():
    train = ml_collections.ConfigDict({"batch_size": 8, "seq_len": 64})
    assert budgets.BudgetSchedule.from_config(train, n_params=1e6) is None
    per = budgets.eflops_per_step(512, 1e6)
    train.budgets = (100 * per, 200 * per)
    sched = budgets.BudgetSchedule.from_config(train, n_params=1e6)
    assert sched.steps == (100, 200) and sched.is_budget_step(200)
    assert not sched.is_budget_step(150)
    assert sched.eflops[0] == pytest.approx(100 * per)
    train.budget_steps = (5,)
    with pytest.raises(ValueError, match="both set"):
        budgets.BudgetSchedule.from_config(train, n_params=1e6)
    train.budgets = ()
    assert budgets.BudgetSchedule.from_config(train, n_params=1e6).steps == (5,)
    counters = budgets.budget_counters(10, 512, 1e6, full_flops_per_step=2e9)
    assert counters == {
        "train/tokens": 5120,
        "train/eflops_paper": pytest.approx(6 * 1e6 * 5120 / 1e18),
        "train/eflops_full": pytest.approx(2e-8),
    }


def test_runspec_validation():
    run = RunSpec("a", "cola", overrides={"dit.num_layers": 2, "data.kind": "jsonl"}, budgets=(1,))
    assert run.config_overrides() == ["model=cola", "dit.num_layers=2", "data.kind='jsonl'"]
    assert RunSpec.from_json(json.loads(json.dumps(run.to_json()))) == run
    bad = [
        (dict(name="a b", family="cola", budgets=(1,)), "must match"),
        (dict(name="report", family="cola", budgets=(1,)), "reserved"),
        (dict(name="a", family="gpt", budgets=(1,)), "unknown family 'gpt'"),
        (dict(name="a", family="ar", budgets=(1,), kind="grid"), "unknown kind 'grid'"),
        (dict(name="a", family="ar"), "needs budgets"),
        (dict(name="a", family="ar", budgets=(2, 1)), "strictly increasing"),
        (dict(name="a", family="ar", budgets=(1,), budget_steps=(5,)), "not both"),
        (dict(name="a", family="ar", budgets=(1, 2), kind="isoflop", n_params=1), "exactly one"),
        (dict(name="a", family="ar", budgets=(1,), kind="isoflop"), "needs n_params"),
        (dict(name="a", family="ar", budgets=(1,), overrides=["model=cola"]), "family="),
        (dict(name="a", family="ar", budgets=(1,), overrides=["lr"]), "a.b=value"),
    ]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            RunSpec(**kwargs)
    with pytest.raises(ValueError, match="unknown field"):
        RunSpec.from_json({"name": "a", "family": "ar", "budget": 1})


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_load_sweep(tmp_path):
    good = _write(
        tmp_path / "exp.py",
        "from colajax.sweep.spec import RunSpec\n"
        "def get_sweep(arg=None):\n"
        "    n = 2 if arg is None else int(arg)\n"
        "    runs = [RunSpec('cola', 'cola', budgets=(1.0, 2.0))]\n"
        "    return runs + [{'name': f'ar{i}', 'family': 'ar', 'budget_steps': (10,)}"
        " for i in range(n)]\n",
    )
    sweep = spec.load_sweep(good)
    assert sweep.name == "exp" and [r.name for r in sweep.runs] == ["cola", "ar0", "ar1"]
    assert sweep.run("ar1").budget_steps == (10,)
    assert len(spec.load_sweep(good + ":3").runs) == 4
    assert sweep.of_kind("isoflop") == []
    dup = _write(
        tmp_path / "dup.py",
        "def get_sweep():\n    return [dict(name='x', family='ar', budgets=(1,))] * 2\n",
    )
    with pytest.raises(ValueError, match="duplicate run name 'x'"):
        spec.load_sweep(dup)
    none = _write(tmp_path / "none.py", "def get_config(arg=None):\n    return None\n")
    with pytest.raises(ValueError, match="defines no get_sweep"):
        spec.load_sweep(none)
    kind = _write(
        tmp_path / "kind.py",
        "def get_sweep():\n    return [dict(name='x', family='ar', budgets=(1,), kind='k')]\n",
    )
    with pytest.raises(ValueError, match="unknown kind 'k'"):
        spec.load_sweep(kind)
    with pytest.raises(FileNotFoundError):
        spec.load_sweep(str(tmp_path / "missing.py"))
    run_dir = tmp_path / "root" / "cola"
    spec.write_manifest(str(run_dir), sweep.runs[0], tokens_per_step=512)
    assert spec.read_manifest(str(run_dir)) == sweep.runs[0].to_json() | {"tokens_per_step": 512}
    assert spec.read_manifest(str(tmp_path)) is None


def test_ladder_reproduces_paper_sizes():
    cola = ladder.make_size("cola", 2048, head_dim=128, aspect=2048 / 24)
    assert (cola.depth, cola.heads) == (24, 16)
    assert cola.n_params == 1_829_875_728  # = the released DiT (flops.dit_param_count)
    assert cola.overrides["dit.rope_dim"] == 96 and cola.overrides["optim.lr"] == 1.5e-4
    ar = ladder.make_size("ar", 2048, head_dim=128, aspect=2048 / 27)
    assert ar.depth == 27 and ar.overrides["lm.ffn_dim"] == 8192
    assert ar.n_params == pytest.approx(27 * (4 * 2048**2 + 3 * 2048 * 8192), rel=1e-3)
    assert ar.n_params == pytest.approx(1.812e9, rel=1e-3)
    sizes = ladder.ladder(
        "llada", [256, 64, 128], head_dim=32, aspect=32, base_width=64, base_lr=1e-3
    )
    assert [s.width for s in sizes] == [64, 128, 256]
    assert [s.depth for s in sizes] == [2, 4, 8]
    assert [s.lr for s in sizes] == pytest.approx([1e-3, 5e-4, 2.5e-4])  # lr ~ 1/width
    per_token = ladder.cola_n_params(DiTConfig(block_size=16), per_token=True)
    assert per_token < cola.n_params  # AdaLN / timestep weights are not per token
    with pytest.raises(ValueError, match="multiple of head_dim"):
        ladder.make_size("cola", 100, head_dim=32)


def test_isoflop_grid_trains_each_run_to_its_budget():
    sizes = ladder.ladder("cola", [32, 64, 128], head_dim=16, aspect=32, latent_dim=8)
    tps = 8 * 64
    c_small = 6 * sizes[1].n_params * tps * 100 / 1e18  # the middle size: 100 steps
    runs = ladder.isoflop_grid(
        sizes, [c_small, 4 * c_small], tps, min_steps=10, warmup_fraction=0.1
    )
    assert all(r.kind == "isoflop" and r.n_params for r in runs)
    mid = [r for r in runs if r.size == sizes[1].name]
    assert [r.steps for r in mid] == [100, 400]
    for r in runs:
        realised = budgets.eflops_paper(r.steps * tps, r.n_params)
        assert realised == pytest.approx(r.budgets[0], rel=1 / r.steps)
        over = dict(o.split("=", 1) for o in r.overrides)
        assert over["optim.decay_steps"] == str(r.steps)
        assert over["optim.warmup_steps"] == str(max(1, round(0.1 * r.steps)))
    assert len({r.name for r in runs}) == len(runs) == 6
    assert runs[0].name.startswith("cola-d32L1-")


def test_plan_table_of_the_paper_protocol():
    runs = [
        RunSpec(f, f, "2b", budget_steps=tuple(range(10_000, 250_001, 10_000)))
        for f in spec.FAMILIES
    ]
    rows = [
        plan.run_plan(r, batch_size=1408, seq_len=512, n_params=1.8e9, full_flops_per_step=2e16)
        for r in runs
    ]
    assert rows[0]["steps"] == 250_000 and rows[0]["tokens"] == 180_224_000_000
    assert rows[0]["eflops_paper"] == pytest.approx(1946.4192)
    assert rows[0]["eflops_full"] == pytest.approx(5000.0)
    text = plan.format_plan(rows)
    cola = text.split("budget checkpoints of cola")[1].split("budget checkpoints of")[0]
    lines = [line.split() for line in cola.strip().splitlines()[3:]]
    assert [int(x[1]) for x in lines] == list(range(10_000, 250_001, 10_000))
    assert [x[3] for x in lines][:3] == ["77.86", "155.7", "233.6"] and lines[-1][3] == "1946"
    with pytest.raises(ValueError, match="after its last training step"):
        plan.run_plan(runs[0], batch_size=1408, seq_len=512, n_params=1.8e9, train_steps=1000)
    iso = RunSpec("i", "ar", "s", budgets=(1e-6,), kind="isoflop", n_params=1e5, steps=33)
    row = plan.run_plan(iso, batch_size=8, seq_len=64, n_params=1.8e9)
    assert row["schedule"].steps == (33,) and row["n_params"] == 1e5
