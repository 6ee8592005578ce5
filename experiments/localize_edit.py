"""Does localisation inform editing? Per fact and layer, the causal-tracing effect of the
layer's MLP against the success of a rank-one (ROME) edit of that layer; which predicts edit
success better, the tracing effect or the layer?

    python -m experiments.localize_edit --config=configs/localize_edit.py \
        --workdir=workdirs/localize_edit

Paper: Hase et al. 2023, "Does Localization Inform Editing? Surprising Differences in
Causality-Based Localization vs. Knowledge Editing in Language Models" (NeurIPS 2023). What
was checked of it (the abstract in the stored arXiv text): "localization conclusions from
representation denoising (also known as Causal Tracing) do not provide any insight into which
model MLP layer would be best to edit in order to override an existing stored fact with a new
one"; for one editing problem "editing performance does relate to localization results ...
but we find that which layer we edit is a far better predictor of performance". Their
analysis regresses edit success on the tracing effect and on the edited layer (the layers as
categories) and compares the R^2. (Their tables of per-model R^2 values were not in the
stored text: the comparison here is of the direction, not of their numbers.)

Here (training is part of the experiment): the synthetic factual-recall world
(`jaxinterp/data/factual_recall.py`), closed-book prompts `BOS s_1 [s_2] r -> a`; the base
model of `configs/factual_recall.py:base_model_config()` with more layers, trained by
`jaxinterp.train.train` once per seed (`experiments.relation_neurons.train_base`). For
`n_facts` facts (subject, relation) drawn per seed:
  tracing effect (fact, layer): `jaxinterp.analysis.tracing.causal_trace` (ROME's causal
    tracing: subject embeddings noised at 3x their std, the site restored at one (layer,
    position)), the indirect effect P*_{clean h}[o] - P*[o] of the layer's `trace_site`
    (default the MLP output) at the subject's last token, o the memorised attribute;
  edit success (fact, layer): a new attribute o' (same relation's kind, != o) is written by
    `jaxinterp.analysis.editing.rome_edit` at that layer (C = the key covariance over every
    fact's prompt, with a small ridge); success is Hase et al.'s rewrite score
    (p'(o') - p(o')) / (1 - p(o')) on the prompt (p before, p' after the edit). With
    `methods` including "finetune", the same for `finetune_edit` of the layer's W_out.
Every edit (facts x layers) is one compiled call: `rome_edit` takes a traced layer, so it is
vmapped over layers and facts.
R^2 (over all (fact, layer) pairs of a seed): least squares of the rewrite score on
  tracing: [1, tracing effect];  layer: [one-hot layer];  both: [one-hot layer, tracing].

Writes `scatter.png` (rewrite score against tracing effect, coloured by layer), `r2.png` (the
R^2 bars per predictor and method, per seed), and `summary.json`. Measured numbers:
`configs/localize_edit.py`.
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
from experiments.relation_neurons import all_facts, closed_book, train_base, world
from jaxinterp.analysis import editing
from jaxinterp.analysis.tracing import causal_trace, subject_noise

METHODS = ("rome", "finetune")
PREDICTORS = ("tracing", "layer", "both")


def r_squared(y: np.ndarray, x: np.ndarray) -> float:
    """R^2 of the least-squares fit of y [n] on the columns of x [n, p] (x holds its own
    intercept column or a full set of one-hot columns): 1 - SS_res / SS_tot."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    res = y - x @ coef
    tot = y - y.mean()
    return float(1.0 - (res @ res) / max(float(tot @ tot), 1e-12))


def regressions(score: np.ndarray, tracing: np.ndarray) -> dict[str, float]:
    """R^2 of each predictor of `score` [facts, layers] (module docstring)."""
    f, n_layers = score.shape
    y, t = score.reshape(-1), tracing.reshape(-1)
    onehot = np.tile(np.eye(n_layers), (f, 1))
    return {"tracing": r_squared(y, np.stack([np.ones_like(t), t], 1)),
            "layer": r_squared(y, onehot),
            "both": r_squared(y, np.concatenate([onehot, t[:, None]], 1))}


def analyse_seed(model, variables, cfg, config: ConfigDict, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 7])
    n_layers = model.config.n_layers
    n_facts = min(config.n_facts, cfg.n_subjects * cfg.n_relations)
    flat = rng.choice(cfg.n_subjects * cfg.n_relations, n_facts, replace=False)
    subj, rel = flat // cfg.n_relations, flat % cfg.n_relations
    facts = closed_book(cfg, subj, rel)
    new = jnp.array([rng.choice([a for a in cfg.relation_attributes(r) if a != m])
                     for r, m in zip(rel, facts["memorised"], strict=True)], jnp.int32)
    tokens = jnp.asarray(facts["tokens"])
    answer_pos = jnp.asarray(facts["answer_pos"])
    predict_pos = answer_pos - 1  # BOS s_1 [s_2] r a: the relation token predicts a
    # the edited (and traced) token: the subject's last (ROME's "subject_last") or the last
    edit_pos = answer_pos - 2 if config.edit_token == "subject_last" else predict_pos

    # the tracing effect of each layer's site at the subject's last token
    noise = subject_noise(model, variables, tokens, facts["subject_mask"], 3.0)
    trace = causal_trace(model, variables, tokens, facts["subject_mask"],
                         jnp.asarray(facts["memorised"]), noise=noise,
                         key=jax.random.PRNGKey(seed), sites=(config.trace_site,),
                         num_samples=config.trace_samples, predict_pos=predict_pos)
    eff = np.asarray(trace.effect[config.trace_site])  # [facts, layers, pos]
    tracing = eff[np.arange(n_facts), :, np.asarray(edit_pos)]  # [facts, layers]

    # keys of every fact's prompt (the positions before the answer) for C
    every = all_facts(cfg, np.arange(cfg.n_subjects))
    mask = np.arange(cfg.seq_len)[None] < every["answer_pos"][:, None]
    cov = editing.key_covariance(model, variables, jnp.asarray(every["tokens"]),
                                 mask=jnp.asarray(mask))  # [L, d_mlp, d_mlp]
    d = cov.shape[-1]
    ridge = config.cov_ridge * jnp.trace(cov, axis1=1, axis2=2) / d
    cov = cov + ridge[:, None, None] * jnp.eye(d)

    def p_new(params, i):
        logits, _ = ji.run(model, {"params": params}, tokens[i][None])
        return jnp.exp(editing.target_logprob(logits, predict_pos[i][None],
                                              new[i][None])[0])

    base_params = editing._params(variables)
    p_before = np.asarray(jax.vmap(lambda i: p_new(base_params, i))(jnp.arange(n_facts)))

    def edit_one(layer, i, method):
        x = tokens[i][None]
        if method == "rome":
            params, _ = editing.rome_edit(
                model, variables, x, edit_pos[i][None], predict_pos[i][None], new[i],
                layer, cov, steps=config.rome.steps, lr=config.rome.lr,
                weight_decay=config.rome.weight_decay, clamp_norm=config.rome.clamp_norm)
        else:
            params, _ = editing.finetune_edit(
                model, variables, x, predict_pos[i][None], new[i], layer,
                steps=config.finetune.steps, lr=config.finetune.lr)
        return p_new(params, i)

    out = {"seed": seed, "p_before_new": p_before.tolist(), "tracing": tracing.tolist(),
           "p_clean": np.asarray(trace.p_clean).tolist(),
           "p_corrupted": np.asarray(trace.p_corrupted).tolist()}
    for method in config.methods:
        sweep = jax.jit(jax.vmap(jax.vmap(lambda layer, i, m=method: edit_one(layer, i, m),
                                          in_axes=(None, 0)), in_axes=(0, None)))
        p_after = np.asarray(sweep(jnp.arange(n_layers), jnp.arange(n_facts))).T  # [F, L]
        score = (p_after - p_before[:, None]) / (1.0 - p_before[:, None])
        out[method] = {"rewrite_score": score.tolist(), "p_after_new": p_after.tolist(),
                       "mean_score_by_layer": score.mean(0).tolist(),
                       "success_rate_by_layer": (p_after > 0.5).mean(0).tolist(),
                       "r2": regressions(score, tracing),
                       "best_layer_is_max_tracing_layer": float(np.mean(
                           score.argmax(1) == tracing.argmax(1)))}
    out["mean_tracing_by_layer"] = tracing.mean(0).tolist()
    return out


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Training per seed, tracing, the edits, the regressions, the figures and the summary."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    if config.edit_token not in ("subject_last", "last"):
        raise ValueError(f"edit_token={config.edit_token!r}: choose 'subject_last' or 'last'")
    unknown = sorted(set(config.methods) - set(METHODS))
    if unknown or not config.methods:
        raise ValueError(f"methods={tuple(config.methods)}: choose one or more of {METHODS}")
    cfg = world(config.base)
    seeds = [int(s) for s in config.seeds]
    per_seed, train_s = [], 0.0
    for s in seeds:
        t = time.time()
        m = seeds[0] if config.share_base else s  # the base model's seed
        base_dir = os.path.join(config.base_workdir or workdir, f"base_seed{m}")
        model, variables = train_base(config.base, base_dir, m)
        train_s += time.time() - t
        if model.config.n_layers < 2:
            raise ValueError("localize_edit needs a base model with >= 2 layers")
        per_seed.append(analyse_seed(model, variables, cfg, config, s))
    summary: dict[str, Any] = {"seeds": seeds, "methods": list(config.methods),
                               "trace_site": config.trace_site,
                               "edit_token": config.edit_token, "per_seed": per_seed}
    for method in config.methods:
        r2 = {p: [ps[method]["r2"][p] for ps in per_seed] for p in PREDICTORS}
        summary[method] = {
            "r2_mean": {p: float(np.mean(v)) for p, v in r2.items()},
            "layer_beats_tracing_seeds": sum(a > b for a, b in zip(r2["layer"], r2["tracing"],
                                                                   strict=True)),
            "mean_score_by_layer": np.mean([ps[method]["mean_score_by_layer"]
                                            for ps in per_seed], 0).tolist()}
    summary["mean_tracing_by_layer"] = np.mean([ps["mean_tracing_by_layer"]
                                                for ps in per_seed], 0).tolist()
    summary["timings"] = {"train_s": round(train_s, 1)}
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "scatter.png": lambda path: plot_scatter(summary, path),
        "r2.png": lambda path: plot_r2(summary, path)})


# --- figures --------------------------------------------------------------------------------


def plot_scatter(summary, path: str) -> None:
    """Rewrite score against tracing effect, every (fact, layer) of every seed, coloured by
    the edited layer; one panel per method."""
    plt = pyplot()
    methods = summary["methods"]
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
    for j, method in enumerate(methods):
        ax = axes[0, j]
        t = np.concatenate([np.asarray(ps["tracing"]) for ps in summary["per_seed"]])
        s = np.concatenate([np.asarray(ps[method]["rewrite_score"])
                            for ps in summary["per_seed"]])
        for layer in range(t.shape[1]):
            ax.scatter(t[:, layer], s[:, layer], s=10, alpha=0.6, label=f"layer {layer}")
        r2 = summary[method]["r2_mean"]
        ax.set(xlabel=f"tracing effect ({summary['trace_site']} at {summary['edit_token']})",
               ylabel="rewrite score",
               title=f"{method}: R^2 tracing {r2['tracing']:.2f}, layer {r2['layer']:.2f}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_r2(summary, path: str) -> None:
    """R^2 of each predictor of the rewrite score, per method (bars: mean over seeds; dots:
    the seeds)."""
    plt = pyplot()
    methods = summary["methods"]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(methods) * len(PREDICTORS) / 3, 3.4))
    width = 0.8 / len(PREDICTORS)
    for k, pred in enumerate(PREDICTORS):
        xs = np.arange(len(methods)) + k * width
        ax.bar(xs, [summary[m]["r2_mean"][pred] for m in methods], width, label=pred)
        for x, m in zip(xs, methods, strict=True):
            ys = [ps[m]["r2"][pred] for ps in summary["per_seed"]]
            ax.scatter([x] * len(ys), ys, color="k", s=8, zorder=3)
    ax.set(xticks=np.arange(len(methods)) + width, xticklabels=methods, ylabel="R^2",
           ylim=(0, 1), title="what predicts edit success")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "localize_edit")
