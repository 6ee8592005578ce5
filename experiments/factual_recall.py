"""Mechanisms of factual recall in a small transformer trained on a synthetic world: causal
tracing, one head that moves the answer between memory and context, and the suppression of
the memorised answer seen through direct logit attribution.

    python -m experiments.factual_recall --config=configs/factual_recall.py \
        --workdir=workdirs/factual_recall

Papers and what was checked of them:
  Meng et al. 2022, "Locating and Editing Factual Associations in GPT" (ROME): causal tracing,
    `jaxinterp.analysis.tracing` (its docstring quotes the method and ROME's code).
  Yu, Merullo & Pavlick 2023, "Characterizing Mechanisms for Factual Recall in Language
    Models" (abstract): with a counterfactual prefix ("The capital of Poland is London"), "we
    use head attribution to identify individual attention heads that either promote the
    memorized answer or the in-context answer in the logits. By scaling up or down the value
    vector of these heads, we can control the likelihood of using the in-context answer on
    new data ... increase the rate of generating the in-context answer to 88% of the time
    simply by scaling a single head at runtime". Head attribution (their Figure 4): each
    head's output through its slice of W_O, dotted with the unembedding of the in-context
    minus the memorised answer: `direct_logit_attribution(..., target=in_context,
    baseline=memorised).heads` (without the final norm's frozen scale they also omit; the
    ranking is what is used).
  Lv et al. 2024, "Interpreting Key Mechanisms of Factual Recall in Transformer-Based
    Language Models" (abstract): "we observed a universal anti-overconfidence mechanism in the
    final layer of models, which suppresses correct predictions".

The world and the model: `jaxinterp/data/factual_recall.py` (subjects of 1-2 tokens, typed
relations, a fixed fact table; half the training prompts carry an in-context counterfactual
`BOS s r a' SEP s r -> a'`), the base model of `configs/factual_recall.base_model_config`
trained with `jaxinterp.train.train` once per seed (`trainer="train"`) or, for tests, the same
model, data, masked next-token loss and optimizer with the seeds in one `train_vmapped` call
(`trainer="vmapped"`). Analysis prompts use the two-piece subjects only, so every prompt of a
kind has the same layout (positions BOS s1 s2 r for closed-book prompts; BOS s1 s2 r a' SEP
s1 s2 r for counterfactual ones):

  (a) causal tracing (`analysis.causal_trace`) of every closed-book fact: noise 3 sigma of
      the subject embeddings on s1 s2, restoring resid_pre / mlp_out / attn_out at every
      (layer, position); `trace.png`, the indirect effect [layer, position] per site.
  (b) head scaling on counterfactual prompts (every fact x every other attribute of its
      relation, split into calibration and test halves): the in-context head is the head with
      the largest attribution to logit(in-context) - logit(memorised) on the calibration
      half (Yu et al.'s head attribution); the whole pattern of one head at a time is scaled
      by gamma (`analysis.head_scale_sweep` with every key selected: a `ji.Scale` of that
      head's `hook_pattern`, i.e. of its value-weighted output), every (gamma, layer, head)
      in one compiled call; `scaling.png` gives P(memorised), P(in-context) and the rates at
      which each is the argmax against gamma on the test half.
  (c) suppression: the direct logit attribution of each component (embeddings, each head,
      each layer's MLP and biases) to logit(memorised) minus the mean logit of the relation's
      other attributes (the in-context one excluded) at the last position, on counterfactual
      (test) vs closed-book prompts; `dla.png`. A component that suppresses the memorised
      answer when the context disagrees has a negative change (counterfactual - closed-book).

Writes `trace.png`, `scaling.png`, `dla.png` and `summary.json`. Measured numbers:
`configs/factual_recall.py`.
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
from ml_collections import ConfigDict

import jaxinterp as ji
from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.analysis.dla import direct_logit_attribution
from jaxinterp.analysis.head_scaling import head_scale_sweep
from jaxinterp.analysis.tracing import causal_trace, subject_noise
from jaxinterp.data.factual_recall import FactualRecallConfig, make_prompts
from jaxinterp.data.sources import load_source
from jaxinterp.train.config import build_model
from jaxinterp.train.loss import cross_entropy
from jaxinterp.train.vmapped import train_vmapped

CB_LABELS = ("BOS", "s1", "s2", "r")
METRICS = ("p_memorised", "p_in_context", "rate_memorised", "rate_in_context")


# --- training ---------------------------------------------------------------------------------


def world_of(config: ConfigDict) -> FactualRecallConfig:
    return FactualRecallConfig(name="world", **dict(config.base.data.builder_kwargs))


def train_models(config: ConfigDict, workdir: str, data_dir: str):
    """(model, [variables per seed], {seed: final train loss}) trained as `config.trainer`
    says (module docstring)."""
    seeds = [int(s) for s in config.seeds]
    if config.trainer == "train":
        variables, losses = [], {}
        for s in seeds:
            c = copy.deepcopy(config.base)
            c.seed = s
            c.data.data_dir = data_dir
            wd = os.path.join(workdir, f"seed_{s}")
            ji.train.train(c, wd)
            model, v = ji.train.load(wd)
            variables.append(v)
            losses[s] = _last_train_loss(wd)
        return model, variables, losses
    if config.trainer != "vmapped":
        raise ValueError(f"trainer={config.trainer!r}: choose 'train' (jaxinterp.train.train "
                         "per seed) or 'vmapped' (the seeds in one train_vmapped call)")
    model = build_model(config.base)
    src = load_source("factual_recall", "train", data_dir,
                      **dict(config.base.data.builder_kwargs))
    tokens = np.stack([src[i]["tokens"] for i in range(len(src))])
    mask = np.stack([src[i]["loss_mask"] for i in range(len(src))])
    bs, n = config.base.batch_size, len(tokens)
    dummy = jnp.zeros((1, tokens.shape[1] - 1), jnp.int32)

    def init_fn(key):
        return model.init(key, dummy)["params"]

    def loss_fn(params, key, args, step):
        # The data are arguments (run_args), not constants of the compiled program.
        idx = jax.random.randint(key, (bs,), 0, n)
        batch, m = args["tokens"][idx], args["mask"][idx]
        logits = model.apply({"params": params}, batch[:, :-1])
        return cross_entropy(logits, batch[:, 1:], m[:, 1:])

    # RBG keys: XLA:CPU compiles the vmapped threefry initialisation ~10x slower (measured
    # 27 s vs 3 s of CPU for this init at tiny settings).
    keys = jnp.stack([jax.random.key(s, impl="rbg") for s in seeds])
    per_run = {k: jnp.broadcast_to(v, (len(seeds), *v.shape))
               for k, v in (("tokens", tokens), ("mask", mask))}
    params, hist = train_vmapped(loss_fn, init_fn, keys, per_run, config.base.optimizer,
                                 config.base.num_train_steps)
    tail = max(1, config.base.num_train_steps // 20)
    losses = dict(zip(seeds, hist["train/loss"][:, -tail:].mean(1).tolist(), strict=True))
    return model, [{"params": jax.tree.map(lambda a, r=r: a[r], params)}
                   for r in range(len(seeds))], losses


def _last_train_loss(workdir: str) -> float:
    import json

    last = None
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "train/loss" in row:
                last = row["train/loss"]
    return float(last)


# --- prompts ----------------------------------------------------------------------------------


def analysis_prompts(world: FactualRecallConfig, n_counterfactual: int, seed: int):
    """Closed-book prompts (every fact of a two-piece subject) and counterfactual prompts
    (each such fact with up to `n_counterfactual` other attributes of its relation, 0: all),
    the latter with a calibration / test split. Returns (cb, cf, calibration mask [M])."""
    two = [s for s, p in enumerate(world.subject_tokens) if len(p) == 2]
    if not two:
        raise ValueError("the world has no two-piece subjects (two_token_prob=0): the "
                         "analysis prompts need one layout")
    subj, rel = np.meshgrid(two, np.arange(world.n_relations), indexing="ij")
    subj, rel = subj.ravel(), rel.ravel()
    cb = make_prompts(world, subj, rel)
    rng = np.random.default_rng([seed, 99])
    table = world.fact_table
    cs, cr, ca = [], [], []
    for s, r in zip(subj, rel, strict=True):
        others = [a for a in world.relation_attributes(r) if a != table[s, r]]
        if n_counterfactual:
            others = rng.permutation(others)[:n_counterfactual]
        cs += [s] * len(others)
        cr += [r] * len(others)
        ca += [int(a) for a in others]
    cf = make_prompts(world, cs, cr, ca)
    calibration = np.zeros(len(cs), bool)
    calibration[rng.permutation(len(cs))[:len(cs) // 2]] = True
    return cb, cf, calibration


def inputs_of(prompts: dict[str, np.ndarray]) -> jnp.ndarray:
    """The prompt tokens without the answer (every prompt has the same answer_pos)."""
    pos = np.unique(prompts["answer_pos"])
    assert len(pos) == 1, pos
    return jnp.asarray(prompts["tokens"][:, :int(pos[0])])


# --- analyses ---------------------------------------------------------------------------------


def answer_metrics(mem: jax.Array, ctx: jax.Array):
    """`logits [B, pos, V] -> [4, B]`: P(memorised), P(in-context) at the last position and
    whether each is the argmax."""

    def metric(logits):
        last = logits[:, -1].astype(jnp.float32)
        probs = jax.nn.softmax(last, -1)
        top = last.argmax(-1)
        rows = jnp.arange(last.shape[0])
        return jnp.stack([probs[rows, mem], probs[rows, ctx], (top == mem).astype(jnp.float32),
                          (top == ctx).astype(jnp.float32)])

    return metric


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, variables, tokens):
    return model.apply(variables, tokens)


_dla = jax.jit(direct_logit_attribution, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def memory_margin_dla(model, variables, tokens, mem, others):
    """Direct logit attribution to logit(mem) - mean_j logit(others[:, j]) at the last
    position: (heads [L, B, H], mlp [L, B] (neurons + bias), attn_bias [L, B],
    embed [B] (tokens + positions), total [B])."""

    def one(baseline):
        a = direct_logit_attribution(model, variables, tokens, mem, baseline)
        return (a.heads, a.neurons.sum(-1) + a.mlp_bias, a.attn_bias, a.embed + a.pos_embed,
                a.final_bias, a.logit)

    out = jax.vmap(one)(jnp.asarray(others).T)  # vmapped over the baselines
    return jax.tree.map(lambda x: x.mean(0), out)


def scaling_sweeps(model, variables: list, config, cf) -> np.ndarray:
    """[seed, G, L, H, 4 metrics, B]: every seed's (gamma, layer, head) sweep (the whole
    pattern of one head scaled by gamma) on the counterfactual prompts, one compiled call."""
    cf_in = inputs_of(cf)
    metric = answer_metrics(jnp.asarray(cf["memorised"]), jnp.asarray(cf["in_context"]))
    gammas = np.asarray(config.scales, np.float32)
    every_key = jnp.ones(cf_in.shape[1], bool)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *variables)
    return np.asarray(jax.vmap(lambda v: head_scale_sweep(model, v, cf_in, gammas, every_key,
                                                          metric=metric))(stacked))


def analyse_seed(model, variables, config, world, cb, cf, calibration, sweep, key):
    """Every measurement of one model (module docstring); `sweep`: its `scaling_sweeps`."""
    c = model.config
    cb_in, cf_in = inputs_of(cb), inputs_of(cf)
    mem_cb = jnp.asarray(cb["memorised"])
    mem, ctx = jnp.asarray(cf["memorised"]), jnp.asarray(cf["in_context"])
    out: dict[str, Any] = {}

    # Behaviour.
    cb_m = np.asarray(answer_metrics(mem_cb, mem_cb)(_logits(model, variables, cb_in)))
    cf_m = np.asarray(answer_metrics(mem, ctx)(_logits(model, variables, cf_in)))
    out["closed_book_accuracy"] = float(cb_m[2].mean())
    out["closed_book_p_memorised"] = float(cb_m[0].mean())
    out["counterfactual"] = dict(zip(METRICS, map(float, cf_m.mean(1)), strict=True))

    # (a) causal tracing of the closed-book facts.
    subject = np.asarray(cb["subject_mask"])[:, :cb_in.shape[1]]
    noise = subject_noise(model, variables, cb_in, subject, factor=config.noise_factor)
    trace = causal_trace(model, variables, cb_in, subject, mem_cb, noise=noise, key=key,
                         sites=tuple(config.trace_sites), num_samples=config.num_noise_samples)
    out["trace"] = {"noise": noise, "p_clean": float(trace.p_clean.mean()),
                    "p_corrupted": float(trace.p_corrupted.mean()),
                    "effect": {s: np.asarray(v).tolist() for s, v in trace.mean().items()}}

    # (b) head attribution and the head-scaling sweep on the counterfactual prompts.
    attr = _dla(model, variables, cf_in, ctx, mem)  # in-context - memorised
    head_attr = np.asarray(attr.heads)  # [L, B, H]
    calib_attr = head_attr[:, calibration].mean(1)  # [L, H]
    layer, head = np.unravel_index(int(np.argmax(calib_attr)), calib_attr.shape)
    m_layer, m_head = np.unravel_index(int(np.argmin(calib_attr)), calib_attr.shape)
    gammas = np.asarray(config.scales, np.float32)
    test = ~calibration
    cal_m, test_m = sweep[..., calibration].mean(-1), sweep[..., test].mean(-1)  # [G, L, H, 4]
    # The head whose scaling moves the in-context rate most on calibration (over gammas).
    span = cal_m[..., 3].max(0) - cal_m[..., 3].min(0)  # [L, H]
    s_layer, s_head = np.unravel_index(int(np.argmax(span)), span.shape)
    out["head_attribution"] = {
        "mean_calibration": np.round(calib_attr, 4).tolist(),
        "in_context_head": [int(layer), int(head)],
        "memory_head": [int(m_layer), int(m_head)],
    }
    out["scaling"] = {
        "gammas": gammas.tolist(),
        "in_context_head": {k: test_m[:, layer, head, i].tolist()
                            for i, k in enumerate(METRICS)},
        "memory_head": {k: test_m[:, m_layer, m_head, i].tolist()
                        for i, k in enumerate(METRICS)},
        "most_moving_head": [int(s_layer), int(s_head)],
        "most_moving": {k: test_m[:, s_layer, s_head, i].tolist()
                        for i, k in enumerate(METRICS)},
        "test_all": np.round(test_m, 5).tolist(),  # [G, L, H, 4]
    }

    # (c) suppression of the memorised answer (DLA, counterfactual test vs closed-book).
    table = world.fact_table

    group = len(world.relation_attributes(0))
    n_others = min(config.dla_others, group - 2) if config.dla_others else group - 2

    def others_of(subj, rel, excl):
        """int [B, n_others]: other attributes of each prompt's relation (not the fact, not
        `excl`: the in-context one)."""
        return np.asarray([[a for a in world.relation_attributes(r)
                            if a != table[s, r] and a != e][:n_others]
                           for s, r, e in zip(subj, rel, excl, strict=True)], np.int32)

    cf_test = {f: v[test] for f, v in cf.items()}
    cf_oth = others_of(cf_test["subject"], cf_test["relation"], cf_test["in_context"])
    # Closed-book: the same number of other attributes (none is in context).
    cb_oth = others_of(cb["subject"], cb["relation"], np.full(len(cb["subject"]), -1))
    cb_oth = cb_oth[:, :n_others]
    dla_cf = memory_margin_dla(model, variables, inputs_of(cf_test),
                               jnp.asarray(cf_test["memorised"]), cf_oth)
    dla_cb = memory_margin_dla(model, variables, cb_in, mem_cb, cb_oth)

    def comp(d):
        heads, mlp, attn_bias, emb, final_bias, logit = (np.asarray(x) for x in d)
        return {"heads": heads.mean(1), "mlp": mlp.mean(1), "attn_bias": attn_bias.mean(1),
                "embed": float(emb.mean()), "final_bias": float(final_bias.mean()),
                "margin": float(logit.mean())}

    ccf, ccb = comp(dla_cf), comp(dla_cb)
    delta_heads, delta_mlp = ccf["heads"] - ccb["heads"], ccf["mlp"] - ccb["mlp"]
    names = ([f"L{lay}H{h}" for lay in range(c.n_layers) for h in range(c.n_heads)]
             + [f"MLP{lay}" for lay in range(c.n_layers)])
    deltas = np.concatenate([delta_heads.ravel(), delta_mlp])
    lowest = int(np.argmin(deltas))
    last = c.n_layers - 1
    out["suppression"] = {
        "counterfactual": {k: np.round(v, 4).tolist() if isinstance(v, np.ndarray) else v
                           for k, v in ccf.items()},
        "closed_book": {k: np.round(v, 4).tolist() if isinstance(v, np.ndarray) else v
                        for k, v in ccb.items()},
        "components": names,
        "delta": np.round(deltas, 4).tolist(),
        "most_suppressing": names[lowest],
        "most_suppressing_delta": float(deltas[lowest]),
        "final_layer_delta": float(delta_heads[last].sum() + delta_mlp[last]),
        "final_layer_counterfactual": float(ccf["heads"][last].sum() + ccf["mlp"][last]),
        "final_layer_closed_book": float(ccb["heads"][last].sum() + ccb["mlp"][last]),
        "earlier_layers_delta": float(delta_heads[:last].sum() + delta_mlp[:last].sum()),
    }
    return out


# --- the experiment ---------------------------------------------------------------------------


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Training, the three analyses per seed, the figures and the summary."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    gammas = np.asarray(config.scales, np.float32)
    if not np.any(gammas == 1.0) or np.any(gammas < 0):
        raise ValueError(f"scales={tuple(config.scales)}: need 1.0 (the unscaled model) and "
                         "no negative scale")
    world = world_of(config)
    timings = {}
    t = time.time()
    model, variables, train_loss = train_models(config, workdir, data_dir)
    timings["train_s"] = round(time.time() - t, 1)
    cb, cf, calibration = analysis_prompts(world, config.n_counterfactual, config.prompt_seed)
    t = time.time()
    sweeps = scaling_sweeps(model, variables, config, cf)
    per_seed = []
    for r, s in enumerate(config.seeds):
        row = analyse_seed(model, variables[r], config, world, cb, cf, calibration, sweeps[r],
                           jax.random.key(1000 + int(s)))
        per_seed.append({"seed": int(s), "train_loss_final": train_loss[int(s)], **row})
    timings["analysis_s"] = round(time.time() - t, 1)
    summary: dict[str, Any] = {
        "seeds": [int(s) for s in config.seeds],
        "n_closed_book": len(cb["subject"]), "n_counterfactual": len(cf["subject"]),
        "per_seed": per_seed,
        "trace_mean": {s: np.mean([p["trace"]["effect"][s] for p in per_seed], 0).tolist()
                       for s in config.trace_sites},
        "timings": timings,
    }
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "trace.png": lambda path: plot_trace(summary, path),
        "scaling.png": lambda path: plot_scaling(summary, path),
        "dla.png": lambda path: plot_dla(summary, path)})


# --- figures ----------------------------------------------------------------------------------


def plot_trace(summary, path: str) -> None:
    """Indirect effect [layer, position] per site (mean over seeds and closed-book facts)."""
    plt = pyplot()
    sites = list(summary["trace_mean"])
    fig, axes = plt.subplots(1, len(sites), figsize=(4 * len(sites), 3.2), squeeze=False)
    axes = axes[0]
    vmax = max(1e-3, max(np.abs(np.asarray(v)).max() for v in summary["trace_mean"].values()))
    for ax, site in zip(axes, sites, strict=True):
        m = np.asarray(summary["trace_mean"][site])
        im = ax.imshow(m, cmap="Purples", vmin=0, vmax=vmax, aspect="auto")
        for (layer, i), v in np.ndenumerate(m):
            ax.text(i, layer, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set(xticks=range(m.shape[1]), xticklabels=CB_LABELS[:m.shape[1]],
               yticks=range(m.shape[0]), xlabel="position", ylabel="layer",
               title=f"restore {site}")
    p = summary["per_seed"]
    fig.colorbar(im, ax=axes, shrink=0.8, label="indirect effect on P(answer)")
    p_clean = np.mean([x["trace"]["p_clean"] for x in p])
    p_corr = np.mean([x["trace"]["p_corrupted"] for x in p])
    fig.suptitle(f"causal tracing, closed-book facts (P clean {p_clean:.2f}, corrupted "
                 f"{p_corr:.2f}; {len(p)} seeds)", fontsize=9, y=1.04)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_scaling(summary, path: str) -> None:
    """P(memorised), P(in-context) against the in-context head's scale, per seed (test)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r, p in enumerate(summary["per_seed"]):
        sc = p["scaling"]
        g = np.asarray(sc["gammas"])
        order = np.argsort(g)
        lay, h = p["head_attribution"]["in_context_head"]
        for ax, (a, b) in zip(axes, (("p_memorised", "p_in_context"),
                                     ("rate_memorised", "rate_in_context")), strict=True):
            ax.plot(g[order], np.asarray(sc["in_context_head"][a])[order], "-o", color=f"C{r}",
                    label=f"seed {p['seed']} L{lay}H{h}: memorised")
            ax.plot(g[order], np.asarray(sc["in_context_head"][b])[order], "--s",
                    color=f"C{r}", label=f"seed {p['seed']} L{lay}H{h}: in-context")
    axes[0].set(xlabel="scale of the in-context head", ylabel="mean probability")
    axes[1].set(xlabel="scale of the in-context head", ylabel="rate as argmax")
    axes[0].legend(fontsize=6)
    fig.suptitle("counterfactual prompts (test half): one head scaled", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dla(summary, path: str) -> None:
    """Head attribution (in-context - memorised) and the change of each component's DLA to
    the memorised margin from closed-book to counterfactual prompts (mean over seeds)."""
    plt = pyplot()
    p = summary["per_seed"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    ha = np.mean([x["head_attribution"]["mean_calibration"] for x in p], 0)
    v = max(1e-3, np.abs(ha).max())
    im = axes[0].imshow(ha, cmap="RdBu", vmin=-v, vmax=v)
    axes[0].set(xlabel="head", ylabel="layer", xticks=range(ha.shape[1]),
                yticks=range(ha.shape[0]),
                title="head attribution: logit(in-context) - logit(memorised)")
    axes[0].title.set_fontsize(9)
    fig.colorbar(im, ax=axes[0])
    names = p[0]["suppression"]["components"]
    d = np.asarray([x["suppression"]["delta"] for x in p])
    axes[1].bar(range(len(names)), d.mean(0), yerr=d.std(0), color="C3")
    axes[1].axhline(0, color="gray", lw=0.8)
    axes[1].set_xticks(range(len(names)), names, rotation=60, fontsize=7)
    axes[1].set_ylabel("DLA change, counterfactual - closed-book")
    axes[1].set_title("direct effect on logit(memorised) - mean logit(other attributes)",
                      fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "factual_recall", omit=("per_seed",))
