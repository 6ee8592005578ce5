"""Semi-NMF features of MLP activations against SAE latents and difference-in-means directions,
compared by causal steering at matched norm.

    python -m experiments.semi_nmf_features --config=configs/semi_nmf_features.py \
        --workdir=workdirs/semi_nmf_features

Paper: Shafran, Geiger & Geva 2025, "Decomposing MLP Activations into Interpretable Features
via Semi-Nonnegative Matrix Factorization". Their method (checked against the paper's text and
the authors' code, `factorization/seminmf.py`, `intervention/intervener.py`): one layer's MLP
hidden activations over the tokens of a dataset, `A [d_mlp, n]`, factorised as `A ~= Z Y`,
`Y >= 0` (`jaxinterp.analysis.semi_nmf`: `F = Z`, `G = Y^T`; least-squares F step, hard
winner-take-all on each feature's neurons, Ding et al.'s multiplicative G step); a feature is
a column `z` of Z, a combination of neurons, and steering adds `alpha * z / ||z||` to
`hook_post` at every position. They compare with SAEs (Llamascope / Gemmascope, residual
stream) and difference-in-means (DiffMeans) directions, at steering strengths set to a target
KL on the steered prompt, scoring the generations with an LLM judge.

Here (training is part of the experiment): the factual-recall world
(`jaxinterp/data/factual_recall.py`; closed-book and in-context-counterfactual prompts) and the
base model of `configs/factual_recall.py:base_model_config()`, trained by
`jaxinterp.train.train` per seed. The subjects are split in half per seed.
- Activations: `blocks.{layer}.mlp.hook_post` at every prompt position (answer and padding
  excluded) of the identification half's prompts: each subject's closed-book prompt of every
  relation and its counterfactual prompt with every other attribute of the relation's group
  (the answer is the in-context attribute), rows [n, d_mlp].
- Semi-NMF of those rows (`semi_nmf(rows.T, k, ...)`); an SAE (`jaxinterp.sae.fit`, TopK,
  `d_sae = k` latents: the same dictionary size) on the same rows.
- Concepts: "the next token is attribute a" for every attribute a (of its relation r). Labels
  at the answer-predicting position (`answer_pos - 1`) of relation r's identification prompts:
  answer a (positive) or another attribute of r (negative). Difference-in-means: mean
  hook_post of the positives minus the negatives'. Semi-NMF / SAE: the feature (column of F,
  row of W_dec) whose coefficient (G, the SAE's latent activation) has the highest average
  precision for the labels (`analysis.editing.average_precision`; the paper picks features by
  their activating contexts and a judge, here the labels do that). Control: a random direction.
- Steering: every direction z lives in neuron space; its residual-stream write is
  `v = z @ W_out` (W_out [d_mlp, d_model]: adding z at hook_post adds exactly v at
  hook_mlp_out, the MLP's output being linear in hook_post). Matched norm: each v is scaled to
  unit norm times `strength x ref`, ref = the mean norm of `hook_mlp_out` at the answer
  positions of the identification prompts, and added (`ji.Add`) at `blocks.{layer}.hook_mlp_out`
  at every position. All (method x concept) directions x strengths are one call: `jax.vmap`
  over the directions of `steering.strength_sweep`.
- Measured on the other (held-out) half of the subjects, closed-book prompts: target = a's
  probability on relation r's prompts whose fact is not a (success = argmax is a, and the
  change of log p(a)); side effect = KL(clean || steered) of the answer distribution on the
  prompts of the other relations (unrelated prompts). Matched-KL numbers interpolate each
  concept's success at given unrelated KLs (a running maximum makes KL monotone in strength).

Writes `curves.png` (success, change of log p(a) and unrelated KL against strength per
method), `tradeoff.png` (success against unrelated KL), `summary.json`. Measured numbers:
`configs/semi_nmf_features.py`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

import jaxinterp as ji
from experiments import runner
from experiments.plotting import pyplot
from jaxinterp import sae
from jaxinterp.analysis import editing, semi_nmf
from jaxinterp.analysis import steering as S
from jaxinterp.data.factual_recall import FactualRecallConfig, make_prompts

METHODS = ("semi_nmf", "sae", "diff_means", "random")

# --- the base model and the prompts ---------------------------------------------------------


def world(base: ConfigDict) -> FactualRecallConfig:
    return FactualRecallConfig(name="world", **dict(base.data.builder_kwargs))


def train_base(base: ConfigDict, workdir: str, seed: int):
    """`(model, variables)` of the base model trained at `seed` in `workdir` (a finished run
    there is loaded, not retrained)."""
    config = ConfigDict(base.to_dict())
    config.seed = int(seed)
    if not os.path.isdir(os.path.join(workdir, "checkpoints", str(config.num_train_steps))):
        ji.train.train(config, workdir)
    return ji.train.load(workdir)


def identification_prompts(cfg: FactualRecallConfig, subjects) -> dict[str, np.ndarray]:
    """Closed-book prompts of every relation of `subjects`, and their counterfactual prompts
    with every other attribute of the relation (answer: the in-context attribute)."""
    subj, rel, ctx = [], [], []
    for s in map(int, subjects):
        for r in range(cfg.n_relations):
            subj.append(s), rel.append(r), ctx.append(None)
            for a in cfg.relation_attributes(r):
                if a != cfg.fact_table[s, r]:
                    subj.append(s), rel.append(r), ctx.append(int(a))
    return make_prompts(cfg, subj, rel, ctx)


def test_prompts(cfg: FactualRecallConfig, subjects) -> dict[str, np.ndarray]:
    """Closed-book prompts of every relation of `subjects` (relation-major)."""
    subjects = np.asarray(subjects)
    rel = np.repeat(np.arange(cfg.n_relations), len(subjects))
    return make_prompts(cfg, list(map(int, np.tile(subjects, cfg.n_relations))),
                        list(map(int, rel)))


def w_out(variables: Any, layer: int) -> jax.Array:
    """Layer `layer`'s MLP W_out [d_mlp, d_model] (unrolled or scanned layers)."""
    params = nn.meta.unbox(variables)["params"]
    if "blocks" in params:
        return params["blocks"]["mlp"]["W_out"][layer]
    return params[f"blocks_{layer}"]["mlp"]["W_out"]


# --- the directions -------------------------------------------------------------------------


def fit_sae(rows: np.ndarray, config: ConfigDict, site: str, seed: int):
    """A TopK SAE with `config.k_features` latents on the activation rows [n, d]."""
    sc = sae.SAEConfig("topk", d_in=rows.shape[1], d_sae=int(config.k_features),
                       k=int(config.sae_k), site=site)
    tc = sae.TrainConfig(num_steps=int(config.sae_steps), batch_size=int(config.sae_batch),
                         learning_rate=float(config.sae_lr), warmup_steps=20, seed=seed,
                         log_every=int(config.sae_steps))
    rng = np.random.default_rng([seed, 5])

    def batches():
        while True:
            order = rng.permutation(len(rows))
            for i in range(0, len(rows) - tc.batch_size + 1, tc.batch_size):
                yield {site: rows[order[i:i + tc.batch_size]]}

    result = sae.fit(sc, tc, activations=batches(), verbose=False)
    out = sae.SAE(sc).apply({"params": result.params}, jnp.asarray(rows))
    return result.params, np.asarray(out.acts), np.asarray(out.recon)


def concept_directions(acts_ans, g_ans, sae_ans, f, w_dec, relation, answer, concepts, key):
    """Neuron-space directions [len(METHODS), n_concepts, d_mlp] and the chosen features'
    average precision [2, n_concepts] (semi-NMF, SAE), from the answer-position activations
    acts_ans [B, d_mlp], semi-NMF coefficients g_ans [B, k], SAE latents sae_ans [B, k]."""
    dirs = np.zeros((len(METHODS), len(concepts), acts_ans.shape[1]), np.float32)
    aps = np.zeros((2, len(concepts)))
    rand = np.asarray(jax.random.normal(key, (len(concepts), acts_ans.shape[1])))
    for c, (r, a) in enumerate(concepts):
        sel = relation == r
        lab = answer[sel] == a
        ap_g = np.asarray(editing.average_precision(jnp.asarray(g_ans[sel]), jnp.asarray(lab)))
        ap_s = np.asarray(editing.average_precision(jnp.asarray(sae_ans[sel]),
                                                    jnp.asarray(lab)))
        ap_s = np.where(sae_ans[sel].max(0) > 0, ap_s, 0.0)  # a latent that never fires
        i, j = int(np.argmax(ap_g)), int(np.argmax(ap_s))
        aps[:, c] = ap_g[i], ap_s[j]
        dirs[0, c] = f[:, i]
        dirs[1, c] = w_dec[j]
        dirs[2, c] = acts_ans[sel][lab].mean(0) - acts_ans[sel][~lab].mean(0)
        dirs[3, c] = rand[c]
    return dirs, aps


# --- the experiment -------------------------------------------------------------------------


def check_config(config: ConfigDict, cfg: FactualRecallConfig, n_layers: int) -> None:
    if not 0 <= config.layer < n_layers:
        raise ValueError(f"layer={config.layer}: the base model has layers 0..{n_layers - 1}")
    if config.init not in semi_nmf.INITS:
        raise ValueError(f"init={config.init!r}: choose from {semi_nmf.INITS}")
    if not 0 < config.keep <= 1:
        raise ValueError(f"keep={config.keep}: the fraction of neurons kept per feature must "
                         "be in (0, 1]")
    if cfg.context_prob <= 0:
        raise ValueError("the base model's world needs context_prob > 0: the concepts' "
                         "identification prompts include in-context counterfactuals")
    if float(config.strengths[0]) != 0:
        raise ValueError(f"strengths={tuple(config.strengths)} must start at 0 (the clean run)")
    if float(config.report_strength) not in [float(x) for x in config.strengths]:
        raise ValueError(f"report_strength={config.report_strength} must be one of the "
                         f"strengths {tuple(config.strengths)}")


def analyse_seed(model, variables, cfg: FactualRecallConfig, config: ConfigDict,
                 seed: int) -> dict[str, Any]:
    layer = int(config.layer)
    post, out_site = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_mlp_out"
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(cfg.n_subjects)
    ident, test = order[:cfg.n_subjects // 2], order[cfg.n_subjects // 2:]

    ib = identification_prompts(cfg, ident)
    _, cache = ji.run(model, variables, jnp.asarray(ib["tokens"]), capture=[post, out_site])
    acts = np.asarray(cache[post], np.float32)  # [B, L, d_mlp]
    mask = np.arange(cfg.seq_len)[None] < ib["answer_pos"][:, None]  # prompt tokens
    rows = acts[mask]  # [n, d_mlp]
    b = np.arange(len(mask))
    ans_row = (np.cumsum(mask.ravel()) - 1).reshape(mask.shape)[b, ib["answer_pos"] - 1]
    ref = float(np.linalg.norm(np.asarray(cache[out_site])[b, ib["answer_pos"] - 1], axis=-1)
                .mean())

    t = time.time()
    key = jax.random.key(seed)
    fit = semi_nmf.semi_nmf(rows.T, int(config.k_features), jax.random.fold_in(key, 1),
                            num_iters=int(config.num_iters), keep=float(config.keep),
                            init=config.init)
    f, g = np.asarray(fit.F), np.asarray(fit.G)
    snmf_s = time.time() - t
    t = time.time()
    sae_params, sae_acts, sae_recon = fit_sae(rows, config, post, seed)
    sae_s = time.time() - t
    total = float((rows ** 2).sum())
    recon = {"semi_nmf": 1 - float(((rows - g @ f.T) ** 2).sum()) / total,
             "sae": 1 - float(((rows - sae_recon) ** 2).sum()) / total}

    concepts = [(r, int(a)) for r in range(cfg.n_relations) for a in cfg.relation_attributes(r)]
    dirs, aps = concept_directions(acts[b, ib["answer_pos"] - 1], g[ans_row],
                                   sae_acts[ans_row], f, np.asarray(sae_params["W_dec"]),
                                   ib["relation"], ib["answer"], concepts,
                                   jax.random.fold_in(key, 2))
    vecs = jnp.asarray(dirs) @ w_out(variables, layer).astype(jnp.float32)  # [M, C, d_model]
    resid_norm = np.asarray(jnp.linalg.norm(vecs, axis=-1))  # before normalising
    vecs = ref * vecs / jnp.linalg.norm(vecs, axis=-1, keepdims=True)
    unit = vecs / ref
    cos_dim = np.asarray(jnp.einsum("mcd,cd->mc", unit, unit[2]))  # with diff-in-means

    tb = test_prompts(cfg, test)
    tokens = jnp.asarray(tb["tokens"])
    tb_rows, where = np.arange(len(tokens)), jnp.asarray(tb["answer_pos"] - 1)

    def metric(out):  # [T, vocab] log-probs at the answer positions
        return jax.nn.log_softmax(out[tb_rows, where].astype(jnp.float32))

    strengths = jnp.asarray(config.strengths, jnp.float32)
    flat = vecs.reshape(-1, vecs.shape[-1])
    t = time.time()
    lp = jax.vmap(lambda v: S.strength_sweep(
        model, variables, tokens, lambda s: [ji.Add(out_site, v, scale=s)], strengths,
        metric=metric))(flat)  # [M * C, S, T, vocab]
    lp = np.asarray(lp).reshape(len(METHODS), len(concepts), len(strengths), *lp.shape[2:])
    sweep_s = time.time() - t
    clean = np.asarray(metric(ji.run(model, variables, tokens)[0]))  # [T, vocab]
    pred = lp.argmax(-1)  # [M, C, S, T]
    kl_all = (np.exp(clean) * (clean - lp)).sum(-1)  # [M, C, S, T]
    clean_acc = float((clean.argmax(-1) == tb["memorised"]).mean())

    success = np.zeros(pred.shape[:3])
    dlogp, kl, kept = np.zeros_like(success), np.zeros_like(success), np.zeros_like(success)
    for c, (r, a) in enumerate(concepts):
        tgt = (tb["relation"] == r) & (tb["memorised"] != a)
        unrel = tb["relation"] != r
        success[:, c] = (pred[:, c][..., tgt] == a).mean(-1)
        dlogp[:, c] = (lp[:, c][..., tgt, a] - clean[tgt, a]).mean(-1)
        kl[:, c] = kl_all[:, c][..., unrel].mean(-1)
        kept[:, c] = (pred[:, c][..., unrel] == tb["memorised"][unrel]).mean(-1)
    at_kl = np.array([[[at_equal_kl(kl[m, c], success[m, c], x) for x in config.kl_targets]
                       for c in range(len(concepts))] for m in range(len(METHODS))])
    return {"seed": seed, "ref_norm": ref, "clean_accuracy": clean_acc,
            "n_rows": len(rows), "explained": recon,
            "semi_nmf_objective_first_last": [float(fit.objective[0]),
                                              float(fit.objective[-1])],
            "ap_chosen": {"semi_nmf": float(aps[0].mean()), "sae": float(aps[1].mean())},
            "cos_with_diff_means": {m: float(cos_dim[i].mean()) for i, m in enumerate(METHODS)},
            "neuron_to_resid_gain": {m: float(np.mean(resid_norm[i] / np.maximum(
                np.linalg.norm(dirs[i], axis=-1), 1e-12))) for i, m in enumerate(METHODS)},
            "curves": {m: {"success": success[i].mean(0), "dlogp": dlogp[i].mean(0),
                           "kl_unrelated": kl[i].mean(0), "kept_unrelated": kept[i].mean(0)}
                       for i, m in enumerate(METHODS)},
            "success_at_kl": {m: at_kl[i].mean(0) for i, m in enumerate(METHODS)},
            "timings": {"semi_nmf_s": round(snmf_s, 1), "sae_s": round(sae_s, 1),
                        "sweep_s": round(sweep_s, 1)}}


def at_equal_kl(kls: np.ndarray, values: np.ndarray, target: float) -> float:
    """`values` [S] interpolated at unrelated KL `target` along a strength sweep (KL [S] made
    monotone by a running maximum; beyond its range: the end value)."""
    return float(np.interp(target, np.maximum.accumulate(kls), values))


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    cfg = world(config.base)
    check_config(config, cfg, int(config.base.model.n_layers))
    seeds = [int(s) for s in config.seeds]
    per_seed, train_s = [], 0.0
    for s in seeds:
        t = time.time()
        m = seeds[0] if config.share_base else s
        model, variables = train_base(config.base, os.path.join(
            config.base_workdir or workdir, f"base_seed{m}"), m)
        train_s += time.time() - t
        per_seed.append(analyse_seed(model, variables, cfg, config, s))
    strengths = [float(x) for x in config.strengths]
    curves = {m: {k: np.mean([np.asarray(p["curves"][m][k]) for p in per_seed], 0)
                  for k in ("success", "dlogp", "kl_unrelated", "kept_unrelated")}
              for m in METHODS}
    report = strengths.index(float(config.report_strength))
    summary: dict[str, Any] = {
        "seeds": seeds, "strengths": strengths, "kl_targets": list(config.kl_targets),
        "report_strength": float(config.report_strength),
        "curves": curves,
        "at_report_strength": {m: {k: float(curves[m][k][report]) for k in curves[m]}
                               for m in METHODS},
        "success_at_kl": {m: np.mean([p["success_at_kl"][m] for p in per_seed], 0)
                          for m in METHODS},
        "per_seed": [{**{k: v for k, v in p.items() if k != "curves"},
                      "at_report_strength": {m: {k: float(np.asarray(v)[report])
                                                 for k, v in p["curves"][m].items()}
                                             for m in METHODS}} for p in per_seed],
        "timings": {"train_s": round(train_s, 1)},
    }
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "curves.png": lambda path: plot_curves(summary, path),
        "tradeoff.png": lambda path: plot_tradeoff(summary, path)})


# --- figures --------------------------------------------------------------------------------

COLORS = {"semi_nmf": "C0", "sae": "C1", "diff_means": "C2", "random": "0.5"}


def plot_curves(summary, path: str) -> None:
    """Success, change of log p(a) and unrelated KL against strength, per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    x = summary["strengths"]
    for ax, (k, label) in zip(axes, (("success", "target success (argmax = a)"),
                                     ("dlogp", "change of log p(a) (nats)"),
                                     ("kl_unrelated", "KL on unrelated prompts (nats)")),
                              strict=True):
        for m in METHODS:
            ax.plot(x, summary["curves"][m][k], "o-", ms=3, color=COLORS[m], label=m)
        ax.set(xlabel="strength (x mean ||mlp_out||)", ylabel=label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"steering at matched residual norm, mean over concepts and "
                 f"{len(summary['seeds'])} seed(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoff(summary, path: str) -> None:
    """Target success against the KL on unrelated prompts (the strength sweep)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    for m in METHODS:
        c = summary["curves"][m]
        ax.plot(c["kl_unrelated"], c["success"], "o-", ms=3, color=COLORS[m], label=m)
    ax.set(xlabel="KL on unrelated prompts (nats)", ylabel="target success", xscale="symlog")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "semi_nmf_features",
                omit=("curves", "per_seed"))
