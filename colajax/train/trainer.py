"""The training loop of every model family, resumable and preemption-safe.

The config's family (`config.model`) plans the stages (`Family.plan`): Cola trains Stage 1 in
`<workdir>/vae` and Stage 2 in `<workdir>/prior` (from the newest Stage-1 checkpoint); AR and
LLaDA train one stage in `<workdir>`. A stage's workdir holds `checkpoints/` (orbax steps:
params, opt_state, data_iter, meta), `metrics.jsonl` and `tb/` (TensorBoard). Rerunning the same
command resumes each stage from its newest readable checkpoint (a finished stage is skipped).

Every logged step and every checkpoint carries the budget counters: tokens seen, EFLOPs on the
paper's axis 6 N D (main stage only) and the full analytic count.
"""

import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import numpy as np

from colajax import checkpoint as ckpt_lib
from colajax import config as config_lib
from colajax import distributed, families, hardware
from colajax import restore as restore_lib
from colajax.sweep import budgets as budgets_lib
from colajax.train import data as data_lib
from colajax.train import metrics as metrics_lib
from colajax.train.setup import StageSetup, setup_stage
from colajax.train.state import TrainState, param_count


def log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def train(config, workdir: str, **kwargs) -> dict[str, Any]:
    """Run every planned stage of `config` into `workdir`; returns the last stage's summary."""
    result: dict[str, Any] = {"status": "done"}
    family = families.of_config(config)
    plans = family.plan(config, workdir)
    if jax.process_index() == 0:
        restore_lib.write_run_file(
            workdir, family.name, [(p.name, p.workdir, p.main) for p in plans]
        )
    for plan in plans:
        result = train_stage(config, plan.name, plan.workdir, init_from=plan.init_from, **kwargs)
        if result["status"] != "done":
            break
    return result


class _Preemption:
    """SIGTERM -> a flag the loop polls (the handler itself does no I/O)."""

    def __init__(self):
        self.flag = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.flag = True

    def __exit__(self, *exc):
        if threading.current_thread() is threading.main_thread():
            # None: the old handler was not Python's (JAX's preemption notifier); default then
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._old is None else self._old)


def _merge(state: TrainState) -> dict:
    return {**state.params, **state.frozen}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Budget counters of a stage at a step: tokens seen and EFLOPs (paper axis, full count)."""

    tokens_per_step: int
    flops_per_step: float  # full analytic count of one optimizer step
    paper_n: float | None  # N of 6 N D (None: not the main stage, no paper axis)

    schedule: budgets_lib.BudgetSchedule | None = None  # budget checkpoints (main stage)

    def at(self, step: int) -> dict[str, float]:
        tokens = float(step) * self.tokens_per_step
        out = {"tokens": tokens, "eflops_full": step * self.flops_per_step / 1e18}
        if self.paper_n is not None:
            out["eflops_paper"] = budgets_lib.eflops_paper(tokens, self.paper_n)
        return out

    @property
    def steps(self) -> tuple[int, ...]:
        return self.schedule.steps if self.schedule is not None else ()


def _budget(setup: StageSetup) -> Budget:
    tr, family = setup.config.train, setup.family
    tps = budgets_lib.tokens_per_step(tr.batch_size, tr.seq_len)
    if setup.name != family.main_stage:
        return Budget(tps, setup.flops_per_step(), None)
    paper_n = family.paper_n(setup.config)
    schedule = budgets_lib.BudgetSchedule.from_config(tr, n_params=paper_n)
    if schedule is not None and schedule.last_step > setup.total_steps:
        raise ValueError(
            f"the last budget checkpoint (step {schedule.last_step}) is after the end of training "
            f"(step {setup.total_steps}); raise config.train.steps or drop that budget."
        )
    return Budget(tps, setup.flops_per_step(), paper_n, schedule)


def _meta(setup: StageSetup, step: int, budget: Budget) -> dict:
    family = setup.family
    stored = set(setup.abstract.params) | set(setup.abstract.frozen)
    models = family.models(setup.config)
    return {
        "family": family.name,
        "models": {k: dataclasses.asdict(m) for k, m in models.items() if k in stored},
        "step": int(step),
        "stage": setup.name,
        "config": config_lib.to_dict(setup.config),
        **budget.at(step),
        "budget_steps": list(budget.steps),  # this run's budget checkpoints (never deleted)
    }


def _restore_or_init(setup: StageSetup, ckpt, init_from: str):
    """Resume from the newest readable checkpoint, else start from `init_from` (the params of
    `stage.init_keys`), else from random init."""
    abs_ = setup.abstract
    restored = ckpt.restore_latest({**abs_.params, **abs_.frozen}, abs_.opt_state, log=log)
    if restored is not None:
        params = {k: restored["params"][k] for k in abs_.params}
        frozen = {k: restored["params"][k] for k in abs_.frozen}
        step = jax.device_put(np.int32(restored["step"]), setup.shardings.step)
        state = TrainState(step=step, params=params, frozen=frozen, opt_state=restored["opt_state"])
        log(f"[{setup.name}] resumed from step {restored['step']} ({ckpt.directory})")
        return state, restored["data_iter"]
    keys = tuple(getattr(setup.stage, "init_keys", ()))
    if init_from and keys:
        want = {k: abs_.params.get(k) or abs_.frozen.get(k) for k in keys}
        hint = "point the stage's init checkpoint (Cola: config.stage2.init_from) at a run."
        restored, _, step = ckpt_lib.restore_subtree(init_from, want, hint=hint)
        log(f"[{setup.name}] initialising {', '.join(keys)} from {init_from} (step {step})")
        return setup.init_state(restored=restored), None
    return setup.init_state(), None


def _peak_flops(config) -> float | None:
    family = families.of_config(config)
    dtype = family.compute_dtype(family.models(config))
    return hardware.peak_flops(dtype, config.metrics.peak_flops)


def _evaluate(setup: StageSetup, state, batches) -> dict[str, float]:
    sums: dict[str, float] = {}
    n = 0
    for i, batch in enumerate(batches):
        m = jax.device_get(setup.eval_step(state, batch, np.int32(i)))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


def train_stage(
    config,
    name: str,
    workdir: str,
    *,
    init_from: str = "",
    make_stage=None,
    make_optimizer=None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train one stage to its planned steps, resuming if checkpoints exist.

    `stop_after` (tests) returns after that step without a final save, as a kill would.
    Returns {'status': 'done' | 'preempted' | 'stopped', 'step', 'metrics', 'eval'}.
    """
    setup = setup_stage(config, name, make_stage=make_stage, make_optimizer=make_optimizer)
    tr = setup.config.train
    total = setup.total_steps
    budget = _budget(setup)
    ckpt = ckpt_lib.TrainCheckpointer(
        os.path.join(workdir, "checkpoints"),
        keep=tr.keep,
        keep_period=tr.keep_period,
        protect=budget.steps,  # budget checkpoints are never deleted
        async_save=tr.async_ckpt,
    )
    writer = None
    try:
        state, data_state = _restore_or_init(setup, ckpt, init_from)
        step = int(jax.device_get(state.step))
        result = {"status": "done", "step": step, "metrics": {}, "eval": {}}
        if step >= total:
            log(f"[{name}] already at step {step} >= {total}; nothing to do")
            return result
        train_iter = data_lib.make_train_iter(setup.config, setup.batch_sharding)
        if data_state:
            train_iter.set_state(data_state)
        eval_batches = data_lib.make_eval_batches(setup.config, setup.batch_sharding)
        writer = metrics_lib.MetricsWriter(workdir)
        tput = metrics_lib.Throughput(
            tr.batch_size * tr.seq_len, setup.flops_per_step(), _peak_flops(setup.config)
        )
        n_params = param_count(state.params)
        log(
            f"[{name}] training steps {step}..{total}: {n_params / 1e6:.2f}M trained params, "
            f"mesh {dict(setup.mesh.shape)}"
        )
        loop = (train_iter, eval_batches, ckpt, writer, tput, budget)
        result = _loop(setup, state, *loop, stop_after)
        return result
    finally:
        ckpt.close()
        if writer is not None:
            writer.close()


def _loop(setup, state, train_iter, eval_batches, ckpt, writer, tput, budget, stop_after):
    tr, name, total = setup.config.train, setup.name, setup.total_steps
    step = int(jax.device_get(state.step))
    pending: tuple[int, Any] | None = None  # (step, device metrics) fetched one step late
    last: dict[str, float] = {}
    evals: dict[str, float] = {}
    saved_at, evaluated_at = step, None
    first = True
    t_start = time.perf_counter()

    def drain():
        nonlocal pending, last
        if pending is None:
            return
        at, dev = pending
        pending = None
        host = {k: float(v) for k, v in jax.device_get(dev).items()}
        metrics_lib.check_finite(at, host)
        last = host
        if at % tr.log_every == 0 or at == total:
            host.update(tput.read())
            host.update(budget.at(at))
            writer.write(at, host)
            eta = host.get("step_time", 0.0) * (total - at) if "step_time" in host else None
            log(f"[{name}] " + metrics_lib.format_line(at, total, host, eta))

    evaluating = eval_batches is not None and tr.eval_every > 0

    def evaluate(at):
        nonlocal evals, evaluated_at
        evals, evaluated_at = _evaluate(setup, state, eval_batches), at
        writer.write(at, evals, prefix="eval")
        log(f"[{name}] eval " + metrics_lib.format_line(at, total, evals))

    def save(at):
        nonlocal saved_at
        drain()  # never checkpoint a state whose loss has not been checked
        meta = _meta(setup, at, budget)
        ckpt.save(at, _merge(state), state.opt_state, train_iter.get_state(), meta)
        saved_at = at

    vote = distributed.StopVote(name)
    with _Preemption() as preempt:
        while step < total:
            batch = next(train_iter)
            state, dev_metrics = setup.train_step(state, batch)
            step += 1
            drain()
            pending = (step, dev_metrics)
            if first:  # exclude compilation from throughput
                drain()
                tput.reset()
                first = False
            else:
                tput.tick()
            # SIGTERM on any process -> all stop at this step; JAX's preemption sync (a notice
            # that arrived before our handler was installed) agrees on a step by itself
            stop = vote(step, preempt.flag)
            if jax.process_count() > 1:
                stop = ckpt.reached_preemption(step) or stop
            if step % tr.ckpt_every == 0 or step in budget.steps or stop:
                save(step)
            if evaluating and (step % tr.eval_every == 0 or step in budget.steps):
                drain()
                evaluate(step)  # every eval_every steps and at every budget step
                tput.reset()
            if stop:
                ckpt.wait()
                who = f" process {jax.process_index()}/{jax.process_count()}:"
                print(
                    f"[{name}]{who if jax.process_count() > 1 else ''} preempted (SIGTERM): "
                    f"saved step {step}; rerun to resume",
                    flush=True,
                )
                return {"status": "preempted", "step": step, "metrics": last, "eval": evals}
            if stop_after is not None and step >= stop_after:
                drain()
                ckpt.wait()
                return {"status": "stopped", "step": step, "metrics": last, "eval": evals}
        drain()
        if evaluating and evaluated_at != step:
            evaluate(step)  # held-out losses at the end too
        if saved_at != step:
            save(step)
        ckpt.wait()
    minutes = (time.perf_counter() - t_start) / 60
    log(f"[{name}] done: step {step} in {minutes:.1f} min")
    loss = last.get("loss", math.nan)
    return {"status": "done", "step": step, "metrics": last, "eval": evals, "loss": loss}
