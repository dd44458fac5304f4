"""`import-hf --llama`: a synthetic HF LlamaForCausalLM (GQA, attention width != hidden size,
tied embeddings, sharded safetensors) imported and checked against an independent NumPy forward
in the HF layout; meta; every error path names the problem and writes nothing."""

import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from colajax import checkpoint
from colajax.cli import import_hf as import_hf_cli
from colajax.convert.hf_llama import llama_hf_spec
from colajax.convert.import_hf import import_llama
from colajax.models.config import LMConfig
from colajax.models.llama import Llama

HF = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 50,
    "hidden_size": 24, "intermediate_size": 40, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 8, "num_hidden_layers": 2, "rms_norm_eps": 1e-5,
    "rope_theta": 500.0, "tie_word_embeddings": True, "hidden_act": "silu",
    "attention_bias": False, "mlp_bias": False, "rope_scaling": None, "torch_dtype": "bfloat16",
}  # fmt: skip


def _tensors(hf: dict, seed: int = 0) -> dict[str, np.ndarray]:
    cfg = LMConfig.from_hf(hf)
    rng = np.random.default_rng(seed)
    out = {}
    for key, (_, shape, _) in llama_hf_spec(cfg).items():
        noise = rng.standard_normal(shape).astype(np.float32)
        out[key] = 1.0 + 0.1 * noise if len(shape) == 1 else 0.3 * noise
    return out


def _write(path, hf: dict, tensors: dict, shards: int = 1) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f)
    if shards == 1:
        save_file(tensors, os.path.join(path, "model.safetensors"))
        return str(path)
    weight_map = {}
    for i, part in enumerate(np.array_split(np.array(sorted(tensors)), shards)):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({str(k): tensors[str(k)] for k in part}, os.path.join(path, name))
        weight_map.update({str(k): name for k in part})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return str(path)


def _np_llama(t: dict, hf: dict, ids: np.ndarray, causal: bool) -> np.ndarray:
    """HF LlamaForCausalLM forward in float64 on the raw HF tensors (one sequence)."""
    h, kvh, hd = hf["num_attention_heads"], hf["num_key_value_heads"], hf["head_dim"]
    eps, n = hf["rms_norm_eps"], len(ids)
    w = {k: v.astype(np.float64) for k, v in t.items()}
    rms = lambda x, g: g * x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps)
    inv = 1.0 / hf["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(n)[:, None] * inv
    cos, sin = np.cos(np.r_["-1", ang, ang])[:, None], np.sin(np.r_["-1", ang, ang])[:, None]
    rot = lambda x: np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
    rope = lambda x: x * cos + rot(x) * sin
    x = w["model.embed_tokens.weight"][ids]
    for i in range(hf["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(x, w[p + "input_layernorm.weight"])
        q = rope((a @ w[p + "self_attn.q_proj.weight"].T).reshape(n, h, hd))
        k = rope((a @ w[p + "self_attn.k_proj.weight"].T).reshape(n, kvh, hd))
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(n, kvh, hd)
        k, v = np.repeat(k, h // kvh, 1), np.repeat(v, h // kvh, 1)  # HF repeat_kv
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        if causal:
            s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", pr, v).reshape(n, h * hd)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        m = rms(x, w[p + "post_attention_layernorm.weight"])
        g = m @ w[p + "mlp.gate_proj.weight"].T
        act = g / (1 + np.exp(-g)) * (m @ w[p + "mlp.up_proj.weight"].T)
        x = x + act @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    tensors = _tensors(HF)
    path = _write(tmp_path_factory.mktemp("hf") / "llama", HF, tensors, shards=3)
    return path, tensors


@pytest.mark.parametrize("model", ["ar", "llada"])
def test_import_matches_numpy_hf_forward(hf_dir, model):
    path, tensors = hf_dir
    params, meta = import_llama(path, model)
    cfg = LMConfig.from_dict(meta["models"]["lm"])
    assert meta["family"] == model and cfg.causal == (model == "ar")
    assert (cfg.kv_heads, cfg.head_dim, cfg.tie_embeddings, cfg.dtype) == (2, 8, True, "float32")
    assert cfg.mask_id == (None if model == "ar" else 49)  # LLaDA: the last vocabulary row
    assert meta["source"]["format"] == "hf-safetensors" and meta["source"]["tensors"] == 20
    assert "lm_head" not in params["lm"]
    ids = np.random.default_rng(5).integers(0, 50, (2, 9))
    with jax.default_matmul_precision("highest"):
        got = np.asarray(jax.jit(Llama(cfg).apply)({"params": params["lm"]}, ids))
    want = np.stack([_np_llama(tensors, HF, row, cfg.causal) for row in ids])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_untied_and_stored_tied_head(tmp_path):
    untied = {**HF, "tie_word_embeddings": False, "num_key_value_heads": 4}
    tensors = _tensors(untied, 1)
    params, _ = import_llama(_write(tmp_path / "u", untied, tensors), "ar")
    np.testing.assert_array_equal(params["lm"]["lm_head"]["kernel"], tensors["lm_head.weight"].T)
    q = tensors["model.layers.1.self_attn.q_proj.weight"]  # [heads * head_dim, hidden]
    np.testing.assert_array_equal(params["lm"]["layers_1"]["q_proj"]["kernel"][:, 2], q[16:24].T)
    # tied config that still stores lm_head: accepted when equal to the embedding
    tied = _tensors(HF, 2)
    tied["lm_head.weight"] = tied["model.embed_tokens.weight"].copy()
    params, _ = import_llama(_write(tmp_path / "t", HF, tied), "ar")
    assert "lm_head" not in params["lm"]
    tied["lm_head.weight"] = tied["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        import_llama(_write(tmp_path / "t2", HF, tied), "ar")


def _run(argv, capsys):
    rc = import_hf_cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_round_trip(hf_dir, tmp_path, capsys):
    out = str(tmp_path / "ckpt")
    rc, stdout, _ = _run(["--llama", hf_dir[0], "--model", "llada", "--mask-id", "7", "--out", out],
                         capsys)  # fmt: skip
    assert rc == 0
    summary = json.loads(stdout)
    assert summary["family"] == "llada" and summary["mask_id"] == 7
    params, meta = checkpoint.restore_params(out)
    assert meta["models"]["lm"]["mask_id"] == 7 and meta["family"] == "llada"
    n = sum(np.size(x) for x in jax.tree.leaves(params["lm"]))
    per_layer = 24 * 32 + 2 * 24 * 16 + 32 * 24 + 3 * 24 * 40 + 2 * 24  # q, k, v, o, MLP, norms
    assert summary["lm_params"] == n == 50 * 24 + 2 * per_layer + 24  # tied embedding
    assert n == sum(np.size(v) for v in hf_dir[1].values())  # every HF tensor, once


BROKEN = {
    "missing": (lambda t, c: t.pop("model.layers.1.mlp.up_proj.weight"), "missing"),
    "unexpected": (lambda t, c: t.update({"model.layers.2.x.weight": np.zeros(2)}), "unexpected"),
    "shape": (
        lambda t, c: t.update({"model.norm.weight": np.zeros(23, np.float32)}),
        "model.norm.weight: expected (24,), got (23,)",
    ),
    "model_type": (lambda t, c: c.update({"model_type": "llada"}), "expected 'llama'"),
    "rope_scaling": (lambda t, c: c.update({"rope_scaling": {"type": "llama3"}}), "rope_scaling"),
    "rope_params": (
        lambda t, c: c.update({"rope_parameters": {"rope_type": "yarn"}}),
        "rope_parameters",
    ),
    "bias": (lambda t, c: c.update({"attention_bias": True}), "attention_bias"),
    "gqa": (lambda t, c: c.update({"num_key_value_heads": 3}), "num_kv_heads"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_errors_name_the_problem_and_write_nothing(tmp_path, capsys, kind):
    tensors, hf = _tensors(HF), dict(HF)
    BROKEN[kind][0](tensors, hf)
    path = _write(tmp_path / "hf", hf, tensors)
    outs = tmp_path / "outs"
    outs.mkdir()
    rc, stdout, stderr = _run(["--llama", path, "--out", str(outs / "ckpt")], capsys)
    assert rc == 2 and BROKEN[kind][1] in stderr, stderr
    assert "Traceback" not in stderr and stdout == "" and os.listdir(outs) == []


def test_usage_errors(hf_dir, tmp_path, capsys):
    out = str(tmp_path / "ckpt")
    usage = [
        (["--llama", hf_dir[0], "--vae", "v", "--dit", "d", "--out", out], "cannot be combined"),
        (["--llama", hf_dir[0], "--mask-id", "3", "--out", out], "only used with --model llada"),
        (["--vae", "v", "--model", "ar", "--out", out], "need --llama"),
        (["--vae", "v", "--out", out], "give both --vae DIR and --dit DIR"),
    ]
    for argv, msg in usage:
        with pytest.raises(SystemExit) as e:
            import_hf_cli.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
    argv = ["--llama", hf_dir[0], "--model", "llada", "--mask-id", "50", "--out", out]
    rc, _, stderr = _run(argv, capsys)
    assert rc == 2 and "outside the vocabulary" in stderr and not os.path.exists(out)
    os.makedirs(out)
    open(os.path.join(out, "keep"), "w").close()
    rc, _, stderr = _run(["--llama", hf_dir[0], "--out", out], capsys)
    assert rc == 2 and "not empty" in stderr and os.listdir(out) == ["keep"]
