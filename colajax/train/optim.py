"""AdamW with a warmup-cosine schedule, per-group learning rates and group freezing (optax).

The optax chain computes the update *direction* (global-norm clip over `clip_scope` -> Adam ->
decoupled weight decay, masked by `wd_exclude`); `Optimizer.update` multiplies it by the
learning rate of each parameter's group at the global step. Keeping the schedule outside the
chain means every group sees the same step count, including after phases in which a group is
switched off (Cola's 'interval' VAE mode): its parameters and its Adam moments are then left
exactly as they were.

Each stage has its own schedule (`stage_optim`): Stage 2 warms up over `warmup_steps` and decays
at `decay_steps`; Stage 1 over `stage1_warmup_steps` / `stage1_decay_steps` (-1: derived from
`train.vae_steps`), so a Stage-1 run reaches its floor at its own end.
"""

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

GROUPS = ("vae", "dit", "lm")  # parameter groups: Cola's VAE and DiT, the AR/LLaDA backbone
CLIP_SCOPES = ("all", "dit")
DECAY_ALL: tuple[str, ...] = ()  # `wd_exclude` preset of the released script: decay every param
DECAY_EXCLUDE_NORMS = ("bias$", "scale$", "embedding$")  # colajax's default (base.py)


def stage_optim(config, stage: str):
    """A copy of `config.optim` with the schedule of `stage` ('vae' | 'prior').

    Stage 1: warmup `stage1_warmup_steps` (-1: min(warmup_steps, train.vae_steps)), cosine end
    `stage1_decay_steps` (-1: train.vae_steps). Stage 2: `warmup_steps` / `decay_steps` as set.
    """
    opt = config.optim.copy_and_resolve_references()
    if stage != "vae":
        return opt
    steps = int(config.train.vae_steps)
    warmup = int(opt.stage1_warmup_steps)
    decay = int(opt.stage1_decay_steps)
    with opt.unlocked():
        opt.warmup_steps = min(int(opt.warmup_steps), steps) if warmup < 0 else warmup
        opt.decay_steps = steps if decay < 0 else decay
    return opt


def make_schedule(optim_cfg) -> optax.Schedule:
    """Linear warmup init_lr -> lr (warmup_steps), cosine to final_lr at decay_steps, then flat."""
    return optax.warmup_cosine_decay_schedule(
        init_value=optim_cfg.init_lr,
        peak_value=optim_cfg.lr,
        warmup_steps=optim_cfg.warmup_steps,
        decay_steps=max(optim_cfg.decay_steps, optim_cfg.warmup_steps + 1),
        end_value=optim_cfg.final_lr,
    )


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def decay_mask(params, exclude: Sequence[str]) -> Any:
    """True where weight decay applies: leaves whose 'a/b/leaf' path matches no `exclude` regex."""
    pats = [re.compile(p) for p in exclude]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(p.search(path_str(path)) for p in pats), params
    )


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """The optimizer of one stage; `labels` is a tree of group names shaped like the params."""

    tx: optax.GradientTransformation
    schedule: optax.Schedule
    labels: Any
    group_lr: dict[str, float]

    def init(self, params):
        return self.tx.init(params)

    def lr(self, step, group: str | None = None):
        return self.schedule(step) * self.group_lr.get(group, 1.0)

    def update(self, grads, opt_state, params, step, enabled: dict | None = None):
        """One step: returns (new_params, new_opt_state, {'grad_norm', 'lr'}).

        `enabled` maps group names to (traced) bools; a group switched off is left untouched:
        its gradients are zeroed before clipping, its parameters and Adam moments keep their
        values. Groups not named are always updated. `lr` is the schedule's (multiplier 1).
        """
        enabled = {g: jnp.asarray(on) for g, on in (enabled or {}).items()}
        on_of = lambda lab: enabled.get(lab)  # None: always on
        grads = jax.tree.map(
            lambda g, lab: g if on_of(lab) is None else jnp.where(on_of(lab), g, jnp.zeros_like(g)),
            grads,
            self.labels,
        )
        grad_norm = optax.tree.norm(grads)
        direction, new_state = self.tx.update(grads, opt_state, params)
        lrs = {g: self.lr(step, g) for g in GROUPS}

        def apply(p, u, lab):
            new = p - (lrs[lab] * u).astype(p.dtype)
            return new if on_of(lab) is None else jnp.where(on_of(lab), new, p)

        new_params = jax.tree.map(apply, params, direction, self.labels)
        if enabled:
            group_of = optax.tree_map_params(
                self.tx, lambda _, lab: lab, opt_state, self.labels,
                transform_non_params=lambda _: None,
            )  # fmt: skip
            new_state = jax.tree.map(
                lambda lab, new, old: (
                    new if on_of(lab) is None else jnp.where(on_of(lab), new, old)
                ),
                group_of,
                new_state,
                opt_state,
                is_leaf=lambda x: x is None,
            )
        return new_params, new_state, {"grad_norm": grad_norm, "lr": self.schedule(step)}


def make_optimizer(optim_cfg, labels, group_lr: dict[str, float] | None = None) -> Optimizer:
    """AdamW(b1, b2, eps, weight_decay masked by wd_exclude) after a global-norm clip.

    `clip_scope`: 'all' clips the norm of every trained gradient together; 'dit' clips the DiT
    group's alone and leaves the VAE's unclipped (the released script clips the DiT, the only
    thing it trains). A tree without a DiT group (Stage 1) is clipped whole either way.
    """
    scope = optim_cfg.clip_scope
    if scope not in CLIP_SCOPES:
        raise ValueError(f"optim.clip_scope={scope!r}; use one of {CLIP_SCOPES}.")
    parts = []
    if optim_cfg.clip_norm > 0:
        clip = optax.clip_by_global_norm(optim_cfg.clip_norm)
        if scope == "dit" and "dit" in jax.tree.leaves(labels):
            clip = optax.masked(clip, jax.tree.map(lambda lab: lab == "dit", labels))
        parts.append(clip)
    parts.append(optax.scale_by_adam(b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps))
    if optim_cfg.weight_decay > 0:
        mask = lambda p: decay_mask(p, tuple(optim_cfg.wd_exclude))
        parts.append(optax.add_decayed_weights(optim_cfg.weight_decay, mask))
    bad = {lab for lab in jax.tree.leaves(labels) if lab not in GROUPS}
    if bad:
        raise ValueError(f"parameter group labels {sorted(bad)} are not in {GROUPS}.")
    return Optimizer(
        tx=optax.chain(*parts),
        schedule=make_schedule(optim_cfg),
        labels=labels,
        group_lr=dict(group_lr or {}),
    )
