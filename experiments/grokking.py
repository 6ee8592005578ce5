"""Grokking, grokking tickets, and memorisation of corrupted labels on modular addition.

    python -m experiments.grokking --config=configs/grokking.py --workdir=workdirs/grokking

Data: every pair `(a, b)`, `a, b < p`, of `jaxinterp.data.modular_arithmetic` (`a + b mod p`),
split into train/test by the builder's permutation. Model: a one-hidden-layer MLP on one-hot
operands, `logits = act(U[a] + V[b]) W` (Doshi et al. 2023; Gromov 2023), trained full-batch
with AdamW and weight decay through the project's loss (`jaxinterp.train.step.loss_fn`, the
classification task on `tokens -> target`) and optimizer (`jaxinterp.train.optimizer`).

Arms (all from the same initial weights):
  dense:      clean labels. Train accuracy reaches 99% long before test accuracy 95%.
  ticket:     the magnitude mask (per weight matrix) of the final dense model, applied to the
              dense run's initial weights (rewinding to init), trained again;
  random:     a random mask with the same number of weights per matrix, same init (ticket and
              random are one vmapped call, over the masks).
  corrupted:  a fraction of the training pairs get a random wrong label (its own steps and
              weight decay, `config.corrupted`); the network fits them and still generalises.
  pruning  the corrupted-label model's hidden neurons ranked by the IPR of the Fourier power
           of their input weights (`jaxinterp.analysis.fourier.ipr`, over U and V): pruning
           the least periodic (lowest-IPR) neurons, as Doshi et al. do, and, for the other
           direction, the most periodic ones, at several fractions.

Masks act on the weights (the masked init) and on the updates (`jaxinterp.train.masks.
mask_updates` last in the optimizer chain), so pruned weights stay exactly zero.

Writes `curves.png` (accuracy vs step, every arm), `ipr_pruning.png` and `summary.json`
(per arm `step_train_99`, `step_test_95`: the first evaluated step with train accuracy >= 0.99,
test accuracy >= 0.95; null if never). `run_experiment` is the library entry point.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.analysis.fourier import ipr
from jaxinterp.data.modular_arithmetic import ModularArithmeticConfig, modular_op
from jaxinterp.train import masks as mask_lib
from jaxinterp.train.optimizer import make_optimizer
from jaxinterp.train.step import loss_fn
from jaxinterp.train.tasks import Classification

ACTS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "quadratic": jnp.square}


class ModularMLP(nn.Module):
    """`logits = act(U[a] + V[b]) W_out` for tokens `[a, op, b, eq]` (int [batch, 4]) ->
    logits [batch, p]. U, V: [p, d_hidden] (one-hot operand weights), W_out: [d_hidden, p],
    initialised normal with std `init_scale / sqrt(fan_in)`."""

    p: int
    d_hidden: int = 512
    act: str = "relu"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        if self.act not in ACTS:
            raise ValueError(f"ModularMLP: act must be one of {sorted(ACTS)}, got {self.act!r}")
        a, b = tokens[:, 0], tokens[:, 2]
        # Fan-in init times init_scale (larger: longer grokking delay, Liu et al. 2023).
        init_in = nn.initializers.normal(self.init_scale / np.sqrt(2 * self.p))  # 2 one-hots
        U = self.param("U", init_in, (self.p, self.d_hidden))
        V = self.param("V", init_in, (self.p, self.d_hidden))
        W = self.param("W_out", nn.initializers.normal(self.init_scale / np.sqrt(self.d_hidden)),
                       (self.d_hidden, self.p))
        h = ACTS[self.act](U[a] + V[b])  # [batch, hidden]
        return jnp.einsum("bh,hp->bp", h, W)  # contract the hidden neurons


def make_data(config: ConfigDict) -> dict[str, np.ndarray]:
    """Train/test tokens [n, 4] and targets [n] from the modular-arithmetic builder's config
    (pairs and split), plus corrupted train targets and the corrupted rows' indicator."""
    d = config.data
    cfg = ModularArithmeticConfig(name="grok", p=d.p, op=d.op, train_fraction=d.train_fraction,
                                  seed=d.seed)
    cfg.validate()
    a, b = cfg.pairs()
    target = modular_op(a, b, d.op, d.p)
    tokens = np.stack([a, np.full_like(a, d.p), b, np.full_like(a, d.p + 1)], 1)
    idx = cfg.split_indices()
    out = {f"{s}_tokens": tokens[i].astype(np.int32) for s, i in idx.items()}
    out.update({f"{s}_target": target[i].astype(np.int32) for s, i in idx.items()})
    # Corrupted labels: a random wrong residue for a fixed fraction of the training pairs.
    rng = np.random.default_rng(1000 + d.seed)
    n = len(idx["train"])
    corrupt = np.zeros(n, bool)
    corrupt[rng.permutation(n)[:round(config.corrupted.fraction * n)]] = True
    shift = rng.integers(1, d.p, size=n)
    out["corrupt"] = corrupt
    out["corrupt_target"] = np.where(corrupt, (out["train_target"] + shift) % d.p,
                                     out["train_target"]).astype(np.int32)
    return out


def _accuracy(logits, targets, weight=None):
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    if weight is None:
        return correct.mean()
    return (correct * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def train_arms(config: ConfigDict, model: nn.Module, params, masks, train_targets,
               data: dict[str, np.ndarray]):
    """Trains one arm per leading index of `params`, `masks`, `train_targets` (vmapped) for
    `config.num_train_steps` full-batch steps, evaluating every `config.eval_every_steps`.

    Returns (final params [arm, ...], curves {name: [arm, n_evals]}) with curves
    `train_acc` (against each arm's own labels), `test_acc`, `corrupt_acc` (on the corrupted
    rows, against each arm's own labels) and `train_loss`.
    """
    task = Classification(input_feature="tokens", label_feature="target", num_classes=config.data.p)
    n_evals = config.num_train_steps // config.eval_every_steps
    train_tokens, test_tokens = jnp.asarray(data["train_tokens"]), jnp.asarray(data["test_tokens"])
    test_target = jnp.asarray(data["test_target"])
    corrupt = jnp.asarray(data["corrupt"], jnp.float32)

    def one_arm(params, mask, targets):
        opt = optax.chain(make_optimizer(config.optimizer, config.num_train_steps),
                          mask_lib.mask_updates(mask))
        params = mask_lib.apply_mask(params, mask)
        batch = {"tokens": train_tokens, "target": targets}

        def step(carry, _):
            params, opt_state = carry
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, batch, model, task=task, train=True)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        def chunk(carry, _):
            carry, losses = jax.lax.scan(step, carry, None, length=config.eval_every_steps)
            p = carry[0]
            train_logits = model.apply({"params": p}, train_tokens)
            metrics = {"train_acc": _accuracy(train_logits, targets),
                       "corrupt_acc": _accuracy(train_logits, targets, corrupt),
                       "test_acc": _accuracy(model.apply({"params": p}, test_tokens), test_target),
                       "train_loss": losses[-1]}
            return carry, metrics

        carry = (params, opt.init(params))
        (params, _), curves = jax.lax.scan(chunk, carry, None, length=n_evals)
        return params, curves

    return jax.jit(jax.vmap(one_arm))(params, masks, jnp.asarray(train_targets))


def first_step(values: np.ndarray, threshold: float, every: int) -> int | None:
    """First evaluated step (eval i is after (i + 1) * every steps) with value >= threshold."""
    hits = np.flatnonzero(np.asarray(values) >= threshold)
    return int((hits[0] + 1) * every) if hits.size else None


def neuron_ipr(params) -> np.ndarray:
    """Per hidden neuron, the mean IPR of the Fourier power of its U and V input weights."""
    return np.asarray(0.5 * (ipr(params["U"], axis=0) + ipr(params["V"], axis=0)))


def prune_neurons(params, neurons: np.ndarray):
    """`params` with the hidden `neurons` (int indices) removed (their U, V columns and W_out
    rows zeroed)."""
    keep = jnp.ones(params["U"].shape[1]).at[jnp.asarray(neurons, jnp.int32)].set(0.0)
    return {"U": params["U"] * keep, "V": params["V"] * keep,
            "W_out": params["W_out"] * keep[:, None]}


def ipr_pruning(model, params, data, fractions) -> dict[str, Any]:
    """Accuracies of the corrupted-label model after pruning a fraction of its hidden neurons,
    lowest-IPR first and highest-IPR first: on the corrupted rows (their corrupted labels),
    the clean train rows and the test set."""
    scores = neuron_ipr(params)
    order = np.argsort(scores)  # ascending IPR
    corrupt = data["corrupt"]
    out = {"fractions": list(map(float, fractions)),
           "ipr_quantiles": [float(q) for q in np.quantile(scores, [0, .25, .5, .75, 1])]}
    for name, ranked in (("low_ipr_first", order), ("high_ipr_first", order[::-1])):
        rows = {"corrupt_acc": [], "clean_train_acc": [], "test_acc": []}
        for f in fractions:
            pruned = prune_neurons(params, ranked[:round(f * len(ranked))])
            train = np.asarray(jnp.argmax(model.apply({"params": pruned},
                                                      data["train_tokens"]), -1))
            test = np.asarray(jnp.argmax(model.apply({"params": pruned}, data["test_tokens"]), -1))
            rows["corrupt_acc"].append(float((train == data["corrupt_target"])[corrupt].mean()))
            rows["clean_train_acc"].append(float((train == data["train_target"])[~corrupt].mean()))
            rows["test_acc"].append(float((test == data["test_target"]).mean()))
        out[name] = rows
    return out


def corrupted_run_config(config: ConfigDict) -> ConfigDict:
    """`config` with `config.corrupted`'s `num_train_steps` and `weight_decay` in place."""
    out = copy.deepcopy(config)
    with out.unlocked():
        out.num_train_steps = config.corrupted.num_train_steps
        out.optimizer.weight_decay = config.corrupted.weight_decay
    return out


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Phase 1 (dense, corrupted), phase 2 (ticket, random mask), IPR pruning, figures and
    the summary (see the module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data = make_data(config)
    model = ModularMLP(p=config.data.p, **config.model)
    init = model.init(jax.random.key(config.seed), data["train_tokens"][:1])["params"]
    stack = lambda *trees: jax.tree.map(lambda *x: jnp.stack(x), *trees)
    unstack = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
    every = config.eval_every_steps

    ones = mask_lib.ones_mask(init)
    dense_params, dense_curves = train_arms(config, model, stack(init), stack(ones),
                                            data["train_target"][None], data)
    ticket = mask_lib.magnitude_mask(unstack(dense_params, 0), config.sparsity)
    rand = mask_lib.random_mask(jax.random.key(config.seed + 1), init, config.sparsity)
    _, mask_curves = train_arms(config, model, stack(init, init), stack(ticket, rand),
                                np.stack([data["train_target"]] * 2), data)
    # The corrupted-label arm: its own steps and weight decay (memorised labels are forgotten
    # only under strong decay), so its own call.
    corrupted_config = corrupted_run_config(config)
    corrupt_params, corrupt_curves = train_arms(corrupted_config, model, stack(init), stack(ones),
                                                data["corrupt_target"][None], data)

    curves = {"dense": dense_curves, "ticket": mask_curves, "random": mask_curves,
              "corrupted": corrupt_curves}
    index = {"dense": 0, "ticket": 0, "random": 1, "corrupted": 0}
    curves = {n: {k: np.asarray(v[index[n]]) for k, v in c.items()} for n, c in curves.items()}

    summary: dict[str, Any] = {}
    for name, c in curves.items():
        summary[name] = {
            "step_train_99": first_step(c["train_acc"], 0.99, every),
            "step_test_95": first_step(c["test_acc"], 0.95, every),
            "num_train_steps": len(c["test_acc"]) * every,
            "final_train_acc": float(c["train_acc"][-1]),
            "final_test_acc": float(c["test_acc"][-1]),
        }
    summary["corrupted"]["final_corrupt_acc"] = float(curves["corrupted"]["corrupt_acc"][-1])
    summary["corrupted"]["n_corrupt"] = int(data["corrupt"].sum())
    summary["ticket"]["sparsity"] = mask_lib.sparsity_of(ticket)
    summary["random"]["sparsity"] = mask_lib.sparsity_of(rand)
    summary["ipr_pruning"] = ipr_pruning(model, unstack(corrupt_params, 0), data,
                                         config.prune_fractions)
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "curves.png": lambda path: plot_curves(curves, every, path),
        "ipr_pruning.png": lambda path: plot_pruning(summary["ipr_pruning"], path)})


def plot_curves(curves, every: int, path: str) -> None:
    """Train (dashed) and test (solid) accuracy vs step for every arm, log-scaled steps."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = {"dense": "tab:blue", "ticket": "tab:green", "random": "tab:orange",
              "corrupted": "tab:red"}
    for name, c in curves.items():
        steps = every * (1 + np.arange(len(c["test_acc"])))
        ax = axes[1] if name == "corrupted" else axes[0]
        ax.plot(steps, c["train_acc"], ls="--", color=colors[name], label=f"{name} train")
        ax.plot(steps, c["test_acc"], color=colors[name], label=f"{name} test")
        if name == "corrupted":
            ax.plot(steps, c["corrupt_acc"], ls=":", color="black",
                    label="corrupted rows (their wrong labels)")
    axes[0].set(title="grokking: dense vs lottery ticket vs random mask", xlabel="step",
                ylabel="accuracy", xscale="log")
    axes[1].set(title="corrupted training labels", xlabel="step", xscale="log")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pruning(result, path: str) -> None:
    """Accuracies of the corrupted-label model vs the fraction of neurons pruned by IPR."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, name in zip(axes, ("low_ipr_first", "high_ipr_first"), strict=True):
        for key, color in (("corrupt_acc", "tab:red"), ("clean_train_acc", "tab:blue"),
                           ("test_acc", "tab:green")):
            ax.plot(result["fractions"], result[name][key], "o-", color=color, label=key)
        ax.set(title=f"pruning neurons, {name.replace('_', ' ')}",
               xlabel="fraction of hidden neurons pruned", ylabel="accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "grokking")
