"""Timing helpers the benchmarks share: one first (compiling) call per function, then
interleaved timed calls, medians and ranges into the result dict."""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np


def first_calls(fns, res, log) -> dict[str, np.ndarray]:
    """Calls each of `fns` once (compile + run): its result, and `res[f"first_{name}_s"]`."""
    outs = {}
    for name, fn in fns.items():
        log(f"{name}: first call (compiles) ...", flush=True)
        t0 = time.perf_counter()
        outs[name] = np.asarray(jax.block_until_ready(fn()))
        res[f"first_{name}_s"] = time.perf_counter() - t0
        log(f"    {res[f'first_{name}_s']:.1f} s", flush=True)
    return outs


def timed_calls(fns, repeats: int, res, log) -> None:
    """`repeats` timed calls of each of `fns`, interleaved: `res[f"{name}_ms"]` (median) and
    `res[f"{name}_range_ms"]`."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            log(f"{name}: timed call {r + 1}/{repeats} ...", flush=True)
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
            log(f"    {times[name][-1]:.1f} s", flush=True)
    for name, ts in times.items():
        res[f"{name}_ms"] = 1e3 * statistics.median(ts)
        res[f"{name}_range_ms"] = (1e3 * min(ts), 1e3 * max(ts))
