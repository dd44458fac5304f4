"""The errors a pod user meets first end in one clear line (file, line, fix) and exit 1, not a
traceback: a broken config file, a --workdir that is a file (local or gs:// through
etils.epath), gs:// without gcsfs; and the corrupt-newest-checkpoint fallback prints its
warning without Orbax's "Event loop is closed" noise."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import _registry

from colajax.cli import train as train_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(capsys, *argv) -> tuple[int, str]:
    rc = train_cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err.strip()


@pytest.mark.parametrize(
    "body, where, what",
    [
        (
            "    c.x = (1, 2\n    return c\n",
            ":5:",
            "SyntaxError: '(' was never closed `c.x = (1, 2`",
        ),
        ("  return c\n", ":5:", "IndentationError"),
        ("    c.train.batch_size = undefined_name\n    return c\n", ":5:", "NameError"),
    ],
)
def test_broken_config_file(tmp_path, capsys, body, where, what):
    bad = tmp_path / "bad.py"
    head = "from experiments import base\n\ndef get_config(arg=None):\n    c = base.get_config()\n"
    bad.write_text(head + body)  # body starts on line 5
    rc, err = _train(capsys, "--config", str(bad), "--workdir", str(tmp_path / "run"))
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert f"bad.py{where}" in err and what in err and "fix the config file" in err


def test_workdir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    for workdir, msg in ((f, "is an existing file"), (f / "sub" / "run", "is a file, so")):
        rc, err = _train(capsys, "--config", "experiments/tiny.py", "--workdir", str(workdir))
        assert rc == 1 and len(err.splitlines()) == 1 and msg in err, err
    assert f.read_text() == "x"


class FakeGCS(LocalFileSystem):
    """gs://bucket/path -> ROOT/bucket/path: etils.epath's fsspec backend on a local folder."""

    root = ""
    protocol = ("gs", "gcs")
    cachable = False

    def __init__(self, *args, finalize_on_close=None, **kwargs):
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        return os.path.join(cls.root, path.split("://", 1)[1]) if "://" in path else path


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    FakeGCS.root = str(tmp_path / "gcs")
    os.makedirs(f"{FakeGCS.root}/bucket")
    for name in ("gs", "gcs"):
        monkeypatch.setitem(_registry, name, FakeGCS)
    cached = epath_backend.fsspec_backend._get_filesystem  # etils memoises the filesystem
    cached.cache_clear()
    yield FakeGCS.root
    cached.cache_clear()


def test_gs_workdir_through_epath(fake_gcs, capsys):
    with open(f"{fake_gcs}/bucket/run.log", "w") as f:
        f.write("x")
    rc, err = _train(capsys, "--config", "experiments/tiny.py", "--workdir", "gs://bucket/run.log")
    assert rc == 1 and "gs://bucket/run.log is an existing file" in err
    train_cli.check_workdir("gs://bucket/new-run")  # a fresh gs:// directory is fine
    from colajax.train.metrics import MetricsWriter

    w = MetricsWriter("gs://bucket/new-run", tensorboard=False)  # rewritten, not appended
    w.write(1, {"loss": 2.0})
    w.write(2, {"loss": 1.0})
    w.close()
    with open(f"{fake_gcs}/bucket/new-run/metrics.jsonl") as f:
        assert [line.count("train/loss") for line in f] == [1, 1]


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_gs_workdir_without_gcsfs_says_what_to_install(capsys):
    rc, err = _train(capsys, "--config", "experiments/tiny.py", "--workdir", "gs://b/run")
    assert rc == 1 and len(err.splitlines()) == 1 and "pip install 'colajax[gcs]'" in err


CORRUPT = textwrap.dedent(
    """
    import glob, os, sys
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from colajax import checkpoint as ck
    root = sys.argv[1]
    mesh = jax.make_mesh((4, 2), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    sh = NamedSharding(mesh, P("a", "b"))
    tree = lambda v: {f"l{i}": jax.device_put(jnp.full((256, 64), v + i), sh) for i in range(40)}
    c = ck.TrainCheckpointer(root, keep=5)
    for s in (2, 4):
        c.save(s, tree(s), tree(-s), {"i": s}, {"step": s})
    c.close()
    for f in glob.glob(f"{root}/4/params/**/d/*", recursive=True):
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 3)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), tree(0))
    c = ck.TrainCheckpointer(root, keep=5)
    print("RESTORED", c.restore_latest(abstract, abstract)["step"], flush=True)
    c.close()
    """
)


def test_corrupt_newest_checkpoint_falls_back_quietly(tmp_path):
    """Orbax abandons the sibling reads of a failed restore; their late callbacks on its
    closed event loop must not print tracebacks after our warning."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    root = str(tmp_path / "ckpt")
    out = subprocess.run(
        [sys.executable, "-c", CORRUPT, root], cwd=REPO, env=env, capture_output=True, text=True
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "RESTORED 2" in out.stdout, text
    assert "checkpoint step 4" in text and "cannot be restored" in text
    assert "Event loop is closed" not in text and "never retrieved" not in text, text
    assert "Traceback" not in text, text
    assert os.path.isdir(root + ".unreadable/4")
