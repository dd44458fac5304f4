"""Sweep report: CSV from a fake sweep directory (real files in the documented layout), PNGs,
IsoFLOP fits recovering known exponents, the digitized paper table."""

import csv
import json
import os

import numpy as np
import pytest

from colajax.sweep import isoflop, plots, report, spec
from colajax.sweep.spec import RunSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TPS, N = 512, 1e6  # tokens per step, params: 3.072e-9 paper EFLOPs per step
PER_STEP = 6 * N * TPS / 1e18


def _jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _summary(run_dir, step, accs):
    d = os.path.join(run_dir, "eval", f"step_{step}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "summary.csv"), "w") as f:
        f.write("task,rows,accuracy\n")
        f.writelines(f"{t},10,{a:.2f}\n" for t, a in accs.items())


def _train_row(step, tps=TPS, n=N):
    return {
        "step": step,
        "train/loss": 5.0 - step / 100,
        "train/tokens": step * tps,
        "train/eflops_paper": 6 * n * step * tps / 1e18,
        "train/eflops_full": 3 * 6 * n * step * tps / 1e18,
    }


def _fake_sweep(root):
    """cola (stage both: vae/ + prior/), ar (checkpoints at the root), llada (no evals yet)."""
    runs = [
        RunSpec("cola", "cola", "tiny", budget_steps=(10, 20), n_params=N),
        RunSpec("ar", "ar", "tiny", budget_steps=(10, 20), n_params=N),
        RunSpec("llada", "llada", "tiny", budget_steps=(10, 20), n_params=N),
    ]
    cola, ar, llada = (os.path.join(root, r.name) for r in runs)
    _jsonl(os.path.join(cola, "vae", "metrics.jsonl"), [{"step": 10, "eval/loss": 99.0}])
    prior = [_train_row(s) for s in (5, 10, 15, 20)]
    prior += [{"step": 10, "eval/loss": 3.0, "eval/fm": 1.0}, {"step": 20, "eval/loss": 2.5}]
    _jsonl(os.path.join(cola, "prior", "metrics.jsonl"), prior)
    _summary(cola, 10, {"kjv_lastword": 10.0, "kjv_nextverse": 50.0, "average": 30.0})
    _summary(cola, 20, {"kjv_lastword": 20.0, "kjv_nextverse": 60.0, "average": 40.0})
    # ar: counters logged only at step 5 and 15 (rates give the others); a resumed run
    # re-logged step 20 (the later line wins); a torn last line is skipped
    rows = [_train_row(5), _train_row(15), {"step": 20, "eval/loss": 9.0}]
    rows += [{"step": 20, "eval/loss": 2.0}]
    _jsonl(os.path.join(ar, "metrics.jsonl"), rows)
    with open(os.path.join(ar, "metrics.jsonl"), "a") as f:
        f.write('{"step": 25, "eval/lo')
    _summary(ar, 20, {"kjv_lastword": 30.0, "lambada": 5.0})  # no average row, no step-10 eval
    _jsonl(os.path.join(llada, "metrics.jsonl"), [_train_row(10), {"step": 10, "eval/loss": 4.0}])
    for r in runs:
        spec.write_manifest(os.path.join(root, r.name), r, tokens_per_step=TPS)
    return spec.Sweep("fake", "experiments/none.py", tuple(runs))


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _is_png(path):
    with open(path, "rb") as f:
        return os.path.getsize(path) > 1000 and f.read(8) == PNG_MAGIC


def test_report_csv_and_pngs(tmp_path):
    root = str(tmp_path / "sweep")
    sweep = _fake_sweep(root)
    out = report.write_report(root, sweep=sweep)
    assert out["csv"] == os.path.join(root, "report", "sweep.csv")
    rows = _read_csv(out["csv"])
    header = list(rows[0])
    assert header[:10] == list(report.BASE_COLUMNS)
    assert header[10:] == [
        "lambada", "kjv_lastword", "kjv_nextverse", "average", "loss_step", "eval/fm", "eval/loss"
    ]  # fmt: skip
    got = {(r["run"], r["step"]): r for r in rows}
    assert sorted(got) == [("ar", "20"), ("cola", "10"), ("cola", "20"), ("llada", "10")]
    c10, c20 = got["cola", "10"], got["cola", "20"]
    assert (c10["family"], c10["size"], c10["kind"]) == ("cola", "tiny", "checkpoint")
    assert c10["tokens"] == "5120" and float(c10["eflops_paper"]) == pytest.approx(10 * PER_STEP)
    assert float(c10["eflops_full"]) == pytest.approx(30 * PER_STEP)
    assert (c10["kjv_lastword"], c10["kjv_nextverse"], c10["average"]) == ("10", "50", "30")
    assert (c10["eval/loss"], c10["eval/fm"], c10["loss_step"]) == ("3", "1", "10")  # not vae/
    assert (c20["eval/loss"], c20["eval/fm"], c20["lambada"]) == ("2.5", "", "")
    a20 = got["ar", "20"]
    assert a20["tokens"] == str(20 * TPS)  # rate from the step-15 counters
    assert float(a20["eflops_full"]) == pytest.approx(60 * PER_STEP)
    assert (a20["lambada"], a20["kjv_lastword"], a20["average"]) == ("5", "30", "17.5")
    assert a20["eval/loss"] == "2"  # the re-logged value
    llada = got["llada", "10"]
    assert llada["average"] == "" and llada["eval/loss"] == "4"  # budget reached, not evaluated
    assert float(llada["n_params"]) == N
    names = sorted(os.path.basename(p) for p in out["pngs"])
    assert names == [
        "accuracy_average.png", "accuracy_paper_rq4.png", "accuracy_tasks.png",
        "loss_vs_compute.png",
    ]  # fmt: skip
    assert all(_is_png(p) for p in out["pngs"])
    assert out["fits"] is None and out["rows"] == 4
    # per-family loss columns: Cola's eval/fm is logged at step 10 only, the others' eval/loss
    by_family = report.write_report(
        root, str(tmp_path / "r2"), sweep=sweep, loss_key={"cola": "eval/fm"}
    )
    assert "loss_vs_compute.png" in [os.path.basename(p) for p in by_family["pngs"]]


def test_gather_from_manifests_equals_gather_from_sweep(tmp_path):
    root = str(tmp_path / "sweep")
    sweep = _fake_sweep(root)
    rows, columns = report.gather(root, sweep)
    rows2, columns2 = report.gather(root)
    key = lambda r: (r["run"], r["step"])  # noqa: E731
    assert columns2 == columns and sorted(rows2, key=key) == sorted(rows, key=key)
    os.remove(os.path.join(root, "llada", spec.MANIFEST))  # no spec: still found, family unknown
    rows2, _ = report.gather(root)
    llada = [r for r in rows2 if r["run"] == "llada"]
    assert [(r["family"], r["step"], r["eval/loss"]) for r in llada] == [("", 10, 4.0)]


def test_report_overlays_paper_and_handles_empty(tmp_path):
    root = tmp_path / "paper_scale"
    run = RunSpec("cola2b", "cola", "2b", budget_steps=(10_000, 20_000))
    d = str(root / "cola2b")
    _jsonl(os.path.join(d, "metrics.jsonl"), [_train_row(20_000, 720_896, 1.8e9)])
    _summary(d, 10_000, {"lambada": 30.0, "mmlu": 2.0})
    _summary(d, 20_000, {"lambada": 34.0, "mmlu": 8.0})
    out = report.write_report(str(root), str(tmp_path / "rep"), spec.Sweep("s", "e.py", (run,)))
    rows = _read_csv(out["csv"])
    assert [float(r["eflops_paper"]) for r in rows] == pytest.approx([77.856768, 155.713536])
    names = sorted(os.path.basename(p) for p in out["pngs"])
    assert names == ["accuracy_average.png", "accuracy_tasks.png"]  # overlaid, no extra figure
    empty = tmp_path / "empty"
    empty.mkdir()
    out = report.write_report(str(empty))
    assert out["rows"] == 0 and out["pngs"] == [] and out["notes"]
    assert _read_csv(out["csv"]) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.write_report(str(tmp_path / "nope"))


def _chinchilla_loss(n, d, e=1.69, a=406.4, b=410.7, alpha=0.34, beta=0.28):
    return e + a / n**alpha + b / d**beta


def test_isoflop_fit_recovers_exponents():
    # exact parabolas in log10 N around N_opt = 0.1 C^0.6: recovered to rounding error
    points = []
    for c in (1e17, 1e18, 1e19, 1e20):
        x_opt = np.log10(0.1 * c**0.6)
        for dx in (-1.0, -0.5, 0.0, 0.5, 1.0):
            loss = 2.0 + 0.3 * dx**2 + 0.01 * np.log10(c)
            points.append(
                {
                    "family": "f",
                    "budget_eflops": c / 1e18,
                    "n_params": 10 ** (x_opt + dx),
                    "loss": loss,
                }
            )
    fit = isoflop.fit_all(points)["f"]
    assert fit["n_opt_law"]["exponent"] == pytest.approx(0.6, abs=1e-9)
    assert fit["n_opt_law"]["coefficient"] == pytest.approx(0.1, rel=1e-6)
    assert fit["d_opt_law"]["exponent"] == pytest.approx(0.4, abs=1e-9)
    assert not fit["notes"]
    # Chinchilla's parametric loss: the IsoFLOP minima follow N_opt ~ C^(beta / (alpha + beta))
    points = []
    for c in np.geomspace(1e18, 1e22, 5):
        for n in np.geomspace(1e7, 1e11, 41):
            d = c / (6 * n)
            points.append(
                {
                    "family": "c",
                    "budget_eflops": c / 1e18,
                    "n_params": n,
                    "loss": _chinchilla_loss(n, d),
                }
            )
    fit = isoflop.fit_all(points)["c"]
    assert fit["n_opt_law"]["exponent"] == pytest.approx(0.28 / 0.62, abs=0.02)
    assert fit["d_opt_law"]["exponent"] == pytest.approx(0.34 / 0.62, abs=0.02)
    lines = isoflop.summary_lines({"c": fit})
    assert lines[0].startswith("c: N_opt ~ C^0.4")
    # too few sizes / a concave parabola are reported, not fitted
    few = isoflop.fit_family([{"budget_eflops": 1.0, "n_params": n, "loss": 1.0} for n in (1, 2)])
    assert "need 3" in few["notes"][0] and "n_opt_law" not in few
    cap = isoflop.fit_family(
        [{"budget_eflops": 1.0, "n_params": 10.0**k, "loss": -(k**2)} for k in range(3)]
    )
    assert "opens downwards" in cap["notes"][0]


def test_report_isoflop_grid(tmp_path):
    root = str(tmp_path / "grid")
    runs = []
    for ci, c_flops in enumerate((1e14, 1e15, 1e16)):
        n_opt = 1e3 * c_flops**0.5 / 1e4  # N_opt ~ C^0.5
        for k, dx in enumerate((-0.6, 0.0, 0.6)):
            n = n_opt * 10**dx
            steps = max(1, round(c_flops / (6 * n * TPS)))
            run = RunSpec(
                f"iso{ci}{k}", "cola", f"s{k}", budgets=(c_flops / 1e18,), kind="isoflop",
                n_params=n, steps=steps,
            )  # fmt: skip
            runs.append(run)
            d = os.path.join(root, run.name)
            loss = 3.0 + 0.5 * dx**2
            _jsonl(
                os.path.join(d, "metrics.jsonl"),
                [_train_row(steps, n=n), {"step": steps, "eval/loss": loss}],
            )
            spec.write_manifest(d, run)
    out = report.write_report(root)  # from the manifests alone
    fits = json.load(open(out["fits"]))
    assert fits["loss_key"] == {"cola": "eval/loss"}
    by_family = report.write_report(root, str(tmp_path / "r2"), loss_key={"cola": "eval/fm"})
    assert by_family["fits"] is None and "no" in by_family["notes"][-1]  # cola's column is absent
    law = fits["families"]["cola"]["n_opt_law"]
    assert law["exponent"] == pytest.approx(0.5, abs=1e-6)
    assert out["fit_lines"][0].startswith("cola: N_opt ~ C^0.500, D_opt ~ C^0.500")
    assert [os.path.basename(p) for p in out["pngs"]] == ["isoflop_cola.png"]
    assert _is_png(out["pngs"][0])
    rows = _read_csv(out["csv"])
    assert len(rows) == 9 and {r["kind"] for r in rows} == {"isoflop"}
    assert sorted({float(r["budget_eflops"]) for r in rows}) == pytest.approx([1e-4, 1e-3, 1e-2])


def test_paper_table():
    rows = plots.paper_rows()
    assert len(rows) == 75 and {r["family"] for r in rows} == {"cola", "ar", "llada"}
    final = {r["family"]: r for r in rows if r["step"] == 250_000}
    assert final["cola"]["average"] == 26.3 and final["ar"]["average"] == 21.5
    assert final["llada"]["squad"] == 43.1
    assert final["cola"]["eflops_paper"] == pytest.approx(1946.4192)
    cola1 = next(r for r in rows if r["family"] == "cola" and r["step"] == 10_000)
    assert "squad" not in cola1 and "average" not in cola1  # occluded cells stay missing
    ar1 = next(r for r in rows if r["family"] == "ar" and r["step"] == 10_000)
    assert "siqa" not in ar1  # "(8.5)": derived from the mean identity, left out
