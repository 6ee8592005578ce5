"""Outliers and 8-bit quantisation: vanilla softmax vs clipped softmax vs gated attention.

    python -m experiments.outliers_quant --config=configs/outliers_quant.py \
        --workdir=workdirs/outliers_quant

Bondarenko, Nagel & Blankevoort 2023, "Quantizable Transformers: Removing Outliers by Helping
Attention Heads Do Nothing" (arXiv:2306.12929; code: Qualcomm-AI-research/outlier-free-
transformers). Claim: outliers come from heads that learn a "no-op" (attending to a
low-information token with a small value); softmax cannot give exact zeros, so training pushes
its input, and with it some activations, ever larger. Clipped softmax
`clip((zeta - gamma) softmax(S) + gamma, 0, 1)` (gamma < 0 gives exact zeros with finite
logits) and gated attention `sigmoid(G(x)) * softmax(S) V` (a head can switch itself off)
remove the outliers: lower max infinity norm and kurtosis, and a much smaller accuracy drop
under W8A8 post-training quantisation, at equal floating-point accuracy.

Setup (a small BERT-style masked LM): the `induction` builder's sequences (BOS, then random
tokens in which a segment of 8..16 tokens recurs at a random later position), BERT's masking
(`train.tasks.MaskedLM`: 15% chosen; 80% -> [MASK], 10% random, 10% kept); a masked token in a
recurring segment can be read off its other copy, a masked filler token cannot (so heads that
look for the copy have nothing to do at most positions: the situation the paper says produces
no-op heads). The model is a bidirectional pre-LN `Transformer` (causal=False, learned
positions, GELU MLP), trained for `config.num_train_steps` with AdamW.

Arms as one compiled call. All runs (arms x seeds) are one gated model (`gated_attention=True`,
`gate_type=config.gate_type`) trained by `train_vmapped`; what makes an arm is a pair of
interventions whose arrays differ per run:
  vanilla: `Clamp(blocks.*.attn.hook_gate, 1)` (gate exactly 1, no gradient to the gate):
           plain softmax attention;
  clipped: the same clamp and `Apply(blocks.*.attn.hook_pattern, clip((zeta - gamma) p +
           gamma, 0, 1))`: `attention_type="clipped_softmax"` exactly (the clip is applied to
           the softmax output, as in the module);
  gated:   neither: gated attention.
So each arm's trained parameters, loaded into its own architecture (softmax without a gate;
`clipped_softmax` without a gate; the gated model), give the same outputs: checked by the
test; `massive` (below) is measured that way, with `jaxinterp.analysis.stats`.

Measured on the test split (masked with a fixed key), per run:
  outliers: per layer, at the FFN output (`blocks.{i}.hook_mlp_out`, the authors'
    `output.dense`) and the block output (`blocks.{i}.hook_resid_post`, the residual stream;
    their post-LN BERT's `output.LayerNorm`), the infinity norm and the kurtosis of each
    sequence's activations [pos, d_model] (`jaxinterp.quantize.outlier_stats`, as their
    `validate_mlm.py`), averaged over sequences; `max_inf_norm` is the maximum over layers and
    both sites, `avg_kurtosis` the mean over them (their summary numbers);
  massive: the largest magnitudes of the residual stream with their position and feature
    (`analysis.stats.activation_stats`), and the share of the top `massive_top_k` at BOS;
  accuracy: masked-token accuracy in float (FP), with 8-bit weights only (W8), 8-bit
    activations only (A8) and both (W8A8), and the drop FP - W8A8.
W8A8 fake quantisation (`jaxinterp.quantize`, the authors' default setting): weights symmetric
per tensor, min-max (every weight matrix and embedding; biases and LayerNorm parameters in
float); activations asymmetric per tensor, min-max over `quant.calib_batches` training batches
(their running min-max over 16 batches; here the plain min and max), estimated with the
quantised weights in place (A8 alone: with float weights), at every site of `QUANT_SITES` in
every layer: the residual stream entering layer 0 and after every block, each LayerNorm's
output, q, k, v, the attention probabilities (softmax output, after clipping), the heads'
output z, the attention output, the MLP's GELU output and its output, and the final LayerNorm.
Not quantised: the softmax input, the gate, the logits.
"""

from __future__ import annotations

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
from jaxinterp import quantize
from jaxinterp.data.sources import load_source
from jaxinterp.models.transformer import Transformer, TransformerConfig
from jaxinterp.train.tasks import make_task
from jaxinterp.train.vmapped import train_vmapped

ARMS = ("vanilla", "clipped", "gated")
OUTLIER_SITES = ("hook_mlp_out", "hook_resid_post")  # per layer: FFN output, block output
# Fake-quantised activations, per layer (blocks.{i}.<suffix>), plus the two below.
QUANT_SITES = ("ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
               "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
               "ln2.hook_normalized", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")
EXTRA_QUANT_SITES = ("blocks.0.hook_resid_pre", "ln_final.hook_normalized")


# --- data, model, arms -----------------------------------------------------------------------


def load_tokens(config: ConfigDict, split: str, data_dir: str) -> np.ndarray:
    """Every sequence of an `induction` split, int32 [N, seq_len]."""
    src = load_source("induction", split, data_dir, **dict(config.data))
    return np.stack([src[i]["tokens"] for i in range(len(src))]).astype(np.int32)


def model_config(config: ConfigDict, arm: str | None = None) -> TransformerConfig:
    """The trained (gated) model's config; with `arm`, that arm's own architecture."""
    c = dict(config.model)
    c.update(gated_attention=True, gate_type=config.gate_type)
    if arm in ("vanilla", "clipped"):
        c["gated_attention"] = False
    if arm == "clipped":
        c.update(attention_type="clipped_softmax", clip_zeta=config.clip_zeta,
                 clip_gamma=config.clip_gamma)
    return TransformerConfig(**c)


def mlm_task(config: ConfigDict):
    return make_task({"name": "masked_lm", **dict(config.task)})


def _clip_pattern(p: jax.Array, a: dict[str, jax.Array]) -> jax.Array:
    """Clipped softmax on the softmax output where `a["on"]`, else p unchanged."""
    clipped = jnp.clip((a["zeta"] - a["gamma"]) * p + a["gamma"], 0.0, 1.0)
    return jnp.where(a["on"], clipped, p)


def arm_interventions(args: dict[str, jax.Array]) -> list:
    """The two interventions that make one run an arm (module docstring); `args` of one run:
    gate_free, clip (bool), zeta, gamma (float)."""
    return [ji.Clamp("blocks.*.attn.hook_gate", 1.0, mask=~args["gate_free"]),
            ji.Apply("blocks.*.attn.hook_pattern", _clip_pattern,
                     {"on": args["clip"], "zeta": args["zeta"], "gamma": args["gamma"]})]


def arm_args(config: ConfigDict, arms: list[str]) -> dict[str, jax.Array]:
    """[R] per-run arrays of `arm_interventions` for runs of the given arms."""
    return {"gate_free": jnp.asarray([a == "gated" for a in arms]),
            "clip": jnp.asarray([a == "clipped" for a in arms]),
            "zeta": jnp.full(len(arms), config.clip_zeta, jnp.float32),
            "gamma": jnp.full(len(arms), config.clip_gamma, jnp.float32)}


# --- training ---------------------------------------------------------------------------------


def train_runs(config: ConfigDict, runs: list[tuple[str, int]], train_tokens: np.ndarray):
    """Trains one run per (arm, seed) in one vmapped call; returns (params [R, ...], history)."""
    model = Transformer(model_config(config))
    task = mlm_task(config)
    data = jnp.asarray(train_tokens)
    batch = config.batch_size

    def init_fn(key):
        return model.init(key, data[:1])["params"]

    def loss_fn(params, key, a, step):
        k_idx, k_mask = jax.random.split(key)
        tokens = data[jax.random.randint(k_idx, (batch,), 0, data.shape[0])]
        split = task.split({"tokens": tokens}, k_mask)
        logits, _ = ji.run(model, {"params": params}, *split.inputs,
                           interventions=arm_interventions(a))
        loss, metrics = task.loss(logits, split)
        return loss, {"accuracy": metrics["accuracy"]}

    keys = jnp.stack([jax.random.PRNGKey(int(s)) for _, s in runs])
    return train_vmapped(loss_fn, init_fn, keys, arm_args(config, [a for a, _ in runs]),
                         config.optimizer, config.num_train_steps)


# --- evaluation -------------------------------------------------------------------------------


def quant_site_names(n_layers: int) -> list[str]:
    return [*EXTRA_QUANT_SITES[:1], *(f"blocks.{i}.{s}" for i in range(n_layers)
                                      for s in QUANT_SITES), *EXTRA_QUANT_SITES[1:]]


def evaluate_runs(config: ConfigDict, params, args, test_split, calib_batches):
    """Per run (vmapped): FP / W8 / A8 / W8A8 accuracy and the per-layer outlier stats.

    test_split: the masked test set (`Split`); calib_batches: int [C, batch, pos] training
    tokens (masked the same way as in training) for the activation ranges.
    """
    model = Transformer(model_config(config))
    n_layers, bits = config.model.n_layers, config.quant.bits
    sites = quant_site_names(n_layers)
    outlier_sites = [f"blocks.{i}.{s}" for s in OUTLIER_SITES for i in range(n_layers)]

    def accuracy(p, ivs):
        logits, _ = ji.run(model, {"params": p}, *test_split.inputs, interventions=ivs)
        return mlm_task(config).loss(logits, test_split)[1]["accuracy"]

    def act_ranges(p, arm_ivs):
        def one(tokens):
            return quantize.activation_ranges(model, {"params": p}, tokens, sites=sites,
                                              interventions=arm_ivs)
        ranges = jax.lax.map(one, calib_batches)  # {site: (lo [C], hi [C])}
        return {k: (lo.min(), hi.max()) for k, (lo, hi) in ranges.items()}

    def one_run(p, a):
        arm_ivs = arm_interventions(a)
        pq = quantize.quantize_weights(p, bits, per_channel=config.quant.per_channel_weights)
        _, cache = ji.run(model, {"params": p}, *test_split.inputs, capture=outlier_sites,
                          interventions=arm_ivs)
        stats = {name: quantize.outlier_stats(cache[name]) for name in outlier_sites}
        fp_ranges, q_ranges = act_ranges(p, arm_ivs), act_ranges(pq, arm_ivs)
        out = {
            "fp_acc": accuracy(p, arm_ivs),
            "w8_acc": accuracy(pq, arm_ivs),
            "a8_acc": accuracy(p, arm_ivs + quantize.act_quant_interventions(fp_ranges, bits)),
            "w8a8_acc": accuracy(pq, arm_ivs + quantize.act_quant_interventions(q_ranges, bits)),
        }
        for b in config.quant.low_act_bits:  # W8 and fewer activation bits
            out[f"w8a{b}_acc"] = accuracy(pq, arm_ivs + quantize.act_quant_interventions(
                q_ranges, int(b)))
        for s in OUTLIER_SITES:
            names = [f"blocks.{i}.{s}" for i in range(n_layers)]
            out[f"{s}/inf_norm"] = jnp.stack([stats[n][0].mean() for n in names])
            out[f"{s}/kurtosis"] = jnp.stack([stats[n][1].mean() for n in names])
            # Where the outliers are: BOS (position 0) vs every other position.
            out[f"{s}/bos_inf_norm"] = jnp.stack([jnp.abs(cache[n][:, 0]).max(-1).mean()
                                                  for n in names])
            out[f"{s}/rest_inf_norm"] = jnp.stack([jnp.abs(cache[n][:, 1:]).max((1, 2)).mean()
                                                   for n in names])
        return out

    return jax.device_get(jax.jit(jax.vmap(one_run))(params, args))


def massive_activations(config: ConfigDict, params, runs, test_tokens):
    """Per run, in its own architecture: the largest residual-stream magnitudes
    (`activation_stats` over `blocks.*.hook_resid_post` on the masked test inputs)."""
    from jaxinterp.analysis.stats import activation_stats

    k = config.massive_top_k
    batches = [test_tokens[i:i + 128] for i in range(0, len(test_tokens), 128)]
    out = []
    for r, (arm, _) in enumerate(runs):
        model = Transformer(model_config(config, arm))
        p = jax.tree.map(lambda x, r=r: x[r], params)
        st = activation_stats(model, {"params": p}, batches, sites="blocks.*.hook_resid_post",
                              top_k=k)
        top = st.massive
        out.append({"top": [{"magnitude": m.magnitude, "site": m.site, "pos": m.index[0],
                             "feature": m.index[1]} for m in top[:3]],
                    "bos_share": float(np.mean([m.index[0] == 0 for m in top])),
                    "top_feature_share": float(np.mean([m.index[1] == top[0].index[1]
                                                        for m in top])),
                    "mean_abs": {s: float(v) for s, v in st.mean_abs.items()}})
    return out


# --- the experiment -----------------------------------------------------------------------------


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains every arm x seed, measures outliers and W8A8 accuracy; figures and summary."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    seeds = [int(s) for s in config.seeds]
    arms = [a for a in ARMS if a in config.arms]
    runs = [(a, s) for a in arms for s in seeds]
    train_tokens = load_tokens(config, "train", data_dir)
    test_tokens = load_tokens(config, "test", data_dir)
    timings = {}

    t = time.time()
    params, hist = train_runs(config, runs, train_tokens)
    timings["train_s"] = round(time.time() - t, 1)

    t = time.time()
    task = mlm_task(config)
    key = jax.random.PRNGKey(config.eval_seed)
    test_split = task.split({"tokens": jnp.asarray(test_tokens)}, key)
    rng = np.random.default_rng(config.eval_seed)
    n_cal, b = config.quant.calib_batches, config.batch_size
    calib = train_tokens[rng.integers(0, len(train_tokens), (n_cal, b))]
    calib = jnp.stack([task.split({"tokens": jnp.asarray(c)}, jax.random.fold_in(key, i))
                       .inputs[0] for i, c in enumerate(calib)])
    ev = evaluate_runs(config, params, arm_args(config, arms=[a for a, _ in runs]), test_split,
                       calib)
    timings["eval_s"] = round(time.time() - t, 1)
    t = time.time()
    massive = (massive_activations(config, params, runs, np.asarray(test_split.inputs[0]))
               if config.massive_top_k else [None] * len(runs))
    timings["massive_s"] = round(time.time() - t, 1)

    summary: dict[str, Any] = {"seeds": seeds, "arms": {}, "quant_sites": quant_site_names(
        config.model.n_layers), "clip_gamma": config.clip_gamma, "clip_zeta": config.clip_zeta,
        "gate_type": config.gate_type, "low_act_bits": [int(b) for b in config.quant.low_act_bits]}
    for arm in arms:
        rows = [i for i, (a, _) in enumerate(runs) if a == arm]
        per_seed = []
        for i in rows:
            s = {k: (v[i].tolist() if np.ndim(v[i]) else float(v[i])) for k, v in ev.items()}
            layers = np.concatenate([ev[f"{x}/inf_norm"][i] for x in OUTLIER_SITES])
            kurts = np.concatenate([ev[f"{x}/kurtosis"][i] for x in OUTLIER_SITES])
            s.update(max_inf_norm=float(layers.max()), avg_kurtosis=float(kurts.mean()),
                     max_kurtosis=float(kurts.max()), w8a8_drop=s["fp_acc"] - s["w8a8_acc"],
                     train_acc_final=float(hist["train/accuracy"][i, -50:].mean()),
                     massive=massive[i])
            per_seed.append(s)
        low = [f"w8a{b}_acc" for b in config.quant.low_act_bits]
        mean = {k: float(np.mean([p[k] for p in per_seed]))
                for k in ("fp_acc", "w8_acc", "a8_acc", "w8a8_acc", "w8a8_drop", *low,
                          "max_inf_norm", "avg_kurtosis", "max_kurtosis")}
        mean["bos_inf_norm"] = np.mean([p["hook_resid_post/bos_inf_norm"] for p in per_seed],
                                       0).tolist()
        mean["rest_inf_norm"] = np.mean([p["hook_resid_post/rest_inf_norm"] for p in per_seed],
                                        0).tolist()
        summary["arms"][arm] = {"mean": mean, "per_seed": per_seed}
    summary["timings"] = timings
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "outliers.png": functools.partial(plot_outliers, summary, config.model.n_layers),
        "quantization.png": functools.partial(plot_quantization, summary),
        "training.png": functools.partial(plot_training, hist, runs),
    })


# --- figures --------------------------------------------------------------------------------------

COLORS = {"vanilla": "black", "clipped": "tab:blue", "gated": "tab:green"}


def plot_outliers(summary: dict[str, Any], n_layers: int, path: str) -> None:
    """Inf norm and kurtosis per layer, per arm (mean line, seeds as dots), at both sites."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 7), sharex=True)
    layers = np.arange(n_layers)
    for row, where in enumerate(("bos", "rest")):
        ax = axes[row, 2]
        for arm, a in summary["arms"].items():
            vals = np.array([p[f"hook_resid_post/{where}_inf_norm"] for p in a["per_seed"]])
            ax.plot(layers, vals.mean(0), "-o", color=COLORS[arm], label=arm)
            for v in vals:
                ax.plot(layers, v, ".", color=COLORS[arm], alpha=0.4)
        ax.set(title="hook_resid_post: inf norm " + ("at BOS (position 0)" if where == "bos"
                                                      else "over the other positions"),
               xlabel="layer", xticks=layers)
        ax.legend(fontsize=8)
    for col, site in enumerate(OUTLIER_SITES):
        for row, stat in enumerate(("inf_norm", "kurtosis")):
            ax = axes[row, col]
            for arm, a in summary["arms"].items():
                vals = np.array([p[f"{site}/{stat}"] for p in a["per_seed"]])  # [seeds, L]
                ax.plot(layers, vals.mean(0), "-o", color=COLORS[arm], label=arm)
                for v in vals:
                    ax.plot(layers, v, ".", color=COLORS[arm], alpha=0.4)
            ax.set(title=f"{site}: {'infinity norm' if stat == 'inf_norm' else 'kurtosis'}",
                   xlabel="layer", yscale="log", xticks=layers)
            ax.legend(fontsize=8)
    fig.suptitle("Outliers per layer (test set; per-sequence statistic, mean over sequences)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_quantization(summary: dict[str, Any], path: str) -> None:
    """Masked-token accuracy in float, W8, A8 and W8A8, per arm (bars: mean; dots: seeds)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    kinds = ("fp_acc", "w8_acc", "a8_acc", "w8a8_acc",
             *(f"w8a{b}_acc" for b in summary["low_act_bits"]))
    width = 0.8 / len(kinds)
    for j, (arm, a) in enumerate(summary["arms"].items()):
        for k, kind in enumerate(kinds):
            vals = [p[kind] for p in a["per_seed"]]
            x = j + (k - (len(kinds) - 1) / 2) * width
            ax.bar(x, np.mean(vals), width, color=COLORS[arm], alpha=0.35 + 0.65 * (k == 0))
            ax.plot([x] * len(vals), vals, "k.", ms=4)
            ax.text(x, 0.01, kind.removesuffix("_acc").upper(), rotation=90, ha="center",
                    va="bottom", fontsize=7)
    ax.set(xticks=range(len(summary["arms"])), xticklabels=list(summary["arms"]),
           ylabel="masked-token accuracy",
           title="FP vs fake quantisation (W: weight bits, A: activation bits)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(hist: dict[str, np.ndarray], runs: list[tuple[str, int]], path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    labelled = set()
    for i, (arm, _) in enumerate(runs):
        acc = hist["train/accuracy"][i]
        w = max(len(acc) // 50, 1)
        smooth = np.convolve(acc, np.ones(w) / w, mode="valid")
        ax.plot(smooth, color=COLORS[arm], alpha=0.8, label=None if arm in labelled else arm)
        labelled.add(arm)
    ax.set(xlabel="step", ylabel="train masked-token accuracy (smoothed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # flags only for the binary: importing run_experiment defines none
    runner.main(run_experiment, "outliers_quant")
