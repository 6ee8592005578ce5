"""`make bench`: what interventions cost, and what a vmapped steering sweep saves (on CPU).

    python -m experiments.benchmarks.intervention_overhead            # full GPT-2 small
    python -m experiments.benchmarks.intervention_overhead --n_layers=2 --batch=2 --seq=16 \
        --n_strengths=4 --repeats=1                                     # seconds, for a smoke test

Model: `ji.models.build("gpt2_small", n_layers=...)` (defaults to the full 12 layers, d_model
768, vocab 50257) with random weights, on random tokens `[batch, seq]` (default 8 x 128).
Everything is jitted, and the variables, tokens and intervention arrays are passed to the
jitted functions as arguments (not closed over), so XLA cannot constant-fold them.

(a) Intervention overhead: time of
        ji.run(model, variables, tokens, capture=[1 site], interventions=[4 interventions])
    divided by the time of plain `model.apply(variables, tokens)`. The interventions are a
    steering `Add` at `blocks.6.hook_resid_post`, a per-head `Scale(0)` at
    `blocks.3.attn.hook_z` (head 5), a batch-mean `Ablate` of `blocks.8.mlp.hook_post` and a
    masked `Clamp` of 32 residual dimensions at `blocks.10.hook_resid_mid`; the captured site
    is `blocks.11.hook_resid_post`. (Layer indices are for 12 layers; with `--n_layers` they
    are rescaled to the same relative depth.) Target: ratio <= 1.05, i.e. interventions cost
    what their arithmetic costs, nothing more.

(b) Steering sweep: time of a Python loop of `--n_strengths` (32) calls to ONE jitted
        ji.run(model, variables, tokens, interventions=[ji.Add(site, vec, scale=s)])
    (the strength `s` is a traced argument, so all calls share one compiled function) divided
    by the time of ONE jitted `jax.vmap` of the same function over the 32 strengths, at
    `blocks.6.hook_resid_post` (layer n_layers // 2). Under vmap the layers before the steering
    site do not depend on the strength, so they are computed once instead of 32 times; the
    report also gives the ratio of XLA's FLOP counts (32 x single call / vmapped call), the
    speed-up that saving alone would predict. Target: ratio > 1 (the sweep is one call, and
    faster than the loop).

Each function is compiled first (a warm-up call and `.block_until_ready()`); then the two
functions of a comparison are timed alternately (`time.perf_counter`, `block_until_ready`) and
the median of `--repeats` calls of each is reported (default 5 for (a), 3 for (b)).
Alternating makes the ratios robust to slow drifts in machine load. The report also gives each
function's fastest and slowest call and the ratio of the fastest calls: when that ratio is far
from the median one, or the spread is wide, other processes disturbed the run; rerun it.

Both sides of (b) keep every strength's logits (32 x 8 x 128 x 50257 floats, 6.6 GB at the
default settings), so the full-size run needs about 8 GB of free memory and takes 6-7 minutes
on 2 CPU cores. There the measured (b) ratio stays below the FLOP ratio: the vmapped call
works on 32 times larger activations (e.g. 400 MB of MLP hidden state per layer), so its
memory-bound steps (norms, GELU, softmax, writing the logits) cost more per FLOP.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import jaxinterp as ji

FLAGS = flags.FLAGS
flags.DEFINE_integer("n_layers", 12, "Layers of gpt2_small (12 is the full model).")
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("seq", 128, "Tokens per sequence.")
flags.DEFINE_integer("n_strengths", 32, "Steering strengths in the sweep of (b).")
flags.DEFINE_integer("repeats", None,
                     "Timed calls per function (median reported); default 5 for (a), 3 for (b).")

TARGET_A = 1.05  # (a) run / apply at most this
TARGET_B = 1.0  # (b) loop / vmap more than this
REFERENCE_LAYERS = 12  # the site indices below are for 12 layers


def layer(i: int, n_layers: int) -> int:
    """Layer `i` of a 12-layer model, moved to the same relative depth of an `n_layers` one."""
    return min(n_layers - 1, round(i * n_layers / REFERENCE_LAYERS))


def sites_for(n_layers: int) -> dict[str, str]:
    """The sites the benchmark uses (the names in the module docstring at 12 layers)."""
    return {
        "add": f"blocks.{layer(6, n_layers)}.hook_resid_post",
        "scale": f"blocks.{layer(3, n_layers)}.attn.hook_z",
        "ablate": f"blocks.{layer(8, n_layers)}.mlp.hook_post",
        "clamp": f"blocks.{layer(10, n_layers)}.hook_resid_mid",
        "capture": f"blocks.{n_layers - 1}.hook_resid_post",
        "steer": f"blocks.{n_layers // 2}.hook_resid_post",
    }


def four_interventions(sites: dict[str, str], d_model: int, n_heads: int) -> list[Any]:
    """A steering Add, a per-head Scale, a mean Ablate and a masked Clamp (all pytrees)."""
    k_vec, k_dims = jax.random.split(jax.random.key(3))
    vec = jax.random.normal(k_vec, (d_model,))
    vec = vec / jnp.linalg.norm(vec)
    dims = jax.random.choice(k_dims, d_model, (min(32, d_model),), replace=False)
    dim_mask = jnp.zeros((d_model,), bool).at[dims].set(True)
    return [
        ji.Add(sites["add"], vec, scale=jnp.float32(4.0)),
        ji.Scale(sites["scale"], jnp.float32(0.0), heads=jnp.array([min(5, n_heads - 1)])),
        ji.Ablate(sites["ablate"], how="mean"),
        ji.Clamp(sites["clamp"], jnp.full((d_model,), 2.0, jnp.float32), mask=dim_mask),
    ]


def time_alternately(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall times (s) of `repeats` calls of each `fn()` to `block_until_ready`, the fns called
    in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn()
            jax.block_until_ready(out)
            times[name].append(time.perf_counter() - t0)
            del out  # free it before the next call (the sweep's outputs are GBs)
    return times


def _store(res: dict[str, Any], times: dict[str, list[float]]) -> None:
    """Puts `{name}_ms` (the median) and `{name}_range_ms` (min, max) into `res`."""
    for name, ts in times.items():
        res[f"{name}_ms"] = 1e3 * statistics.median(ts)
        res[f"{name}_range_ms"] = (1e3 * min(ts), 1e3 * max(ts))


def warm_up(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Calls `fn` once (compiling it) and returns its output and the time (s) it took to
    compile and run."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def flops(jitted: Any, *args: Any) -> float | None:
    """XLA's FLOP count of `jitted(*args)`, or None where the backend gives none."""
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
        if isinstance(cost, list | tuple):
            cost = cost[0]
        value = float(cost["flops"])
    except Exception:  # cost analysis is best effort; the benchmark does not depend on it
        return None
    return value if value > 0 else None


def measure(
    n_layers: int = 12,
    batch: int = 8,
    seq: int = 128,
    n_strengths: int = 32,
    repeats_a: int = 5,
    repeats_b: int = 3,
    verbose: bool = False,
) -> dict[str, Any]:
    """Runs (a) and (b); returns times in ms, the ratios and some sanity checks."""
    log = print if verbose else (lambda *a, **k: None)
    model = ji.models.build("gpt2_small", n_layers=n_layers)
    c = model.config
    tokens = jax.random.randint(jax.random.key(1), (batch, seq), 0, c.d_vocab, jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(0), tokens)
    sites = sites_for(n_layers)
    res: dict[str, Any] = dict(n_layers=n_layers, batch=batch, seq=seq,
                               n_strengths=n_strengths, repeats_a=repeats_a,
                               repeats_b=repeats_b, sites=sites,
                               device=str(jax.devices()[0]))

    # -- (a) run with 4 interventions and 1 capture vs plain apply ----------------------------
    apply = jax.jit(model.apply)

    @jax.jit
    def run_a(variables, tokens, interventions):
        return ji.run(model, variables, tokens, capture=[sites["capture"]],
                      interventions=interventions)

    ivs = four_interventions(sites, c.d_model, c.n_heads)
    log("(a) compiling ...", flush=True)
    clean, res["compile_apply_s"] = warm_up(lambda: apply(variables, tokens))
    (changed, cache), res["compile_run_s"] = warm_up(lambda: run_a(variables, tokens, ivs))
    res["a_logits_max_change"] = float(jnp.max(jnp.abs(changed - clean)))
    res["a_captured"] = {k: tuple(v.shape) for k, v in cache.items()}
    del clean, changed, cache
    log(f"(a) timing {repeats_a} x 2 calls ...", flush=True)
    t = time_alternately({"apply": lambda: apply(variables, tokens),
                          "run": lambda: run_a(variables, tokens, ivs)}, repeats_a)
    _store(res, t)
    res["ratio_a"] = res["run_ms"] / res["apply_ms"]
    log(f"(a) apply {res['apply_ms']:.1f} ms, run {res['run_ms']:.1f} ms, "
        f"run/apply = {res['ratio_a']:.3f}", flush=True)

    # -- (b) loop over steering strengths vs one vmapped call ----------------------------------
    vec = jax.random.normal(jax.random.key(4), (c.d_model,))
    vec = vec / jnp.linalg.norm(vec)
    strengths_np = np.linspace(-16.0, 16.0, n_strengths, dtype=np.float32)
    strengths = jnp.asarray(strengths_np)
    # One device scalar per call, made before timing so the loop does not time transfers.
    scalars = [jax.device_put(s) for s in strengths_np]

    def steered(variables, tokens, vec, s):
        return ji.run(model, variables, tokens,
                      interventions=[ji.Add(sites["steer"], vec, scale=s)])[0]

    run_one = jax.jit(steered)
    sweep = jax.jit(jax.vmap(steered, in_axes=(None, None, None, 0)))

    log("(b) compiling ...", flush=True)
    _, res["compile_run_one_s"] = warm_up(lambda: run_one(variables, tokens, vec, scalars[0]))
    swept, res["compile_sweep_s"] = warm_up(lambda: sweep(variables, tokens, vec, strengths))
    check = sorted({0, n_strengths // 2, n_strengths - 1})
    res["b_max_abs_diff_vmap_vs_loop"] = max(
        float(jnp.max(jnp.abs(swept[i] - run_one(variables, tokens, vec, scalars[i]))))
        for i in check)
    res["b_output_shape"] = tuple(swept.shape)
    del swept

    def loop():
        return [run_one(variables, tokens, vec, s) for s in scalars]

    log(f"(b) timing {repeats_b} x ({n_strengths} + 1) calls ...", flush=True)
    t = time_alternately({"loop": loop,
                          "vmap": lambda: sweep(variables, tokens, vec, strengths)}, repeats_b)
    _store(res, t)
    res["ratio_b"] = res["loop_ms"] / res["vmap_ms"]
    f_one = flops(run_one, variables, tokens, vec, scalars[0])
    f_sweep = flops(sweep, variables, tokens, vec, strengths)
    res["flop_ratio_b"] = n_strengths * f_one / f_sweep if f_one and f_sweep else None
    return res


def report(res: dict[str, Any]) -> str:
    """A human-readable report of `measure`'s results."""
    s = res["sites"]
    n = res["n_strengths"]
    flop_ratio = res["flop_ratio_b"]
    lines = [
        f"intervention overhead: gpt2_small, {res['n_layers']} layers, batch {res['batch']} x "
        f"{res['seq']} tokens, on {res['device']}; medians of {res['repeats_a']} (a) and "
        f"{res['repeats_b']} (b) calls",
        "",
        "(a) ji.run with 4 interventions + 1 capture vs model.apply",
        f"    interventions: Add({s['add']}, scale 4), Scale({s['scale']}, 0, one head),",
        f"                   Ablate({s['ablate']}, mean), Clamp({s['clamp']}, 32 dims)",
        f"    capture:       {s['capture']}",
        f"    first call (compile + run): apply {res['compile_apply_s']:.1f} s, "
        f"run {res['compile_run_s']:.1f} s",
        f"    model.apply: {res['apply_ms']:10.1f} ms  {_range(res, 'apply')}",
        f"    ji.run:      {res['run_ms']:10.1f} ms  {_range(res, 'run')}",
        f"    (logits changed by up to {res['a_logits_max_change']:.3g}; "
        f"captured {res['a_captured']})",
        f"(a) run/apply = {res['ratio_a']:.3f} (target <= {TARGET_A:.2f})"
        + ("" if res["ratio_a"] <= TARGET_A else "  ** above target **"),
        f"    (fastest run / fastest apply = {_min_ratio(res, 'run', 'apply'):.3f}; "
        "far from the median ratio means other processes disturbed the timings)",
        "",
        f"(b) steering sweep over {n} strengths at {s['steer']}",
        f"    first call (compile + run): one strength {res['compile_run_one_s']:.1f} s, "
        f"vmap {res['compile_sweep_s']:.1f} s",
        f"    loop of {n} jitted calls: {res['loop_ms']:10.1f} ms  {_range(res, 'loop')}; "
        f"{res['loop_ms'] / n:.1f} ms per call",
        f"    one vmapped call:       {res['vmap_ms']:10.1f} ms  {_range(res, 'vmap')}",
        f"    (output {res['b_output_shape']}; max |vmap - loop| = "
        f"{res['b_max_abs_diff_vmap_vs_loop']:.2g})",
        f"    XLA FLOP ratio ({n} x one call / vmapped call): "
        + (f"{flop_ratio:.3f}" if flop_ratio else "n/a"),
        f"(b) loop/vmap = {res['ratio_b']:.3f} (target > {TARGET_B:.2f})"
        + ("" if res["ratio_b"] > TARGET_B else "  ** below target **"),
        f"    (fastest loop / fastest vmap = {_min_ratio(res, 'loop', 'vmap'):.3f})",
    ]
    return "\n".join(lines)


def _range(res: dict[str, Any], name: str) -> str:
    lo, hi = res[f"{name}_range_ms"]
    return f"(min {lo:.1f}, max {hi:.1f})"


def _min_ratio(res: dict[str, Any], num: str, den: str) -> float:
    return res[f"{num}_range_ms"][0] / res[f"{den}_range_ms"][0]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    jax.config.update("jax_platforms", "cpu")
    res = measure(
        n_layers=FLAGS.n_layers, batch=FLAGS.batch, seq=FLAGS.seq,
        n_strengths=FLAGS.n_strengths,
        repeats_a=FLAGS.repeats or 5, repeats_b=FLAGS.repeats or 3, verbose=True,
    )
    print()
    print(report(res))


if __name__ == "__main__":
    app.run(main)
