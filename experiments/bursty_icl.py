"""Abrupt in-context learning and the induction head, on bursty in-context classification.

    python -m experiments.bursty_icl --config=configs/bursty_icl.py --workdir=workdirs/bursty_icl

Reddy 2023 ("The mechanistic basis of data dependence and abrupt learning in an in-context
classification task") and Singh et al. 2024 ("What needs to go right for an induction head?").
Data: the `bursty_icl` builder (Reddy's synthetic stand-in for Omniglot; jaxinterp/data/
bursty_icl.py). Model: `IclTransformer` (jaxinterp/models/icl_classification.py), a 2-layer
attention-only transformer with one head per layer over `x_1, l_1, ..., x_n, l_n, x_q`, whose
query position is read out (a residual ReLU MLP, then the unembedding) as the query's label.
Every run of a part is one vmapped, compiled call (`jaxinterp.train.vmapped.train_vmapped`).

(a) Baseline, `config.seeds`: at every eval, in-context accuracy (`test_icl`: novel classes,
    labels drawn per sequence), in-weights accuracy (`test_iwl`: training classes absent from
    the context) and, on `test_icl`, the head scores of the induction circuit:
      previous-token score: layer-0 attention from each label token to the exemplar just
        before it (`blocks.0.attn.hook_pattern`);
      induction score: last-layer attention from the query to the label tokens of the context
        items of the query's class (the label token following each matching exemplar);
      match score: the same onto the matching exemplars themselves.
    The step of each jump is the first eval at which the curve reaches
    `config.jump_threshold` (0.5: about halfway from its start, ~0.03 for accuracy and
    ~0.12-0.17 for the scores, to its end, ~0.8-0.97; above the ~0.25 plateau of ICL accuracy
    that copying a random context label gives when the context holds 4 classes).
(b) Grid, burstiness x number of classes (`config.grid`): in-context vs in-weights accuracy at
    the end of training; burstiness 0 means `p_bursty = 0` (i.i.d. sequences). ICL is measured
    on one shared `test_icl` set (the baseline's), IWL on each cell's own `test_iwl`.
(c) Clamping during training (Singh et al.'s "optogenetic" clamps), through the interventions
    of `jaxinterp.interventions` applied in the loss at every training step:
      prev_token_ov: `Ablate(blocks.0.attn.hook_z, mean)`: the layer-0 head's output replaced
        by its batch mean (label tokens cannot learn which exemplar came before them);
      induction_qk: `Clamp(blocks.1.attn.hook_pattern, uniform causal)`: the last-layer head's
        pattern fixed to uniform attention (its QK circuit cannot select the matching item);
      induction_ov: `Ablate(blocks.1.attn.hook_z, mean)`: the last-layer head's output
        replaced by its batch mean (its OV circuit carries nothing item-specific).
    Each arm is clamped until `config.clamp.until` (a fraction of training, 1.0: throughout)
    and measured twice: "clamped" (the network as trained, the clamp on) and "released" (its
    weights without the clamp). With a release before the end, the question is whether the
    jump comes later than the baseline's (delay) or not at all (prevent).

Writes `jump_alignment.png`, `grid.png`, `clamps.png` and `summary.json` to the workdir.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

import jaxinterp as ji
from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.analysis.heads import attention_mass
from jaxinterp.data.sources import load_source
from jaxinterp.models.icl_classification import IclTransformer
from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.tasks import Split, make_task
from jaxinterp.train.vmapped import train_vmapped

FEATURES = ("exemplars", "labels", "query", "target")
_TASK = make_task({"name": "classification"})
CLAMP_ARMS = ("baseline", "prev_token_ov", "induction_qk", "induction_ov")


# --- data and model ------------------------------------------------------------------------


def load_split(data: ConfigDict | dict, split: str, data_dir: str) -> dict[str, np.ndarray]:
    """Every example of a `bursty_icl` split as arrays (`FEATURES`, batch axis first)."""
    src = load_source("bursty_icl", split, data_dir, **dict(data))
    rows = [src[i] for i in range(len(src))]
    return {k: np.stack([r[k] for r in rows]) for k in FEATURES}


def make_model(config: ConfigDict) -> IclTransformer:
    return IclTransformer(TransformerConfig(**dict(config.model)), d_input=config.data.d,
                          d_readout_mlp=config.d_readout_mlp)


def classification_loss(logits: jax.Array, target: jax.Array):
    """The trainer's `classification` task loss (cross-entropy; metrics loss, accuracy)."""
    return _TASK.loss(logits, Split((), {}, target))


def uniform_causal_pattern(n_pos: int) -> jax.Array:
    """[1, 1, n_pos, n_pos]: each query attends equally to itself and every earlier key."""
    causal = jnp.tril(jnp.ones((n_pos, n_pos)))
    return (causal / causal.sum(-1, keepdims=True))[None, None]


def clamp_interventions(config: ConfigDict, active: jax.Array) -> list:
    """The three clamps of part (c); `active` [3] bool says which apply (all heads of the
    layer: the model has one head per layer by default)."""
    c = config.model
    last = c.n_layers - 1
    uniform = uniform_causal_pattern(2 * config.data.n_ctx + 1)

    def heads(on):
        return jnp.broadcast_to(on, (c.n_heads,))

    return [
        ji.Ablate("blocks.0.attn.hook_z", how="mean", heads=heads(active[0])),
        ji.Clamp(f"blocks.{last}.attn.hook_pattern", uniform, heads=heads(active[1])),
        ji.Ablate(f"blocks.{last}.attn.hook_z", how="mean", heads=heads(active[2])),
    ]


# --- head scores and evaluation -------------------------------------------------------------


def circuit_scores(patterns: list[jax.Array], labels: jax.Array, target: jax.Array
                   ) -> dict[str, jax.Array]:
    """Head scores of the induction circuit (see the module docstring), each [head].

    patterns: per layer [batch, head, 2n + 1, 2n + 1]; labels [batch, n]; target [batch].
    On `test_icl` each class in context has its own label, so the items of the query's class
    are those whose label is the target.
    """
    n = labels.shape[1]
    first, last = patterns[0], patterns[-1]
    prev = jnp.diagonal(first[:, :, 1:2 * n:2, 0:2 * n:2], axis1=-2, axis2=-1).mean((0, 2))
    match = labels == target[:, None]  # [batch, n]
    zeros = jnp.zeros_like(match)
    on_labels = jnp.stack([zeros, match], axis=2).reshape(match.shape[0], 2 * n)
    on_exemplars = jnp.stack([match, zeros], axis=2).reshape(match.shape[0], 2 * n)
    pad = jnp.zeros((match.shape[0], 1), bool)  # the query itself
    return {"prev_token": prev,
            "induction": attention_mass(last, jnp.concatenate([on_labels, pad], 1)),
            "match": attention_mass(last, jnp.concatenate([on_exemplars, pad], 1))}


def evaluate(model, params, split: dict[str, jax.Array], interventions=(), scores=False):
    """Accuracy (and with `scores` the circuit's head scores, first head) on one split."""
    logits, cache = ji.run(model, {"params": params}, split["exemplars"], split["labels"],
                           split["query"], capture=("blocks.*.attn.hook_pattern",) if scores
                           else (), interventions=list(interventions))
    out = {"acc": classification_loss(logits, split["target"])[1]["accuracy"]}
    if scores:
        patterns = [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(len(cache))]
        out.update({k: v[0] for k, v in circuit_scores(patterns, split["labels"],
                                                      split["target"]).items()})
    return out


# --- one vmapped training call --------------------------------------------------------------


def train_runs(config: ConfigDict, seeds, train_sets, test_icl, test_iwl_sets, cells,
               clamps=None, until=None, num_steps=None, eval_every=None):
    """Trains one run per entry of `seeds` in one call.

    `train_sets`, `test_iwl_sets`: dicts of arrays with a leading cell axis [C, N, ...];
    `cells` [R] int: each run's cell. `clamps` [R, 3] bool: each run's active clamps (None:
    none); `until` [R] int: the step at which its clamps are released. Returns (params, history).
    """
    model = make_model(config)
    n_train = train_sets["target"].shape[1]
    batch = config.batch_size
    train_sets = jax.tree.map(jnp.asarray, train_sets)
    test_icl = jax.tree.map(jnp.asarray, test_icl)
    test_iwl_sets = jax.tree.map(jnp.asarray, test_iwl_sets)
    n_runs = len(seeds)
    args = {"cell": jnp.asarray(cells, jnp.int32),
            "clamps": jnp.zeros((n_runs, 3), bool) if clamps is None else jnp.asarray(clamps),
            "until": jnp.zeros((n_runs,), jnp.int32) if until is None else jnp.asarray(until)}
    with_clamps = clamps is not None
    example = {k: v[0, :1] for k, v in train_sets.items()}

    def init_fn(key):
        return model.init(key, example["exemplars"], example["labels"], example["query"])["params"]

    def loss_fn(params, key, a, step):
        idx = jax.random.randint(key, (batch,), 0, n_train)
        b = {k: v[a["cell"], idx] for k, v in train_sets.items()}
        ivs = clamp_interventions(config, a["clamps"] & (step < a["until"])) if with_clamps else []
        logits, _ = ji.run(model, {"params": params}, b["exemplars"], b["labels"], b["query"],
                           interventions=ivs)
        loss, metrics = classification_loss(logits, b["target"])
        return loss, {"accuracy": metrics["accuracy"]}

    def eval_fn(params, a):
        iwl = {k: v[a["cell"]] for k, v in test_iwl_sets.items()}
        out = {f"icl_{k}": v for k, v in evaluate(model, params, test_icl, scores=True).items()}
        out["iwl_acc"] = evaluate(model, params, iwl)["acc"]
        if with_clamps:
            ivs = clamp_interventions(config, a["clamps"])
            out.update({f"clamped_icl_{k}": v for k, v in
                        evaluate(model, params, test_icl, ivs, scores=True).items()})
            out["clamped_iwl_acc"] = evaluate(model, params, iwl, ivs)["acc"]
        return out

    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    return train_vmapped(loss_fn, init_fn, keys, args, config.optimizer,
                         num_steps or config.num_train_steps, eval_fn=eval_fn,
                         eval_every=config.eval_every_steps if eval_every is None else eval_every)


def jump_step(steps: np.ndarray, curve: np.ndarray, threshold: float) -> int | None:
    """First eval step at which `curve` reaches `threshold` (None if it never does)."""
    hits = np.flatnonzero(np.asarray(curve) >= threshold)
    return int(steps[hits[0]]) if hits.size else None


# --- the experiment -------------------------------------------------------------------------


def grid_cells(config: ConfigDict) -> list[dict[str, Any]]:
    """Data configs of the grid: burstiness x n_classes (burstiness 0: p_bursty = 0)."""
    cells = []
    for b in config.grid.burstiness:
        for k in config.grid.n_classes:
            d = dict(config.data)
            d.update(n_classes=int(k), num_train=config.grid.num_train)
            if b:
                d["burstiness"] = int(b)
            else:
                d["p_bursty"] = 0.0
            cells.append({"burstiness": int(b), "n_classes": int(k), "data": d})
    return cells


def stack_sets(sets: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([s[k] for s in sets]) for k in sets[0]}


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Parts (a)-(c), the figures and the summary (see the module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    seeds = [int(s) for s in config.seeds]
    train = load_split(config.data, "train", data_dir)
    test_icl = load_split(config.data, "test_icl", data_dir)
    test_iwl = load_split(config.data, "test_iwl", data_dir)
    summary: dict[str, Any] = {"seeds": seeds}
    timings = {}

    # (a) baseline and (c) clamps: one call, shared data.
    arms = [a for a in CLAMP_ARMS if a == "baseline" or a in config.clamp.arms]
    runs = [(a, s) for a in arms for s in seeds]
    clamps = np.array([[a == n for n in CLAMP_ARMS[1:]] for a, _ in runs])
    until = np.full(len(runs), round(config.clamp.until * config.num_train_steps))
    t = time.time()
    _, hist = train_runs(config, [s for _, s in runs], stack_sets([train]), test_icl,
                         stack_sets([test_iwl]), np.zeros(len(runs)), clamps, until)
    timings["baseline_and_clamps_s"] = round(time.time() - t, 1)
    steps = hist["eval_step"]
    curves = {a: {k.removeprefix("eval/"): hist[k][[i for i, (b, _) in enumerate(runs)
                                                    if b == a]]
                  for k in hist if k.startswith("eval/")} for a in arms}
    th = config.jump_threshold
    summary["baseline"] = baseline_summary(steps, curves["baseline"], seeds, th)
    summary["clamps"] = {a: clamp_summary(steps, curves[a], curves["baseline"], seeds, th)
                         for a in arms if a != "baseline"}
    summary["clamp_until_step"] = int(until[0])

    # (b) the grid: one call over cells x seeds.
    cells = grid_cells(config)
    t = time.time()
    grid_train = stack_sets([load_split(c["data"], "train", data_dir) for c in cells])
    grid_iwl = stack_sets([load_split(c["data"], "test_iwl", data_dir) for c in cells])
    timings["grid_data_s"] = round(time.time() - t, 1)
    t = time.time()
    gruns = [(i, s) for i in range(len(cells)) for s in seeds]
    _, ghist = train_runs(config, [s for _, s in gruns], grid_train, test_icl, grid_iwl,
                          [i for i, _ in gruns], num_steps=config.grid.num_train_steps,
                          eval_every=config.grid.eval_every_steps)
    timings["grid_s"] = round(time.time() - t, 1)
    summary["grid"] = []
    for i, c in enumerate(cells):
        rows = [r for r, (j, _) in enumerate(gruns) if j == i]
        icl, iwl = ghist["eval/icl_acc"][rows, -1], ghist["eval/iwl_acc"][rows, -1]
        summary["grid"].append({"burstiness": c["burstiness"], "n_classes": c["n_classes"],
                                "icl_acc": float(icl.mean()), "iwl_acc": float(iwl.mean()),
                                "icl_acc_per_seed": icl.tolist(),
                                "iwl_acc_per_seed": iwl.tolist()})
    summary["timings"] = timings
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "jump_alignment.png": lambda path: plot_jump_alignment(
            steps, curves["baseline"], summary["baseline"], path),
        "grid.png": lambda path: plot_grid(summary["grid"], config, path),
        "clamps.png": lambda path: plot_clamps(steps, curves, summary, path),
    })


def baseline_summary(steps, c, seeds, th: float) -> dict[str, Any]:
    """Per seed: the jump steps of ICL accuracy and the head scores, final values."""
    per_seed = []
    for r, s in enumerate(seeds):
        per_seed.append({
            "seed": s,
            "icl_jump_step": jump_step(steps, c["icl_acc"][r], th),
            "induction_jump_step": jump_step(steps, c["icl_induction"][r], th),
            "prev_token_jump_step": jump_step(steps, c["icl_prev_token"][r], th),
            "icl_acc_init": float(c["icl_acc"][r, 0]),
            "icl_acc_final": float(c["icl_acc"][r, -1]),
            "iwl_acc_final": float(c["iwl_acc"][r, -1]),
            "induction_init": float(c["icl_induction"][r, 0]),
            "induction_final": float(c["icl_induction"][r, -1]),
            "prev_token_init": float(c["icl_prev_token"][r, 0]),
            "prev_token_final": float(c["icl_prev_token"][r, -1]),
            "match_final": float(c["icl_match"][r, -1]),
        })
    return {"per_seed": per_seed,
            "icl_acc_final": float(c["icl_acc"][:, -1].mean()),
            "iwl_acc_final": float(c["iwl_acc"][:, -1].mean())}


def clamp_summary(steps, c, base, seeds, th: float) -> dict[str, Any]:
    """Per seed: the released network's jump steps (None: no jump), its delay against the
    baseline's ICL jump, and the final accuracies (released and clamped)."""
    per_seed = []
    for r, s in enumerate(seeds):
        jump, base_jump = jump_step(steps, c["icl_acc"][r], th), jump_step(
            steps, base["icl_acc"][r], th)
        per_seed.append({
            "seed": s,
            "released_icl_jump_step": jump,
            "icl_jump_delay_vs_baseline": None if jump is None or base_jump is None
            else jump - base_jump,
            "released_induction_jump_step": jump_step(steps, c["icl_induction"][r], th),
            "released_prev_token_jump_step": jump_step(steps, c["icl_prev_token"][r], th),
            "released_icl_acc_final": float(c["icl_acc"][r, -1]),
            "clamped_icl_acc_final": float(c["clamped_icl_acc"][r, -1]),
            "released_induction_final": float(c["icl_induction"][r, -1]),
            "released_prev_token_final": float(c["icl_prev_token"][r, -1]),
            "iwl_acc_final": float(c["iwl_acc"][r, -1]),
        })
    return {"per_seed": per_seed,
            "released_icl_acc_final": float(c["icl_acc"][:, -1].mean()),
            "clamped_icl_acc_final": float(c["clamped_icl_acc"][:, -1].mean()),
            "baseline_icl_acc_final": float(base["icl_acc"][:, -1].mean())}


# --- figures --------------------------------------------------------------------------------


def plot_jump_alignment(steps, c, summary, path: str) -> None:
    plt = pyplot()
    n = c["icl_acc"].shape[0]
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for r, ax in enumerate(axes[0]):
        s = summary["per_seed"][r]
        ax.plot(steps, c["icl_acc"][r], color="tab:blue", label="ICL accuracy (test_icl)")
        ax.plot(steps, c["iwl_acc"][r], color="tab:orange", label="IWL accuracy (test_iwl)")
        ax.plot(steps, c["icl_induction"][r], color="tab:green", ls="--",
                label="induction score (L1: query -> matching labels)")
        ax.plot(steps, c["icl_match"][r], color="tab:olive", ls=":",
                label="match score (L1: query -> matching exemplars)")
        ax.plot(steps, c["icl_prev_token"][r], color="tab:red", ls="--",
                label="previous-token score (L0: label -> its exemplar)")
        for key, color in (("icl_jump_step", "tab:blue"), ("induction_jump_step", "tab:green"),
                           ("prev_token_jump_step", "tab:red")):
            if s[key] is not None:
                ax.axvline(s[key], color=color, lw=1, alpha=0.6)
        ax.set(title=f"seed {s['seed']}: jumps ICL {s['icl_jump_step']}, induction "
                     f"{s['induction_jump_step']}, prev {s['prev_token_jump_step']}",
               xlabel="step", ylim=(0, 1.02))
        ax.title.set_fontsize(9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_grid(grid, config, path: str) -> None:
    plt = pyplot()
    bs, ks = list(config.grid.burstiness), list(config.grid.n_classes)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "icl_acc", "in-context accuracy (test_icl)"),
                           (axes[1], "iwl_acc", "in-weights accuracy (test_iwl)")):
        m = np.zeros((len(bs), len(ks)))
        for g in grid:
            m[bs.index(g["burstiness"]), ks.index(g["n_classes"])] = g[key]
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis", origin="lower")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center",
                    color="white" if v < 0.6 else "black")
        ax.set(xticks=range(len(ks)), xticklabels=ks, yticks=range(len(bs)), yticklabels=bs,
               xlabel="number of classes K", ylabel="burstiness B (0: i.i.d.)", title=title)
    fig.suptitle(f"end of training ({config.grid.num_train_steps} steps), mean of "
                 f"{len(config.seeds)} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_clamps(steps, curves, summary, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = dict(zip(CLAMP_ARMS, ("black", "tab:red", "tab:blue", "tab:green"), strict=True))
    for arm, c in curves.items():
        for r in range(c["icl_acc"].shape[0]):
            label = arm if r == 0 else None
            axes[0].plot(steps, c["icl_acc"][r], color=colors[arm], alpha=0.8, label=label)
            key = "icl_acc" if arm == "baseline" else "clamped_icl_acc"
            axes[1].plot(steps, c[key][r], color=colors[arm], alpha=0.8, label=label)
    until = summary["clamp_until_step"]
    for ax in axes:
        ax.axvline(until, color="gray", ls=":", lw=1)
        ax.set(xlabel="step", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    axes[0].set(title="ICL accuracy, released (weights without the clamp)")
    axes[1].set(title="ICL accuracy, clamped (as trained)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # flags only for the binary: importing run_experiment defines none
    runner.main(run_experiment, "bursty_icl")
