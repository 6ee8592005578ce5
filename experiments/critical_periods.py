"""Critical learning periods in deep linear networks (Kleinman, Achille & Soatto, ICLR 2024,
"Critical Learning Periods Emerge Even in Deep Linear Networks", arXiv:2308.12221).

    python -m experiments.critical_periods --config=configs/critical_periods.py \
        --workdir=workdirs/critical_periods

A deficit during the first T steps of training, then removed, leaves a lasting gap relative to
no deficit; the gap grows with T and depends on depth. Two settings of the paper, each trained
with full-batch gradient descent from a small initialisation, per depth one compiled call
(`jax.vmap` over deficit lengths and seeds, `jax.lax.scan` over steps):

  pathways:   competition between input sources. Two deep linear pathways
              (`models.deep_linear.MultiPathwayLinear`, identical initial weights) read the
              same one-hot item and their outputs are summed to predict the item's 15
              hierarchical features (`data.linear_tasks.hierarchical_features`). Deficit for
              steps [0, T), then `recovery_steps` steps without: pathway B is frozen
              (`deficit="freeze"`, the paper's: B's output still counts but B does not learn)
              or its input is blanked (`deficit="blank"`, a closed eye: B neither contributes
              nor learns). The task loss recovers fully (pathway A alone can fit it), so the
              lasting effect is in how the features are split: the loss of the deprived
              pathway alone (the "monocular" test of the deprived eye; 4, a quarter of the
              loss of predicting nothing, without a deficit; 16 if B learned nothing) and B's
              share of the features, <Y_B, Y> / <Y, Y> (1/2 without a deficit). The same
              deficit starting late (`late_start`, after the features are learned) is the
              control: a critical period means late deficits do no lasting harm.
  completion: deep matrix completion. A deep linear network
              (`models.deep_linear.DeepLinear`, d_in = d_out = width = n; its end-to-end matrix
              is the prediction) fits `n_observed` entries of a rank-`rank` n x n matrix. The
              deficit corrupts the task as the paper does: for steps [0, T) the observed
              entries are those of a different matrix of rank `deficit_rank`; then the true
              entries for `recovery_steps` steps. Measured: the final test loss (mean squared
              error over all n^2 entries).

Deviations from the paper (its code: github.com/mjkleinman/CriticalPeriodDeepLinearNets):
pathways of width 32 (100) from a Gaussian initialisation shared by both pathways (the paper
initialises both in the task's singular basis, so that its ODE applies), deficits at the start
of training of varying length (the paper also moves a fixed-length deficit); matrix completion
at n = 48, rank 4, deficit rank 8, 800 entries, rate 0.5, 8000 recovery steps (the paper: 100,
5, 10, 2000 entries, 0.2, 30000 steps) and depths 1, 2, 4 (the paper: 1, 2, 3).

Writes to the workdir: `critical_periods.png` (gap / final loss against deficit length, per
depth), `learning_curves.png` (a few T), `curves.npz` and `summary.json`.
`run_experiment` is the library entry point; notebooks can call it directly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.data.linear_tasks import hierarchical_features, low_rank_matrix, observation_mask
from jaxinterp.models.deep_linear import DeepLinear, MultiPathwayLinear


def gradient_descent(loss_fn: Callable[[Any, jax.Array], jax.Array], params: Any, lr: float,
                     n_steps: int, stop_step: jax.Array, metrics_fn: Callable[[Any], Any],
                     record_every: int) -> tuple[Any, Any]:
    """Full-batch gradient descent, `params <- params - lr * grad loss_fn(params, step)`, for
    steps 0 .. n_steps-1, frozen from `stop_step` on (so runs of different lengths share one
    compiled loop). `n_steps` must be a multiple of `record_every`.

    Returns `(final params, history)`: `metrics_fn(params)` at steps 0, record_every, ...,
    n_steps - record_every (before that step's update), each leaf with a leading
    [n_steps // record_every] axis.
    """
    if n_steps % record_every:
        raise ValueError(f"n_steps={n_steps} must be a multiple of record_every={record_every}")

    def step(p, t):
        g = jax.grad(loss_fn)(p, t)
        live = (t < stop_step).astype(jnp.float32)
        return jax.tree.map(lambda w, gw: w - lr * live * gw, p, g), None

    def chunk(p, t0):
        metrics = metrics_fn(p)
        p, _ = jax.lax.scan(step, p, t0 + jnp.arange(record_every))
        return p, metrics

    starts = jnp.arange(0, n_steps, record_every)
    return jax.lax.scan(chunk, params, starts)


def _per_seed(fn: Callable[[jax.Array], Any], seeds: list[int]) -> Any:
    """`fn(jax.random.key(seed))` for each seed, stacked on a leading [seed] axis. A Python loop
    over one jitted `fn`, not `vmap`: XLA on CPU compiles vmapped threefry draws very slowly
    (~3 s per `jax.random.normal` here, against well under 1 s unbatched)."""
    fn = jax.jit(fn)
    outs = [fn(jax.random.key(s)) for s in seeds]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def _n_steps(last_step: int, record_every: int) -> int:
    return -(-last_step // record_every) * record_every


def pathway_sweep(cfg: ConfigDict, depth: int, seeds: list[int]) -> dict[str, np.ndarray]:
    """The pathways setting at one depth: every (deficit start, deficit length, seed) at once.

    `cfg.deficit`: "freeze" (B does not learn) or "blank" (B's input is zero). Runs are the
    early deficits (start 0) at every `cfg.deficit_lengths`, then the late ones
    (start `cfg.late_start`). Returns numpy arrays with leading axes [run, seed]: `final_loss`,
    `deprived_loss`, `deprived_share` (at the end of each run), and their histories
    `curve_<name>` [run, seed, record] at `steps` [record].
    """
    if cfg.deficit not in ("freeze", "blank"):
        raise ValueError(f"pathways.deficit={cfg.deficit!r}; choose from 'freeze', 'blank'")
    y = jnp.asarray(hierarchical_features())  # [item, feature]
    x = jnp.eye(y.shape[0])  # one-hot items
    model = MultiPathwayLinear(depth=depth, width=cfg.width, d_out=y.shape[1], n_pathways=2,
                               init_scale=cfg.init_scale, tied_init=True)
    lengths = np.asarray(cfg.deficit_lengths, np.int32)
    starts = np.concatenate([np.zeros_like(lengths), np.full_like(lengths, cfg.late_start)])
    lengths = np.concatenate([lengths, lengths])
    n_steps = _n_steps(int((starts + lengths).max()) + cfg.recovery_steps, cfg.record_every)

    def loss(params, gates):
        out = model.apply({"params": params}, x, gates)  # [item, feature]
        return 0.5 * jnp.sum((out - y) ** 2)

    def metrics(params):
        deprived = model.apply({"params": params}, x, jnp.array([0.0, 1.0]))
        return {"final_loss": loss(params, jnp.ones(2)),
                "deprived_loss": 0.5 * jnp.sum((deprived - y) ** 2),
                "deprived_share": jnp.sum(deprived * y) / jnp.sum(y * y)}

    def run(start, length, params):

        def loss_at(p, t):
            on = ((t >= start) & (t < start + length)).astype(jnp.float32)
            deficit = jnp.stack([0.0, on])  # pathway B only
            out = (model.apply({"params": p}, x, 1.0 - deficit) if cfg.deficit == "blank"
                   else model.apply({"params": p}, x, None, deficit))
            return 0.5 * jnp.sum((out - y) ** 2)

        final, hist = gradient_descent(loss_at, params, cfg.lr, n_steps,
                                       start + length + cfg.recovery_steps, metrics,
                                       cfg.record_every)
        return metrics(final), hist

    init = _per_seed(lambda key: model.init(key, x)["params"], seeds)  # [seed, ...]
    sweep = jax.jit(jax.vmap(jax.vmap(run, (None, None, 0)), (0, 0, None)))
    final, hist = jax.device_get(sweep(starts, lengths, init))
    out = {k: np.asarray(v) for k, v in final.items()}
    out.update({f"curve_{k}": np.asarray(v) for k, v in hist.items()})
    out["steps"] = np.arange(0, n_steps, cfg.record_every)
    return out


def completion_sweep(cfg: ConfigDict, depth: int, seeds: list[int]) -> dict[str, np.ndarray]:
    """The matrix-completion setting at one depth: every (deficit length, seed) at once.

    Each seed draws the true matrix, the deficit matrix, the observed entries and the
    initialisation; every deficit length of a seed shares them. Returns numpy arrays with
    leading axes [deficit length, seed]: `test_loss` and `train_loss` at the end, and
    `curve_test_loss` [length, seed, record] at `steps` [record].
    """
    n = cfg.n
    model = DeepLinear(depth=depth, width=n, d_out=n, init_scale=cfg.init_scale)
    eye = jnp.eye(n)
    lengths = np.asarray(cfg.deficit_lengths, np.int32)
    n_steps = _n_steps(int(lengths.max()) + cfg.recovery_steps, cfg.record_every)

    def task(key):
        k_true, k_deficit, k_obs, k_init = jax.random.split(key, 4)
        return (low_rank_matrix(k_true, n, cfg.rank),
                low_rank_matrix(k_deficit, n, cfg.deficit_rank),
                observation_mask(k_obs, n, cfg.n_observed), model.init(k_init, eye)["params"])

    def run(length, seed_task):
        target, corrupted, observed, params = seed_task

        def train_loss(p, m):
            err = model.apply({"params": p}, eye) - m  # the end-to-end matrix [n, n]
            return 0.5 * jnp.sum(observed * err ** 2) / cfg.n_observed

        def metrics(p):
            err = model.apply({"params": p}, eye) - target
            return {"test_loss": jnp.mean(err ** 2), "train_loss": train_loss(p, target)}

        def loss_at(p, t):
            return train_loss(p, jnp.where(t < length, corrupted, target))

        final, hist = gradient_descent(loss_at, params, cfg.lr, n_steps,
                                       length + cfg.recovery_steps, metrics, cfg.record_every)
        return metrics(final), hist

    tasks = _per_seed(task, seeds)  # [seed, ...]
    sweep = jax.jit(jax.vmap(jax.vmap(run, (None, 0)), (0, None)))
    final, hist = jax.device_get(sweep(lengths, tasks))
    out = {k: np.asarray(v) for k, v in final.items()}
    out["curve_test_loss"] = np.asarray(hist["test_loss"])
    out["steps"] = np.arange(0, n_steps, cfg.record_every)
    return out


def _stats(x: np.ndarray) -> dict[str, list]:
    """[deficit length, seed] -> mean over seeds and the per-seed values (lists for JSON)."""
    return {"mean": x.mean(axis=1).round(5).tolist(), "per_seed": x.round(5).tolist()}


def summarize_pathways(res: dict[str, np.ndarray], n_lengths: int) -> dict[str, Any]:
    """Early runs [:n_lengths] and late runs [n_lengths:]; gaps against the no-deficit run
    (deficit length 0 must come first) of the same seed."""
    early, late = slice(0, n_lengths), slice(n_lengths, None)
    dep = res["deprived_loss"]
    return {
        "final_loss": _stats(res["final_loss"][early]),
        "deprived_loss": _stats(dep[early]),
        "deprived_loss_gap": _stats(dep[early] - dep[:1]),
        "deprived_share": _stats(res["deprived_share"][early]),
        "late_deprived_loss_gap": _stats(dep[late] - dep[:1]),
        "late_final_loss": _stats(res["final_loss"][late]),
    }


def summarize_completion(res: dict[str, np.ndarray]) -> dict[str, Any]:
    test = res["test_loss"]
    return {"final_test_loss": _stats(test), "test_loss_gap": _stats(test - test[:1]),
            "max_final_train_loss": float(res["train_loss"].max())}


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Both settings at every depth, the figures and a summary (see the module docstring)."""
    t0 = time.time()
    seeds = list(config.seeds)
    for part in (config.pathways, config.completion):
        lengths = list(part.deficit_lengths)
        if not lengths or lengths[0] != 0 or sorted(set(lengths)) != lengths:
            raise ValueError(f"deficit_lengths={list(part.deficit_lengths)}: must be increasing "
                             "and start with 0 (the no-deficit reference)")
    pw, mc = config.pathways, config.completion
    summary: dict[str, Any] = {
        "seeds": seeds,
        "pathways": {"deficit": pw.deficit, "depths": list(pw.depths),
                     "deficit_lengths": list(pw.deficit_lengths),
                     "late_start": pw.late_start, "recovery_steps": pw.recovery_steps},
        "completion": {"depths": list(mc.depths), "deficit_lengths": list(mc.deficit_lengths),
                       "recovery_steps": mc.recovery_steps},
    }
    curves: dict[str, np.ndarray] = {}
    for depth in pw.depths:
        res = pathway_sweep(pw, depth, seeds)
        summary["pathways"][f"depth_{depth}"] = summarize_pathways(res, len(pw.deficit_lengths))
        curves.update({f"pathways/depth_{depth}/{k}": v for k, v in res.items()
                       if k.startswith("curve_") or k == "steps"})
    for depth in mc.depths:
        res = completion_sweep(mc, depth, seeds)
        summary["completion"][f"depth_{depth}"] = summarize_completion(res)
        curves.update({f"completion/depth_{depth}/{k}": v for k, v in res.items()
                       if k.startswith("curve_") or k == "steps"})
    summary["seconds"] = round(time.time() - t0, 1)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        np.savez(os.path.join(workdir, "curves.npz"), **curves)
    return runner.write_outputs(workdir, summary, {
        "critical_periods.png": lambda path: plot_gaps(summary, path),
        "learning_curves.png": lambda path: plot_curves(summary, curves, path),
    })


def _errorbar(ax, x, stats, **kw):
    per_seed = np.asarray(stats["per_seed"])
    lo, hi = per_seed.min(axis=1), per_seed.max(axis=1)
    mean = np.asarray(stats["mean"])
    ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], marker="o", ms=4, capsize=3, **kw)


def plot_gaps(summary: dict[str, Any], path: str) -> None:
    """Pathways: deprived-pathway loss gap and share against deficit length (early and late
    deficits); completion: final test loss against deficit length. Bars: min-max over seeds."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    pw, mc = summary["pathways"], summary["completion"]
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(len(pw["depths"]), len(mc["depths"]))))
    lengths = pw["deficit_lengths"]
    for c, depth in zip(colors, pw["depths"], strict=False):
        s = pw[f"depth_{depth}"]
        _errorbar(axes[0], lengths, s["deprived_loss_gap"], color=c, label=f"depth {depth}")
        _errorbar(axes[0], lengths, s["late_deprived_loss_gap"], color=c, ls="--",
                  label=f"depth {depth}, late (from step {pw['late_start']})")
        _errorbar(axes[1], lengths, s["deprived_share"], color=c, label=f"depth {depth}")
    axes[0].set(title="pathways: deprived pathway's loss alone, gap to no deficit",
                xlabel="deficit length T (steps)", ylabel="gap (0.5 sum sq. error)")
    axes[1].set(title="pathways: deprived pathway's share of the features",
                xlabel="deficit length T (steps)", ylabel="<Y_B, Y> / <Y, Y>", ylim=(-0.05, 0.6))
    for c, depth in zip(colors, mc["depths"], strict=False):
        _errorbar(axes[2], mc["deficit_lengths"], mc[f"depth_{depth}"]["final_test_loss"],
                  color=c, label=f"depth {depth}")
    axes[2].set(title="matrix completion: final test loss", xlabel="deficit length T (steps)",
                ylabel="mean sq. error, all entries")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve_lengths(lengths: list[int], n: int = 3) -> list[int]:
    idx = np.unique(np.linspace(0, len(lengths) - 1, n).round().astype(int))
    return [lengths[i] for i in idx]


def plot_curves(summary: dict[str, Any], curves: dict[str, np.ndarray], path: str) -> None:
    """Mean over seeds of the deprived pathway's loss (pathways) and the test loss
    (completion) over training, for the shortest, a middle and the longest deficit."""
    plt = pyplot()
    pw, mc = summary["pathways"], summary["completion"]
    n_cols = max(len(pw["depths"]), len(mc["depths"]))
    fig, axes = plt.subplots(2, n_cols, figsize=(4.5 * n_cols, 7), squeeze=False)
    for row, (part, key, name, depths) in enumerate((
            ("pathways", "curve_deprived_loss", "deprived pathway's loss alone", pw["depths"]),
            ("completion", "curve_test_loss", "test loss", mc["depths"]))):
        lengths = summary[part]["deficit_lengths"]
        picks = _curve_lengths(lengths)
        colors = plt.cm.plasma(np.linspace(0, 0.8, len(picks)))
        for col, depth in enumerate(depths):
            ax = axes[row, col]
            steps = curves[f"{part}/depth_{depth}/steps"]
            hist = curves[f"{part}/depth_{depth}/{key}"]
            for c, t in zip(colors, picks, strict=True):
                ax.plot(steps, hist[lengths.index(t)].mean(axis=0), color=c, label=f"T = {t}")
                if t:
                    ax.axvline(t, color=c, ls=":", lw=1)
            if part == "completion":
                ax.set_yscale("log")
            ax.set(title=f"{part}, depth {depth}: {name}", xlabel="step")
            ax.legend(fontsize=8)
        for col in range(len(depths), n_cols):
            axes[row, col].axis("off")
    fig.suptitle("deficit during steps [0, T) (dotted: deficit removed); mean over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "critical_periods")
