"""Steering a trained model's factual recall: reading vectors, mean-difference vectors, latent
subspace steering and a weighted steering controller, each measured as behaviour change
against the KL on unrelated prompts.

    python -m experiments.steering --config=configs/steering.py --workdir=workdirs/steering

Papers: Zou et al. 2023, "Representation Engineering" (reading vectors: PCA of paired
differences); Turner et al. 2023 / Rimsky et al. 2024 (mean-difference activation addition);
Hegazy, Elhoushi & Alanwar 2025, "Guiding Giants: Lightweight Controllers for Weighted
Activation Steering in LLMs" (a controller that outputs a global scale and per-layer weights).
Methods: `jaxinterp.analysis.steering` and `jaxinterp.tuning.SteeringController` (their
docstrings say what was checked against the papers and the authors' code).

Model and behaviour. The base model of `configs/factual_recall.py` (`base_model_config`, 2
layers with MLPs) is trained with `jaxinterp.train.train` on the `factual_recall` world
(subjects, relations, typed attributes; closed-book and in-context-counterfactual prompts). The
behaviour to change: on closed-book prompts of the *source* relation, `BOS s r_src`, make the
model emit the attribute of the *target* relation for the same subject, `fact(s, r_tgt)`
("relation switch"). Switch rate = the fraction of source prompts (all subjects) whose argmax
at the answer position is `fact(s, r_tgt)`. Unrelated prompts: closed-book prompts of every
other relation and in-context-counterfactual prompts of every relation (one per subject and
relation); KL = mean `KL(base || steered)` of the next-token distribution at their answer
position. Every analysis prompt is built with `make_prompts` (the dataset's own format).

Vectors (at the residual points `config.sites`, read at each prompt's last token): mean difference
and RepE reading vector of (target-relation prompt - source-relation prompt) pairs of the same
subject; the reading vector (unit) is scaled by the mean projection of the differences, so
strength 1 is the average shift for both. A logistic probe per site (held-out accuracy of
target vs source activations) chooses a site (`probe_sites`, ties: the earliest). Every
vector is added at every position. Strength-response curves: one compiled call per vector
kind over (site x strength) (`strength_sweep(each_site=True)`); latent-subspace steering at
the probe's site: the top-k reading directions, coordinates moved towards the target class's
mean coordinates (`subspace_steer`), strength 0 .. `max`, one call. "Fixed vector": the
mean-difference vectors at the controller's sites, all at one strength, swept.

Controller. `tuning.SteeringController` (config `steering_controller`) reads the last
position's residual stream (input site `controller.input_site`, a first unsteered pass) and
outputs a scale and one sigmoid weight per steered site (`controller.sites`) of the
precomputed mean-difference vectors (saved to `<workdir>/vectors.npy`, named in the config).
It is trained with `jaxinterp.train.train` and `config.tuning.base` = the base model's
workdir, on the `relation_switch` data (`jaxinterp.data.relation_switch`; next-token loss on
the answer): with
probability `switch_prob` a closed-book source-relation prompt whose answer is
`fact(s, r_tgt)`, otherwise a `factual_recall` example that is not a closed-book
source-relation prompt (answered as the base model was taught), the discriminative
harmful/benign mix of the paper. Its strength-response curve multiplies its output by
`m` in `controller_multipliers` (one vmapped call; m = 1 is the trained controller, checked
against `Tuned.apply`). Equal-KL comparison: the fixed vector's switch rate interpolated at
the controller's KL (m = 1).

Writes `curves.png` (switch rate and KL against strength per site, both vector kinds),
`tradeoff.png` (switch rate against unrelated KL for every method), `summary.json`. Measured
numbers: `configs/steering.py`.
"""

from __future__ import annotations

import fnmatch
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
from jaxinterp import tuning
from jaxinterp.analysis import steering as S
from jaxinterp.data.factual_recall import FactualRecallConfig
from jaxinterp.data.relation_switch import one_prompt

METRICS = ("switch", "p_switch", "kl_unrelated", "acc_unrelated", "kept_memorised")


# --- prompts and metrics -------------------------------------------------------------------


def world(config: ConfigDict) -> FactualRecallConfig:
    return FactualRecallConfig(name="x", **dict(config.base.data.builder_kwargs))


def analysis_prompts(cfg: FactualRecallConfig, source: int, target: int, seed: int):
    """`(inputs [B, 9], answer position [B], kinds)` for the target prompts (closed-book
    source relation, every subject), then the unrelated ones (closed-book other relations;
    one counterfactual prompt per subject and relation); and the vector pairs (target- and
    source-relation closed-book prompts of each subject): `(pos, neg, their positions)`."""
    rng = np.random.default_rng([seed, 77])
    subjects = np.arange(cfg.n_subjects)
    rows = [one_prompt(cfg, s, source, None) for s in subjects]
    n_target = len(rows)
    rows += [one_prompt(cfg, s, r, None) for r in range(cfg.n_relations) if r != source
             for s in subjects]
    for r in range(cfg.n_relations):
        for s in subjects:
            others = cfg.relation_attributes(r)
            ctx = int(rng.choice(others[others != cfg.fact_table[s, r]]))
            rows.append(one_prompt(cfg, s, r, ctx))
    batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
    pos_rows = [one_prompt(cfg, s, target, None) for s in subjects]
    pairs = (np.stack([r["tokens"][:-1] for r in pos_rows]), batch["tokens"][:n_target, :-1],
             batch["answer_pos"][:n_target] - 1)
    return batch, n_target, pairs


def make_metric(base_logits: jax.Array, batch: dict, n_target: int, switch_to: np.ndarray):
    """`output [B, pos, vocab] -> [len(METRICS)]` at each prompt's answer position."""
    rows = np.arange(len(batch["answer_pos"]))
    where = jnp.asarray(batch["answer_pos"] - 1)
    base_lp = jax.nn.log_softmax(base_logits[rows, where].astype(jnp.float32))[n_target:]
    answer = jnp.asarray(batch["answer"])
    memorised = jnp.asarray(batch["memorised"][:n_target])
    switch_to = jnp.asarray(switch_to)

    def metric(out):
        lp = jax.nn.log_softmax(out[rows, where].astype(jnp.float32))
        pred = lp.argmax(-1)
        tgt_lp, unrel_lp = lp[:n_target], lp[n_target:]
        kl = (jnp.exp(base_lp) * (base_lp - unrel_lp)).sum(-1).mean()
        return jnp.stack([
            (pred[:n_target] == switch_to).mean(),
            jnp.exp(jnp.take_along_axis(tgt_lp, switch_to[:, None], 1)).mean(),
            kl,
            (pred[n_target:] == answer[n_target:]).mean(),
            (pred[:n_target] == memorised).mean()])

    return metric


# --- training ------------------------------------------------------------------------------


def train_base(config: ConfigDict, workdir: str, data_dir: str, seed: int):
    c = ConfigDict(config.base.to_dict())
    c.seed = seed
    c.data.data_dir = data_dir
    base_dir = os.path.join(workdir, f"base_seed{seed}")
    ji.train.train(c, base_dir)
    model, variables = ji.train.load(base_dir)
    return base_dir, model, variables


def train_controller(config: ConfigDict, workdir: str, data_dir: str, base_dir: str,
                     vectors_path: str, seed: int):
    c = ConfigDict(config.base.to_dict())
    cc = config.controller
    c.seed = seed
    c.data.data_dir = data_dir
    c.data.name = "relation_switch"
    c.data.builder_kwargs.update(source_relation=config.source_relation,
                                 target_relation=config.target_relation,
                                 switch_prob=cc.switch_prob)
    c.num_train_steps = cc.num_train_steps
    c.eval_every_steps = c.checkpoint_every_steps = cc.num_train_steps
    c.optimizer.learning_rate = cc.learning_rate
    c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, cc.num_train_steps // 5)
    c.tuning.base = base_dir
    c.tuning.method = ConfigDict({"name": "steering_controller", "vectors": vectors_path,
                                  "sites": cc.sites, "input_site": cc.input_site,
                                  "hidden": cc.hidden, "patch_scale": cc.patch_scale})
    ctrl_dir = os.path.join(workdir, f"controller_seed{seed}")
    ji.train.train(c, ctrl_dir)
    return ji.train.load(ctrl_dir)


# --- the experiment -------------------------------------------------------------------------


def at_equal_kl(curve: np.ndarray, kl: float) -> float:
    """A curve's switch rate interpolated at unrelated KL `kl` (curve [n, METRICS], its KL
    made monotone by a running maximum; beyond its range: its end value)."""
    kls = np.maximum.accumulate(curve[:, 2])
    return float(np.interp(kl, kls, curve[:, 0]))


def one_seed(config: ConfigDict, workdir: str, data_dir: str, seed: int) -> dict[str, Any]:
    t0 = time.time()
    cfg = world(config)
    src, tgt = config.source_relation, config.target_relation
    base_dir, model, variables = train_base(config, workdir, data_dir, seed)
    t_base = time.time() - t0
    batch, n_target, (pos, neg, pair_pos) = analysis_prompts(cfg, src, tgt, seed)
    inputs = jnp.asarray(batch["tokens"][:, :-1])
    base_logits = ji.run(model, variables, inputs)[0]
    switch_to = cfg.fact_table[batch["subject"][:n_target], tgt]
    metric = make_metric(base_logits, batch, n_target, switch_to)
    clean = np.asarray(metric(base_logits))

    sites = tuple(config.sites)
    acts = S.contrastive_activations(model, variables, jnp.asarray(pos), jnp.asarray(neg),
                                     sites, position=pair_pos)
    mean_vecs = {s: S.mean_difference(a, b) for s, (a, b) in acts.items()}
    pca_vecs = {}
    for s, (a, b) in acts.items():
        v = S.principal_direction(a, b)
        pca_vecs[s] = v * jnp.mean((a - b) @ v)
    probe = S.probe_sites(acts, seed=seed)
    chosen = S.best_site(probe)
    strengths = jnp.asarray(config.strengths, jnp.float32)
    curves = {kind: np.asarray(S.strength_sweep(model, variables, inputs, vecs, strengths,
                                                each_site=True, metric=metric))
              for kind, vecs in (("mean", mean_vecs), ("pca", pca_vecs))}

    a, b = acts[chosen]
    basis = S.principal_directions(a, b, k=config.subspace_k)
    target_coords = jnp.mean(a @ basis.T, 0)
    sub_strengths = jnp.asarray(config.subspace_strengths, jnp.float32)
    subspace = np.asarray(S.strength_sweep(
        model, variables, inputs,
        lambda st: [S.subspace_steer(chosen, basis, set_to=target_coords, strength=st)],
        sub_strengths, metric=metric))

    ctrl_sites = [s for s in mean_vecs if fnmatch.fnmatchcase(s, config.controller.sites)]
    vectors_path = os.path.join(workdir, f"vectors_seed{seed}.npy")
    np.save(vectors_path, np.stack([np.asarray(mean_vecs[s]) for s in ctrl_sites]))
    fixed = np.asarray(S.strength_sweep(model, variables, inputs,
                                        {s: mean_vecs[s] for s in ctrl_sites}, strengths,
                                        metric=metric))
    t1 = time.time()
    tuned, tv = train_controller(config, workdir, data_dir, base_dir, vectors_path, seed)
    t_ctrl = time.time() - t1
    frozen = tuning.Frozen(model, tv[tuning.FROZEN]["variables"])
    frozen_equal = all(bool(jnp.array_equal(x, y)) for x, y in zip(
        jax.tree.leaves(frozen.variables["params"]), jax.tree.leaves(variables["params"]),
        strict=True))
    scale, weights, _ = tuned.method.apply({"params": tv["params"]["method"]}, frozen, inputs,
                                           method="controls")
    strength = config.controller.patch_scale * scale[:, None] * weights  # [B, sites]
    vec_stack = np.load(vectors_path)

    def controller_ivs(m):
        return S.steer({s: jnp.asarray(vec_stack[i]) for i, s in enumerate(ctrl_sites)},
                       {s: strength[:, i, None, None] for i, s in enumerate(ctrl_sites)},
                       scale=m)

    mults = jnp.asarray(config.controller_multipliers, jnp.float32)
    ctrl_curve = np.asarray(S.strength_sweep(model, variables, inputs, controller_ivs, mults,
                                             metric=metric))
    applied = tuned.apply(tv, inputs)
    swept_one = ji.run(model, variables, inputs, interventions=controller_ivs(1.0))[0]
    ctrl = np.asarray(metric(applied))
    kl = float(ctrl[2])

    best = int(np.argmax(curves["mean"][:, :, 0].max(1)))
    summary = {
        "seed": seed, "base_accuracy_unrelated": float(clean[3]),
        "base_switch": float(clean[0]), "base_kept_memorised": float(clean[4]),
        "probe_accuracy": probe, "probe_site": chosen,
        "best_site_by_sweep": sites[best],
        "max_switch": {kind: dict(zip(sites, c[:, :, 0].max(1).tolist(), strict=True))
                       for kind, c in curves.items()},
        "curves": {kind: c.tolist() for kind, c in curves.items()},
        "subspace": subspace.tolist(), "fixed": fixed.tolist(),
        "controller_curve": ctrl_curve.tolist(),
        "controller": dict(zip(METRICS, ctrl.tolist(), strict=True)),
        "controller_sites": ctrl_sites,
        "controller_scale_target_vs_unrelated": [float(jnp.mean(scale[:n_target])),
                                                 float(jnp.mean(scale[n_target:]))],
        "controller_weights_target": np.asarray(weights[:n_target].mean(0)).tolist(),
        "controller_apply_vs_sweep_max_abs": float(jnp.abs(applied - swept_one).max()),
        "frozen_bit_identical": frozen_equal,
        "equal_kl": {"kl": kl, "controller_switch": float(ctrl[0]),
                     "fixed_vector_switch": at_equal_kl(fixed, kl),
                     "best_single_site_switch": at_equal_kl(curves["mean"][best], kl),
                     "subspace_switch": at_equal_kl(subspace, kl)},
        "timings_s": {"base_train": round(t_base, 1), "controller_train": round(t_ctrl, 1)},
    }
    summary["controller_beats_fixed_at_equal_kl"] = bool(
        summary["equal_kl"]["controller_switch"] > summary["equal_kl"]["fixed_vector_switch"])
    return summary


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Training, vectors, sweeps, the controller, figures and summary (module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    per_seed = [one_seed(config, workdir, data_dir, int(s)) for s in config.seeds]
    summary = {
        "seeds": [int(s) for s in config.seeds], "sites": list(config.sites),
        "metrics": list(METRICS),
        "strengths": list(config.strengths), "subspace_strengths": list(config.subspace_strengths),
        "controller_multipliers": list(config.controller_multipliers),
        "per_seed": per_seed,
        "controller_beats_fixed_at_equal_kl": [s["controller_beats_fixed_at_equal_kl"]
                                               for s in per_seed],
        "runtime_s": round(time.time() - t0, 1),
    }
    return runner.write_outputs(workdir, summary, {
        "curves.png": lambda p: plot_curves(summary, p),
        "tradeoff.png": lambda p: plot_tradeoff(summary, p)})


# --- figures --------------------------------------------------------------------------------


def plot_curves(summary: dict, path: str) -> None:
    """Switch rate and unrelated KL against strength, per site (seed 0; solid: mean
    difference, dashed: reading vector)."""
    plt = pyplot()
    s0 = summary["per_seed"][0]
    xs = summary["strengths"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for kind, ls in (("mean", "-"), ("pca", "--")):
        c = np.asarray(s0["curves"][kind])
        for i, site in enumerate(summary["sites"]):
            label = f"{site.replace('blocks.', 'L').replace('.hook_', ' ')} ({kind})"
            axes[0].plot(xs, c[i, :, 0], ls=ls, color=f"C{i}", label=label)
            axes[1].plot(xs, c[i, :, 2], ls=ls, color=f"C{i}")
    axes[0].set(xlabel="strength", ylabel="switch rate (source prompts)")
    axes[1].set(xlabel="strength", ylabel="KL on unrelated prompts", yscale="symlog")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"strength-response (seed {s0['seed']}; probe site {s0['probe_site']})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoff(summary: dict, path: str) -> None:
    """Switch rate against unrelated KL: every site's mean-difference curve, the fixed
    multi-site vector, the subspace steering and the controller (its multiplier sweep; the
    trained one starred), one panel per seed."""
    plt = pyplot()
    n = len(summary["per_seed"])
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
    for ax, s in zip(axes[0], summary["per_seed"], strict=True):
        c = np.asarray(s["curves"]["mean"])
        for i, site in enumerate(summary["sites"]):
            ax.plot(c[i, :, 2], c[i, :, 0], color=f"C{i}", alpha=0.5, lw=1,
                    label=site.replace("blocks.", "L").replace(".hook_", " "))
        for key, style, label in (("fixed", "k-o", "fixed vector (controller sites)"),
                                  ("subspace", "m-s", f"subspace at {s['probe_site']}"),
                                  ("controller_curve", "r-^", "controller x m")):
            arr = np.asarray(s[key])
            ax.plot(arr[:, 2], arr[:, 0], style, ms=3, label=label)
        ax.plot([s["controller"]["kl_unrelated"]], [s["controller"]["switch"]], "r*", ms=12)
        ax.set(xscale="symlog", xlabel="KL on unrelated prompts", ylabel="switch rate",
               title=f"seed {s['seed']}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "steering", omit=("per_seed",))
