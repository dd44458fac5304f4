"""When colajax initialises jax.distributed (environment -> plan), the single-process stop vote,
the hybrid ICI/DCN mesh of multi-slice jobs, peak FLOP/s per device kind and TPU slice names."""

import argparse

import numpy as np
import pytest

from colajax import config as config_lib
from colajax import distributed, hardware, sharding, tpu_topology

NO_TPU = lambda: None  # noqa: E731 -- "this is not a TPU VM" for detect()


@pytest.mark.parametrize(
    "env, kind, kwargs",
    [
        ({}, "none", {}),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, "none", {}),  # sbatch script, 1 task
        ({"SLURM_NTASKS": "16", "SLURM_PROCID": "0"}, "none", {}),  # batch step, outside srun
        (
            {"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "16"},
            "slurm",
            {"cluster_detection_method": "slurm"},
        ),
        (
            {
                "COLAJAX_COORDINATOR": "10.0.0.1:1234",
                "COLAJAX_NUM_PROCESSES": "4",
                "COLAJAX_PROCESS_ID": "2",
            },
            "explicit",
            {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2},
        ),  # fmt: skip
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
            "explicit",
            {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0},
        ),
        ({"COLAJAX_COORDINATOR": "h:1", "COLAJAX_NUM_PROCESSES": "1"}, "none", {}),
        ({"TPU_WORKER_HOSTNAMES": "t-0,t-1,t-2,t-3", "TPU_WORKER_ID": "1"}, "tpu", {}),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, "none", {}),  # single-host slice
        ({"MEGASCALE_NUM_SLICES": "2", "TPU_WORKER_HOSTNAMES": "a"}, "tpu", {}),
    ],
)
def test_detect(env, kind, kwargs):
    plan = distributed.detect(env, tpu_workers=NO_TPU)
    assert plan.kind == kind and plan.kwargs == kwargs, plan


def test_detect_tpu_vm_metadata_and_bad_variables():
    assert distributed.detect({}, tpu_workers=lambda: 4).kind == "tpu"
    assert distributed.detect({}, tpu_workers=lambda: 1).kind == "none"
    skip = {"TPU_SKIP_MDS_QUERY": "1"}  # JAX sets it on hosts without TPU chips
    assert distributed.detect(skip, tpu_workers=lambda: 4).kind == "none"
    with pytest.raises(ValueError, match="COLAJAX_PROCESS_ID"):
        distributed.detect({"COLAJAX_COORDINATOR": "h:1", "COLAJAX_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match="also set COLAJAX_NUM_PROCESSES"):
        distributed.detect({"COLAJAX_COORDINATOR": "h:1"}, tpu_workers=NO_TPU)
    with pytest.raises(ValueError, match="not an integer"):
        distributed.detect({"COLAJAX_COORDINATOR": "h:1", "COLAJAX_NUM_PROCESSES": "two"})


def test_modes_and_flag():
    assert distributed.maybe_initialize("off", {"TPU_WORKER_HOSTNAMES": "a,b"}).kind == "none"
    assert distributed.maybe_initialize("auto", {}).kind == "none"  # single host: untouched
    with pytest.raises(ValueError, match="auto"):
        distributed.maybe_initialize("maybe")
    p = argparse.ArgumentParser()
    distributed.add_flag(p)
    assert p.parse_args([]).distributed == "auto"
    assert p.parse_args(["--distributed"]).distributed == "on"  # the old boolean flag
    assert p.parse_args(["--distributed", "off"]).distributed == "off"


def test_stop_vote_single_process_is_the_local_flag():
    vote = distributed.StopVote("t")
    assert [vote(s, f) for s, f in enumerate([False, True, False])] == [False, True, False]


class FakeDevice:
    """What mesh_utils reads of a device (t5x-style fake TPU devices)."""

    platform, device_kind = "cpu", "cpu"

    def __init__(self, i, slice_index, process_index):
        self.id, self.slice_index, self.process_index = i, slice_index, process_index

    def __repr__(self):
        return f"D{self.id}"


def _config(**mesh):
    overrides = [f"mesh.{k}={v}" for k, v in mesh.items()]
    return config_lib.load_config("experiments/tiny.py:synthetic", overrides)


def test_hybrid_mesh_puts_slices_on_the_dcn_axis():
    devices = [FakeDevice(i, i // 4, i // 2) for i in range(8)]  # 2 slices x 4 devices
    config = _config(num_slices=2, **{"shape.data": 2, "shape.fsdp": 4})
    grid = sharding.device_grid(config, devices)
    assert grid.shape == (2, 4, 1)
    slices = np.vectorize(lambda d: d.slice_index)(grid)
    assert (slices[0] == 0).all() and (slices[1] == 1).all()  # data axis = across slices
    # fsdp across slices instead (dcn_shape), data inside them
    config = _config(num_slices=2, **{"shape.data": 2, "shape.fsdp": 4, "dcn_shape.data": 1,
                                      "dcn_shape.fsdp": 2})  # fmt: skip
    slices = np.vectorize(lambda d: d.slice_index)(sharding.device_grid(config, devices))
    assert (slices[:, :2] == 0).all() and (slices[:, 2:] == 1).all()
    # no slice_index: processes are the slices (e.g. GPU nodes)
    gpus = [FakeDevice(i, None, i // 4) for i in range(8)]
    procs = np.vectorize(lambda d: d.process_index)(
        sharding.device_grid(_config(num_slices=2), gpus)
    )
    assert procs.shape == (8, 1, 1) and list(procs[:, 0, 0]) == [0] * 4 + [1] * 4


def test_multislice_config_errors():
    with pytest.raises(ValueError, match="spans 2 slices but config.mesh.num_slices=3"):
        config_lib.validate(_config(num_slices=3, **{"dcn_shape.data": 2}), num_devices=6)
    with pytest.raises(ValueError, match="not divisible by its DCN factor"):
        config_lib.validate(_config(num_slices=2, **{"shape.data": 1, "shape.fsdp": -1}), 8)
    devices = [FakeDevice(i, 0, 0) for i in range(8)]
    with pytest.raises(ValueError, match="the devices form 1 slices"):
        sharding.device_grid(_config(num_slices=2), devices)


def test_peak_table_by_device_kind():
    assert hardware.table_peak("TPU v5 lite", "bfloat16") == 197e12  # v5e
    assert hardware.table_peak("TPU v5", "bfloat16") == 459e12  # v5p
    assert hardware.table_peak("TPU v6 lite", "bfloat16") == 918e12
    assert hardware.table_peak("TPU v4", "bfloat16") == 275e12
    assert hardware.table_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert hardware.table_peak("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert hardware.table_peak("NVIDIA H200", "bfloat16") == 989e12
    assert hardware.table_peak("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert hardware.table_peak("cpu", "bfloat16") is None


def test_gpu_experiment_and_no_constant_peak():
    for name in ("cola_2b", "cola_2b_gpu"):
        c = config_lib.load_config(f"experiments/{name}.py", num_devices=16)
        assert c.metrics.peak_flops is None  # MFU from the device table
    c = config_lib.load_config("experiments/cola_2b_gpu.py:fsdp=4,accum=2", num_devices=16)
    assert dict(config_lib.mesh_shape(c, 16)) == {"data": 4, "fsdp": 4, "tensor": 1}


def test_tpu_slice_names():
    s = tpu_topology.parse("v5p-128")
    assert (s.chips, s.topology_name, s.wrap, s.hbm_bytes) == (
        64,
        "v5:4x4x4",
        (True,) * 3,
        95 << 30,
    )
    assert tpu_topology.parse("v5litepod-16").topology_name == "v5e:4x4"
    assert tpu_topology.parse("v6e-256").wrap == (True, True, False)
    assert tpu_topology.parse("v4-32").topology_name == "v4:2x2x4"
    with pytest.raises(ValueError, match="unknown TPU slice"):
        tpu_topology.parse("v3-8")
    with pytest.raises(ValueError, match="power-of-two"):
        tpu_topology.parse("v5p-12")
