"""Launchers' --dry-run: the exact commands (names, zones, accelerator types, worker/node counts,
env vars, quoting) for a few configurations. Each printed line is parsed back with shlex, so
the quoting a user pastes is what is tested. No JAX, no cloud."""

import json
import shlex
import subprocess

import pytest

from launch import common, slurm, sweep, tpu_vm, xpk

HEAD = subprocess.run(
    ["git", "-C", common.REPO, "rev-parse", "HEAD"], capture_output=True, text=True
).stdout.strip()
WORKDIR = "gs://bucket/runs/it's a dir"  # a quote and spaces: must survive two shells
TRAIN = ["colajax", "train", "--config", "experiments/cola_2b.py", "--workdir", WORKDIR]


def _lines(capsys) -> list[list[str]]:
    out = capsys.readouterr().out
    return [shlex.split(line) for line in out.splitlines() if line and not line.startswith("#")]


def _flag(cmd: list[str], name: str) -> str:
    hits = [a.split("=", 1)[1] for a in cmd if a.startswith(name + "=")]
    if not hits and name in cmd:
        hits = [cmd[cmd.index(name) + 1]]
    assert len(hits) == 1, (name, cmd)
    return hits[0]


@pytest.mark.parametrize(
    "mode, verb, extra",
    [
        ("on-demand", ["tpu-vm", "create"], []),
        ("spot", ["tpu-vm", "create"], ["--spot"]),
        ("queued", ["queued-resources", "create"], []),
    ],
)
def test_tpu_vm_create(capsys, mode, verb, extra):
    args = ["create", "--name", "cola", "--zone", "us-east5-a", "--type", "v5p-128"]
    assert tpu_vm.main([*args, "--mode", mode, "--project", "p1", "--dry-run"]) == 0
    (cmd,) = _lines(capsys)
    assert cmd[:5] == ["gcloud", "compute", "tpus", *verb] and cmd[5] == "cola"
    assert _flag(cmd, "--zone") == "us-east5-a" and _flag(cmd, "--project") == "p1"
    assert _flag(cmd, "--accelerator-type") == "v5p-128"
    version = "--runtime-version" if mode == "queued" else "--version"
    assert _flag(cmd, version) == "v2-alpha-tpuv5"
    assert [a for a in cmd if a == "--spot"] == extra


def test_tpu_vm_multislice_queued_resource(capsys):
    args = ["create", "--name", "big", "--zone", "z", "--type", "v6e-256", "--num-slices", "4"]
    tpu_vm.main([*args, "--mode", "queued-spot", "--dry-run"])
    (cmd,) = _lines(capsys)
    assert _flag(cmd, "--node-count") == "4" and _flag(cmd, "--node-prefix") == "big"
    assert _flag(cmd, "--runtime-version") == "v2-alpha-tpuv6e" and "--spot" in cmd


def _remote(cmd: list[str]) -> list[str]:
    """The remote script of a `gcloud ... ssh --command=SCRIPT`, split as the worker's shell."""
    return shlex.split(_flag(cmd, "--command"))


def test_tpu_vm_setup_ships_the_exact_commit_to_every_worker(capsys):
    tpu_vm.main(["setup", "--name", "cola", "--zone", "z", "--dry-run"])
    archive, scp, ssh = _lines(capsys)
    assert archive[-1] == HEAD and "archive" in archive
    assert scp[3:5] == ["tpu-vm", "scp"] and "--worker=all" in scp
    assert ssh[3:6] == ["tpu-vm", "ssh", "cola"] and "--worker=all" in ssh
    script = _flag(ssh, "--command")
    assert f"~/colajax/{HEAD}" in script and "requirements-tpu.lock" in script


def test_tpu_vm_run_detached_on_all_workers_with_logs_and_quoting(capsys):
    run = ["run", "--name", "cola", "--zone", "z", "--run", "Cola 2B/v1", "--dry-run"]
    tpu_vm.main([*run, "--env", "LIBTPU_INIT_ARGS=--xla_tpu_x=1 --y", "--", *TRAIN])
    (ssh,) = _lines(capsys)
    assert "--worker=all" in ssh
    words = _remote(ssh)
    start = words.index("setsid") + 1
    end = words.index(">")
    assert words[start:end] == [".venv/bin/colajax", *TRAIN[1:]]  # the workdir survived
    assert words[end + 1] == "~/colajax/logs/cola-2b-v1.$(hostname).log"  # a log per worker
    assert "export" in words and "LIBTPU_INIT_ARGS=--xla_tpu_x=1 --y;" in words
    assert f"~/colajax/{HEAD};" in words and "nohup" in words and "&" in words


def test_tpu_vm_logs_stop_delete(capsys):
    base = ["--name", "cola", "--zone", "z", "--run", "r1", "--dry-run"]
    tpu_vm.main(["logs", *base])
    tpu_vm.main(["stop", *base])
    tpu_vm.main(["delete", *base, "--mode", "queued"])
    logs, stop, delete = _lines(capsys)
    assert "--worker=0" in logs and "tail" in _remote(logs)
    assert "--worker=all" in stop and "kill -TERM $(cat ~/colajax/logs/r1.pid)" in stop[-2]
    assert delete[3:6] == ["queued-resources", "delete", "cola"] and "--force" in delete


def test_xpk_builds_an_image_of_this_commit_and_is_multislice_aware(capsys):
    args = ["--cluster", "c1", "--tpu-type", "v5p-128", "--num-slices", "2", "--name", "Cola_2B"]
    xpk.main([*args, "--image-repo", "gcr.io/p/colajax", "--zone", "z", "--dry-run", "--", *TRAIN])
    archive, build, push, create = _lines(capsys)
    tag = f"gcr.io/p/colajax:{HEAD[:12]}"
    assert archive[-1] == HEAD
    assert build[:2] == ["docker", "build"] and _flag(build, "--tag") == tag
    assert _flag(build, "--file") == "launch/Dockerfile" and build[-2:] == ["<", archive[-2][9:]]
    assert push == ["docker", "push", tag]
    assert create[:3] == ["xpk", "workload", "create"]
    assert _flag(create, "--workload") == "cola-2b" and _flag(create, "--num-slices") == "2"
    assert _flag(create, "--docker-image") == tag and _flag(create, "--zone") == "z"
    job = shlex.split(_flag(create, "--command"))
    assert job == [*TRAIN, "--config.mesh.num_slices=2"]


def test_xpk_script_dir_mode_installs_the_lock(capsys):
    args = ["--cluster", "c1", "--tpu-type", "v5e-16", "--name", "r", "--script-dir"]
    xpk.main([*args, "--dry-run", "--", *TRAIN])
    *prep, create = _lines(capsys)
    folder = _flag(create, "--script-dir")
    assert prep[-1] == ["tar", "-xf", f"/tmp/colajax-{HEAD}.tar", "-C", folder]
    job = _flag(create, "--command")
    assert (
        job.startswith("pip install -q -r requirements-tpu.lock") and shlex.split(job)[-6:] == TRAIN
    )


@pytest.mark.parametrize("per, tasks", [("gpu", "8"), ("node", "1")])
def test_slurm_script(capsys, tmp_path, per, tasks):
    args = ["--nodes", "4", "--gpus-per-node", "8", "--partition", "a100", "--time", "1-00:00:00"]
    args += ["--name", "run 1", "--per", per, "--chdir", str(tmp_path), "--env", "NCCL_IB_HCA=mlx5"]
    slurm.main([*args, "--dry-run", "--", *TRAIN])
    out = capsys.readouterr().out
    script = out.split(":\n", 1)[1].split("\n\n")[0]
    head = dict(
        line[len("#SBATCH --") :].split("=", 1)
        for line in script.splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    )
    assert head["job-name"] == "run-1" and head["nodes"] == "4" and head["gpus-per-node"] == "8"
    assert head["ntasks-per-node"] == tasks and head["partition"] == "a100"
    assert head["time"] == "1-00:00:00" and head["signal"] == "TERM@120"
    assert "export NCCL_IB_HCA=mlx5" in script and "XLA_PYTHON_CLIENT_MEM_FRACTION" in script
    assert ("JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in script) == (per == "node")
    srun = shlex.split(script.strip().splitlines()[-1])
    assert srun[-len(TRAIN) + 1 :] == TRAIN[1:] and srun[-len(TRAIN)].endswith(".venv/bin/colajax")
    assert out.strip().splitlines()[-1] == f"sbatch {tmp_path}/logs/run-1.sbatch"


def test_sweep_submits_one_job_per_run(capsys, tmp_path):
    runs = [("dit-s_1e18", [*TRAIN, "--config.dit.num_layers=4"]), ("dit-m_1e18", TRAIN)]
    opts = ["--nodes", "1", "--gpus-per-node", "8", "--partition", "p", "--time", "1:00:00"]
    assert sweep.submit(runs, "slurm", [*opts, "--chdir", str(tmp_path)], dry_run=True) == 0
    out = capsys.readouterr().out
    assert [s for s in out.splitlines() if s.startswith("sbatch")] == [
        f"sbatch {tmp_path}/logs/dit-s-1e18.sbatch",
        f"sbatch {tmp_path}/logs/dit-m-1e18.sbatch",
    ]
    assert "--config.dit.num_layers=4" in out.split("dit-m-1e18.sbatch")[0]
    sweep.submit(runs[:1], "xpk", ["--cluster", "c", "--tpu-type", "v5e-16", "--image", "i"], True)
    (create,) = _lines(capsys)
    assert _flag(create, "--workload") == "dit-s-1e18"
    sweep.submit(runs[:1], "tpu_vm", ["--name", "sw", "--zone", "z", "--mode", "queued"], True)
    lines = _lines(capsys)
    assert lines[0][5] == "sw-dit-s-1e18" and lines[-1][5] == "sw-dit-s-1e18"
    with pytest.raises(SystemExit, match="unique"):
        sweep.submit([runs[0], runs[0]], "slurm", opts, True)
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([{"name": n, "argv": a} for n, a in runs]))
    assert sweep.main(["--runs", str(path), "--launcher", "xpk", "--dry-run", "--",
                       "--cluster", "c", "--tpu-type", "v5e-16", "--image", "i"]) == 0  # fmt: skip


def test_job_names_are_safe_and_distinct():
    assert common.job_name("Cola 2B / lr=3e-4") == "cola-2b-lr-3e-4"
    assert common.job_name("1e18") == "r-1e18"
    long_a, long_b = "x" * 50 + "a", "x" * 50 + "b"
    assert len(common.job_name(long_a)) == 40 and common.job_name(long_a) != common.job_name(long_b)
