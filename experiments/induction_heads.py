"""Flagship: induction heads form in a phase change, and clamping the previous-token head stops
(or delays) them.

    python -m experiments.induction_heads --config=configs/induction_heads.py \
        --workdir=workdirs/induction_heads

Two arms are trained on repeated random-token sequences: a segment `x_1..x_n` (8 to 16 tokens)
and its copy at random positions among random tokens, which with probability 0.2 are a fixed
function of the token two back (skip-bigram structure that rewards a previous-token head early;
see `configs/induction_heads.py` and `jaxinterp/data/induction.py` for why both are needed):

  baseline: a 2-layer attention-only transformer. At every eval, each head's previous-token and
            induction scores are measured on held-out sequences, together with the loss on the
            repeated half (which only an induction mechanism can lower), on a fixed-layout probe
            `[BOS, x_1..x_16, x_1..x_16]` of uniform random tokens.
  clamped:  the same run, but the layer-0 previous-token head(s) found in the baseline have
            their output `blocks.0.attn.hook_z` replaced by its batch mean at every training
            step (optogenetics-style clamping, as in Singh et al. 2024, "What needs to go right
            for an induction head?"). The head still carries position information but no
            longer tells layer 1 which token came before.

Writes to the workdir: `baseline/` and `clamped/` (checkpoints, TensorBoard events,
metrics.jsonl), `loss_curves.png`, `head_scores.png` and `summary.json`. Rerunning resumes.
`run_experiment` is the library entry point; notebooks can call it directly.
"""

from __future__ import annotations

import copy
import functools
import os
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
from jaxinterp.analysis import induction_score, previous_token_score
from jaxinterp.train.loop import train
from jaxinterp.train.metrics import read_jsonl


def head_score_hook(probe: np.ndarray, period: int, start: int, interventions=()):
    """An eval hook: per-head previous-token and induction scores, and the loss on the
    repeated half, on `probe` tokens [batch, start + 2 * period]."""
    inputs, targets = probe[:, :-1], probe[:, 1:]

    def scores(model, params):
        logits, cache = ji.run(model, {"params": params}, inputs,
                               capture=("blocks.*.attn.hook_pattern",),
                               interventions=list(interventions))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        # Only targets inside the repeat are predictable from context.
        repeat_loss = ce[:, start + period:].mean()
        patterns = [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(len(cache))]
        prev = jnp.stack([previous_token_score(p) for p in patterns])  # [layer, head]
        ind = jnp.stack([induction_score(p, period, start) for p in patterns])
        return repeat_loss, prev, ind

    compiled: dict[str, Any] = {}

    def hook(step: int, params: Any, model) -> dict[str, float]:
        if "fn" not in compiled:
            compiled["fn"] = jax.jit(functools.partial(scores, model))
        repeat_loss, prev, ind = jax.device_get(compiled["fn"](params))
        out = {"repeat_loss": float(repeat_loss)}
        for layer, h in np.ndindex(prev.shape):
            out[f"prev_token/L{layer}H{h}"] = float(prev[layer, h])
            out[f"induction/L{layer}H{h}"] = float(ind[layer, h])
        return out

    return hook


def run_arm(config: ConfigDict, workdir: str, interventions_specs=()) -> list[dict[str, float]]:
    """Trains one arm (resuming if possible) and returns its eval rows."""
    config = copy.deepcopy(config)
    with config.unlocked():
        config.interventions = list(interventions_specs)
        # Both arms share one prepared dataset.
        config.data.data_dir = config.data.data_dir or os.path.join(os.path.dirname(workdir),
                                                                    "data")
    probe, period, start = probe_sequences(config)
    ivs = [ji.interventions.from_spec(s) for s in config.interventions]
    hook = head_score_hook(probe, period, start, ivs)
    train(config, workdir, eval_hooks=[hook])
    return read_jsonl(workdir)


def probe_sequences(config: ConfigDict) -> tuple[np.ndarray, int, int]:
    """Held-out sequences for head scores, `[BOS, x_1..x_n, x_1..x_n]` with the longest `n`
    (a fixed layout, so every head is scored at the same positions). Returns
    (tokens int32 [score_examples, 2n + 1], period n, start 1)."""
    kw = dict(config.data.builder_kwargs)
    rng = np.random.default_rng(10_000 + config.seed)
    n = kw["half_len"]
    x = rng.integers(1, kw["vocab_size"], size=(config.score_examples, n))
    bos = np.zeros((config.score_examples, 1), np.int64)
    return np.concatenate([bos, x, x], axis=1).astype(np.int32), n, 1


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Both arms, the figures and a summary (see the module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    baseline = run_arm(config, os.path.join(workdir, "baseline"))
    final_prev = _head_matrix(_eval_rows(baseline)[-1], "prev_token")
    heads = _heads_to_clamp(final_prev[0], config.clamp_heads)
    spec = {"kind": "Ablate", "site": "blocks.0.attn.hook_z", "how": "mean", "heads": heads}
    clamped = run_arm(config, os.path.join(workdir, "clamped"), [spec])

    arms = {"baseline": baseline, "clamped": clamped}
    summary = {"clamped_layer0_heads": heads, "seconds": round(time.time() - t0, 1)}
    for name, rows in arms.items():
        ev = _eval_rows(rows)
        ind = np.array([_head_matrix(r, "induction")[1:].max() for r in ev])
        prev = np.array([_head_matrix(r, "prev_token")[0].max() for r in ev])
        summary[name] = {
            "best_induction_score_init": float(ind[0]),
            "best_induction_score_final": float(ind[-1]),
            "best_layer0_prev_token_score_final": float(prev[-1]),
            "formation_step": _formation_step(ev, ind),
            "final_repeat_loss": ev[-1]["eval/repeat_loss"],
            "final_train_loss": _train_rows(rows)[-1]["train/loss"],
        }
    return runner.write_outputs(workdir, summary, {
        "loss_curves.png": lambda path: plot_loss_curves(arms, summary, path),
        "head_scores.png": lambda path: plot_head_scores(arms, heads, path)})


def _heads_to_clamp(prev_layer0: np.ndarray, choice) -> list[int]:
    if choice == "auto":
        best = prev_layer0.max()
        return [int(h) for h in np.flatnonzero(prev_layer0 >= 0.5 * best)]
    return [int(h) for h in choice]


def _eval_rows(rows):
    return [r for r in rows if "eval/repeat_loss" in r]


def _train_rows(rows):
    return [r for r in rows if "train/loss" in r]


def _head_matrix(row: dict[str, float], kind: str) -> np.ndarray:
    """[layer, head] scores of `kind` from one eval row."""
    keys = [k for k in row if k.startswith(f"eval/{kind}/")]
    n_layers = 1 + max(int(k.split("/L")[1].split("H")[0]) for k in keys)
    n_heads = 1 + max(int(k.split("H")[-1]) for k in keys)
    m = np.zeros((n_layers, n_heads))
    for k in keys:
        layer, h = k.split("/L")[1].split("H")
        m[int(layer), int(h)] = row[k]
    return m


def _formation_step(ev, ind: np.ndarray, threshold: float = 0.5) -> int | None:
    """First eval step at which some layer-1 head's induction score exceeds `threshold`."""
    hits = np.flatnonzero(ind > threshold)
    return int(ev[hits[0]]["step"]) if hits.size else None


def plot_loss_curves(arms, summary, path: str) -> None:
    """Train loss, repeated-half loss and the best layer-1 induction and layer-0
    previous-token scores over training, both arms."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = {"baseline": "tab:blue", "clamped": "tab:red"}
    for name, rows in arms.items():
        tr, ev = _train_rows(rows), _eval_rows(rows)
        steps = np.array([r["step"] for r in tr])
        loss = np.array([r["train/loss"] for r in tr])
        k = max(1, len(loss) // 100)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        axes[0].plot(steps[k - 1:], smooth, color=colors[name], label=name)
        es = [r["step"] for r in ev]
        axes[1].plot(es, [r["eval/repeat_loss"] for r in ev], color=colors[name], label=name)
        axes[2].plot(es, [_head_matrix(r, "induction")[1:].max() for r in ev],
                     color=colors[name], label=f"{name}: layer-1 induction")
        axes[2].plot(es, [_head_matrix(r, "prev_token")[0].max() for r in ev],
                     color=colors[name], ls=":", label=f"{name}: layer-0 previous-token")
        step = summary[name]["formation_step"]
        for ax in axes:
            if step is not None:
                ax.axvline(step, color=colors[name], ls="--", lw=1)
    axes[0].set(title="train loss (dashed: induction head forms)", xlabel="step", ylabel="loss")
    axes[1].set(title="loss on the repeated half (held out)", xlabel="step")
    axes[2].set(title="best head scores (probe)", xlabel="step", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_head_scores(arms, clamped_heads, path: str) -> None:
    """Heatmaps [layer x head] of previous-token and induction scores at init and at the end."""
    plt = pyplot()

    columns = [(a, when) for a in arms for when in ("init", "end")]
    fig, axes = plt.subplots(2, 4, figsize=(14, 5.5))
    for j, (arm, when) in enumerate(columns):
        ev = _eval_rows(arms[arm])
        row = ev[0] if when == "init" else ev[-1]
        for i, kind in enumerate(("prev_token", "induction")):
            m = _head_matrix(row, kind)
            ax = axes[i, j]
            ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
            for (layer, h), v in np.ndenumerate(m):
                ax.text(h, layer, f"{v:.2f}", ha="center", va="center",
                        color="white" if v < 0.6 else "black", fontsize=9)
            ax.set(xticks=range(m.shape[1]), yticks=range(m.shape[0]), xlabel="head",
                   ylabel="layer", title=f"{arm}, {when} (step {row['step']}): {kind}")
            if arm == "clamped":
                for h in clamped_heads:
                    ax.add_patch(plt.Rectangle((h - 0.5, -0.5), 1, 1, fill=False,
                                               ec="red", lw=2))
    fig.suptitle("per-head scores (red box: clamped layer-0 head)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "induction_heads")
