"""`colajax import-hf`: HF directory reading (single / sharded), DiT tensor mapping checked against
an independent NumPy forward in the HF (PyTorch) layout, CLI round trip, and every error path.

The HF directories are synthetic (random tensors with the exact official key set), with a config
unlike the parity fixture: qk_bias on, attention inner width != txt_dim, block size 3.
"""

import dataclasses
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from colajax import checkpoint
from colajax import main as cli
from colajax.cli import import_hf as import_hf_cli
from colajax.convert import import_hf
from colajax.convert.hf_dit import dit_config_from_hf, dit_params_from_hf, hf_dit_shapes
from colajax.convert.hf_io import load_hf_dir
from colajax.convert.hf_vae import hf_vae_shapes
from colajax.models import attention
from colajax.models.config import DiTConfig, VAEConfig
from colajax.models.dit import DiT
from colajax.models.vae import TextVAE

DIT = DiTConfig(
    txt_in_channels=4,
    txt_out_channels=4,
    txt_dim=24,
    emb_dim=24,
    heads=2,
    head_dim=8,
    expand_ratio=2,
    num_layers=2,
    qk_bias=True,
    rope_dim=6,
    block_size=3,
)
VAE = VAEConfig(
    vocab_size=32,
    dim=16,
    ffn_dim=32,
    num_heads=2,
    encoder_num_blocks=1,
    decoder_num_blocks=1,
    latent_dim=4,
    block_size=3,
)
EXTRA_KEYS = {"architectures": ["X"], "torch_dtype": "float32", "transformers_version": "4.57.6"}


def _hf_config(cfg, model_type: str) -> dict:
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("dtype", "remat")}
    return {**d, **EXTRA_KEYS, "model_type": model_type}


def _random_tensors(shapes: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith("rope.rope.freqs"):
            out[k] = attention.inv_freq(2 * shape[0], 10000.0)
        elif len(shape) >= 2:
            out[k] = rng.normal(0, shape[1] ** -0.5, shape).astype(np.float32)
        else:
            base = 1.0 if "norm" in k and k.endswith("weight") else 0.0
            out[k] = (base + 0.1 * rng.normal(size=shape)).astype(np.float32)
    return out


def _write_hf(path, config: dict, tensors: dict, shards: int = 1) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    if shards == 1:
        save_file(tensors, os.path.join(path, "model.safetensors"))
        return str(path)
    keys = sorted(tensors)
    weight_map = {}
    for i, part in enumerate(np.array_split(np.array(keys), shards)):
        part = [str(k) for k in part]
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k] for k in part}, os.path.join(path, name))
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f)
    return str(path)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """Synthetic HF dirs: {"vae", "dit", "dit_tensors", "vae_tensors", "root"}."""
    root = tmp_path_factory.mktemp("hf")
    dit_t = _random_tensors(hf_dit_shapes(DIT), 0)
    vae_t = _random_tensors(hf_vae_shapes(VAE), 1)
    return {
        "root": root,
        "dit": _write_hf(root / "dit", _hf_config(DIT, "cola_dit"), dit_t),
        "vae": _write_hf(root / "vae", _hf_config(VAE, "cola_text_vae"), vae_t),
        "dit_tensors": dit_t,
        "vae_tensors": vae_t,
    }


def _run(argv, capsys):
    rc = import_hf_cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------------
# Layout counts of the released model
# ------------------------------------------------------------------------------------------------


def test_released_dit_layout_counts():
    shapes = hf_dit_shapes(DiTConfig(block_size=4))
    assert len(shapes) == 470
    assert sum(k.endswith("rope.rope.freqs") for k in shapes) == 24
    n = sum(math.prod(s) for k, s in shapes.items() if not k.endswith("rope.rope.freqs"))
    assert n == 1_829_875_728
    assert shapes["blocks.0.msa.proj_qkv.weight"] == (6144, 2048)
    assert shapes["blocks.23.ada.msa_in.1.weight"] == (4096, 2048)


# ------------------------------------------------------------------------------------------------
# Independent NumPy forward in the HF layout (float64), written from the spec (§3.3)
# ------------------------------------------------------------------------------------------------


def _np_dit(T: dict, cfg: DiTConfig, x_LC, t_L):
    T = {k: np.asarray(v, np.float64) for k, v in T.items()}
    length, heads, hd, rd = x_LC.shape[0], cfg.heads, cfg.head_dim, cfg.rope_dim

    def lin(x, name):
        return x @ T[f"{name}.weight"].T + T.get(f"{name}.bias", 0.0)

    def ln(x, name=None):
        y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + cfg.norm_eps)
        return y if name is None else y * T[f"{name}.weight"] + T[f"{name}.bias"]

    silu = lambda v: v / (1.0 + np.exp(-v))
    gelu = lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))
    freqs = np.exp(-np.log(10000.0) * np.arange(128) / 128)
    e = np.concatenate([np.sin(t_L[:, None] * freqs), np.cos(t_L[:, None] * freqs)], -1)
    es = silu(lin(silu(lin(silu(lin(e, "emb_in.proj_in")), "emb_in.proj_hid")), "emb_in.proj_out"))
    pos = np.arange(length)
    ang = np.repeat(pos[:, None] * 10000.0 ** (-np.arange(0, rd, 2) / rd), 2, axis=1)[:, None]

    def rope(v):  # [L, H, D], interleaved pairs on the first rd channels
        r = v[..., :rd]
        rot = np.stack([-r[..., 1::2], r[..., 0::2]], -1).reshape(r.shape)
        return np.concatenate([r * np.cos(ang) + rot * np.sin(ang), v[..., rd:]], -1)

    allowed = (pos[:, None] // cfg.block_size) >= (pos[None, :] // cfg.block_size)
    h = lin(x_LC, "txt_in.proj")
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        shift, scale = np.split(lin(es, p + "ada.msa_in.1"), 2, -1)
        qkv = lin(ln(h) * (1 + scale) + shift, p + "msa.proj_qkv").reshape(length, 3, heads, hd)
        q, k, v = (
            rope(ln(qkv[:, 0], p + "msa.norm_q")),
            rope(ln(qkv[:, 1], p + "msa.norm_k")),
            qkv[:, 2],
        )
        s = np.einsum("qhd,khd->hqk", q / np.sqrt(hd), k)
        s = np.where(allowed, s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        o = np.einsum("hqk,khd->qhd", w / w.sum(-1, keepdims=True), v).reshape(length, -1)
        h = lin(o, p + "msa.proj_out") * lin(es, p + "ada.msa_out.1") + h
        shift, scale = np.split(lin(es, p + "ada.mlp_in.1"), 2, -1)
        m = ln(h) * (1 + scale) + shift
        h = (
            lin(gelu(lin(m, p + "mlp.proj_in")), p + "mlp.proj_out") * lin(es, p + "ada.mlp_out.1")
            + h
        )
    shift, scale = np.split(lin(es, "txt_out_ada.out_in.1"), 2, -1)
    return lin(ln(h, "txt_out_norm") * (1 + scale) + shift, "txt_out.proj")


def _model_shapes(model, *args):
    tree = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))["params"]
    return jax.tree.map(lambda a: a.shape, nn.meta.unbox(tree))


def test_cli_round_trip_and_numpy_reference(hf, tmp_path, capsys):
    out = str(tmp_path / "ckpt")
    rc = cli.run(["import-hf", "--vae", hf["vae"], "--dit", hf["dit"], "--out", out])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["dit_tensors"] == len(hf["dit_tensors"]) == 52 + 2 * 2  # + qkv/out biases
    assert summary["vae_tensors"] == len(hf["vae_tensors"])
    assert os.listdir(tmp_path) == ["ckpt"]  # no temporary siblings left behind

    params, meta = checkpoint.restore_params(out)
    mem_params, mem_meta = import_hf.import_hf(hf["vae"], hf["dit"])
    assert meta == json.loads(json.dumps(mem_meta))
    assert DiTConfig.from_dict(meta["models"]["dit"]) == DIT
    assert VAEConfig.from_dict(meta["models"]["vae"]) == VAE
    assert jax.tree.structure(params) == jax.tree.structure(mem_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(mem_params), strict=True):
        assert isinstance(a, jax.Array) and a.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(a), b)
    assert summary["dit_params"] == sum(np.size(v) for v in jax.tree.leaves(params["dit"]))

    x = jnp.zeros((1, 3, DIT.txt_in_channels))
    assert jax.tree.map(np.shape, params["dit"]) == _model_shapes(DiT(DIT), x, x[..., 0])
    ids = jnp.zeros((1, 3), jnp.int32)
    assert jax.tree.map(np.shape, params["vae"]) == _model_shapes(TextVAE(VAE), ids)

    rng = np.random.default_rng(5)
    x_np, t_np = rng.normal(size=(7, DIT.txt_in_channels)), np.r_[[0.0] * 3, [640.0] * 4]
    got = DiT(DIT).apply(
        {"params": params["dit"]}, jnp.asarray(x_np[None], jnp.float32), t_np[None]
    )
    want = _np_dit(hf["dit_tensors"], DIT, x_np, t_np)
    np.testing.assert_allclose(np.asarray(got[0]), want, rtol=1e-4, atol=1e-4)


def test_bfloat16_dtype_is_recorded_params_stay_float32(hf, tmp_path, capsys):
    out = str(tmp_path / "ckpt")
    rc, _, err = _run(
        ["--vae", hf["vae"], "--dit", hf["dit"], "--out", out, "--dtype", "bfloat16"], capsys
    )
    assert rc == 0, err
    params, meta = checkpoint.restore_params(out)
    assert meta["models"]["dit"]["dtype"] == meta["models"]["vae"]["dtype"] == "bfloat16"
    assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype("float32")}


def _fixture_dit_dirs():
    root = os.environ.get("COLAJAX_PARITY_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "reference"
    )
    found = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) == "dit" and "model.safetensors" in files:
            found.append(dirpath)
    return sorted(found)[:1]


@pytest.mark.parametrize("source", ["synthetic"] + _fixture_dit_dirs())
def test_sharded_index_imports_identically(hf, tmp_path, source):
    src = hf["dit"] if source == "synthetic" else source
    config, tensors = load_hf_dir(src)
    sharded = _write_hf(tmp_path / "dit2", config, tensors, shards=2)
    assert not os.path.exists(os.path.join(sharded, "model.safetensors"))
    config2, tensors2 = load_hf_dir(sharded)
    assert config2 == config and sorted(tensors2) == sorted(tensors)
    for k in tensors:
        np.testing.assert_array_equal(tensors2[k], tensors[k])
    cfg = dit_config_from_hf(config)
    a, b = dit_params_from_hf(tensors, cfg), dit_params_from_hf(tensors2, cfg)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    if source == "synthetic":
        params, _ = import_hf.import_hf(hf["vae"], sharded)
        for x, y in zip(jax.tree.leaves(params["dit"]), jax.tree.leaves(a), strict=True):
            np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------------
# Errors: exit code 2, a message naming the problem, no traceback, nothing written
# ------------------------------------------------------------------------------------------------


def _broken_dit(hf, tmp_path, kind):
    """A DiT directory with one defect -> (path, expected message fragment)."""
    t = dict(hf["dit_tensors"])
    cfg = _hf_config(DIT, "cola_dit")
    path = tmp_path / "dit_bad"
    if kind == "missing_tensor":
        del t["blocks.1.mlp.proj_in.bias"]
        return _write_hf(path, cfg, t), "blocks.1.mlp.proj_in.bias"
    if kind == "extra_tensor":
        t["blocks.9.foo.weight"] = np.zeros(3, np.float32)
        return _write_hf(path, cfg, t), "blocks.9.foo.weight"
    if kind == "wrong_shape":
        t["txt_out.proj.weight"] = np.zeros((4, 23), np.float32)
        return _write_hf(path, cfg, t), "txt_out.proj.weight: expected (4, 24), got (4, 23)"
    if kind == "rope_buffer":
        t["blocks.0.msa.rope.rope.freqs"] = attention.inv_freq(6, 500000.0)
        return _write_hf(path, cfg, t), "blocks.0.msa.rope.rope.freqs"
    if kind == "missing_shard":
        p = _write_hf(path, cfg, t, shards=2)
        os.remove(os.path.join(p, "model-00002-of-00002.safetensors"))
        return p, "model-00002-of-00002.safetensors"
    if kind == "latent_dim":
        cfg["txt_in_channels"] = cfg["txt_out_channels"] = 8
        return _write_hf(path, cfg, t), "latent_dim"
    if kind == "block_size":
        cfg["block_size"] = 4
        return _write_hf(path, cfg, t), "block_size"
    if kind == "bad_json":
        p = _write_hf(path, cfg, t)
        with open(os.path.join(p, "config.json"), "w") as f:
            f.write("{not json")
        return p, "not valid JSON"
    if kind == "no_config":
        p = _write_hf(path, cfg, t)
        os.remove(os.path.join(p, "config.json"))
        return p, "config.json is missing"
    if kind == "no_weights":
        p = _write_hf(path, cfg, t)
        os.remove(os.path.join(p, "model.safetensors"))
        return p, "no weights"
    if kind == "no_dir":
        return str(tmp_path / "nowhere"), "does not exist"
    if kind == "swapped":
        return hf["vae"], "pass it as --vae"
    raise AssertionError(kind)


KINDS = [
    "missing_tensor",
    "extra_tensor",
    "wrong_shape",
    "rope_buffer",
    "missing_shard",
    "latent_dim",
    "block_size",
    "bad_json",
    "no_config",
    "no_weights",
    "no_dir",
    "swapped",
]


@pytest.mark.parametrize("kind", KINDS)
def test_errors_exit_2_and_write_nothing(hf, tmp_path, capsys, kind):
    dit_dir, fragment = _broken_dit(hf, tmp_path, kind)
    out_parent = tmp_path / "outs"
    out_parent.mkdir()
    rc, stdout, stderr = _run(
        ["--vae", hf["vae"], "--dit", dit_dir, "--out", str(out_parent / "ckpt")], capsys
    )
    assert rc == 2
    assert fragment in stderr, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert os.listdir(out_parent) == []


def test_existing_out_is_untouched(hf, tmp_path, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    rc, _, stderr = _run(["--vae", hf["vae"], "--dit", hf["dit"], "--out", str(out)], capsys)
    assert rc == 2 and "not empty" in stderr
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
