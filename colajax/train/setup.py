"""Everything one stage needs on one mesh: stage object, optimizer, shardings, jitted steps.

Family-agnostic: the stage comes from the config's family (`colajax.families`).

Shared by the trainer and `colajax bench train`, so the benchmark times exactly the step that
training runs.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding

from colajax import families
from colajax import sharding as shd
from colajax.train import optim
from colajax.train import state as state_lib
from colajax.train import step as step_lib
from colajax.train.state import TrainState


def stage_config(config, name: str):
    """A copy of `config` with `stage` set to one stage name (e.g. 'vae', 'prior', 'lm')."""
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.stage = name
    cfg.lock()
    return cfg


def default_make_stage(config, name):
    return families.of_config(config).make_stage(config, name)


@dataclasses.dataclass
class StageSetup:
    config: Any
    name: str
    stage: Any
    mesh: Mesh
    rules: dict
    optimizer: optim.Optimizer
    shardings: TrainState
    abstract: TrainState
    boxed: tuple
    batch_sharding: NamedSharding
    train_step: Callable
    eval_step: Callable

    @property
    def family(self):
        return families.of_config(self.config)

    @property
    def total_steps(self) -> int:
        return self.family.stage_steps(self.config, self.name)

    _inits: dict = dataclasses.field(default_factory=dict, repr=False)

    def init_state(self, rng=None, restored: dict | None = None) -> TrainState:
        """Fresh sharded state; with `restored` ({key: params} of `stage.init_keys`, e.g. a
        Stage-1 VAE) those start from the given weights via `stage.init_from_checkpoint`."""
        rng = jax.random.key(self.config.seed) if rng is None else rng
        kind = "fresh" if restored is None else "restored"
        if kind not in self._inits:
            init_fn = None if restored is None else self.stage.init_from_checkpoint
            self._inits[kind] = state_lib.jit_init(
                self.stage, self.optimizer, self.shardings, init_fn
            )
        args = () if restored is None else (restored,)
        return self._inits[kind](rng, *args)

    def flops_report(self) -> dict:
        tr = self.config.train
        return self.stage.flops_report(tr.batch_size, tr.seq_len)

    def flops_per_step(self) -> float:
        return float(self.flops_report()["total"])


_CACHE: dict = {}
_CACHE_SIZE = 4


def setup_stage(
    config, name: str, *, mesh: Mesh | None = None, make_stage=None, make_optimizer=None
) -> StageSetup:
    """Build (not yet run) stage `name` of `config` on `mesh` (default: from config.mesh).

    The last few setups are memoised by (config, stage, mesh, factories), so repeated runs in
    one process (tests, notebooks, resume after a stop) reuse the compiled steps.
    """
    key = (config.to_json(), name, mesh, make_stage, make_optimizer)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _build(config, name, mesh, make_stage, make_optimizer)
    return _CACHE[key]


def _build(config, name, mesh, make_stage, make_optimizer) -> StageSetup:
    cfg = stage_config(config, name)
    mesh = shd.make_mesh(cfg) if mesh is None else mesh
    rules = shd.rules_of(cfg)
    stage = (make_stage or default_make_stage)(cfg, name)
    boxed = state_lib.abstract_boxed(stage, jax.random.key(cfg.seed))
    boxed_params, boxed_frozen = boxed
    overlap = set(boxed_params) & set(boxed_frozen)
    if overlap:
        raise ValueError(f"stage {name}: params and frozen share top-level keys {overlap}.")
    labels = state_lib.expand_labels(
        stage.param_groups(nn.unbox(boxed_params)), nn.unbox(boxed_params)
    )
    group_lr = dict(getattr(stage, "group_lr", {}))
    if make_optimizer is not None:
        optimizer = make_optimizer(cfg, labels)
    else:
        optimizer = optim.make_optimizer(optim.stage_optim(cfg, name), labels, group_lr)
    shardings = state_lib.state_shardings(boxed_params, boxed_frozen, optimizer, mesh, rules)
    abstract = state_lib.abstract_state(boxed_params, boxed_frozen, optimizer, shardings)
    shd.assert_sufficiently_sharded(
        {**abstract.params, **abstract.frozen}, mesh, int(cfg.metrics.min_sharded_size)
    )
    batch_sh = shd.batch_sharding(mesh, rules)
    metrics_sh = shd.replicated(mesh)
    # One sharding for the whole batch dict (a pytree prefix): every [B, L] entry (tokens,
    # loss_weights, segment_ids, ...) is split the same way, whatever keys a batch carries.
    train_step = step_lib.jit_train_step(
        step_lib.make_train_step(stage, optimizer, cfg.seed, cfg.optim.grad_accum),
        shardings,
        batch_sh,
        metrics_sh,
    )
    eval_step = step_lib.jit_eval_step(
        step_lib.make_eval_step(stage, cfg.seed), shardings, batch_sh, metrics_sh
    )
    return StageSetup(
        config=cfg,
        name=name,
        stage=stage,
        mesh=mesh,
        rules=rules,
        optimizer=optimizer,
        shardings=shardings,
        abstract=abstract,
        boxed=boxed,
        batch_sharding=batch_sh,
        train_step=train_step,
        eval_step=eval_step,
    )
