"""The model-family interface: registry, config switch, stage plans, exact 2B parameter counts
(eval_shape, no allocation), the paper's 6 N D axis, and the same data order for every family."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from colajax import config as config_lib
from colajax import families
from colajax.train import data as data_lib

TINY = "experiments/tiny.py"


def _count(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def test_registry_and_errors():
    assert {n: families.get(n).name for n in families.FAMILIES} == {
        "cola": "cola",
        "ar": "ar",
        "llada": "llada",
    }
    with pytest.raises(ValueError, match="unknown model family 'gpt'"):
        families.get("gpt")
    assert families.of_meta({}).name == "cola"  # checkpoints from before families
    assert families.of_meta({"family": "llada"}).name == "llada"


def test_tiny_config_selects_each_family_at_the_dits_width_and_depth():
    for name in ("cola", "ar", "llada"):
        c = config_lib.load_config(TINY, [f"model={name}"])
        fam = families.of_config(c)
        assert fam.name == name
        models = fam.models(c)
        assert fam.vocab_size(models) == 4096
    c = config_lib.load_config(TINY, ["model=ar"])
    lm, dit = families.of_config(c).models(c)["lm"], c.dit
    assert (lm.dim, lm.num_layers, lm.num_heads, lm.head_dim) == (
        dit.txt_dim,
        dit.num_layers,
        dit.heads,
        dit.head_dim,
    )
    assert lm.causal and lm.mask_id is None
    llada = families.of_config(config_lib.load_config(TINY, ["model=llada"]))
    lm2 = llada.models(config_lib.load_config(TINY, ["model=llada"]))["lm"]
    assert not lm2.causal and lm2.mask_id == 1  # SentencePiece <unk>: never emitted


def test_stage_plans(tmp_path):
    w = str(tmp_path)
    cola = config_lib.load_config(TINY)
    plan = families.of_config(cola).plan(cola, w)
    assert [(p.name, p.workdir, p.main) for p in plan] == [
        ("vae", f"{w}/vae", False),
        ("prior", f"{w}/prior", True),
    ]
    assert plan[1].init_from == f"{w}/vae" and plan[1].steps == cola.train.steps
    scratch = config_lib.load_config(TINY, ["stage2.vae_mode=scratch"])
    assert families.of_config(scratch).plan(scratch, w)[1].init_from == ""
    prior = config_lib.load_config(TINY, ["stage=prior", "stage2.init_from=/ck/vae"])
    assert [(p.name, p.workdir, p.init_from) for p in families.of_config(prior).plan(prior, w)] == [
        ("prior", w, "/ck/vae")
    ]
    both = config_lib.load_config(TINY, ["stage=both"])  # the old name of 'all'
    assert len(families.of_config(both).plan(both, w)) == 2
    for name in ("ar", "llada"):
        c = config_lib.load_config(TINY, [f"model={name}"])
        assert [(p.name, p.workdir, p.main) for p in families.of_config(c).plan(c, w)] == [
            ("lm", w, True)
        ]


def test_2b_parameter_counts_exact():
    """eval_shape of every family's 2B experiment (nothing is allocated)."""
    want_lm = {
        "embedding": 410_738_688,  # 2 x 100,278 x 2,048, untied
        "blocks": 1_811_939_328,  # 27 x (4 x 2048^2 + 3 x 2048 x 8192)
        "norms": 27 * 2 * 2048 + 2048,
    }
    for name in ("ar", "llada"):
        c = config_lib.load_config(f"experiments/{name}_2b.py")
        fam = families.of_config(c)
        models = fam.models(c)
        init = functools.partial(fam.init_params, models)
        lm = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0)))["lm"]
        counts = fam.param_counts(models)
        assert {k: counts[k] for k in want_lm} == want_lm
        assert _count(lm) == sum(want_lm.values()) == counts["total"]
        assert counts["budget"] == counts["non_embedding"] == want_lm["blocks"] + want_lm["norms"]
        assert fam.paper_n(c) == 1.8e9  # the paper's constant N for all three 2B configs
    c = config_lib.load_config("experiments/cola_2b.py")
    fam = families.of_config(c)
    counts = fam.param_counts(fam.models(c))
    assert (counts["dit"], counts["vae"]) == (1_829_875_728, 501_871_574)
    assert counts["budget"] == counts["dit"] and fam.paper_n(c) == 1.8e9


def test_paper_axis_is_one_function_for_all_families():
    """6 N D with N = 1.8e9 and the paper batch: one budget (10k steps) = 77.86 EFLOPs."""
    for name in ("cola", "ar", "llada"):
        c = config_lib.load_config(f"experiments/{name}_2b.py")
        fam = families.of_config(c)
        tokens = 10_000 * c.train.batch_size * c.train.seq_len
        assert 6 * fam.paper_n(c) * tokens / 1e18 == pytest.approx(77.8568, rel=1e-5)


def test_same_data_order_for_every_family():
    """The same data seed gives the same first batches to Cola, AR and LLaDA (bundled corpus)."""
    firsts = {}
    for name in ("cola", "ar", "llada"):
        c = config_lib.load_config(TINY, [f"model={name}", "train.batch_size=4"])
        it = data_lib.make_train_iter(c, None)
        firsts[name] = [np.asarray(next(it)["tokens"]) for _ in range(2)]
    for name in ("ar", "llada"):
        for a, b in zip(firsts["cola"], firsts[name], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(firsts["cola"][0], firsts["cola"][1])
