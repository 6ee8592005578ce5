"""SAEs on attention outputs: each feature attributed to heads by its decoder weights, each
feature given a role from what drives it on the task data, each head called polysemantic when
its top features have more than one role.

    python -m experiments.attention_saes --config=configs/attention_saes.py \
        --workdir=workdirs/attention_saes

Paper: Kissane et al. 2024, "Interpreting Attention Layer Outputs with Sparse Autoencoders".
Their method, as used here:
  - the SAE reads `blocks.{l}.attn.hook_z` flattened over [head, d_head] (the heads' mixed
    values, concatenated), so each decoder row is n_heads blocks of d_head;
  - weight-based head attribution: feature f's share of head h is
    ||W_dec[f, h]|| / sum_h' ||W_dec[f, h']|| (`jaxinterp.sae.heads.head_attribution`);
  - a head's role is read from its top 10 features by that attribution; the paper's authors
    labelled those features by hand (dashboards) and called a head polysemantic when they fell
    into "multiple unrelated roles" (>= 90% of GPT-2 Small's 144 heads).

Adapted to this scale (no hand labels): a feature's role is the kind of source position that
drives it, from the paper's direct feature attribution by source position
(`jaxinterp.sae.heads.source_attribution`): the pre-activation at query q splits into one term
per key k; the keys are put in one category each (in this order of priority): "bos" (k = 0),
"induction" (k = j + 1 for an earlier j < q whose token equals token q: the induction
source), "current" (k = q), "previous" (k = q - 1), "two_back" (k = q - 2, the skip-bigram
offset of this data) or "other". Summed over the positions where the feature fires (positive
terms only), the feature's role is its largest category. A head is polysemantic when at
least two roles each hold >= `min_role_features` of its `n_top` features (config). As a check
of the roles, every head's own attention mass per category is reported beside them.

The model: a 2-layer attention-only transformer with 4 heads per layer, trained with
`jaxinterp.train.train` on the induction data (`configs/induction_heads.py`'s data); one TopK
SAE per layer and SAE seed (`sae_seeds`; all of them trained together by
`jaxinterp.sae.sweep` from one activation stream). Writes `head_attribution.png` (every live
feature's shares over heads), `head_roles.png` (each head's top features by role, with its
attention mass per category; both figures for the first SAE seed) and `summary.json`.
Measured numbers: `configs/attention_saes.py`.
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
from jaxinterp import data as data_lib
from jaxinterp.sae import SAE, SAEConfig, TrainConfig
from jaxinterp.sae import sweep as sae_sweep
from jaxinterp.sae.heads import head_attribution, source_attribution

ROLES = ("bos", "induction", "current", "previous", "two_back", "other")


def key_categories(tokens: np.ndarray) -> np.ndarray:
    """One-hot [batch, q, k, len(ROLES)] category of every (query, key) pair (module
    docstring; causal: keys after the query get no category)."""
    b, n = tokens.shape
    q, k = np.arange(n)[:, None], np.arange(n)[None, :]
    causal = k <= q
    # induction source: k = j + 1 with j < q and tokens[j] == tokens[q]
    same = tokens[:, :, None] == tokens[:, None, :]  # [b, q, j]
    earlier = np.arange(n)[None, :] < np.arange(n)[:, None]
    match = same & earlier[None]
    induction = np.zeros((b, n, n), bool)
    induction[:, :, 1:] = match[:, :, :-1]
    induction &= causal[None]
    cats = np.full((b, n, n), len(ROLES) - 1)
    for i, m in reversed(list(enumerate([np.broadcast_to(k == 0, (b, n, n)), induction,
                                         np.broadcast_to(k == q, (b, n, n)),
                                         np.broadcast_to(k == q - 1, (b, n, n)),
                                         np.broadcast_to(k == q - 2, (b, n, n))]))):
        cats = np.where(m, i, cats)  # earlier categories overwrite later ones (priority)
    onehot = np.eye(len(ROLES), dtype=np.float32)[cats]
    return onehot * causal[None, :, :, None]


def train_lm(config: ConfigDict, workdir: str):
    """`(model, variables, lm_workdir)`: the LM of `config.lm` trained (or loaded)."""
    lm_workdir = os.path.abspath(config.lm_workdir or os.path.join(workdir, "lm"))
    if not config.lm_workdir:
        lm = ConfigDict(config.lm.to_dict())
        lm.seed = int(config.seed)
        if not os.path.isdir(os.path.join(lm_workdir, "checkpoints", str(lm.num_train_steps))):
            ji.train.train(lm, lm_workdir)
    model, variables = ji.train.load(lm_workdir)
    return model, variables, lm_workdir


def sequences(config: ConfigDict, lm_workdir: str, split: str, n: int | None) -> np.ndarray:
    """int32 [n, seq - 1]: model inputs of the first n sequences of `split`."""
    lm = config.lm
    source = data_lib.load_source(lm.data.name, split, lm.data.data_dir or os.path.join(
        lm_workdir, "data"), **dict(lm.data.builder_kwargs))
    n = len(source) if n is None else min(n, len(source))
    return np.stack([np.asarray(source[i]["tokens"][:-1], np.int32) for i in range(n)])


def token_batches(train_tokens: np.ndarray, batch: int, seed: int):
    """Endless shuffled model batches [batch, pos] of the training sequences."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(train_tokens))
        for i in range(0, len(order) - batch + 1, batch):
            yield jnp.asarray(train_tokens[order[i:i + batch]])


def layer_statistics(model, variables, sae_config: SAEConfig, layer: int):
    """A jitted `(params, tokens [b, pos], categories [b, q, k, role]) -> (role_mass
    [role, d_sae], fires [d_sae], head_mass [head, role])` for one layer's SAEs: each
    feature's positive source terms per key category summed over the positions where it
    fires, how often it fires, and each head's attention mass per category."""
    sites = [f"blocks.{layer}.attn.{s}" for s in ("hook_z", "hook_pattern", "hook_v")]

    @jax.jit
    def stats(params, tok, cat):
        _, cache = ji.run(model, variables, tok, capture=sites)
        z, pattern, v = (cache[s] for s in sites)
        out = SAE(sae_config).apply({"params": params}, z.reshape(*z.shape[:2], -1))
        terms = source_attribution(pattern, v, params["W_enc"], cat)  # [b, q, c, f]
        fired = (out.acts > 0).astype(jnp.float32)  # [b, q, f]
        role_mass = jnp.einsum("bqcf,bqf->cf", jax.nn.relu(terms), fired)
        head_mass = jnp.einsum("bhqk,bqkc->hc", pattern.astype(jnp.float32), cat)
        return role_mass, fired.sum((0, 1)), head_mass

    return stats


def analyse_layer(stats, params, tokens: np.ndarray, cats: np.ndarray, n_heads: int,
                  config: ConfigDict, layer: int) -> dict[str, Any]:
    """Head attribution, feature roles and head polysemanticity of one layer's SAE (`stats`:
    `layer_statistics` of its layer)."""
    role_mass, fires, head_mass = 0.0, 0.0, 0.0
    for i in range(0, len(tokens), 64):
        r, f, h = stats(params, jnp.asarray(tokens[i:i + 64]), jnp.asarray(cats[i:i + 64]))
        role_mass, fires, head_mass = role_mass + r, fires + f, head_mass + h
    role_mass, fires, head_mass = (np.asarray(a) for a in (role_mass, fires, head_mass))
    head_mass = head_mass / head_mass.sum(-1, keepdims=True)  # [head, role]

    attr = np.asarray(head_attribution(params["W_dec"], n_heads))  # [d_sae, head]
    live = np.flatnonzero(fires >= config.min_fires)
    share = role_mass[:, live] / np.maximum(role_mass[:, live].sum(0), 1e-12)  # [role, live]
    roles = share.argmax(0)  # [live]
    heads = []
    for h in range(n_heads):
        top = live[np.argsort(-attr[live, h])[:config.n_top]]
        top_roles = roles[np.searchsorted(live, top)]
        counts = np.bincount(top_roles, minlength=len(ROLES))
        held = [ROLES[r] for r in np.flatnonzero(counts >= config.min_role_features)]
        heads.append({
            "head": h, "top_features": top.tolist(),
            "top_attribution": attr[top, h].tolist(),
            "role_counts": dict(zip(ROLES, counts.tolist(), strict=True)),
            "roles": held, "polysemantic": len(held) >= 2,
            "attention_mass": dict(zip(ROLES, head_mass[h].round(4).tolist(), strict=True)),
            "attention_role": ROLES[int(head_mass[h].argmax())]})
    return {
        "layer": layer, "n_live": int(live.size),
        "live_features": live.tolist(),
        "attribution": attr[live].tolist(),  # [live, head]
        "mean_max_attribution": float(attr[live].max(-1).mean()),
        "single_head_features": float(np.mean(attr[live].max(-1) >= 0.8)),
        "feature_roles": dict(zip(ROLES, np.bincount(roles, minlength=len(ROLES)).tolist(),
                                  strict=True)),
        "mean_role_share": float(share.max(0).mean()),
        "heads": heads,
        "polysemantic_share": float(np.mean([h["polysemantic"] for h in heads])),
        # is the head's own dominant attention category among its top features' roles?
        "attention_role_in_roles": float(np.mean([h["attention_role"] in h["roles"]
                                                  for h in heads])),
    }


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Train the LM, the SAEs (every layer x SAE seed in one sweep), the analysis, the
    figures and the summary."""
    t0 = time.time()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    layers = [int(x) for x in config.layers]
    seeds = [int(s) for s in config.sae_seeds]
    n_layers = int(config.lm.model.n_layers)
    if not layers or any(not 0 <= x < n_layers for x in layers):
        raise ValueError(f"layers={tuple(config.layers)}: choose layers in [0, {n_layers})")
    if not seeds:
        raise ValueError("sae_seeds=(): give at least one SAE seed")
    if config.n_top < config.min_role_features or config.min_role_features < 1:
        raise ValueError(f"min_role_features={config.min_role_features} must be in [1, "
                         f"n_top={config.n_top}]")
    model, variables, lm_workdir = train_lm(config, workdir)
    t_lm = time.time() - t0
    c = model.config
    train_tokens = sequences(config, lm_workdir, "train", None)
    eval_tokens = sequences(config, lm_workdir, "test", config.eval_sequences)

    t = time.time()
    configs = [SAEConfig(**{**dict(config.sae), "d_in": c.n_heads * c.d_head,
                            "site": f"blocks.{layer}.attn.hook_z",
                            "model_preset": config.lm.model.preset})
               for layer in layers for _ in seeds]
    trains = [TrainConfig(**{**dict(config.train), "seed": s}) for _ in layers for s in seeds]
    result = sae_sweep.sweep(configs, trains, model, variables,
                             token_batches(train_tokens, config.model_batch_size, seeds[0]),
                             eval_tokens=jnp.asarray(eval_tokens[:config.model_batch_size]),
                             verbose=False)
    t_sae = time.time() - t
    runs = []  # one per (layer, SAE seed)
    cats = key_categories(eval_tokens)
    stats = {layer: layer_statistics(model, variables, configs[i * len(seeds)], layer)
             for i, layer in enumerate(layers)}
    for i, tc in enumerate(trains):
        layer = layers[i // len(seeds)]
        params = jax.device_get(result.params[i])
        out = analyse_layer(stats[layer], params, eval_tokens, cats, c.n_heads, config, layer)
        runs.append({**out, "sae_seed": tc.seed,
                     "held_out": {k: float(v) for k, v in result.metrics[i].items()}})

    by_seed = {s: [h for r in runs if r["sae_seed"] == s for h in r["heads"]] for s in seeds}
    share = [float(np.mean([h["polysemantic"] for h in by_seed[s]])) for s in seeds]
    summary: dict[str, Any] = {
        "layers": layers, "n_heads": c.n_heads, "sae_seeds": seeds,
        "polysemantic_share": float(np.mean(share)),  # mean over SAE seeds
        "polysemantic_share_by_seed": share,
        "polysemantic_heads_by_seed": [
            [f"L{r['layer']}H{h['head']}" for r in runs if r["sae_seed"] == s
             for h in r["heads"] if h["polysemantic"]] for s in seeds],
        "attention_role_in_roles": float(np.mean([h["attention_role"] in h["roles"]
                                                  for hs in by_seed.values() for h in hs])),
        "runs": runs,
        "timings": {"lm_s": round(t_lm, 1), "sae_s": round(t_sae, 1)},
    }
    for layer in layers:
        rs = [r for r in runs if r["layer"] == layer]
        summary[f"layer{layer}"] = {
            "n_live": [r["n_live"] for r in rs],
            "mean_max_attribution": [round(r["mean_max_attribution"], 3) for r in rs],
            "single_head_features": [round(r["single_head_features"], 3) for r in rs],
            "feature_roles": [r["feature_roles"] for r in rs],
            "polysemantic_share": [r["polysemantic_share"] for r in rs],
            "explained_variance": [round(r["held_out"]["explained_variance"], 3) for r in rs],
            "loss_recovered": [round(r["held_out"]["loss_recovered"], 3) for r in rs]}
    summary["seconds"] = round(time.time() - t0, 1)
    first = [r for r in runs if r["sae_seed"] == seeds[0]]
    return runner.write_outputs(workdir, summary, {
        "head_attribution.png": lambda path: plot_attribution(first, path),
        "head_roles.png": lambda path: plot_roles(first, path)})


# --- figures --------------------------------------------------------------------------------


def plot_attribution(per_layer, path: str) -> None:
    """Every live feature's weight-based head attribution (rows: features sorted by their top
    head, then by that share), one panel per layer."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(per_layer), figsize=(3.2 * len(per_layer), 4.2),
                             squeeze=False)
    for ax, p in zip(axes[0], per_layer, strict=True):
        a = np.asarray(p["attribution"])
        order = np.lexsort((-a.max(1), a.argmax(1)))
        im = ax.imshow(a[order], aspect="auto", cmap="viridis", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set(xlabel="head", ylabel="live feature", xticks=range(a.shape[1]),
               title=f"layer {p['layer']}: {p['n_live']} live features")
        ax.title.set_fontsize(9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="share of decoder norm")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roles(per_layer, path: str) -> None:
    """Each head's top features by role (bars), its attention mass per category (dots,
    right axis), polysemantic heads starred."""
    plt = pyplot()
    heads = [(p["layer"], h) for p in per_layer for h in p["heads"]]
    fig, ax = plt.subplots(figsize=(1.0 * len(heads) + 2, 3.6))
    colors = plt.cm.tab10(np.arange(len(ROLES)))
    bottom = np.zeros(len(heads))
    for r, role in enumerate(ROLES):
        counts = np.array([h["role_counts"][role] for _, h in heads])
        ax.bar(range(len(heads)), counts, bottom=bottom, color=colors[r], label=role)
        bottom += counts
    ax2 = ax.twinx()
    for r, role in enumerate(ROLES):
        ax2.scatter(np.arange(len(heads)) + (r - 2.5) * 0.08,
                    [h["attention_mass"][role] for _, h in heads], color=colors[r],
                    edgecolor="k", s=14, zorder=3)
    ax2.set(ylabel="attention mass (dots)", ylim=(0, 1.05))
    ax.set_xticks(range(len(heads)), [f"L{la}H{h['head']}" + ("*" if h["polysemantic"] else "")
                                      for la, h in heads])
    ax.set(ylabel="top features (bars)", title="roles of each head's top features "
           "(* polysemantic)")
    ax.legend(fontsize=7, ncol=3, loc="upper left", bbox_to_anchor=(1.08, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "attention_saes")
