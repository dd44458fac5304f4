"""Experiment configs: loading, typed overrides, bad keys, validation, released sizes."""

import jax
import pytest

from colajax import config as config_lib

TINY = "experiments/tiny.py:synthetic"


def test_load_tiny_and_typed_overrides():
    c = config_lib.load_config(
        TINY,
        [
            "train.batch_size=16",  # int
            "optim.lr=1e-3",  # float
            "optim.warmup_steps=1e1",  # an integral float is accepted for an int
            "train.async_ckpt=false",  # bool
            "stage=vae",  # str
            "mesh.rules.embed=fsdp,tensor",  # tuple from a comma list
            "mesh.rules.kv=()",  # empty tuple
            "metrics.peak_flops=2e11",  # placeholder(float)
        ],
    )
    assert c.train.batch_size == 16 and isinstance(c.train.batch_size, int)
    assert c.optim.lr == 1e-3 and c.optim.warmup_steps == 10
    assert c.train.async_ckpt is False and c.stage == "vae"
    assert tuple(c.mesh.rules.embed) == ("fsdp", "tensor") and tuple(c.mesh.rules.kv) == ()
    assert c.metrics.peak_flops == 2e11
    assert c.vae.vocab_size == 4096 and c.train.seq_len == 64 and c.block_size == 4
    with pytest.raises(AttributeError):  # locked: no new fields by accident
        c.train.new_field = 1


def test_unknown_key_lists_close_matches():
    with pytest.raises(
        ValueError, match=r"unknown config key 'train\.batch_sise'.*train\.batch_size"
    ):
        config_lib.load_config(TINY, ["train.batch_sise=4"])
    with pytest.raises(ValueError, match="section"):
        config_lib.load_config(TINY, ["train=3"])
    with pytest.raises(ValueError, match="form a.b=value"):
        config_lib.load_config(TINY, ["train.batch_size"])


@pytest.mark.parametrize(
    "override",
    ["train.batch_size=eight", "train.batch_size=2.5", "optim.lr=fast", "train.async_ckpt=maybe"],
)
def test_bad_override_type(override):
    with pytest.raises(ValueError, match="expected a"):
        config_lib.load_config(TINY, [override])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.seq_len=66"], "multiple of config.block_size"),
        (["dit.txt_in_channels=4", "dit.txt_out_channels=4"], "latent_dim"),
        (["dit.block_size=8"], "unknown config key"),  # one block size: config.block_size
        (["stage=joint"], "not a stage of the cola family"),
        (["model=gpt"], "unknown model family"),
        (["model=ar", "stage=prior"], "not a stage of the ar family"),
        (["stage2.vae_mode=partial"], "vae_mode"),
        (["optim.grad_accum=3"], "divisible by config.optim.grad_accum"),
        (["objective.mask_ratio=1.0"], "mask_ratio"),
        (["objective.timestep_sampling=token"], "config.objective.timestep_sampling"),
        (["objective.prompt_block_prob=1.5"], "prompt_block_prob"),
        (["objective.bf16_inputs=off", "dit.dtype=bfloat16"], "rounds its inputs anyway"),
        (["optim.clip_scope=vae"], "clip_scope"),
        (["optim.stage1_warmup_steps=50", "optim.stage1_decay_steps=10"], "Stage 1 needs"),
        (["data.packing=bestfit"], "data.packing"),
        (["data.docstart_fill=trim"], "docstart_fill"),
        (["mesh.rules.embed=fsdp,model"], "mesh axes must be in"),
        (["vae.nonexistent=1"], "unknown config key"),
    ],
)
def test_validation_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        config_lib.load_config(TINY, overrides)


def test_mesh_shape_fill_and_mismatch():
    c = config_lib.load_config(TINY, ["mesh.shape.fsdp=2", "mesh.shape.tensor=2"])
    assert config_lib.mesh_shape(c, 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError, match="not divisible by 3"):
        config_lib.mesh_shape(config_lib.load_config(TINY, ["mesh.shape.fsdp=3"]), 8)
    c = config_lib.load_config(TINY, ["mesh.shape.data=2", "mesh.shape.fsdp=2"])
    with pytest.raises(ValueError, match="uses 4 devices but 8"):
        config_lib.mesh_shape(c, 8)
    # the micro-batch must split over data * fsdp
    with pytest.raises(ValueError, match="data-parallel size"):
        config_lib.load_config(TINY, ["train.batch_size=4"], num_devices=8)


def test_missing_file_and_parse_arg():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        config_lib.load_config("experiments/nope.py")
    a = config_lib.parse_arg("size=s,runlocal,steps=10", size="m", runlocal=False, steps=1)
    assert (a.size, a.runlocal, a.steps) == ("s", True, 10)
    with pytest.raises(ValueError, match="not known"):
        config_lib.parse_arg("sise=s", size="m")
    assert config_lib.split_spec("experiments/tiny.py:a=1") == ("experiments/tiny.py", "a=1")
    assert config_lib.overrides_from_argv(["--config.a=1", "--config.b", "2"]) == ["a=1", "b=2"]


def test_all_experiments_load():
    from colajax import families

    specs = ("tiny", "small", "demo", "cola_2b", "ar_2b", "llada_2b")
    for spec in specs:
        c = config_lib.load_config(f"experiments/{spec}.py")
        families.of_config(c).models(c)
    small = config_lib.load_config("experiments/small.py")
    assert (small.dit.num_layers, small.dit.txt_dim, small.dit.rope_dim) == (8, 512, 48)
    assert (small.vae.dim, small.vae.ffn_dim, small.vae.vocab_size) == (384, 1536, 8192)
    assert (small.train.batch_size, small.train.seq_len, small.vae.dtype) == (8, 512, "float32")


def test_cola_2b_parameter_counts():
    """The released sizes, counted with eval_shape (no allocation)."""
    from colajax.models.config import cola_configs
    from colajax.models.dit import DiT
    from colajax.models.vae import TextVAE

    c = config_lib.load_config("experiments/cola_2b.py")
    vae_cfg, dit_cfg = cola_configs(c)
    n = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
    vae = jax.eval_shape(
        lambda: TextVAE(vae_cfg).init(jax.random.key(0), jax.numpy.zeros((1, 16), "int32"))
    )
    dit = jax.eval_shape(
        lambda: DiT(dit_cfg).init(
            jax.random.key(0), jax.numpy.zeros((1, 16, 16)), jax.numpy.zeros((1, 16))
        )
    )
    assert n(dit) == 1_829_875_728
    assert n(vae) == 501_871_574


def test_train_cli_bad_input_exits_1_without_traceback(tmp_path, capsys, monkeypatch):
    from colajax.cli import train as run

    monkeypatch.setenv("COLAJAX_COMPILE_CACHE", "")  # no global XLA cache from a unit test
    assert run.main(["--config", "experiments/nope.py", "--workdir", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    argv = ["--config", TINY, "--workdir", str(tmp_path), "--config.train.batch_sise=2"]
    assert run.main(argv) == 1
    err = capsys.readouterr().err
    assert "train.batch_size" in err and "Traceback" not in err
    assert run.main(["--config", TINY, "--workdir", str(tmp_path), "--bogus"]) == 1
    assert "unknown argument" in capsys.readouterr().err


def test_objective_defaults_live_in_one_place_and_every_field_is_settable():
    """ObjectiveConfig holds the defaults; base.py lists the same fields with the same values,
    and every field can be set from the command line and reaches the stage."""
    import dataclasses

    from colajax.train.objectives import ObjectiveConfig
    from colajax.train.stages import make_stage
    from experiments import base

    assert base.get_config().objective.to_dict() == dataclasses.asdict(ObjectiveConfig())
    new = {
        "beta": 0.5,
        "stage2_beta": 0.25,
        "mask_ratio": 0.3,
        "lambda_mask": 2.0,
        "lambda_vae": 3.0,
        "lambda_fm": 4.0,
        "lambda_ref": 5.0,
        "t_loc": 0.0,
        "t_scale": 2.0,
        "timestep_sampling": "block",
        "prompt_block_prob": 0.0,
        "bf16_inputs": "on",
        "vae_sample": False,
        "fm_grad_to_vae": False,
    }
    assert set(new) == {f.name for f in dataclasses.fields(ObjectiveConfig)}
    c = config_lib.load_config(TINY, [f"objective.{k}={v}" for k, v in new.items()])
    stage = make_stage(c, "prior")
    assert dataclasses.asdict(stage.objective) == new
    assert stage.bf16_inputs is True  # 'on' rounds the inputs of a float32 DiT


def test_cola_2b_uses_the_released_recipe_where_the_paper_is_silent():
    from colajax.train.objectives import ObjectiveConfig
    from colajax.train.optim import DECAY_ALL

    c = config_lib.load_config("experiments/cola_2b.py")
    o = ObjectiveConfig.from_config(c.objective)
    assert (o.timestep_sampling, o.prompt_block_prob, o.t_loc, o.t_scale) == (
        "sequence",
        0.05,
        1,
        1,
    )
    assert o.round_dit_inputs(c.dit.dtype) and o.vae_sample
    assert tuple(c.optim.wd_exclude) == DECAY_ALL and c.optim.clip_scope == "dit"
    assert (c.data.packing, c.data.docstart_fill, c.data.docstart_buffer) == (
        "docstart",
        "crop",
        1000,
    )
    # the paper's own numbers stay: AdamW (0.9, 0.95), wd 0.01, clip 1, 1408 x 512
    assert (c.optim.b2, c.optim.weight_decay, c.optim.clip_norm) == (0.95, 0.01, 1.0)
    assert (c.train.batch_size, c.train.seq_len) == (1408, 512)
