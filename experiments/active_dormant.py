"""Active-dormant attention heads and extreme tokens on the Bigram-Backcopy task.

    python -m experiments.active_dormant --config=configs/active_dormant.py \\
        --workdir=workdirs/active_dormant

Guo, Pai, Bai, Jiao, Jordan and Mei 2024, "Active-Dormant Attention Heads: Mechanistically
Demystifying Extreme-Token Phenomena in LLMs" (arXiv:2410.13835; code
github.com/GuoTianYu2000/Active-Dormant-Attention, BBM/). Data: the `bigram_backcopy` builder
(jaxinterp/data/bigram_backcopy.py: BOS, then bigram transitions, except that the token after
a trigger copies the token before it). Model: a small `Transformer` (pre-LN, one head per
layer, ReLU MLPs, learned positions), trained on next-token prediction over whole sequences,
one arm per (attention type, optimizer) in `config.arms`:

  softmax_adam  the paper's default (AdamW);
  relu_adam     `attention_type="relu"`: pattern_ij = relu(S_ij) / N_i (the authors'
                `attn_use_relu`; jaxinterp/layers/attention.py), rows need not sum to 1;
  softmax_sgd   SGD with momentum (`optimizer.name="sgd"`; the authors' `use_sgd`);
  relu_sgd      both.

Each arm is one vmapped, compiled call over `config.seeds`
(`jaxinterp.train.vmapped.train_vmapped`). Measured on a fixed held-out batch at every eval
(positions q >= 1; BOS is position 0; trigger positions are those holding a trigger token):

  bos_attn_{non}trigger [layer, head]: mean hook_pattern[q, 0] over (non-)trigger positions
      (the attention sink: near 1 on non-trigger tokens for a dormant softmax head);
  bos_share_nontrigger: the same divided by the row's total attention (rows of ReLU attention
      need not sum to 1; rows with no attention at all are left out), and row_mass_nontrigger
      the rows' mean total attention;
  prev_attn_trigger [layer, head]: mean hook_pattern[q, q - 1] over trigger positions (the
      active phase: copying the token before the trigger);
  value_norm_{bos,rest} [layer, head]: mean ||hook_v|| at BOS and at the other positions
      (value-state drain: BOS's value small);
  resid_norm_{bos,rest} [n_layers + 1]: mean residual-stream norm at BOS and elsewhere, at
      each block's input (blocks.l.hook_resid_pre, l = 0: the embedding) and the last block's
      output (residual-state peak: BOS's residual large);
  loss_trigger, loss_nontrigger: next-token loss at trigger / other positions (targets at
      q + 1), against `markov_entropy`, the Bayes loss of the bigram part.

The head that copies (the "backcopy head") is, per run, the (layer, head) with the largest
prev_attn_trigger at the end; its scores are the summary's headline numbers, with the
residual-norm ratio BOS / rest at that head's input (`resid_norm_ratio_at_head`: the sink
token's residual state as the sink head reads it) and its maximum over all residual points. Writes
`attention_to_bos.png`, `norms.png`, `dynamics.png` and `summary.json` to the workdir.
"""

from __future__ import annotations

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
from jaxinterp.data.bigram_backcopy import BigramBackcopy, BigramBackcopyConfig
from jaxinterp.models.transformer import Transformer, TransformerConfig
from jaxinterp.train.vmapped import train_vmapped

ARMS = ("softmax_adam", "relu_adam", "softmax_sgd", "relu_sgd")
_COLORS = dict(zip(ARMS, ("tab:red", "tab:blue", "tab:orange", "tab:green"), strict=True))


# --- data and model ------------------------------------------------------------------------


def load_tokens(data: ConfigDict | dict, split: str, data_dir: str) -> np.ndarray:
    """int32 [N, seq_len]: every sequence of a `bigram_backcopy` split."""
    builder = BigramBackcopy(data_dir=data_dir, **dict(data))
    builder.download_and_prepare()
    src = builder.as_data_source(split)
    return np.stack([src[i]["tokens"] for i in range(len(src))])


def arm_settings(config: ConfigDict, arm: str) -> tuple[TransformerConfig, ConfigDict]:
    """(model config, optimizer config) of one arm: `<attention>_<adam|sgd>`."""
    attention, _, opt = arm.partition("_")
    if arm not in ARMS:
        raise ValueError(f"arm {arm!r}; choose from {ARMS}")
    model = TransformerConfig(**{**dict(config.model), "attention_type": attention})
    return model, config.adam if opt == "adam" else config.sgd


def next_token_losses(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """[batch, pos - 1]: cross-entropy of predicting tokens[:, q + 1] from position q."""
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])


# --- the extreme-token scores ---------------------------------------------------------------


def extreme_token_scores(patterns: list[jax.Array], values: list[jax.Array],
                         resids: list[jax.Array], trigger: jax.Array) -> dict[str, jax.Array]:
    """The scores of the module docstring.

    patterns: per layer [batch, head, pos, pos]; values: per layer [batch, pos, head, d_head];
    resids: per residual point [batch, pos, d_model]; trigger: [batch, pos] bool (position 0
    is BOS). Returns arrays [layer, head] (resid_*: [residual point]).
    """
    pat = jnp.stack(patterns)  # [layer, batch, head, q, k]
    n_pos = pat.shape[-1]
    query = jnp.arange(n_pos) >= 1  # every position but BOS
    trig = (trigger & query)[None, :, None, :]  # [1, batch, 1, q]
    non = (~trigger & query)[None, :, None, :]

    def mean_over(x, where):  # x [layer, batch, head, q] -> [layer, head]
        where = jnp.broadcast_to(where, x.shape)
        return (x * where).sum((1, 3)) / jnp.maximum(where.sum((1, 3)), 1)

    to_bos = pat[..., 0]
    mass = pat.sum(-1)
    prev = jnp.concatenate([jnp.zeros_like(to_bos[..., :1]),
                            jnp.diagonal(pat, offset=-1, axis1=-2, axis2=-1)], axis=-1)
    active = mass > 1e-6
    share = jnp.where(active, to_bos / jnp.where(active, mass, 1.0), 0.0)
    vnorm = jnp.linalg.norm(jnp.stack(values), axis=-1)  # [layer, batch, pos, head]
    rnorm = jnp.linalg.norm(jnp.stack(resids), axis=-1)  # [layer, batch, pos]
    return {
        "bos_attn_nontrigger": mean_over(to_bos, non),
        "bos_attn_trigger": mean_over(to_bos, trig),
        "bos_share_nontrigger": mean_over(share, non & active),
        "row_mass_nontrigger": mean_over(mass, non),
        "prev_attn_trigger": mean_over(prev, trig),
        "value_norm_bos": vnorm[:, :, 0].mean(1),
        "value_norm_rest": vnorm[:, :, 1:].mean((1, 2)),
        "resid_norm_bos": rnorm[:, :, 0].mean(1),
        "resid_norm_rest": rnorm[:, :, 1:].mean((1, 2)),
    }


def evaluate(model: Transformer, params, tokens: jax.Array, trigger: jax.Array
             ) -> dict[str, jax.Array]:
    """Scores and losses of one run on a batch (tokens, trigger [batch, pos])."""
    n = model.config.n_layers
    sites = ("blocks.*.attn.hook_pattern", "blocks.*.attn.hook_v", "blocks.*.hook_resid_pre",
             f"blocks.{n - 1}.hook_resid_post")
    logits, cache = ji.run(model, {"params": params}, tokens, capture=sites)
    resids = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(n)]
    out = extreme_token_scores([cache[f"blocks.{i}.attn.hook_pattern"] for i in range(n)],
                               [cache[f"blocks.{i}.attn.hook_v"] for i in range(n)],
                               [*resids, cache[f"blocks.{n - 1}.hook_resid_post"]], trigger)
    losses = next_token_losses(logits, tokens)
    at = trigger[:, :-1]
    out["loss_trigger"] = (losses * at).sum() / jnp.maximum(at.sum(), 1)
    out["loss_nontrigger"] = (losses * ~at).sum() / jnp.maximum((~at).sum(), 1)
    return out


def markov_entropy(data: BigramBackcopyConfig, tokens: np.ndarray, trigger: np.ndarray
                   ) -> float:
    """The Bayes loss at non-trigger positions: the mean entropy of P[token] there (the
    first position, BOS, predicts from the marginal without triggers)."""
    p = data.transitions
    h = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)  # [vocab]
    first = data.marginal.copy()
    first[data.triggers] = 0
    first = first / first.sum()
    h[0] = -(first * np.log(np.where(first > 0, first, 1.0))).sum()
    at = ~trigger[:, :-1]
    return float(h[tokens[:, :-1]][at].mean())


# --- one arm: a vmapped training call over seeds --------------------------------------------


def train_arm(config: ConfigDict, arm: str, train_tokens: np.ndarray, eval_tokens: np.ndarray,
              triggers: np.ndarray):
    """Trains one arm for every seed in one call; returns (params, history)."""
    model_cfg, opt = arm_settings(config, arm)
    model = Transformer(model_cfg)
    train = jnp.asarray(train_tokens)
    ev = jnp.asarray(eval_tokens)
    ev_trigger = jnp.isin(ev, jnp.asarray(triggers))
    batch = config.batch_size

    def init_fn(key):
        return model.init(key, train[:1])["params"]

    def loss_fn(params, key, args, step):
        del args, step
        idx = jax.random.randint(key, (batch,), 0, train.shape[0])
        tokens = train[idx]
        logits = model.apply({"params": params}, tokens)
        return next_token_losses(logits, tokens).mean(), {}

    def eval_fn(params, args):
        del args
        return evaluate(model, params, ev, ev_trigger)

    # "rbg" keys: the initialisation and batch draws compile ~5x faster than threefry's on CPU.
    keys = jnp.stack([jax.random.key(int(s), impl=config.prng_impl) for s in config.seeds])
    return train_vmapped(loss_fn, init_fn, keys, (), opt, config.num_train_steps,
                         eval_fn=eval_fn, eval_every=config.eval_every_steps)


def backcopy_head(final: dict[str, np.ndarray]) -> tuple[int, int]:
    """(layer, head) with the largest prev_attn_trigger at the end of one run."""
    layer, head = np.unravel_index(np.argmax(final["prev_attn_trigger"]),
                                   final["prev_attn_trigger"].shape)
    return int(layer), int(head)


def arm_summary(config: ConfigDict, hist: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per seed, at the end of training: the backcopy head's scores and the residual peak."""
    ev = {k.removeprefix("eval/"): v for k, v in hist.items() if k.startswith("eval/")}
    per_seed = []
    for r, seed in enumerate(config.seeds):
        final = {k: v[r, -1] for k, v in ev.items()}
        layer, head = backcopy_head(final)
        at = (layer, head)
        ratio = final["resid_norm_bos"] / final["resid_norm_rest"]
        per_seed.append({
            "seed": int(seed), "backcopy_layer": layer, "backcopy_head": head,
            "bos_attn_nontrigger": float(final["bos_attn_nontrigger"][at]),
            "bos_attn_trigger": float(final["bos_attn_trigger"][at]),
            "bos_share_nontrigger": float(final["bos_share_nontrigger"][at]),
            "row_mass_nontrigger": float(final["row_mass_nontrigger"][at]),
            "prev_attn_trigger": float(final["prev_attn_trigger"][at]),
            "value_norm_bos": float(final["value_norm_bos"][at]),
            "value_norm_rest": float(final["value_norm_rest"][at]),
            "value_norm_ratio": float(final["value_norm_bos"][at] / final["value_norm_rest"][at]),
            "resid_norm_bos": final["resid_norm_bos"].tolist(),
            "resid_norm_rest": final["resid_norm_rest"].tolist(),
            "resid_norm_ratio": ratio.tolist(),
            "resid_norm_ratio_at_head": float(ratio[layer]),  # the backcopy layer's input
            "resid_norm_ratio_max": float(ratio.max()),
            "loss_trigger": float(final["loss_trigger"]),
            "loss_nontrigger": float(final["loss_nontrigger"]),
            # every layer's scores, [layer][head]
            "layers": {k: final[k].tolist() for k in
                       ("bos_attn_nontrigger", "bos_attn_trigger", "prev_attn_trigger",
                        "value_norm_bos", "value_norm_rest")},
        })
    keys = ("bos_attn_nontrigger", "bos_attn_trigger", "bos_share_nontrigger",
            "prev_attn_trigger", "value_norm_ratio", "resid_norm_ratio_at_head",
            "resid_norm_ratio_max", "loss_trigger",
            "loss_nontrigger")
    return {"per_seed": per_seed,
            **{f"mean_{k}": float(np.mean([s[k] for s in per_seed])) for k in keys}}


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Every arm, the figures and the summary (see the module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    data = BigramBackcopyConfig(name="x", **dict(config.data))
    train = load_tokens(config.data, "train", data_dir)
    test = load_tokens(config.data, "test", data_dir)[:config.eval_batch_size]
    trigger = np.isin(test, data.triggers)
    summary: dict[str, Any] = {
        "seeds": [int(s) for s in config.seeds], "triggers": data.triggers.tolist(),
        "trigger_fraction": float(trigger[:, 1:].mean()),
        "markov_entropy": markov_entropy(data, test, trigger), "arms": {}}
    curves, timings = {}, {}
    for arm in config.arms:
        t = time.time()
        _, hist = train_arm(config, arm, train, test, data.triggers)
        timings[f"{arm}_s"] = round(time.time() - t, 1)
        summary["arms"][arm] = arm_summary(config, hist)
        curves[arm] = hist
    summary["timings"] = timings
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "attention_to_bos.png": lambda path: plot_attention(summary, path),
        "norms.png": lambda path: plot_norms(summary, path),
        "dynamics.png": lambda path: plot_dynamics(summary, curves, path),
    })


# --- figures --------------------------------------------------------------------------------


def _per_seed(summary, arm, key):
    return np.array([s[key] for s in summary["arms"][arm]["per_seed"]])


def _bars(ax, summary, keys_labels, title):
    arms = list(summary["arms"])
    width = 0.8 / len(keys_labels)
    for j, (key, label) in enumerate(keys_labels):
        x = np.arange(len(arms)) + (j - (len(keys_labels) - 1) / 2) * width
        vals = [_per_seed(summary, a, key) for a in arms]
        ax.bar(x, [v.mean() for v in vals], width, label=label, alpha=0.8)
        for xi, v in zip(x, vals, strict=True):
            ax.plot(np.full(len(v), xi), v, "k.", ms=4)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plot_attention(summary, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    _bars(axes[0], summary, (("bos_attn_nontrigger", "non-trigger tokens"),
                             ("bos_attn_trigger", "trigger tokens")),
          "backcopy head: attention weight on BOS")
    axes[0].set_ylim(0, 1.05)
    _bars(axes[1], summary, (("prev_attn_trigger", "trigger -> previous token"),
                             ("bos_share_nontrigger", "non-trigger: BOS share of the row")),
          "backcopy head: previous-token attention; BOS share of the row's total")
    axes[1].set_ylim(0, 1.05)
    fig.suptitle(f"end of training, bars: mean of seeds {summary['seeds']}, dots: seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_norms(summary, path: str) -> None:
    plt = pyplot()
    arms = list(summary["arms"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    _bars(axes[0], summary, (("value_norm_bos", "BOS"), ("value_norm_rest", "other tokens")),
          "backcopy head: value-state norm ||v||")
    for a in arms:
        ratios = np.array([s["resid_norm_ratio"] for s in summary["arms"][a]["per_seed"]])
        layers = np.arange(ratios.shape[1])
        axes[1].plot(layers, ratios.mean(0), "o-", color=_COLORS[a], label=a)
        for r in ratios:
            axes[1].plot(layers, r, ".", color=_COLORS[a], alpha=0.5)
    axes[1].axhline(1, color="gray", lw=1, ls=":")
    axes[1].set(xlabel="residual point (l: block l's input; last: the output)",
                xticks=layers, yscale="log",
                title="residual-stream norm: BOS / mean of the other tokens")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dynamics(summary, curves, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for arm, hist in curves.items():
        steps = hist["eval_step"]
        for r, s in enumerate(summary["arms"][arm]["per_seed"]):
            at = (slice(None), s["backcopy_layer"], s["backcopy_head"])
            ev = {k.removeprefix("eval/"): v[r] for k, v in hist.items()
                  if k.startswith("eval/")}
            label = arm if r == 0 else None
            kw = dict(color=_COLORS[arm], alpha=0.8, label=label)
            axes[0].plot(steps, ev["bos_attn_nontrigger"][at], **kw)
            axes[0].plot(steps, ev["bos_attn_trigger"][at], ls=":", color=_COLORS[arm], alpha=0.8)
            axes[1].plot(steps, ev["value_norm_bos"][at] / ev["value_norm_rest"][at], **kw)
            ratio = ev["resid_norm_bos"] / ev["resid_norm_rest"]  # [E, layer]
            axes[2].plot(steps, ratio[:, s["backcopy_layer"]], **kw)
            axes[3].plot(steps, ev["loss_nontrigger"], **kw)
            axes[3].plot(steps, ev["loss_trigger"], ls=":", color=_COLORS[arm], alpha=0.8)
    axes[3].axhline(summary["markov_entropy"], color="gray", ls="--", lw=1,
                    label="Bayes loss (bigram part)")
    axes[0].set(title="backcopy head: attention on BOS (solid: non-trigger, dotted: trigger)",
                ylim=(0, 1.02))
    axes[1].set(title="value norm: BOS / others (backcopy head)", yscale="log")
    axes[2].set(title="residual norm: BOS / others at the backcopy head's input", yscale="log")
    axes[3].set(title="loss (solid: non-trigger, dotted: trigger)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # flags only for the binary: importing run_experiment defines none
    runner.main(run_experiment, "active_dormant")
