"""Metrics: TensorBoard event files, a readable log, `metrics.jsonl`, a progress line, and the
expected calibration error of a classifier (`ece`).

`clu.metric_writers` imports TensorFlow when imported, and this project runs without TensorFlow,
so event files are written with tensorboardX (the same format TensorBoard reads).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


class MetricsWriter:
    """Writes scalars to `<workdir>/tensorboard`, `<workdir>/metrics.jsonl` and the log.

    Only process 0 writes (other processes' writers do nothing).
    """

    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._jsonl = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def write(self, step: int, scalars: Mapping[str, float], prefix: str = "train") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}/{k}": float(v) for k, v in scalars.items()}
        for k, v in values.items():
            self._tb.add_scalar(k, v, step)
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


def read_jsonl(workdir: str) -> list[dict[str, float]]:
    """The rows `MetricsWriter` wrote, in order (a resumed run appends to the same file)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


class Progress:
    """`step 1200/3000 (40%) | loss 1.234 | 85.1 steps/s | 43.6k tokens/s | ETA 0:00:21`."""

    def __init__(self, total_steps: int, tokens_per_step: int, start_step: int = 0,
                 unit: str = "tokens"):
        self.total, self.tokens_per_step, self.unit = total_steps, tokens_per_step, unit
        self._t0, self._s0 = time.perf_counter(), start_step

    def line(self, step: int, metrics: Mapping[str, float]) -> str:
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        rate = (step - self._s0) / elapsed
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        shown = " | ".join(f"{k} {float(v):.4g}" for k, v in metrics.items())
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "?"
        return (f"step {step}/{self.total} ({step / self.total:.0%}) | {shown} | "
                f"{rate:.1f} steps/s | {rate * self.tokens_per_step / 1e3:.1f}k {self.unit}/s | "
                f"ETA {eta_s}")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Prints the line on process 0 (printed, so it shows whatever the log verbosity)."""
        if jax.process_index() == 0:
            print(self.line(step, metrics), flush=True)


def ece(logits: jax.Array, labels: jax.Array, n_bins: int = 15) -> jax.Array:
    """Expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks"):
    predictions are put into `n_bins` equal-width bins of confidence (the top softmax
    probability; bin b holds confidences in ((b-1)/n_bins, b/n_bins], the first bin includes 0),
    and

        ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|

    0 for a perfectly calibrated classifier; an overconfident one scores its excess confidence.

    Args:
      logits: [N, num_classes] float (softmax is applied here).
      labels: [N] int, the true classes.
      n_bins: number of confidence bins, >= 1.

    Returns:
      A float32 scalar in [0, 1]. Works under jit and vmap.
    """
    if n_bins < 1:
        raise ValueError(f"ece: n_bins must be >= 1, got {n_bins}")
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"ece: expected logits [N, num_classes] and labels [N], got logits "
                         f"{logits.shape} and labels {labels.shape}")
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    confidence = probs.max(axis=-1)  # [N]
    correct = (probs.argmax(axis=-1) == labels).astype(jnp.float32)
    bins = jnp.clip(jnp.ceil(confidence * n_bins).astype(jnp.int32) - 1, 0, n_bins - 1)
    conf_sum = jnp.zeros(n_bins).at[bins].add(confidence)
    correct_sum = jnp.zeros(n_bins).at[bins].add(correct)
    return jnp.abs(correct_sum - conf_sum).sum() / logits.shape[0]
