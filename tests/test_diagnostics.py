"""`colajax eval diagnostics`: recon accuracy, latent logSNR (App. H.7) and the FM loss."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_models import TINY_DIT, TINY_VAE

from colajax import checkpoint, restore
from colajax.cli import eval as eval_cli
from colajax.data import pipeline
from colajax.data.tokenizer import load_tokenizer
from colajax.eval import diagnostics
from colajax.families import cola
from colajax.models.vae import TextVAE
from colajax.train import objectives

VAE = TINY_VAE
DIT = TINY_DIT
TOKENIZER = "bundled:kjv_sp4096.model"
TEXT = "bundled:kjv_valid.jsonl.gz"
OBJ = objectives.ObjectiveConfig()


def write_checkpoint(path, meta, dit=DIT):
    models = {"vae": VAE} if dit is None else {"vae": VAE, "dit": dit}
    mesh = restore.make_mesh("data=1")
    target = cola.FAMILY.abstract_params(models, mesh, restore.DEFAULT_RULES)
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32), target
    )
    checkpoint.save_params_checkpoint(str(path), params, meta)
    return str(path)


# --- the batch statistics with hand-made models ---------------------------------------------

V = 6  # vocabulary = latent channels of the fake one-hot VAE


def fake_vae(logvar_value):
    def encode(ids, seg, pos):
        mean = 2.0 * jax.nn.one_hot(ids, V) + 0.5
        return mean, jnp.full(mean.shape, logvar_value)

    def decode(z, seg, pos):
        return z  # logits = latents: argmax recovers the token exactly

    return encode, decode


def test_perfect_reconstruction_and_logsnr_formula():
    ids = np.array([[1, 2, 3, 4, 5, 0, 1, 2], [0, 0, 5, 4, 3, 2, 1, 0]], np.int32)
    w = np.array([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0]], np.float32)
    encode, decode = fake_vae(-2.0)
    stats = diagnostics.batch_stats(
        encode,
        decode,
        None,
        jnp.asarray(ids),
        jax.random.PRNGKey(0),
        vae_config=None,
        obj=OBJ,
        block_size=4,
        weights_BL=jnp.asarray(w),
    )
    result = diagnostics.finalize({k: float(v) for k, v in stats.items()})
    assert result["recon_acc"] == 1.0 and result["tokens"] == 14 and result["fm_loss"] is None
    mean = 2.0 * np.eye(V)[ids] + 0.5
    valid = w.astype(bool)
    expected = np.log(np.mean(mean[valid] ** 2) / np.mean(np.full(mean[valid].shape, np.exp(-2.0))))
    assert result["logsnr"] == pytest.approx(expected, rel=1e-6)
    # the training metric agrees on one batch
    np.testing.assert_allclose(
        result["logsnr"],
        objectives.log_snr(jnp.asarray(mean), jnp.full(mean.shape, -2.0), jnp.asarray(w)),
        rtol=1e-5,
    )


def test_wrong_tokens_and_clamped_logvar():
    ids = jnp.asarray([[1, 2, 3, 4]], jnp.int32)
    encode, _ = fake_vae(50.0)  # clamped to 20 like the official posterior

    def decode(z, seg, pos):  # predicts token 1 everywhere
        return jnp.broadcast_to(jax.nn.one_hot(1, V), z.shape)

    stats = diagnostics.batch_stats(
        encode,
        decode,
        None,
        ids,
        jax.random.PRNGKey(0),
        vae_config=None,
        obj=OBJ,
        block_size=4,
        weights_BL=jnp.ones((1, 4)),
    )
    result = diagnostics.finalize({k: float(v) for k, v in stats.items()})
    assert result["recon_acc"] == 0.25
    mean = 2.0 * np.eye(V)[[1, 2, 3, 4]] + 0.5
    assert result["logsnr"] == pytest.approx(np.log(np.mean(mean**2)) - 20.0, rel=1e-6)


# --- end to end on a tiny random model ------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    meta = {
        "vae_config": dataclasses.asdict(VAE),
        "dit_config": dataclasses.asdict(DIT),
        "config": {"data": {"tokenizer": TOKENIZER}},
    }
    return write_checkpoint(tmp_path_factory.mktemp("diag") / "ck", meta)


def test_diagnostics_cli(ckpt, capsys):
    argv = [
        "diagnostics",
        "--checkpoint",
        ckpt,
        "--text",
        TEXT,
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--batches",
        "2",
        "--mesh",
        "data=1",
    ]
    assert eval_cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sequences"] == 4 and out["seq_len"] == 16 and out["tokens"] == 64
    assert 0.0 <= out["recon_acc"] <= 1.0
    assert np.isfinite(out["logsnr"]) and np.isfinite(out["fm_loss"]) and out["fm_loss"] > 0
    assert "not a generation-quality metric" in out["note"]
    # same numbers from the library call; the FM loss moves with the seed, the rest does not
    again = diagnostics.diagnose(ckpt, TEXT, seq_len=16, batch_size=2, batches=2, mesh="data=1")
    assert again == out
    other = diagnostics.diagnose(
        ckpt, TEXT, seq_len=16, batch_size=2, batches=2, seed=1, mesh="data=1"
    )
    assert other["recon_acc"] == out["recon_acc"] and other["logsnr"] == out["logsnr"]
    assert other["fm_loss"] != out["fm_loss"]


def test_logsnr_and_accuracy_match_numpy_on_the_model(ckpt):
    result = diagnostics.diagnose(ckpt, TEXT, seq_len=16, batch_size=2, batches=1, mesh="data=1")
    model = restore.load_model(ckpt, "data=1")
    tokens = next(
        iter(
            pipeline.make_eval_batches(
                {"kind": "jsonl", "path": TEXT},
                load_tokenizer(TOKENIZER),
                2,
                16,
                block_size=4,
                max_batches=1,
            )
        )
    )["tokens"]
    encode = jax.jit(lambda p, x: TextVAE(VAE).apply({"params": p}, x, method=TextVAE.encode))
    decode = jax.jit(lambda p, z: TextVAE(VAE).apply({"params": p}, z, method=TextVAE.decode))
    mean, logvar = encode(model.params["vae"], tokens)
    mean, logvar = np.asarray(mean, np.float64), np.clip(np.asarray(logvar, np.float64), -30, 20)
    assert result["logsnr"] == pytest.approx(
        np.log(np.mean(mean**2) / np.mean(np.exp(logvar))), rel=1e-4
    )
    logits = decode(model.params["vae"], jnp.asarray(mean, jnp.float32))
    assert result["recon_acc"] == pytest.approx(np.mean(np.argmax(logits, -1) == tokens))


def test_vae_only_checkpoint_and_errors(tmp_path, capsys):
    meta = {"config": {"stage": "vae", "vae": dataclasses.asdict(VAE)}}
    path = write_checkpoint(tmp_path / "vae", meta, dit=None)
    out = diagnostics.diagnose(
        path, TEXT, tokenizer=TOKENIZER, seq_len=16, batch_size=2, batches=1, mesh="data=1"
    )
    assert out["fm_loss"] is None and np.isfinite(out["logsnr"])
    assert (
        eval_cli.main(
            [
                "diagnostics",
                "--checkpoint",
                path,
                "--text",
                TEXT,
                "--seq-len",
                "16",
                "--mesh",
                "data=1",
            ]
        )
        == 1
    )
    assert "pass --tokenizer" in capsys.readouterr().err
    argv = [
        "diagnostics",
        "--checkpoint",
        path,
        "--text",
        str(tmp_path / "none.txt"),
        "--tokenizer",
        TOKENIZER,
        "--mesh",
        "data=1",
    ]
    assert eval_cli.main(argv) == 1
    assert "does not exist" in capsys.readouterr().err
    assert eval_cli.main([*argv[:4], TEXT, "--tokenizer", TOKENIZER, "--seq-len", "10"]) == 1
    assert "multiple of the model block_size" in capsys.readouterr().err
