"""Relation-specific neurons: the MLP neurons whose activation tells one relation's prompts from
the others'; clamping them to zero should break that relation's facts and leave the others.

    python -m experiments.relation_neurons --config=configs/relation_neurons.py \
        --workdir=workdirs/relation_neurons

Paper: Liu et al. 2025, "On Relation-Specific Neurons in Large Language Models" (Llama-2 7B /
13B, 12 relations). Their method, as checked (module docstring of
`jaxinterp/analysis/editing.py`): a neuron's expertise for relation r is the average precision
(AP) of its responses as scores for "is this a prompt of r" (positives: r's prompts,
negatives: the other relations'); r's neurons are its top-k by AP, over all layers; they are
deactivated (set to zero) and the accuracy on facts of r and of each other relation r' is
measured on held-out test prompts.

Here (training is part of the experiment): the synthetic factual-recall world
(`jaxinterp/data/factual_recall.py`: subjects x relations -> attribute, typed attributes, one
token each), closed-book prompts `BOS s_1 [s_2] r -> a`; the base model of
`configs/factual_recall.py:base_model_config()` trained by `jaxinterp.train.train` once per
seed until it has memorised the fact table. The subjects are split in two halves per seed:
the identification half gives every neuron's response to each of its prompts (`hook_post`
at the relation token, the position that predicts the answer, or pooled over the prompt)
and the per-relation AP; the test half (facts whose
subjects were never used to pick neurons) gives the accuracy per relation, clean and with a
relation's top-k neurons clamped to zero (`ji.Clamp` on `blocks.{l}.mlp.hook_post` through
`neuron_interventions`). Control: k uniformly random neurons (`random_neurons`, several
draws). Every clamp (relations x k values, and the random draws) is one vmapped call.

Writes `accuracy_matrix.png` (accuracy change, clamped relation x evaluated relation, for the
relation neurons and the random control, mean over seeds, at each k), `layers.png` (where the
chosen neurons sit) and `summary.json`. Measured numbers: `configs/relation_neurons.py`.
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
from jaxinterp.analysis import editing
from jaxinterp.data.factual_recall import FactualRecallConfig, make_prompts

# --- the base model -------------------------------------------------------------------------


def world(base: ConfigDict) -> FactualRecallConfig:
    """The factual-recall world of a base-model config (its data builder kwargs)."""
    return FactualRecallConfig(name="world", **dict(base.data.builder_kwargs))


def train_base(base: ConfigDict, workdir: str, seed: int):
    """`(model, variables)` of the base model trained with `jaxinterp.train.train` at `seed`
    in `workdir` (a finished run there is loaded, not retrained)."""
    config = ConfigDict(base.to_dict())
    config.seed = int(seed)
    steps = os.path.join(workdir, "checkpoints", str(config.num_train_steps))
    if not os.path.isdir(steps):
        ji.train.train(config, workdir)
    return ji.train.load(workdir)


def closed_book(cfg: FactualRecallConfig, subjects, relations) -> dict[str, np.ndarray]:
    """Closed-book prompts of the facts (subject, relation): `make_prompts`'s features."""
    return make_prompts(cfg, list(map(int, subjects)), list(map(int, relations)))


def all_facts(cfg: FactualRecallConfig, subjects) -> dict[str, np.ndarray]:
    """Closed-book prompts of every relation of each subject in `subjects` (relation-major)."""
    subjects = np.asarray(subjects)
    rel = np.repeat(np.arange(cfg.n_relations), len(subjects))
    return closed_book(cfg, np.tile(subjects, cfg.n_relations), rel)


def accuracy_by_relation(logits: jax.Array, batch: dict, n_relations: int) -> jax.Array:
    """[n_relations]: closed-book accuracy (argmax at answer_pos - 1 is the memorised
    attribute) on each relation's prompts."""
    b = jnp.arange(logits.shape[0])
    pred = logits[b, batch["answer_pos"] - 1].argmax(-1)
    hit = (pred == batch["memorised"]).astype(jnp.float32)
    onehot = jax.nn.one_hot(batch["relation"], n_relations)
    return (onehot * hit[:, None]).sum(0) / onehot.sum(0)


# --- the experiment -------------------------------------------------------------------------


def analyse_seed(model, variables, cfg: FactualRecallConfig, config: ConfigDict,
                 seed: int) -> dict[str, Any]:
    """Neuron scores on the identification subjects, clamps evaluated on the test subjects."""
    rng = np.random.default_rng([seed, 99])
    order = rng.permutation(cfg.n_subjects)
    ident, test = order[:cfg.n_subjects // 2], order[cfg.n_subjects // 2:]
    pi, pt = all_facts(cfg, ident), all_facts(cfg, test)
    r_n = cfg.n_relations
    ks = tuple(int(k) for k in config.ks)
    c = model.config

    pos = np.arange(cfg.seq_len)[None]
    if config.positions == "last":  # the relation token, where the answer is predicted
        prompt_mask = pos == pi["answer_pos"][:, None] - 1
    else:  # the whole prompt, without the answer
        prompt_mask = pos < pi["answer_pos"][:, None]
    acts = editing.neuron_activations(model, variables, jnp.asarray(pi["tokens"]),
                                      jnp.asarray(prompt_mask), pool=config.pool)
    scores = jax.jit(editing.relation_neuron_scores, static_argnums=2)(
        acts, jnp.asarray(pi["relation"]), r_n)  # [R, L, d_mlp]

    tokens = jnp.asarray(pt["tokens"])
    batch = {k: jnp.asarray(pt[k]) for k in ("answer_pos", "memorised", "relation")}

    @jax.jit
    def clamp_acc(masks):  # [M, L, d_mlp] -> [M, R]
        def one(mask):
            logits, _ = ji.run(model, variables, tokens,
                               interventions=editing.neuron_interventions(mask))
            return accuracy_by_relation(logits, batch, r_n)
        return jax.lax.map(one, masks)

    clean_logits, _ = ji.run(model, variables, tokens)
    clean = np.asarray(accuracy_by_relation(clean_logits, batch, r_n))
    out = {"seed": seed, "clean_accuracy": clean.tolist(), "by_k": {}}
    key = jax.random.PRNGKey(seed)
    for k in ks:
        top = editing.top_neurons(scores, k)  # [R, L, d_mlp]
        rand = editing.random_neurons(jax.random.fold_in(key, k), config.n_random,
                                      (c.n_layers, c.d_mlp), k)
        acc = np.asarray(clamp_acc(jnp.concatenate([top, rand])))
        rel, ctl = acc[:r_n] - clean, acc[r_n:] - clean  # [R, R], [n_random, R]
        off = rel[~np.eye(r_n, dtype=bool)]
        out["by_k"][str(k)] = {
            "delta_accuracy": rel.tolist(),  # [clamped relation, evaluated relation]
            "random_delta_accuracy": ctl.tolist(),  # [draw, evaluated relation]
            "own_drop": (-np.diag(rel)).tolist(),
            "mean_own_drop": float(-np.diag(rel).mean()),
            "max_abs_other_change": float(np.abs(off).max()),
            "mean_abs_other_change": float(np.abs(off).mean()),
            "random_max_drop": float(-ctl.min()),
            "random_mean_drop": float(-ctl.mean()),
            "neurons_per_layer": np.asarray(top.sum(-1)).tolist(),  # [R, L]
            "mean_ap_chosen": float((scores * top).sum() / top.sum()),
            # relations whose own drop exceeds every random draw's drop on that relation
            "own_drop_beats_random": int(np.sum(-np.diag(rel) > -ctl.min(0))),
            # the acceptance: the own relation drops (by > min_own_drop on average)
            # while every other relation moves by at most 5 points
            "acceptance": bool(np.all(np.abs(off) <= 0.05 + 1e-6)
                               and -np.diag(rel).mean() > config.min_own_drop),
        }
    return out


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Training per seed, neuron scores, the clamps, the figures and the summary."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    if config.pool not in ("max", "mean"):
        raise ValueError(f"pool={config.pool!r}: choose 'max' or 'mean'")
    if config.positions not in ("prompt", "last"):
        raise ValueError(f"positions={config.positions!r}: choose 'prompt' or 'last'")
    cfg = world(config.base)
    if cfg.n_relations < 2:
        raise ValueError(f"n_relations={cfg.n_relations}: relation-specific neurons need >= 2")
    seeds = [int(s) for s in config.seeds]
    per_seed, train_s = [], 0.0
    for s in seeds:
        t = time.time()
        m = seeds[0] if config.share_base else s  # the base model's seed
        base_dir = os.path.join(config.base_workdir or workdir, f"base_seed{m}")
        model, variables = train_base(config.base, base_dir, m)
        train_s += time.time() - t
        per_seed.append(analyse_seed(model, variables, cfg, config, s))

    summary: dict[str, Any] = {"seeds": seeds, "ks": list(config.ks),
                               "n_relations": cfg.n_relations, "per_seed": per_seed}
    mean = {}
    for k in map(str, config.ks):
        rows = [p["by_k"][k] for p in per_seed]
        mean[k] = {"delta_accuracy": np.mean([r["delta_accuracy"] for r in rows], 0),
                   "random_delta_accuracy": np.mean([np.mean(r["random_delta_accuracy"], 0)
                                                     for r in rows], 0),
                   "neurons_per_layer": np.mean([r["neurons_per_layer"] for r in rows], 0)}
        summary[f"k{k}"] = {
            "mean_own_drop": float(np.mean([r["mean_own_drop"] for r in rows])),
            "max_abs_other_change": float(max(r["max_abs_other_change"] for r in rows)),
            "random_max_drop": float(max(r["random_max_drop"] for r in rows)),
            "own_drop_beats_random": [r["own_drop_beats_random"] for r in rows],
            "acceptance_seeds": sum(r["acceptance"] for r in rows)}
    summary["clean_accuracy_min"] = float(min(min(p["clean_accuracy"]) for p in per_seed))
    summary["timings"] = {"train_s": round(train_s, 1)}
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "accuracy_matrix.png": lambda path: plot_matrices(mean, summary, path),
        "layers.png": lambda path: plot_layers(mean, path)})


# --- figures --------------------------------------------------------------------------------


def plot_matrices(mean, summary, path: str) -> None:
    """Accuracy change (points) with one relation's top-k neurons clamped to zero (rows) on
    each relation's test facts (columns), and the random-neuron control's change (one row:
    the same for every clamped relation), mean over seeds, one column of panels per k."""
    plt = pyplot()
    ks = list(mean)
    fig, axes = plt.subplots(2, len(ks), figsize=(3.6 * len(ks), 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [summary["n_relations"], 1.4]})
    for j, k in enumerate(ks):
        for i, (m, title) in enumerate(((mean[k]["delta_accuracy"], "relation neurons"),
                                        (mean[k]["random_delta_accuracy"][None], "random"))):
            ax = axes[i, j]
            im = ax.imshow(100 * m, cmap="RdBu", vmin=-100, vmax=100, aspect="auto")
            for (a, b), v in np.ndenumerate(100 * m):
                ax.text(b, a, f"{v:+.0f}", ha="center", va="center", fontsize=8)
            ax.set(xticks=range(m.shape[1]), yticks=range(m.shape[0]),
                   xlabel="evaluated relation" if i == 1 else "",
                   ylabel="clamped relation" if i == 0 else "",
                   title=f"k={k}: {title}")
            ax.title.set_fontsize(9)
    fig.colorbar(im, ax=axes, shrink=0.7, label="accuracy change (points)")
    fig.suptitle(f"clamping neurons to zero, mean of {len(summary['seeds'])} seeds",
                 fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layers(mean, path: str) -> None:
    """How many of each relation's top-k neurons sit in each layer (mean over seeds)."""
    plt = pyplot()
    ks = list(mean)
    fig, axes = plt.subplots(1, len(ks), figsize=(3.6 * len(ks), 3), squeeze=False)
    for j, k in enumerate(ks):
        m = mean[k]["neurons_per_layer"]  # [R, L]
        for r in range(m.shape[0]):
            axes[0, j].bar(np.arange(m.shape[1]) + 0.8 * r / m.shape[0], m[r],
                           width=0.8 / m.shape[0], label=f"relation {r}")
        axes[0, j].set(xlabel="layer", ylabel="neurons", title=f"k={k}")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "relation_neurons")
