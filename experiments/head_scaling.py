"""Head scaling and attention calibration: scale one head's attention to the sink by gamma,
for every (gamma, layer, head), training-free, and see what it does to a held-out task.

    python -m experiments.head_scaling --config=configs/head_scaling.py \
        --workdir=workdirs/head_scaling

Paper: Yu et al. 2024, "Unveiling and Harnessing Hidden Attention Sinks: Enhancing Large
Language Models without Training through Attention Calibration" (ACT, ICML 2024). What was
checked of its method here: the abstract ("not all attention sinks have a positive impact on
the achievable accuracy of LLMs"; ACT "automatically optimizes the attention distributions on
the fly during inference", "up to 7.30%" for Llama-30B) and the official README (step 1:
"Search for Attention Heads That Needs to Be Calibrated" on a calibration set; step 2:
evaluate with the calibration on). The calibration itself, as described by summaries and a
public re-implementation of ACT (the paper's equations were not in the stored text): a token
is a sink in a head when its attention exceeds alpha / N (alpha = 5, N the sequence length);
its attention is multiplied by beta (0.4) and the freed attention is redistributed to the
other tokens in proportion to their attention, so each row still sums to 1. This is
`jaxinterp.analysis.head_scaling.redistribute_attention` with gamma in the place of beta. Two
differences, by design: the sink here is fixed, key 0 (the BOS token, where this model's sinks
are), not detected per input (ACT stresses sinks *after* the first token; this tiny model has
none to speak of); and gamma and the head are chosen by sweeping the whole (gamma x layer x
head) grid on calibration probes, ACT's head search made exhaustive.

Model and task (training is part of the experiment): the induction-heads data of
`configs/induction_heads.py` (`jaxinterp/data/induction.py`: BOS, a random segment repeated at
random positions, skip-bigram filler) and a 2-layer attention-only transformer with 4 heads per
layer, seeds trained together in one `train_vmapped` call. Its layer-1 heads are sinks: on
queries with nothing to copy they put most of their attention on BOS ("dormant"), and move it
to the induction target on the repeat. Held-out metric: next-token loss (the selection
criterion) and accuracy on the repeated half of `[BOS, x_1..x_n, x_1..x_n]` probes of uniform
random tokens (targets x_2..x_n of the second copy, which only copying predicts). Calibration
probes choose the (gamma, layer, head) that lowers the loss most; separate test probes report
its loss and accuracy change. (Loss, because the model is at ~95% accuracy: a change of a few
predictions is all accuracy can show at this size.)

Interventions (`blocks.{l}.attn.hook_pattern`, one layer and one head at a time):
  plain: `ji.Scale` of the pattern by a multiplier that is gamma at (head, key) and 1
    elsewhere: the head's attention to the key is scaled and the rest left as it was.
  act: the same multiplier through `ji.Apply(redistribute_attention)`: scaled, and the
    removed mass given to the other keys (ACT's form).
  Targets: "sink" (key 0, BOS) and, as the control, "random" (one uniformly drawn non-BOS key
  per probe sequence, the same draw for every head and gamma).

Every sweep is one compiled call: `head_scale_sweep` vmaps each layer's (gamma, head) points
(`lax.map` in chunks) inside one jitted function, and the experiment vmaps that over seeds and
over the two targets.
The sweep's speed against a Python loop of one jitted single run per grid point (same
function, the multiplier an argument) is measured and printed in the same run, and their
results compared (`summary["timing"]`).

Writes `heatmaps.png` (test loss and accuracy change per layer x head at the best gamma,
sink vs random key, both forms), `gamma_curves.png` (loss and accuracy change against gamma for
the top heads) and `summary.json`. Measured numbers: `configs/head_scaling.py`.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

import jaxinterp as ji
from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.analysis.head_scaling import head_scale_intervention, head_scale_sweep
from jaxinterp.analysis.heads import attention_sink_score
from jaxinterp.data.induction import BOS
from jaxinterp.data.sources import load_source
from jaxinterp.models.transformer import Transformer, TransformerConfig
from jaxinterp.train.vmapped import train_vmapped

FORMS = {"act": True, "plain": False}  # form -> redistribute
TARGETS = ("sink", "random")
SETS = ("calibration", "test")
METRICS = ("accuracy", "loss")


# --- model, data, training ----------------------------------------------------------------


def make_model(config: ConfigDict) -> Transformer:
    return Transformer(TransformerConfig(**dict(config.model)))


def load_train(config: ConfigDict, data_dir: str) -> np.ndarray:
    """int32 [num_train, seq_len]: the `induction` training split."""
    src = load_source("induction", "train", data_dir, **dict(config.data))
    return np.stack([src[i]["tokens"] for i in range(len(src))])


def train_models(config: ConfigDict, train: np.ndarray):
    """One vmapped call trains every seed: next-token cross-entropy at every position.
    Returns (params with a leading seed axis, final train loss per seed [S])."""
    model = make_model(config)
    data = jnp.asarray(train)

    def init_fn(key):
        return model.init(key, data[:1, :-1])["params"]

    def loss_fn(params, key, args, step):
        batch = data[jax.random.randint(key, (config.batch_size,), 0, data.shape[0])]
        logits, _ = ji.run(model, {"params": params}, batch[:, :-1])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()
        return loss, {}

    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in config.seeds])
    params, hist = train_vmapped(loss_fn, init_fn, keys, None, config.optimizer,
                                 config.num_train_steps)
    tail = max(1, config.num_train_steps // 20)
    return params, hist["train/loss"][:, -tail:].mean(1)


def make_probes(config: ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """Calibration then test probes `[BOS, x_1..x_n, x_1..x_n]` (int32 [B, 2n + 1], B =
    num_calibration + num_test), and the random control's key per probe (int [B], uniform in
    [1, 2n): any input position but BOS)."""
    n, b = config.probe_len, config.num_calibration + config.num_test
    rng = np.random.default_rng([config.data.seed, 1234])
    x = rng.integers(1, config.data.vocab_size, size=(b, n))
    probes = np.concatenate([np.full((b, 1), BOS), x, x], axis=1).astype(np.int32)
    return probes, rng.integers(1, 2 * n, size=b)


def repeat_metric(n: int, n_calibration: int, targets: jax.Array):
    """`logits [B, 2n, vocab] -> [2 sets, 2 metrics]`: accuracy and loss on the targets only
    copying predicts (x_2..x_n of the second copy: target positions n + 1 .. 2n - 1), on the
    calibration probes (the first `n_calibration`) and on the test probes."""

    def metric(logits):
        tgt = targets[:, n + 1:]
        lg = logits[:, n + 1:]
        acc = (lg.argmax(-1) == tgt).mean(-1)  # [B]
        ce = optax.softmax_cross_entropy_with_integer_labels(lg, tgt).mean(-1)
        per = jnp.stack([acc, ce], -1)  # [B, 2]
        return jnp.stack([per[:n_calibration].mean(0), per[n_calibration:].mean(0)])

    return metric


# --- the sweep and its timing ---------------------------------------------------------------


def sweep_all(model, params, inputs, masks, gammas, metric, redistribute: bool, chunk: int):
    """[S, T, G, L, H, 2 sets, 2 metrics]: every seed (params' leading axis) x target (masks
    [T, B, pos]) x gamma x layer x head, one compiled call."""

    def one(p, mask):
        return head_scale_sweep(model, {"params": p}, inputs, gammas, mask, metric=metric,
                                redistribute=redistribute, batch_size=chunk)

    return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))(
        params, masks)


def time_sweep_vs_loop(model, variables, inputs, gammas, metric, redistribute: bool,
                       repeats: int = 3) -> dict[str, Any]:
    """The (gamma x layer x head) sink sweep as one compiled vmapped call against a Python
    loop of one jitted single run per grid point (one function per layer, the multiplier,
    built by hand with NumPy, an argument: every call at a layer shares one compiled
    function). Both are compiled first (timed separately), then timed alternately; medians of
    `repeats`. Also the largest difference between the two results."""
    c = model.config
    n_keys = inputs.shape[1]
    gammas = np.asarray(gammas, np.float32)
    sweep = jax.jit(lambda v, x: head_scale_sweep(model, v, x, gammas, 0, metric=metric,
                                                  redistribute=redistribute))

    def single(layer):
        return jax.jit(lambda v, x, mult: metric(ji.run(
            model, v, x, interventions=[head_scale_intervention(layer, mult, redistribute)])[0]))

    singles = [single(layer) for layer in range(c.n_layers)]
    points = []
    for g, layer, head in np.ndindex(len(gammas), c.n_layers, c.n_heads):
        m = np.ones((1, c.n_heads, 1, n_keys), np.float32)
        m[0, head, 0, 0] = gammas[g]
        points.append((layer, m))

    def loop():
        return np.stack([np.asarray(singles[layer](variables, inputs, m))
                         for layer, m in points])

    t = time.perf_counter()
    swept = np.asarray(jax.block_until_ready(sweep(variables, inputs)))
    sweep_compile = time.perf_counter() - t
    t = time.perf_counter()
    for layer, m in points[:c.n_heads * c.n_layers:c.n_heads]:  # one call per layer
        jax.block_until_ready(singles[layer](variables, inputs, m))
    loop_compile = time.perf_counter() - t
    looped = loop()
    sweep_times, loop_times = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(sweep(variables, inputs))
        sweep_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        loop()
        loop_times.append(time.perf_counter() - t)
    s, lp = statistics.median(sweep_times), statistics.median(loop_times)
    return {"grid_points": len(points), "redistribute": redistribute,
            "sweep_s": round(s, 4), "loop_s": round(lp, 4),
            "loop_over_sweep": round(lp / s, 2),
            "sweep_first_call_s": round(sweep_compile, 2),
            "loop_first_calls_s": round(loop_compile, 2),
            "max_abs_diff_sweep_vs_loop": float(np.abs(swept.reshape(looped.shape)
                                                       - looped).max())}


# --- the experiment -------------------------------------------------------------------------


def best_point(d_calibration: np.ndarray, d_test: np.ndarray, gammas) -> dict:
    """The (gamma, layer, head) that lowers the calibration loss most, and its test changes.
    `d_*`: [G, L, H, 2 metrics] changes against the clean run (accuracy, loss)."""
    g, layer, head = np.unravel_index(int(np.argmin(d_calibration[..., 1])),
                                      d_calibration.shape[:3])
    return {"gamma": float(gammas[g]), "layer": int(layer), "head": int(head),
            "calibration_delta_loss": float(d_calibration[g, layer, head, 1]),
            "test_delta_loss": float(d_test[g, layer, head, 1]),
            "test_delta_acc": float(d_test[g, layer, head, 0])}


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Training, the sweeps, the timing, the figures and the summary (module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    seeds = [int(s) for s in config.seeds]
    gammas = np.asarray(config.gammas, np.float32)
    if np.any(gammas == 1.0) or np.any(gammas < 0):
        raise ValueError(f"gammas={tuple(config.gammas)}: each must be >= 0 and != 1 (gamma 1 "
                         "is the clean run, the baseline every change is measured against)")
    unknown = sorted(set(config.forms) - set(FORMS))
    if unknown or not config.forms:
        raise ValueError(f"forms={tuple(config.forms)}: choose one or more of {tuple(FORMS)}")
    model = make_model(config)
    n = config.probe_len
    if 2 * n > config.model.n_ctx:
        raise ValueError(f"probe_len={n}: probes need 2 * probe_len <= model.n_ctx="
                         f"{config.model.n_ctx} input positions")
    timings = {}

    t = time.time()
    params, train_loss = train_models(config, load_train(config, data_dir))
    timings["train_s"] = round(time.time() - t, 1)

    probes, control_keys = make_probes(config)
    inputs, targets = jnp.asarray(probes[:, :-1]), jnp.asarray(probes[:, 1:])
    metric = repeat_metric(n, config.num_calibration, targets)
    positions = np.arange(inputs.shape[1])
    masks = jnp.asarray(np.stack([np.broadcast_to(positions == 0, inputs.shape),
                                  positions[None] == control_keys[:, None]]))  # [T, B, pos]

    def clean(p):
        logits, cache = ji.run(model, {"params": p}, inputs,
                               capture="blocks.*.attn.hook_pattern")
        pats = [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(config.model.n_layers)]
        test = slice(config.num_calibration, None)
        return (metric(logits),
                jnp.stack([attention_sink_score(p_[test]) for p_ in pats]),
                jnp.stack([p_[test, :, n + 1:, 0].mean((0, 2)) for p_ in pats]),
                jnp.stack([p_[test, :, 1:n + 1, 0].mean((0, 2)) for p_ in pats]))

    base, sink_all, sink_repeat, sink_first = jax.device_get(jax.jit(jax.vmap(clean))(params))

    t = time.time()
    results = {form: np.asarray(sweep_all(model, params, inputs, masks, gammas, metric, redis,
                                          config.sweep_chunk or None))
               for form, redis in FORMS.items() if form in config.forms}
    timings["sweeps_s"] = round(time.time() - t, 1)

    # Δ against the clean run: [S, T, G, L, H, set, metric]
    deltas = {f: r - base[:, None, None, None, None] for f, r in results.items()}
    timing = None
    if config.timing_repeats > 0:
        first = {"params": jax.tree.map(lambda a: a[0], params)}
        timing = time_sweep_vs_loop(model, first, inputs, gammas, metric, True,
                                    config.timing_repeats)
        print(f"head-scaling sweep ({timing['grid_points']} grid points, ACT form, seed "
              f"{seeds[0]}): one vmapped call {timing['sweep_s']} s vs a loop of jitted single "
              f"runs {timing['loop_s']} s (loop / sweep = {timing['loop_over_sweep']}; first "
              f"calls incl. compile {timing['sweep_first_call_s']} s vs "
              f"{timing['loop_first_calls_s']} s); max |sweep - loop| = "
              f"{timing['max_abs_diff_sweep_vs_loop']:.2e}")

    per_seed = []
    for r, s in enumerate(seeds):
        row = {"seed": s, "train_loss_final": float(train_loss[r]),
               "base": {st: dict(zip(METRICS, map(float, base[r, i]), strict=True))
                        for i, st in enumerate(SETS)},
               "sink_score": np.round(sink_all[r], 4).tolist(),
               "sink_score_repeat_queries": np.round(sink_repeat[r], 4).tolist(),
               "sink_score_first_half_queries": np.round(sink_first[r], 4).tolist()}
        for form, d in deltas.items():
            row[form] = {}
            for ti, target in enumerate(TARGETS):
                cal, test = d[r, ti, ..., 0, :], d[r, ti, ..., 1, :]  # [G, L, H, metric]
                row[form][target] = {
                    "best_on_calibration": best_point(cal, test, gammas),
                    "min_test_delta_loss": float(test[..., 1].min()),
                    "max_test_delta_loss": float(test[..., 1].max()),
                    "max_test_delta_acc": float(test[..., 0].max()),
                    "min_test_delta_acc": float(test[..., 0].min()),
                    "test_delta_loss": np.round(test[..., 1], 5).tolist(),  # [G, L, H]
                    "test_delta_acc": np.round(test[..., 0], 5).tolist()}
            row[form]["sink_beats_random"] = bool(
                row[form]["sink"]["best_on_calibration"]["test_delta_loss"]
                < row[form]["random"]["best_on_calibration"]["test_delta_loss"])
        per_seed.append(row)

    summary: dict[str, Any] = {"seeds": seeds, "gammas": gammas.tolist(), "per_seed": per_seed}
    mean = {}
    for form, d in deltas.items():
        m = d[:, :, ..., 1, :].mean(0)  # [T, G, L, H, metric], test probes, mean over seeds
        mean[form] = m
        g_best = int(np.argmin(m[0, ..., 1].reshape(len(gammas), -1).min(1)))
        summary[form] = {
            "best_gamma_mean_over_seeds": float(gammas[g_best]),
            "sink_beats_random_seeds": sum(p[form]["sink_beats_random"] for p in per_seed),
            "best_on_calibration": {
                t: [p[form][t]["best_on_calibration"] for p in per_seed] for t in TARGETS},
            "mean_test_delta_loss": {t: np.round(m[i, ..., 1], 5).tolist()
                                     for i, t in enumerate(TARGETS)},
            "mean_test_delta_acc": {t: np.round(m[i, ..., 0], 5).tolist()
                                    for i, t in enumerate(TARGETS)}}
    summary["timing"] = timing
    summary["timings"] = timings
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "heatmaps.png": lambda path: plot_heatmaps(mean, gammas, summary, path),
        "gamma_curves.png": lambda path: plot_gamma_curves(mean, gammas, config.top_heads,
                                                           path)})


# --- figures --------------------------------------------------------------------------------


def plot_heatmaps(mean, gammas, summary, path: str) -> None:
    """Test loss change (mean over seeds) per layer x head at each form's best sink gamma,
    sink vs random key (rows: forms), with the accuracy change in points below each value."""
    plt = pyplot()
    fig, axes = plt.subplots(len(mean), 2, figsize=(9, 3.2 * len(mean)), squeeze=False)
    vmax = max(1e-3, max(float(np.abs(m[..., 1]).max()) for m in mean.values()))
    for i, (form, m) in enumerate(mean.items()):
        g = int(np.flatnonzero(gammas == summary[form]["best_gamma_mean_over_seeds"])[0])
        for j, target in enumerate(TARGETS):
            ax, loss, acc = axes[i, j], m[j, g, ..., 1], m[j, g, ..., 0]
            im = ax.imshow(loss, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            for (layer, h), v in np.ndenumerate(loss):
                ax.text(h, layer, f"{v:+.3f}\n({100 * acc[layer, h]:+.1f})", ha="center",
                        va="center", fontsize=7)
            key = "key 0 (BOS sink)" if target == "sink" else "a random non-BOS key"
            ax.set(xticks=range(loss.shape[1]), yticks=range(loss.shape[0]), xlabel="head",
                   ylabel="layer", title=f"{form}: {key}, gamma {gammas[g]:g}")
            ax.title.set_fontsize(9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="test loss change (repeat half; blue: better)")
    fig.suptitle("one head's attention scaled by gamma: loss change (accuracy change, points), "
                 f"mean of {len(summary['seeds'])} seeds", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gamma_curves(mean, gammas, top: int, path: str) -> None:
    """Test loss and accuracy change against gamma (gamma 1: 0 by definition) for the heads
    whose sink scaling lowers the loss most, sink (solid) and random key (dashed), per form."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(mean), figsize=(5.5 * len(mean), 7), squeeze=False)
    order = np.argsort(np.append(gammas, 1.0))
    xs = np.append(gammas, 1.0)[order]
    for col, (form, m) in enumerate(mean.items()):
        heads = np.argsort(m[0, ..., 1].min(0).reshape(-1))[:top]  # [L * H] flat indices
        for k, flat in enumerate(heads):
            layer, h = np.unravel_index(flat, m.shape[2:4])
            for j, ls in ((0, "-"), (1, "--")):
                for row, scale in ((0, 1.0), (1, 100.0)):
                    ys = np.append(m[j, :, layer, h, 1 - row], 0.0)[order]
                    axes[row, col].plot(xs, scale * ys, ls=ls, marker="o", color=f"C{k}",
                                        label=f"L{layer}H{h} {TARGETS[j]}")
        for row, what in ((0, "test loss change"), (1, "test accuracy change (points)")):
            ax = axes[row, col]
            ax.axhline(0, color="gray", lw=0.8)
            ax.set(xlabel="gamma", ylabel=what)
            ax.legend(fontsize=7)
        axes[0, col].set_title(f"{form}: top {top} heads (solid: BOS sink, dashed: random "
                               "key)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "head_scaling")
