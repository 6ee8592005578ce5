"""Decoding MLP neurons through the unembedding, and checking the decoding by clamping them.

    python -m experiments.decoding_neurons --config=configs/decoding_neurons.py \
        --workdir=workdirs/decoding_neurons

Paper: Harry J. Davies 2025, "Decoding specialised feature neurons in LLMs with the final
projection layer" (v2: "Flash Interpretability: Decoding Specialised Feature Neurons in Large
Language Models with the LM-Head", arXiv:2501.02688). Llama 3.1 8B's up-projection neurons are
decoded into token probabilities through the LM head; "dog" and "California" neurons found
this way are clamped to high values, which raises the probability of their concept.

Here: the factual-recall world (closed-book prompts `BOS s_1 [s_2] r -> a`, typed attributes:
each relation answers with its own group of attribute tokens), the base model of
`configs/relation_neurons.py` (2 layers, one head of 64, d_mlp 256) trained by
`jaxinterp.train.train`. Every neuron (both layers) is decoded at once by
`jaxinterp.analysis.neuron_logits` (its `W_out` row, the direction it writes; the final
LayerNorm folded in: mean over d_model removed, `ln_final.w` multiplied, its per-position
scale left out; `weights="in"` reads the paper's up-projection direction instead). Its top-k
tokens are its decoded tokens. Then every neuron, one at a time, is clamped (`ji.Clamp` on
`blocks.{l}.mlp.hook_post` at the answer-predicting position, all prompts) to
`clamp_scale` x its largest activation there, raising it by `delta_p` on prompt p, and:

  predicted (direct path): delta_p * s_p * neuron_logits(...)[l, n] (the W_out row, the
    final norm folded, whatever `weights` decodes), with s_p the clean
    `ln_final.hook_scale` (1/sigma) at p: exactly the change of the logits through the
    residual stream alone, the final norm's scale frozen;
  frozen-scale: the clamp with `ln_final.hook_scale` also clamped to its clean value: the
    direct path plus what the later layers (attention and MLP of layer l + 1 ...) add;
  total: the plain clamp (the final norm's scale moves too).

A neuron's *lift* is the mean logit change of its decoded top-k tokens minus the mean change
of all the other tokens (mean over prompts); the summary gives each layer's lifts (predicted,
frozen-scale, total), the share of neurons whose total lift is positive, and how much of the
total the direct path predicts (the rest is the later layers' and the norm's). Whether the
neurons are *specialised*: the share whose decoded top-k tokens are all attributes of one
relation, and whether a neuron fires more on prompts whose answer is one of its decoded tokens.
All clamps are one compiled `lax.map` over neurons. Writes `lift.png`, `examples.png`,
`summary.json`. Measured numbers: `configs/decoding_neurons.py`.
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
from experiments.relation_neurons import all_facts, train_base, world
from jaxinterp.analysis.lenses import FINAL_NORMS, NEURON_WEIGHTS, neuron_logits


def clamp_effects(model, variables, tokens: jax.Array, readout: jax.Array,
                  values: jax.Array, chunk: int = 16) -> dict[str, jax.Array]:
    """Every neuron clamped (one at a time) to `values[l, n]` at each prompt's readout position.

    Args:
      tokens: [P, pos] prompts; readout: [P] the position whose logits are read.
      values: [n_layers, d_mlp] clamp values.

    Returns:
      {"clean_logits" [P, V], "clean_acts" [P, L, N], "scale" [P] (the clean
      ln_final.hook_scale), "total" [L, N, P, V], "frozen" [L, N, P, V]}: logit changes at
      the readout position without and with the final norm's scale frozen.
    """
    n_layers, d_mlp = values.shape
    b = jnp.arange(tokens.shape[0])
    sites = [f"blocks.{i}.mlp.hook_post" for i in range(n_layers)]
    clean, cache = ji.run(model, variables, tokens, capture=[*sites, "ln_final.hook_scale"])
    clean_logits = clean[b, readout]
    acts = jnp.stack([cache[s][b, readout] for s in sites], 1)  # [P, L, N]
    scale_site = cache["ln_final.hook_scale"]  # [P, pos, 1]
    at_readout = jnp.arange(tokens.shape[1])[None] == readout[:, None]  # [P, pos]

    def one(index):  # index: flat neuron id -> ([P, V], [P, V])
        layer, n = index // d_mlp, index % d_mlp
        onehot = jax.nn.one_hot(n, d_mlp, dtype=bool)
        mask = at_readout[:, :, None] & onehot  # [P, pos, N]
        value = values[layer, n]
        clamps = [ji.Clamp(s, value, mask=mask & (layer == i)) for i, s in enumerate(sites)]
        total, _ = ji.run(model, variables, tokens, interventions=clamps)
        frozen, _ = ji.run(model, variables, tokens, interventions=[
            *clamps, ji.Clamp("ln_final.hook_scale", scale_site)])
        return total[b, readout] - clean_logits, frozen[b, readout] - clean_logits

    total, frozen = jax.lax.map(one, jnp.arange(n_layers * d_mlp), batch_size=chunk)
    shape = (n_layers, d_mlp, *total.shape[1:])
    return {"clean_logits": clean_logits, "clean_acts": acts,
            "scale": scale_site[b, readout, 0],
            "total": total.reshape(shape), "frozen": frozen.reshape(shape)}


def readout_activations(model, variables, tokens: jax.Array, readout: jax.Array
                        ) -> np.ndarray:
    """[P, L, N]: every neuron's clean activation (`hook_post`) at each readout position."""
    sites = [f"blocks.{i}.mlp.hook_post" for i in range(model.config.n_layers)]
    _, cache = ji.run(model, variables, tokens, capture=sites)
    b = jnp.arange(tokens.shape[0])
    return np.stack([np.asarray(cache[s][b, readout]) for s in sites], 1)


def lift(change: np.ndarray, top: np.ndarray) -> np.ndarray:
    """[L, N]: mean (over prompts) change of each neuron's top tokens minus the mean change of
    the other tokens. change: [L, N, P, V]; top: [L, N, k] token ids."""
    vocab = change.shape[-1]
    in_top = np.zeros((*top.shape[:2], vocab), bool)
    np.put_along_axis(in_top, top, True, axis=-1)
    mean = change.mean(2)  # [L, N, V]
    k = top.shape[-1]
    return (mean * in_top).sum(-1) / k - (mean * ~in_top).sum(-1) / (vocab - k)


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Training, decoding, the clamps, the figures and the summary."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    if config.weights not in NEURON_WEIGHTS:
        raise ValueError(f"weights={config.weights!r}: choose one of {NEURON_WEIGHTS}")
    if config.final_norm not in FINAL_NORMS:
        raise ValueError(f"final_norm={config.final_norm!r}: choose one of {FINAL_NORMS}")
    if not config.clamp_scale > 1:
        raise ValueError(f"clamp_scale={config.clamp_scale}: must be > 1 (the clamp raises "
                         "each neuron above its largest clean activation)")
    cfg = world(config.base)
    if not 1 <= config.top_k < cfg.vocab_size:
        raise ValueError(f"top_k={config.top_k}: choose 1 <= top_k < vocab {cfg.vocab_size}")
    model, variables = train_base(config.base, os.path.join(
        config.base_workdir or workdir, f"base_seed{config.seed}"), config.seed)
    t_train = time.time() - t0

    facts = all_facts(cfg, np.arange(cfg.n_subjects))
    tokens = jnp.asarray(facts["tokens"])
    readout = jnp.asarray(facts["answer_pos"] - 1)
    decoded = np.asarray(neuron_logits(model, variables, weights=config.weights,
                                       final_norm=config.final_norm))  # [L, N, V]
    top = np.argsort(-decoded, -1)[..., :config.top_k]  # [L, N, k]
    # the direct path is the W_out row's, with the final norm folded, whatever is decoded
    direct = np.asarray(neuron_logits(model, variables))  # [L, N, V]

    # clamp values: clamp_scale x each neuron's largest activation at the readout positions
    largest = readout_activations(model, variables, tokens, readout).max(0)  # [L, N]
    values = config.clamp_scale * np.maximum(largest, 0.0)
    live = largest > config.min_activation  # [L, N]
    out = jax.jit(clamp_effects, static_argnums=(0,))(
        model, variables, tokens, readout, jnp.asarray(values))
    out = {k: np.asarray(v) for k, v in out.items()}
    delta = values[:, :, None] - out["clean_acts"].transpose(1, 2, 0)  # [L, N, P]
    predicted = (delta * out["scale"])[..., None] * direct[:, :, None, :]  # [L, N, P, V]

    lifts = {name: lift(ch, top) for name, ch in (("predicted", predicted),
                                                  ("frozen_scale", out["frozen"]),
                                                  ("total", out["total"]))}
    clean_acc = float(np.mean(out["clean_logits"].argmax(-1) == facts["memorised"]))

    # specialisation: decoded top-k all attributes of one relation; selectivity of firing
    groups = np.full(cfg.vocab_size, -1)
    for r in range(cfg.n_relations):
        groups[cfg.relation_attributes(r)] = r
    top_groups = groups[top]  # [L, N, k]
    one_relation = (top_groups >= 0) & (top_groups == top_groups[..., :1])
    acts = out["clean_acts"]  # [P, L, N]
    answer_in_top = (top[None] == facts["memorised"][:, None, None, None]).any(-1)  # [P, L, N]
    has = answer_in_top.any(0) & (~answer_in_top).any(0)
    sel = (np.where(answer_in_top, acts, 0).sum(0) / np.maximum(answer_in_top.sum(0), 1)
           - np.where(~answer_in_top, acts, 0).sum(0) / np.maximum((~answer_in_top).sum(0), 1))

    summary: dict[str, Any] = {"seed": config.seed, "clean_accuracy": clean_acc,
                               "weights": config.weights, "final_norm": config.final_norm,
                               "top_k": config.top_k, "clamp_scale": config.clamp_scale}
    for layer in range(model.config.n_layers):
        m = live[layer]
        lp, lf, lt = (lifts[k][layer][m] for k in ("predicted", "frozen_scale", "total"))
        summary[f"layer{layer}"] = {
            "live_neurons": int(m.sum()),
            "mean_lift_predicted": float(lp.mean()),
            "mean_lift_frozen_scale": float(lf.mean()),
            "mean_lift_total": float(lt.mean()),
            "share_total_lift_positive": float(np.mean(lt > 0)),
            "share_total_lift_beats_half_predicted": float(np.mean(lt > 0.5 * lp)),
            # of the total lift: the direct path, the later layers, the final norm's scale
            "direct_share_of_total": float(lp.sum() / lt.sum()),
            "later_layers_lift": float((lf - lp).mean()),
            "norm_scale_lift": float((lt - lf).mean()),
            "corr_predicted_total": float(np.corrcoef(lp, lt)[0, 1]),
            "share_top_k_one_relation": float(one_relation[layer][m].all(-1).mean()),
            "share_top1_attribute": float((top_groups[layer][m][:, 0] >= 0).mean()),
            "share_fires_more_on_decoded_answers": float(
                np.mean(sel[layer][m & has[layer]] > 0)) if (m & has[layer]).any() else None,
        }
    summary["timings"] = {"train_s": round(t_train, 1)}
    summary["seconds"] = round(time.time() - t0, 1)
    ex = _examples(lifts, live, config.n_examples)
    return runner.write_outputs(workdir, summary, {
        "lift.png": lambda path: plot_lift(lifts, live, path),
        "examples.png": lambda path: plot_examples(ex, top, predicted, out, path)})


def _examples(lifts, live, n: int) -> list[tuple[int, int]]:
    """The `n` live neurons with the largest predicted lift, per layer."""
    pairs = []
    for layer in range(live.shape[0]):
        score = np.where(live[layer], lifts["predicted"][layer], -np.inf)
        pairs += [(layer, int(i)) for i in np.argsort(-score)[:n]]
    return pairs


# --- figures --------------------------------------------------------------------------------


def plot_lift(lifts, live, path: str) -> None:
    """Each live neuron's lift of its decoded top tokens: predicted by the direct path (x)
    against measured (y: frozen final-norm scale, and total), per layer."""
    plt = pyplot()
    n_layers = live.shape[0]
    fig, axes = plt.subplots(1, n_layers, figsize=(4 * n_layers, 3.8), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        m = live[layer]
        x = lifts["predicted"][layer][m]
        ax.scatter(x, lifts["total"][layer][m], s=6, label="total")
        ax.scatter(x, lifts["frozen_scale"][layer][m], s=6, label="final-norm scale frozen")
        lim = [min(0, x.min()), x.max()]
        ax.plot(lim, lim, "k--", lw=0.8, label="y = x (direct path only)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(xlabel="predicted lift (direct path)", ylabel="measured lift",
               title=f"layer {layer}: {int(m.sum())} live neurons")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_examples(pairs, top, predicted, out, path: str) -> None:
    """For example neurons: every token's mean logit change when clamped (total) against its
    predicted direct change; the decoded top tokens highlighted."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(2.6 * len(pairs), 2.8), squeeze=False)
    for ax, (layer, n) in zip(axes[0], pairs, strict=True):
        p = predicted[layer, n].mean(0)
        t = out["total"][layer, n].mean(0)
        ax.scatter(p, t, s=5, color="grey")
        ax.scatter(p[top[layer, n]], t[top[layer, n]], s=12, color="C3", label="decoded top")
        ax.set(title=f"L{layer}N{n}", xlabel="predicted", ylabel="total")
        ax.title.set_fontsize(8)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "decoding_neurons")
