"""The training loop for `stage = vae | prior | both`, resumable and preemption-safe.

Layout of a workdir: `checkpoints/` (orbax steps: params, opt_state, data_iter, meta),
`metrics.jsonl`, `tb/` (TensorBoard). With `stage='both'`, Stage 1 runs in `<workdir>/vae` and
Stage 2 in `<workdir>/prior`, initialised from the newest Stage-1 checkpoint. Rerunning the same
command resumes each stage from its newest readable checkpoint (a finished stage is skipped).
"""

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
from colajax import distributed, hardware
from colajax.train import data as data_lib
from colajax.train import metrics as metrics_lib
from colajax.train.setup import StageSetup, setup_stage
from colajax.train.state import TrainState, param_count


def log(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def stage_plan(config, workdir: str) -> list[tuple[str, str, str]]:
    """[(stage name, stage workdir, Stage-1 checkpoint to start from or '')]."""
    init_from = config.stage2.init_from
    if config.stage2.vae_mode == "scratch":
        init_from = ""
    if config.stage == "both":
        vae_dir, prior_dir = os.path.join(workdir, "vae"), os.path.join(workdir, "prior")
        if config.stage2.vae_mode != "scratch":
            init_from = init_from or vae_dir
        return [("vae", vae_dir, ""), ("prior", prior_dir, init_from)]
    if config.stage == "prior":
        return [("prior", workdir, init_from)]
    return [("vae", workdir, "")]


def train(config, workdir: str, **kwargs) -> dict[str, Any]:
    """Run every stage of `config` into `workdir`; returns the last stage's summary."""
    result: dict[str, Any] = {"status": "done"}
    for name, stage_dir, init_from in stage_plan(config, workdir):
        result = train_stage(config, name, stage_dir, init_from=init_from, **kwargs)
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


def _meta(setup: StageSetup, step: int) -> dict:
    return {
        "step": int(step),
        "stage": setup.name,
        "config": config_lib.to_dict(setup.config),
        "vae": setup.config.vae.to_dict(),
        "dit": setup.config.dit.to_dict() if setup.name == "prior" else None,
    }


def _restore_or_init(setup: StageSetup, ckpt, init_from: str):
    abs_ = setup.abstract
    restored = ckpt.restore_latest({**abs_.params, **abs_.frozen}, abs_.opt_state, log=log)
    if restored is not None:
        params = {k: restored["params"][k] for k in abs_.params}
        frozen = {k: restored["params"][k] for k in abs_.frozen}
        step = jax.device_put(np.int32(restored["step"]), setup.shardings.step)
        state = TrainState(step=step, params=params, frozen=frozen, opt_state=restored["opt_state"])
        log(f"[{setup.name}] resumed from step {restored['step']} ({ckpt.directory})")
        return state, restored["data_iter"]
    if setup.name == "prior" and init_from:
        want = {"vae": (abs_.params.get("vae") or abs_.frozen.get("vae"))}
        vae, _, step = ckpt_lib.restore_subtree(init_from, want)
        log(f"[prior] initialising the VAE from {init_from} (step {step})")
        return setup.init_state(vae_params=vae["vae"]), None
    if setup.name == "prior" and setup.config.stage2.vae_mode != "scratch":
        log("[prior] WARNING: config.stage2.init_from is empty: the VAE starts from random init")
    return setup.init_state(), None


def _peak_flops(config) -> float | None:
    dtype = "bfloat16" if "bfloat16" in (config.vae.dtype, config.dit.dtype) else "float32"
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
    """Train one stage to `config.train.{vae,prior}_steps`, resuming if checkpoints exist.

    `stop_after` (tests) returns after that step without a final save, as a kill would.
    Returns {'status': 'done' | 'preempted' | 'stopped', 'step', 'metrics', 'eval'}.
    """
    setup = setup_stage(config, name, make_stage=make_stage, make_optimizer=make_optimizer)
    tr = setup.config.train
    total = setup.total_steps
    ckpt = ckpt_lib.TrainCheckpointer(
        os.path.join(workdir, "checkpoints"),
        keep=tr.keep,
        keep_period=tr.keep_period,
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
        result = _loop(setup, state, train_iter, eval_batches, ckpt, writer, tput, stop_after)
        return result
    finally:
        ckpt.close()
        if writer is not None:
            writer.close()


def _loop(setup, state, train_iter, eval_batches, ckpt, writer, tput, stop_after):
    tr, name, total = setup.config.train, setup.name, setup.total_steps
    step = int(jax.device_get(state.step))
    pending: tuple[int, Any] | None = None  # (step, device metrics) fetched one step late
    last: dict[str, float] = {}
    evals: dict[str, float] = {}
    saved_at = step
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
            writer.write(at, host)
            eta = host.get("step_time", 0.0) * (total - at) if "step_time" in host else None
            log(f"[{name}] " + metrics_lib.format_line(at, total, host, eta))

    def save(at):
        nonlocal saved_at
        drain()  # never checkpoint a state whose loss has not been checked
        ckpt.save(at, _merge(state), state.opt_state, train_iter.get_state(), _meta(setup, at))
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
            if step % tr.ckpt_every == 0 or stop:
                save(step)
            if eval_batches is not None and tr.eval_every > 0 and step % tr.eval_every == 0:
                drain()
                evals = _evaluate(setup, state, eval_batches)
                writer.write(step, evals, prefix="eval")
                log(f"[{name}] eval " + metrics_lib.format_line(step, total, evals))
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
        if saved_at != step:
            save(step)
        ckpt.wait()
    minutes = (time.perf_counter() - t_start) / 60
    log(f"[{name}] done: step {step} in {minutes:.1f} min")
    loss = last.get("loss", math.nan)
    return {"status": "done", "step": step, "metrics": last, "eval": evals, "loss": loss}
