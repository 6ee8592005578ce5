"""Activation-patching sweep: `act_patch` vs the naive loop of forward passes (on CPU).

    python -m experiments.benchmarks.patching_speed                    # gpt2_small, 12 x 20
    python -m experiments.benchmarks.patching_speed --n_layers=2 --seq=4 --batch=2 --repeats=1
    python -m experiments.benchmarks.patching_speed --sweep=path       # the path-patching row

Model: `ji.models.build("gpt2_small", n_layers=...)` (default the full 12 layers, d_model 768,
vocab 50257) with random weights; clean and corrupted random tokens `[batch, seq]` (default
8 x 20). Metric: mean logit difference between tokens 0 and 1 at the last position.

The sweep is a full `resid_pre` x `layer_pos` patch: 12 layers x 20 positions = 240 patched
forward passes.

  naive:     a Python loop over (layer, pos) calling ONE jitted function per layer,
             `metric(ji.run(model, variables, corrupted, interventions=[ji.Patch(site, clean_act,
             positions=[pos])])[0])` (the position is a traced argument, so each layer's function
             compiles once; the site name is static, so there are n_layers compilations).
  act_patch: `jaxinterp.analysis.patching.act_patch(..., "resid_pre", "layer_pos",
             suffix=False)` (the full-sequence path, act_patch before suffix-only patching): per
             layer, one compiled call vmapped over the positions (the layers before the patched
             one are computed once per call, not once per position).
  suffix:    `act_patch(..., suffix=True, suffix_starts=--suffix_starts)`, suffix-only
             patching (the default on causal models): one cached corrupted run, then each
             (layer l, position p) recomputes only positions >= p of layers >= l against the
             cached keys and values (`--suffix_starts=None`: one compiled function per position,
             each called once per layer).

All are compiled by a first call (its time is reported as "first call"), then timed
alternately `--repeats` times (median reported, with min and max); all return the same
[layer, pos] array (checked). Targets: naive / act_patch >= 5 (the old goal, not met: see
below) and naive / suffix >= 4.

Memory: XLA's own account of each compiled function (`jitted.lower(...).compile()
.memory_analysis()`: arguments + outputs + temporaries, in MB) for one naive call and for one
act_patch call (one layer's vmapped chunk) and for the largest suffix call (the first group,
positions from 0) and the cached corrupted run. Not a measured RSS: it is what the compiled
program needs beyond the Python process; the process's peak RSS (`ru_maxrss`, all three sides
and their compilations together) is reported beside it. `--batch_size` bounds act_patch's
positions per call.

Measured (2 shared CPU cores, full size, one timed call per side): naive 127-135 s, act_patch
92-140 s; naive / act_patch 1.46 at load ~9 -> 4, 0.91 while the load rose 1.6 -> 5.5 (so
noise dominates single calls); first calls (compile + run) 381 / 224 s and 95 / 55 s (1.7x).
XLA's FLOP counts explain the ceiling: 39.7 GFLOP per patched pass for the naive loop, 27.8
for act_patch averaged over layers (ratio 1.43). The sweep is FLOP-bound on CPU, and the only
work a generic sweep can skip is each layer's prefix; the 50257-way unembedding of every
position (31% of a pass) is recomputed per patch on both sides, since XLA does not narrow a
matmul to the one position the metric reads. So the 5x target is not reached here.

Suffix-only patching (measured 2026-12-01, full size, one timed call per side, 2 CPU cores
shared with three other sessions, load average 18.5 before -> 13.9 after): naive 288.2 s,
act_patch 161.4 s, suffix 55.9 s: naive / suffix = 5.15, act_patch / suffix = 2.89 (naive /
act_patch 1.78); first calls (compile + run) 508 / 369 / 269 s; max |suffix - naive| = 9.5e-07.
XLA memory per call: naive 585 MB, act_patch 1098 MB, suffix 543 MB (largest call) plus 625 MB
for the cached corrupted run (done once); process peak RSS 2347 MB (all three sides). The
expected FLOP ratio is about 4.7: a cell (l, p) runs (T - p)/T of the positions through
(L - l)/L of the blocks (0.525 x 0.54 on average), and only the unembedding of the positions
the metric reads (here the last one) is kept.

Path-patching row (`--sweep=path`, `measure_path`): `path_patch(senders="each")` over every
head of the same model, receivers the queries of heads 0 and 1 of layer n_layers - 2
(`path_receivers`), corrupted tokens equal to the clean ones before position seq // 2 (so
p0 = seq // 2), suffix-only (the default on causal models) against `suffix=False` (the full
three runs: one vmapped call over all the senders); both return the same [layer, head] array
(max |diff| printed). First calls compile, then `--path_repeats` timed calls per side.
Measured 2026-12-01, full size (12 layers, 8 x 20 tokens), one timed call per side, 2 CPU
cores shared with three other sessions (load average 22.4 before -> 24.1 after): full
159.8 s, suffix 39.4 s: full / suffix = 4.06; first calls 191.6 / 56.8 s; max |suffix -
full| = 3.6e-07; process peak RSS 7425 MB (the full side vmaps all 144 senders at once). With
2 prompts (load ~20): 41.7 vs 15.8 s, 2.64 (the per-call traces and the cached runs weigh
more). The expected FLOP ratio is about 7.6: run (ii) covers half the positions of layers
min(l, 10) .. 10, run (iii) half the positions of layers 10 and 11 and one position's
unembedding, against 10 + 12 layers and 20 unembedded positions per sender in the full runs.
"""

from __future__ import annotations

import functools
import os
import resource
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
from experiments.benchmarks.timing import first_calls, timed_calls
from jaxinterp.analysis import patching

TARGET = 5.0  # naive / act_patch at least this
SUFFIX_TARGET = 4.0  # naive / suffix at least this


def logit_diff(logits: jax.Array) -> jax.Array:
    """Mean over the batch of logit[0] - logit[1] at the last position."""
    return (logits[:, -1, 0] - logits[:, -1, 1]).mean()


@functools.partial(jax.jit, static_argnames=("model", "name"))
def naive_one(variables, tokens, source, position, *, model, name):
    """metric of one forward pass with `source` patched in at `name`, `position`."""
    patch = ji.Patch(name, source, positions=position)
    return logit_diff(ji.run(model, variables, tokens, interventions=[patch])[0])


@functools.partial(jax.jit, static_argnames=("model", "names"))
def _capture(variables, tokens, *, model, names):
    return ji.run(model, variables, tokens, capture=names)


def naive_sweep(model, variables, clean, corrupted, n_layers: int) -> jax.Array:
    """[layer, pos]: the loop `act_patch` replaces."""
    names = [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)]
    _, cache = _capture(variables, clean, model=model, names=tuple(names))
    positions = [jax.device_put(np.array([p], np.int32)) for p in range(clean.shape[1])]
    rows = [[naive_one(variables, corrupted, cache[n], p, model=model, name=n)
             for p in positions] for n in names]
    return jnp.asarray(rows)


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return float(cost["flops"])
    except Exception:  # best effort
        return None


def _mb(compiled) -> float | None:
    try:
        m = compiled.memory_analysis()
        total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                 - m.alias_size_in_bytes)
    except Exception:  # best effort: some backends give no memory analysis
        return None
    return total / 2**20


def act_patch_gflop_per_patch(model, variables, corrupted, src, n_layers: int,
                              seq: int) -> float:
    """XLA's FLOPs per patch of act_patch's sweep, averaged over the layers (each layer's call
    computes the layers before the patched one once, so later layers cost less per patch)."""
    total = 0.0
    for i in range(n_layers):
        compiled = patching.patched_metrics.lower(
            variables, corrupted, src, np.eye(seq, dtype=bool), None, model=model,
            metric=logit_diff, name=f"blocks.{i}.hook_resid_pre").compile()
        total += (_flops(compiled) or float("nan")) / seq
    return total / n_layers



def measure(n_layers: int = 12, seq: int = 20, batch: int = 8, repeats: int = 3,
            batch_size: int | None = None, verbose: bool = False,
            suffix_starts: int | None = None, **model_overrides: Any) -> dict[str, Any]:
    """Times the naive loop and act_patch; returns ms, the ratio, memory and checks."""
    log = print if verbose else (lambda *a, **k: None)
    model = ji.models.build("gpt2_small", n_layers=n_layers, **model_overrides)
    c = model.config
    clean = jax.random.randint(jax.random.key(1), (batch, seq), 0, c.d_vocab, jnp.int32)
    corrupted = jax.random.randint(jax.random.key(2), (batch, seq), 0, c.d_vocab, jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(0), clean)
    res: dict[str, Any] = dict(n_layers=n_layers, seq=seq, batch=batch, repeats=repeats,
                               batch_size=batch_size, d_model=c.d_model, d_vocab=c.d_vocab,
                               suffix_starts=suffix_starts,
                               device=str(jax.devices()[0]), load_before=os.getloadavg())

    def fast():
        return patching.act_patch(model, variables, clean, corrupted, logit_diff, "resid_pre",
                                  "layer_pos", batch_size=batch_size, suffix=False)

    def suffix():
        return patching.act_patch(model, variables, clean, corrupted, logit_diff, "resid_pre",
                                  "layer_pos", suffix=True, suffix_starts=suffix_starts)

    def slow():
        return naive_sweep(model, variables, clean, corrupted, n_layers)

    fns = {"naive": slow, "act_patch": fast, "suffix": suffix}
    outs = first_calls(fns, res, log)
    res["shape"] = outs["act_patch"].shape
    res["max_abs_diff"] = float(np.abs(outs["act_patch"] - outs["naive"]).max())
    res["suffix_max_abs_diff"] = float(np.abs(outs["suffix"] - outs["naive"]).max())
    res["result_range"] = (float(outs["naive"].min()), float(outs["naive"].max()))

    timed_calls(fns, repeats, res, log)
    res["ratio"] = res["naive_ms"] / res["act_patch_ms"]
    res["suffix_ratio"] = res["naive_ms"] / res["suffix_ms"]
    res["suffix_vs_act_patch"] = res["act_patch_ms"] / res["suffix_ms"]
    res["load_after"] = os.getloadavg()

    # XLA's memory account of one call of each side.
    name = "blocks.0.hook_resid_pre"
    _, cache = _capture(variables, clean, model=model, names=(name,))
    src = cache[name]
    one = naive_one.lower(variables, corrupted, src, np.array([0], np.int32), model=model,
                          name=name).compile()
    n_cells = seq if batch_size is None else min(batch_size, seq)
    chunk = patching.patched_metrics.lower(
        variables, corrupted, src, np.eye(seq, dtype=bool)[:n_cells], None, model=model,
        metric=logit_diff, name=name).compile()
    res["naive_call_mb"], res["act_patch_call_mb"] = _mb(one), _mb(chunk)
    logits, kv, resid = patching.cached_corrupted_run(variables, corrupted, model=model)
    first = patching.suffix_groups(seq, suffix_starts)[0]
    big = patching.suffix_metrics.lower(
        ji.models.transformer.stacked_blocks(variables), variables, logits, kv, resid[0], src,
        np.int32(0), np.eye(seq, dtype=bool)[first[0]:first[1]], None, model=model,
        metric=logit_diff, hook="hook_resid_pre", offset=first[0]).compile()
    res["suffix_call_mb"] = _mb(big)
    res["corrupted_run_mb"] = _mb(patching.cached_corrupted_run.lower(
        variables, corrupted, model=model).compile())
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["naive_gflop_per_patch"] = (_flops(one) or float("nan")) / 1e9
    res["act_patch_gflop_per_patch"] = act_patch_gflop_per_patch(
        model, variables, corrupted, src, n_layers, seq) / 1e9
    res["flop_ratio"] = res["naive_gflop_per_patch"] / res["act_patch_gflop_per_patch"]
    return res


def report(res: dict[str, Any]) -> str:
    """A human-readable report of `measure`'s results."""
    n = res["n_layers"] * res["seq"]

    def mb(x):
        return "n/a" if x is None else f"{x:.0f} MB"

    lines = [
        f"patching speed: gpt2_small shape, {res['n_layers']} layers, d_model {res['d_model']}, "
        f"vocab {res['d_vocab']}, {res['batch']} prompts x {res['seq']} tokens, on "
        f"{res['device']}; resid_pre x layer_pos sweep = {n} patched forward passes; medians "
        f"of {res['repeats']} calls",
        f"    load average (1/5/15 min) before {_load(res['load_before'])}, after "
        f"{_load(res['load_after'])}",
        f"    first call (compile + run): naive {res['first_naive_s']:.1f} s, "
        f"act_patch {res['first_act_patch_s']:.1f} s",
        f"    naive loop ({n} jitted calls): {res['naive_ms']:10.1f} ms  "
        f"{_range(res, 'naive')}; {res['naive_ms'] / n:.1f} ms per patch",
        f"    act_patch (batch_size={res['batch_size']}): {res['act_patch_ms']:10.1f} ms  "
        f"{_range(res, 'act_patch')}",
        f"    suffix-only act_patch (suffix_starts={res['suffix_starts']}): "
        f"{res['suffix_ms']:10.1f} ms  {_range(res, 'suffix')}; first call (compile + run) "
        f"{res['first_suffix_s']:.1f} s; max |suffix - naive| = "
        f"{res['suffix_max_abs_diff']:.2g}",
        f"    (result {res['shape']}, values in [{res['result_range'][0]:.3g}, "
        f"{res['result_range'][1]:.3g}]; max |act_patch - naive| = {res['max_abs_diff']:.2g})",
        f"    XLA memory_analysis (args + outputs + temps) per call: naive "
        f"{mb(res['naive_call_mb'])}, act_patch {mb(res['act_patch_call_mb'])}, suffix "
        f"{mb(res['suffix_call_mb'])} (largest call) + cached corrupted run "
        f"{mb(res['corrupted_run_mb'])}; process peak RSS {res['peak_rss_mb']:.0f} MB",
        f"    XLA FLOPs per patch: naive {res['naive_gflop_per_patch']:.2f} GFLOP, act_patch "
        f"{res['act_patch_gflop_per_patch']:.2f} GFLOP (mean over layers); FLOP ratio "
        f"{res['flop_ratio']:.2f} (the speed-up computing each layer's prefix once predicts)",
        f"naive / act_patch = {res['ratio']:.2f} (target >= {TARGET:.0f})"
        + ("" if res["ratio"] >= TARGET else "  ** below target **"),
        f"    (fastest naive / fastest act_patch = "
        f"{res['naive_range_ms'][0] / res['act_patch_range_ms'][0]:.2f})",
        f"naive / suffix = {res['suffix_ratio']:.2f} (target >= {SUFFIX_TARGET:.0f})"
        + ("" if res["suffix_ratio"] >= SUFFIX_TARGET else "  ** below target **")
        + f"; act_patch / suffix = {res['suffix_vs_act_patch']:.2f}",
    ]
    return "\n".join(lines)


def path_receivers(n_layers: int) -> list[tuple[int, int, str]]:
    """The path-patching row's receivers: the queries of heads 0 and 1 of layer n_layers - 2
    (late heads' queries, as for name-mover heads in IOI; layer 1 for a 2-layer model)."""
    layer = max(n_layers - 2, min(1, n_layers - 1))
    return [(layer, 0, "q"), (layer, 1, "q")]


def measure_path(n_layers: int = 12, seq: int = 20, batch: int = 8, repeats: int = 1,
                 differ_from: int | None = None, verbose: bool = False,
                 **model_overrides: Any) -> dict[str, Any]:
    """Times `path_patch(senders="each")` suffix-only against the full three runs."""
    from jaxinterp.analysis.path_patching import path_patch

    log = print if verbose else (lambda *a, **k: None)
    model = ji.models.build("gpt2_small", n_layers=n_layers, **model_overrides)
    c = model.config
    differ_from = seq // 2 if differ_from is None else differ_from
    clean = jax.random.randint(jax.random.key(1), (batch, seq), 0, c.d_vocab, jnp.int32)
    other = jax.random.randint(jax.random.key(2), (batch, seq), 0, c.d_vocab, jnp.int32)
    corrupted = jnp.where(jnp.arange(seq) >= differ_from, other, clean)
    variables = jax.jit(model.init)(jax.random.key(0), clean)
    receivers = path_receivers(n_layers)
    res: dict[str, Any] = dict(n_layers=n_layers, seq=seq, batch=batch, repeats=repeats,
                               d_model=c.d_model, d_vocab=c.d_vocab, n_heads=c.n_heads,
                               differ_from=differ_from, receivers=receivers,
                               device=str(jax.devices()[0]), load_before=os.getloadavg())
    fns = {side: functools.partial(path_patch, model, variables, clean, corrupted, logit_diff,
                                   "each", receivers, suffix=side == "path_suffix")
           for side in ("path_full", "path_suffix")}
    outs = first_calls(fns, res, log)
    res["shape"] = outs["path_full"].shape
    res["max_abs_diff"] = float(np.abs(outs["path_suffix"] - outs["path_full"]).max())
    res["result_range"] = (float(outs["path_full"].min()), float(outs["path_full"].max()))
    timed_calls(fns, repeats, res, log)
    res["path_ratio"] = res["path_full_ms"] / res["path_suffix_ms"]
    res["load_after"] = os.getloadavg()
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def report_path(res: dict[str, Any]) -> str:
    """A human-readable report of `measure_path`'s results."""
    n = res["n_layers"] * res["n_heads"]
    return "\n".join([
        f"path patching: gpt2_small shape, {res['n_layers']} layers, d_model {res['d_model']}, "
        f"vocab {res['d_vocab']}, {res['batch']} prompts x {res['seq']} tokens (corrupted from "
        f"position {res['differ_from']} on), on {res['device']}; senders='each' ({n} heads), "
        f"receivers {res['receivers']}; medians of {res['repeats']} calls",
        f"    load average (1/5/15 min) before {_load(res['load_before'])}, after "
        f"{_load(res['load_after'])}; process peak RSS {res['peak_rss_mb']:.0f} MB",
        f"    full three runs (suffix=False): {res['path_full_ms']:10.1f} ms  "
        f"{_range(res, 'path_full')}; first call (compile + run) {res['first_path_full_s']:.1f} s",
        f"    suffix-only:                    {res['path_suffix_ms']:10.1f} ms  "
        f"{_range(res, 'path_suffix')}; first call (compile + run) "
        f"{res['first_path_suffix_s']:.1f} s",
        f"    (result {res['shape']}, values in [{res['result_range'][0]:.3g}, "
        f"{res['result_range'][1]:.3g}]; max |suffix - full| = {res['max_abs_diff']:.2g})",
        f"path full / path suffix = {res['path_ratio']:.2f}",
    ])


def _range(res: dict[str, Any], name: str) -> str:
    lo, hi = res[f"{name}_range_ms"]
    return f"(min {lo:.1f}, max {hi:.1f})"


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in load)


def main(argv: list[str]) -> None:
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    jax.config.update("jax_platforms", "cpu")
    f = flags.FLAGS
    if f.sweep in ("act_patch", "both"):
        res = measure(n_layers=f.n_layers, seq=f.seq, batch=f.batch, repeats=f.repeats,
                      batch_size=f.batch_size, suffix_starts=f.suffix_starts, verbose=True)
        print()
        print(report(res))
    if f.sweep in ("path", "both"):
        res = measure_path(n_layers=f.n_layers, seq=f.seq, batch=f.batch,
                           repeats=f.path_repeats, verbose=True)
        print()
        print(report_path(res))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_integer("n_layers", 12, "Layers of gpt2_small (12 is the full model).")
    flags.DEFINE_integer("seq", 20, "Tokens per prompt (positions swept).")
    flags.DEFINE_integer("batch", 8, "Prompts.")
    flags.DEFINE_integer("repeats", 3, "Timed calls per side (median reported).")
    flags.DEFINE_integer("batch_size", None, "act_patch positions per compiled call.")
    flags.DEFINE_integer("suffix_starts", None, "Suffix starts of suffix-only act_patch "
                         "(compiled functions); None: one per position.")
    flags.DEFINE_enum("sweep", "both", ["act_patch", "path", "both"], "Which rows to run: "
                      "the act_patch sweep, the path-patching row, or both.")
    flags.DEFINE_integer("path_repeats", 1, "Timed calls per side of the path-patching row.")
    app.run(main)
