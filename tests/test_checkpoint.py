"""Training checkpoints: items round-trip, keep-last-N + keep-period, corrupt-newest fallback,
partial (VAE-only) restore for Stage 2."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from colajax import checkpoint as ck


def _mesh():
    return jax.make_mesh((4, 2), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _tree(step: float):
    return (
        {"vae": {"w": jnp.full((8, 4), step)}, "dit": {"b": jnp.arange(6.0) + step}},
        (jnp.zeros(3) + step, {"count": jnp.int32(step)}),
    )


def _abstract(mesh, spec_w=None):
    spec_w = PartitionSpec("a", "b") if spec_w is None else spec_w
    params, opt = _tree(0.0)
    sh = {
        "vae": {"w": NamedSharding(mesh, spec_w)},
        "dit": {"b": NamedSharding(mesh, PartitionSpec())},
    }
    abs_p = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, sh
    )
    rep = NamedSharding(mesh, PartitionSpec())
    abs_o = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), opt)
    return abs_p, abs_o


def _save_steps(root, steps, **kw):
    c = ck.TrainCheckpointer(root, **kw)
    for s in steps:
        params, opt = _tree(float(s))
        c.save(s, params, opt, {"index": s}, {"step": s})
    c.close()


def test_round_trip_onto_another_sharding(tmp_path):
    root = str(tmp_path / "ckpt")
    _save_steps(root, [1, 2], keep=3)
    c = ck.TrainCheckpointer(root, keep=3)
    mesh = _mesh()
    abs_p, abs_o = _abstract(mesh, PartitionSpec("b", "a"))
    r = c.restore_latest(abs_p, abs_o)
    c.close()
    assert r["step"] == 2 and r["data_iter"] == {"index": 2} and r["meta"] == {"step": 2}
    np.testing.assert_array_equal(r["params"]["vae"]["w"], np.full((8, 4), 2.0))
    assert r["params"]["vae"]["w"].sharding.spec == PartitionSpec("b", "a")
    assert int(r["opt_state"][1]["count"]) == 2


def test_keep_last_n_plus_every_kth(tmp_path):
    root = str(tmp_path / "ckpt")
    _save_steps(root, range(1, 10), keep=2, keep_period=4)
    assert ck.TrainCheckpointer(root).all_steps() == [4, 8, 9]
    root2 = str(tmp_path / "ckpt2")
    _save_steps(root2, range(1, 6), keep=3)
    assert ck.TrainCheckpointer(root2).all_steps() == [3, 4, 5]


def test_protected_budget_steps_survive_keep_policy(tmp_path):
    root = str(tmp_path / "ckpt")
    _save_steps(root, range(1, 13), keep=1, protect=[3, 7])
    assert ck.TrainCheckpointer(root, keep=1, protect=[3, 7]).all_steps() == [3, 7, 12]
    # reopened with the same budget steps: more saves still never delete them
    _save_steps(root, [13, 14], keep=1, keep_period=5, protect=[3, 7])
    assert ck.TrainCheckpointer(root).all_steps() == [3, 7, 14]
    # reopened without protection: the keep policy applies to the old budget steps again
    _save_steps(root, [15], keep=1)
    assert ck.TrainCheckpointer(root).all_steps() == [15]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        ck.TrainCheckpointer(root, keep=0)


def _truncate_arrays(step_dir):
    n = 0
    for dirpath, _, files in os.walk(os.path.join(step_dir, "params")):
        for f in files:
            path = os.path.join(dirpath, f)
            if os.path.getsize(path) > 0 and "commit_success" not in f:
                with open(path, "r+b") as fh:
                    fh.truncate(os.path.getsize(path) // 3)
                n += 1
    assert n > 0


def test_corrupt_newest_falls_back_and_is_kept(tmp_path, capsys):
    root = str(tmp_path / "ckpt")
    _save_steps(root, [2, 4, 6], keep=5)
    _truncate_arrays(os.path.join(root, "6"))
    # an interrupted save leaves a temporary directory, which is never a candidate
    os.makedirs(os.path.join(root, "8.orbax-checkpoint-tmp-123"))
    abs_p, abs_o = _abstract(_mesh())
    c = ck.TrainCheckpointer(root, keep=5)
    r = c.restore_latest(abs_p, abs_o)
    assert r["step"] == 4 and r["data_iter"] == {"index": 4}
    np.testing.assert_array_equal(r["params"]["dit"]["b"], np.arange(6.0) + 4)
    assert "step 6" in capsys.readouterr().out
    # the unreadable step is moved aside (not deleted) and the next save of step 6 works
    assert os.path.isdir(root + ck.QUARANTINE_SUFFIX + "/6")
    assert c.all_steps() == [2, 4]
    params, opt = _tree(6.5)
    c.save(6, params, opt, {"index": 6}, {"step": 6})
    c.close()
    assert ck.TrainCheckpointer(root).all_steps() == [2, 4, 6]


def test_nothing_restorable_raises_and_touches_nothing(tmp_path):
    root = str(tmp_path / "ckpt")
    _save_steps(root, [1, 2], keep=5)
    mesh = _mesh()
    params, opt = _tree(0.0)
    rep = NamedSharding(mesh, PartitionSpec())
    wrong = jax.tree.map(lambda x: jax.ShapeDtypeStruct((3, 3), x.dtype, sharding=rep), params)
    abs_o = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), opt)
    c = ck.TrainCheckpointer(root, keep=5)
    with pytest.raises(ValueError, match="no checkpoint .* could be restored"):
        c.restore_latest(wrong, abs_o, log=lambda _: None)
    c.close()
    assert sorted(os.listdir(root)) == ["1", "2"]
    assert not os.path.exists(root + ck.QUARANTINE_SUFFIX)
    assert ck.TrainCheckpointer(str(tmp_path / "empty")).restore_latest(wrong, abs_o) is None


def test_restore_subtree_reads_only_the_vae(tmp_path):
    root = tmp_path / "run"
    _save_steps(str(root / "checkpoints"), [3, 7], keep=5)
    mesh = _mesh()
    abs_p, _ = _abstract(mesh)
    sub, meta, step = ck.restore_subtree(str(root), {"vae": abs_p["vae"]})  # run dir resolves
    assert step == 7 and meta == {"step": 7} and set(sub) == {"vae"}
    np.testing.assert_array_equal(sub["vae"]["w"], np.full((8, 4), 7.0))
    assert sub["vae"]["w"].sharding.spec == PartitionSpec("a", "b")
    with pytest.raises(ValueError, match=r"no \['encoder'\]"):
        ck.restore_subtree(str(root), {"encoder": abs_p["vae"]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.restore_subtree(str(tmp_path / "missing"), {"vae": abs_p["vae"]})


def test_relative_workdir_round_trips(tmp_path, monkeypatch):
    """`colajax train --workdir runs/x` passes a relative path; Orbax needs absolute ones."""
    monkeypatch.chdir(tmp_path)
    _save_steps("runs/rel", [1, 2], keep=3)
    abs_p, abs_o = _abstract(_mesh())
    r = ck.TrainCheckpointer("runs/rel").restore_latest(abs_p, abs_o)
    assert r["step"] == 2
    np.testing.assert_array_equal(r["params"]["dit"]["b"], np.arange(6.0) + 2)
    params, meta = ck.restore_params("runs/rel")
    assert meta == {"step": 2}
