"""Small-scale proxies for training instabilities (Wortsman et al. 2023, arXiv:2309.14322):
attention-logit growth, output-logit divergence and learning-rate sensitivity in a small
transformer over a learning-rate sweep, with and without qk-layernorm and z-loss.

    python -m experiments.instability --config=configs/instability.py \
        --workdir=workdirs/instability

Arms (config.arms; each a TransformerConfig.qk_norm and a next-token z-loss weight):
  plain:    no mitigation.
  qk_norm:  queries and keys normalised per head before the dot product
            (`TransformerConfig.qk_norm`: RMSNorm over d_head with a learned gain; the
            paper's qk-layernorm is a LayerNorm, i.e. also centred, see configs/instability.py).
  z_loss:   PaLM's auxiliary `z_loss * logsumexp(logits)^2` (Chowdhery et al. 2022) added to
            the cross-entropy.
  qk_norm_z_loss: both (the paper's default recipe).

Each arm trains the same initial parameters on the same batches at every rate of
`config.learning_rates`, in one compiled call (`jaxinterp.train.lr_sweep.train_lr_sweep`:
vmap over rates, scan over steps). At every step the forward pass captures every layer's
pre-softmax scores (`blocks.*.attn.hook_attn_scores`, via `jaxinterp.run`) and records their
maximum over layers, heads, batch and unmasked (query, key) pairs, and the output logits' mean
|log Z| (log Z = logsumexp over the vocabulary; 0 when the logits are log-probabilities) and
max |logit|. The final loss is the cross-entropy (without z-loss) of the final parameters on
held-out sequences; a run has diverged when that loss is NaN, inf or above the loss at
initialisation.

Writes to the workdir: `final_loss_vs_lr.png` (the paper's figure 1: final loss against the
learning rate, one curve per arm), `logits_vs_step.png` (max attention logit and mean |log Z|
against the step, per arm and rate) and `summary.json`: per arm and rate the maximum attention
logit over training and at the end, the final loss, the final mean |log Z|, and per arm the LR
sensitivity (`jaxinterp.train.lr_sweep.lr_sensitivity`). `run_experiment` is the library
entry point; notebooks can call it directly.
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
from jaxinterp import data
from jaxinterp.models.transformer import Transformer, TransformerConfig
from jaxinterp.train.loss import cross_entropy
from jaxinterp.train.lr_sweep import lr_sensitivity, train_lr_sweep

SCORES = "blocks.*.attn.hook_attn_scores"


def load_tokens(config: ConfigDict, workdir: str) -> tuple[np.ndarray, np.ndarray]:
    """(train int32 [steps, batch, L], eval int32 [eval_examples, L]) from the config's
    jaxinterp builder (prepared under `<workdir>/data` unless `config.data.data_dir`)."""
    data_dir = config.data.data_dir or os.path.join(workdir, "data")
    kw = dict(config.data.builder_kwargs)
    need = config.num_train_steps * config.batch_size
    kw["num_train"] = need
    train = data.load_source(config.data.name, "train", data_dir, **kw)
    test = data.load_source(config.data.name, "test", data_dir, **kw)
    tokens = np.stack([train[i]["tokens"] for i in range(need)]).astype(np.int32)
    order = np.random.default_rng(config.seed).permutation(need)
    tokens = tokens[order].reshape(config.num_train_steps, config.batch_size, -1)
    n_eval = min(config.eval_examples, len(test))
    return tokens, np.stack([test[i]["tokens"] for i in range(n_eval)]).astype(np.int32)


def make_loss_fn(model: Transformer, z_loss: float):
    """`(params, tokens [batch, L]) -> (loss, metrics)`: next-token cross-entropy (+ z-loss)
    and the logit statistics of the same forward pass (module docstring)."""

    def loss_fn(params, tokens):
        logits, cache = ji.run(model, {"params": params}, tokens[:, :-1], capture=SCORES)
        loss, m = cross_entropy(logits, tokens[:, 1:], z_loss=z_loss)
        max_score = jnp.max(jnp.stack([jnp.max(s) for s in cache.values()]))
        log_z = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
        return loss, {"ce": m["loss"], "max_attn_logit": max_score,
                      "mean_abs_log_z": jnp.abs(log_z).mean(),
                      "mean_logit": logits.mean(),
                      "max_abs_logit": jnp.abs(logits).max()}

    return loss_fn


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Every arm's sweep, the figures and a summary (see the module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    train_tokens, eval_tokens = load_tokens(config, workdir)
    lrs = [float(x) for x in config.learning_rates]
    summary: dict[str, Any] = {"learning_rates": lrs, "arms": {}}
    histories = {}
    for name, arm in config.arms.items():
        model = Transformer(TransformerConfig(**{**dict(config.model), "qk_norm": arm.qk_norm}))
        params = model.init(jax.random.key(config.seed), eval_tokens[:1, :-1])["params"]
        loss_fn = make_loss_fn(model, arm.z_loss)
        final_params, history = train_lr_sweep(loss_fn, params, train_tokens, lrs,
                                               config.optimizer)
        eval_fn = jax.jit(lambda p, f=loss_fn: f(p, eval_tokens)[1])
        init = jax.device_get(eval_fn(params))
        final = jax.device_get(jax.vmap(eval_fn)(final_params))
        history = {k: np.asarray(v) for k, v in jax.device_get(history).items()}
        histories[name] = history
        final_loss = [_finite_or_none(x) for x in final["ce"]]
        init_loss = float(init["ce"])
        summary["arms"][name] = {
            "qk_norm": bool(arm.qk_norm), "z_loss": float(arm.z_loss),
            "init_loss": init_loss,
            "final_loss": final_loss,
            "diverged": [x is None or x > init_loss for x in final_loss],
            "max_attn_logit": [_finite_or_none(np.nanmax(np.where(np.isfinite(h), h, np.nan)))
                               if np.isfinite(h).any() else None
                               for h in history["max_attn_logit"]],
            "final_max_attn_logit": [_finite_or_none(x) for x in final["max_attn_logit"]],
            "final_mean_abs_log_z": [_finite_or_none(x) for x in final["mean_abs_log_z"]],
            "final_max_abs_logit": [_finite_or_none(x) for x in final["max_abs_logit"]],
            "lr_sensitivity": lr_sensitivity(np.asarray(final["ce"], np.float64), init_loss),
        }
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "final_loss_vs_lr.png": lambda path: plot_final_loss(summary, path),
        "logits_vs_step.png": lambda path: plot_logits(summary, histories, path)})


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


_COLORS = {"plain": "tab:red", "qk_norm": "tab:blue", "z_loss": "tab:green",
           "qk_norm_z_loss": "tab:purple"}


def plot_final_loss(summary: dict[str, Any], path: str) -> None:
    """Final loss against the learning rate, one curve per arm (diverged runs drawn at the
    initial loss with an x; the loss is capped there as in the LR sensitivity), as in the
    paper's figure 1."""
    plt = pyplot()
    lrs = np.array(summary["learning_rates"])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, s in summary["arms"].items():
        loss = np.array([s["init_loss"] if v is None else min(v, s["init_loss"])
                         for v in s["final_loss"]])
        color = _COLORS.get(name)
        ax.plot(lrs, loss, "o-", color=color,
                label=f"{name} (LR sensitivity {s['lr_sensitivity']:.2f})")
        div = np.array(s["diverged"])
        if div.any():
            ax.plot(lrs[div], loss[div], "x", color=color, ms=10, mew=2)
    ax.axhline(next(iter(summary["arms"].values()))["init_loss"], color="gray", ls=":",
               lw=1, label="loss at initialisation")
    ax.set(xscale="log", xlabel="learning rate", ylabel="final eval loss",
           title="final loss vs learning rate (x: diverged)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_logits(summary: dict[str, Any], histories: dict[str, dict[str, np.ndarray]],
                path: str) -> None:
    """Max attention logit and mean |log Z| against the step: one panel per arm and quantity,
    one line per rate (darker = higher rate)."""
    plt = pyplot()
    arms = list(histories)
    lrs = summary["learning_rates"]
    fig, axes = plt.subplots(2, len(arms), figsize=(4.5 * len(arms), 7), squeeze=False,
                             sharey="row")
    cmap = plt.get_cmap("viridis")
    for j, name in enumerate(arms):
        h = histories[name]
        for r, lr in enumerate(lrs):
            color = cmap(r / max(1, len(lrs) - 1))
            for i, key in enumerate(("max_attn_logit", "mean_abs_log_z")):
                axes[i, j].plot(h[key][r], color=color, lw=1, label=f"lr {lr:g}")
        axes[0, j].set(title=f"{name}: max attention logit", yscale="log", xlabel="step")
        axes[1, j].set(title=f"{name}: output logits, mean |log Z|", yscale="log",
                       xlabel="step")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "instability")
