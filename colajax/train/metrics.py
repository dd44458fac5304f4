"""Training metrics: TensorBoard events + JSON lines in the workdir (process 0), a log line,
throughput/MFU accounting and the NaN/Inf guard.

Files: `<workdir>/metrics.jsonl` (one JSON object per logged step: {"step": n, "train/loss":
...}) and TensorBoard events under `<workdir>/tb/`.
"""

import datetime
import json
import math
import os
import time
from typing import Any

import jax
import numpy as np


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the run stops without writing a checkpoint of that state."""


def check_finite(step: int, metrics: dict[str, Any]) -> None:
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(float(v)))
        raise NonFiniteLossError(
            f"loss is {loss} at step {step} (non-finite terms: {', '.join(bad)}). Stopping; the "
            "newest checkpoint predates this step and is intact. Lower optim.lr, raise "
            "optim.warmup_steps or check the data, then rerun the same command to resume."
        )


class Throughput:
    """Step time, tokens/s, model FLOP/s and MFU over the steps since the last `read`."""

    def __init__(self, tokens_per_step: int, flops_per_step: float, peak_flops: float | None):
        self.tokens_per_step, self.flops_per_step = tokens_per_step, flops_per_step
        self.peak_flops = peak_flops
        self.reset()

    def reset(self) -> None:
        self._t0, self._steps = time.perf_counter(), 0

    def tick(self, n: int = 1) -> None:
        self._steps += n

    def read(self) -> dict[str, float]:
        dt = time.perf_counter() - self._t0
        if self._steps == 0 or dt <= 0:
            return {}
        step_time = dt / self._steps
        flops_s = self.flops_per_step / step_time
        out = {
            "step_time": step_time,
            "tokens_per_sec": self.tokens_per_step / step_time,
            "model_flops_per_sec": flops_s,
        }
        if self.peak_flops:
            out["mfu"] = flops_s / self.peak_flops
        self.reset()
        return out


def format_line(step: int, total: int, metrics: dict[str, Any], eta_s: float | None = None) -> str:
    """One concise line: loss terms, grad norm, lr, throughput, ETA."""
    skip = {"lr", "grad_norm", "step_time", "tokens_per_sec", "model_flops_per_sec", "mfu"}
    skip |= {"tokens", "eflops_full", "eflops_paper"}
    terms = " ".join(f"{k} {float(v):.4g}" for k, v in metrics.items() if k not in skip)
    parts = [f"step {step}/{total}", terms]
    if "grad_norm" in metrics:
        parts.append(f"gnorm {float(metrics['grad_norm']):.3g} lr {float(metrics['lr']):.2e}")
    if "step_time" in metrics:
        tput = f"{metrics['tokens_per_sec']:.4g} tok/s {metrics['step_time']:.3g} s/step "
        tput += f"{metrics['model_flops_per_sec'] / 1e9:.4g} GFLOP/s"
        if "mfu" in metrics:
            tput += f" MFU {100 * metrics['mfu']:.1f}%"
        parts.append(tput)
    if "tokens" in metrics:
        seen = f"{metrics['tokens']:.4g} tok"
        if "eflops_paper" in metrics:
            seen += f" {metrics['eflops_paper']:.4g} EFLOPs (6ND)"
        parts.append(seen)
    if eta_s is not None:
        parts.append(f"ETA {datetime.timedelta(seconds=round(eta_s))}")
    return " | ".join(parts)


class MetricsWriter:
    """Writes scalars to TensorBoard and `metrics.jsonl`; a no-op on processes other than 0."""

    def __init__(self, workdir: str, enabled: bool | None = None, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._jsonl = None
        self._remote = None  # gs://: objects cannot be appended to, so the file is rewritten
        if not self.enabled:
            return
        if "://" in workdir:
            from etils import epath

            self._remote = epath.Path(workdir) / "metrics.jsonl"
            self._remote.parent.mkdir(parents=True, exist_ok=True)
            self._rows = self._remote.read_text() if self._remote.exists() else ""
        else:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, metrics: dict[str, Any], prefix: str = "train") -> None:
        if not self.enabled:
            return
        row = {f"{prefix}/{k}": float(np.asarray(v)) for k, v in metrics.items()}
        line = json.dumps({"step": int(step), **row}) + "\n"
        if self._remote is not None:
            self._rows += line
            self._remote.write_text(self._rows)
        else:
            self._jsonl.write(line)
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in row.items():
                self._tb.add_scalar(k, v, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_jsonl(workdir: str) -> list[dict[str, Any]]:
    """All rows of `<workdir>/metrics.jsonl` (for tests and reports)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
