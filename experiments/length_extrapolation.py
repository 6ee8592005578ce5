"""Length extrapolation of attention variants: train at one length with rotary positions,
evaluate at 1x .. 16x.

    python -m experiments.length_extrapolation --config=configs/length_extrapolation.py \
        --workdir=workdirs/length_extrapolation

Gao & Spratling 2025 ("Softplus Attention with Re-weighting Boosts Length Extrapolation in
Large Language Models", arXiv:2501.13428): LSSAR keeps "nearly constant validation loss even at
16 times the training token length", where softmax's loss grows; sigmoid attention
(Ramapuram et al. 2024) and Hedgehog linear attention (Zhang et al. 2024) are the other arms.

Task (`copy_streams`): a stream of `length` distinct random tokens (after a BOS token) in which
one segment of n tokens, n in [seg_min, seg_max], occurs twice, the two copies at random
positions (the second after the first) among filler. Only the second copy's tokens after its
first are predictable, by copying: find the earlier occurrence of the current token, output its
successor (an induction circuit). The loss is the mean cross-entropy over those targets alone,
in training and evaluation (every other target is a uniformly random unseen token). Why this
task: the rule is the same at every length and is solved exactly (loss 0) at every length,
while the distance to look back (n .. length - n) and the number of distractor keys grow with
the length, which is what length extrapolation tests. At an evaluation length m x `length`
every length of the stream scales by m (n in [m seg_min, m seg_max], filler m times longer):
the same distribution, stretched. All tokens of a stream but the copy are distinct (drawn
without replacement from 1 .. vocab - 1, so vocab > 16 x (length - seg_min)), so the previous
occurrence is unambiguous at every length: a loss that grows with the length is the model's
failure to extrapolate, not a harder task.

Model: an attention-only transformer (`config.model`) with rotary positions on the whole head
and no position table; each arm changes only the attention (`config.arms`):
  softmax   softmax(q k / sqrt(d_head))
  sigmoid   sigmoid(q k / sqrt(d_head) - log n)  (n: the sequence length)
  lssa      softplus, log(d_head) log(N_i) q̂ k̂ scores, l1 rows (softplus_power 0)
  lssar     lssa then the re-weighting ReLU(N_i A - o_i)^15, l1 rows (the paper's best)
  linear    Hedgehog linear attention (learned softmax feature maps)
(jaxinterp/layers/attention.py gives every formula.) Each arm's seeds train as one vmapped,
compiled call (`train_vmapped`); the arms differ in their attention program (and "linear" in
its parameters), so they are separate calls. The LSSA runs are also evaluated with the
re-weighting switched on at evaluation only ("lssa_reweight_eval": the paper's first version
presents the re-weighting as "fine-tuning-free").

Writes `loss_vs_length.png` (copy loss and copy accuracy against the evaluation length, log x)
and `summary.json` to the workdir.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.models.transformer import Transformer, TransformerConfig
from jaxinterp.train.vmapped import train_vmapped

BOS = 0


# --- data -----------------------------------------------------------------------------------


def copy_streams(key: jax.Array, batch: int, length: int, seg_min: int, seg_max: int,
                 vocab: int) -> tuple[jax.Array, jax.Array]:
    """Streams with one repeated segment (module docstring).

    Returns tokens int32 [batch, length + 1] (BOS, then the stream) and mask bool
    [batch, length]: mask[:, i] says whether target tokens[:, i + 1] is predictable (a token
    of the second copy after its first).
    """
    if not 1 <= seg_min <= seg_max or 2 * seg_max > length:
        raise ValueError(f"need 1 <= seg_min={seg_min} <= seg_max={seg_max} and 2 * seg_max <= "
                         f"length={length}")
    if length - seg_min > vocab - 1:
        raise ValueError(f"vocab={vocab} too small: a stream needs up to length - seg_min = "
                         f"{length - seg_min} distinct tokens from 1 .. vocab - 1")

    def one(k):
        k_n, k_cut, k_tok = jax.random.split(k, 3)
        n = jax.random.randint(k_n, (), seg_min, seg_max + 1)
        f = length - 2 * n  # filler tokens
        u1, u2 = jnp.sort(jax.random.randint(k_cut, (2,), 0, f + 1))
        a, b = u1, u2 + n  # starts of the two copies
        toks = jax.random.permutation(k_tok, vocab - 1)[:length] + 1  # distinct tokens
        p = jnp.arange(length)
        seg_at = jnp.where(p < b, p - a, p - b)  # index into the segment (toks[:n])
        fill_at = n + jnp.where(p < a, p, jnp.where(p < b, p - n, p - 2 * n))
        in_seg = ((p >= a) & (p < a + n)) | ((p >= b) & (p < b + n))
        stream = jnp.where(in_seg, toks[jnp.clip(seg_at, 0, length - 1)],
                           toks[jnp.clip(fill_at, 0, length - 1)])
        mask = (p > b) & (p < b + n)
        return jnp.concatenate([jnp.array([BOS]), stream]).astype(jnp.int32), mask

    return jax.vmap(one)(jax.random.split(key, batch))


# --- model, loss ----------------------------------------------------------------------------


def make_model(config: ConfigDict, arm: str, **overrides) -> Transformer:
    """The arm's transformer; n_ctx covers the longest evaluation (no position table)."""
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    model = {k: v for k, v in dict(config.model).items() if k in fields}
    model.update(dict(config.arms[arm]))
    model.update(overrides)
    model["n_ctx"] = config.data.length * max(config.eval_multiples) + 1
    return Transformer(TransformerConfig(**model))


def copy_loss(model: Transformer, params, tokens: jax.Array, mask: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy, accuracy) over the predictable targets."""
    logits = model.apply({"params": params}, tokens[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    hit = logits.argmax(-1) == tokens[:, 1:]
    w = mask.astype(jnp.float32)
    return (ce * w).sum() / w.sum(), (hit * w).sum() / w.sum()


def eval_sets(config: ConfigDict) -> dict[int, tuple[jax.Array, jax.Array]]:
    """Fixed evaluation streams per length multiple (the same for every arm and seed)."""
    d = config.data
    out = {}
    for i, m in enumerate(config.eval_multiples):
        out[int(m)] = copy_streams(jax.random.key(10_000 + i), config.eval_examples,
                                   d.length * m, d.seg_min * m, d.seg_max * m, d.vocab)
    return out


# --- training and evaluation ----------------------------------------------------------------


def train_arm(config: ConfigDict, arm: str, seeds) -> Any:
    """Trains the arm's seeds in one vmapped call; returns params with a leading seed axis."""
    model = make_model(config, arm)
    d = config.data

    def init_fn(key):
        return model.init(key, jnp.zeros((1, d.length), jnp.int32))["params"]

    def loss_fn(params, key, _args, _step):
        tokens, mask = copy_streams(key, config.batch_size, d.length, d.seg_min, d.seg_max,
                                    d.vocab)
        loss, acc = copy_loss(model, params, tokens, mask)
        return loss, {"accuracy": acc}

    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    params, hist = train_vmapped(loss_fn, init_fn, keys, None, config.optimizer,
                                 config.num_train_steps)
    return params, hist


def evaluate_arm(config: ConfigDict, arm: str, params, sets, **overrides
                 ) -> dict[str, np.ndarray]:
    """Copy loss and accuracy [seed, multiple] at every evaluation length (examples in chunks
    of `config.eval_chunk`, seeds vmapped)."""
    model = make_model(config, arm, **overrides)

    def one_seed(p, tokens, mask):
        chunks = tokens.shape[0] // config.eval_chunk
        tk = tokens.reshape(chunks, config.eval_chunk, -1)
        mk = mask.reshape(chunks, config.eval_chunk, -1)

        def chunk(xs):
            t, m = xs
            logits = model.apply({"params": p}, t[:, :-1])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, t[:, 1:])
            hit = logits.argmax(-1) == t[:, 1:]
            w = m.astype(jnp.float32)
            return (ce * w).sum(), (hit * w).sum(), w.sum()

        ce, hit, n = jax.lax.map(chunk, (tk, mk))
        return ce.sum() / n.sum(), hit.sum() / n.sum()

    run = jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))
    loss, acc = zip(*[run(params, *sets[m]) for m in sorted(sets)], strict=True)
    return {"loss": np.stack([np.asarray(x) for x in loss], 1),
            "accuracy": np.stack([np.asarray(x) for x in acc], 1)}


def arm_summary(multiples, ev: dict[str, np.ndarray], seeds) -> dict[str, Any]:
    loss, acc = ev["loss"], ev["accuracy"]
    return {
        "loss_mean": loss.mean(0).tolist(), "accuracy_mean": acc.mean(0).tolist(),
        "loss_per_seed": loss.tolist(), "accuracy_per_seed": acc.tolist(),
        # loss at the longest length minus loss at the training length, per seed
        "loss_growth_per_seed": (loss[:, -1] - loss[:, 0]).tolist(),
        "loss_growth_mean": float((loss[:, -1] - loss[:, 0]).mean()),
        "seeds": list(seeds), "multiples": list(multiples),
    }


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    seeds = [int(s) for s in config.seeds]
    multiples = [int(m) for m in config.eval_multiples]
    sets = eval_sets(config)
    summary: dict[str, Any] = {"seeds": seeds, "multiples": multiples,
                               "train_length": int(config.data.length),
                               "eval_lengths": [int(config.data.length * m) for m in multiples],
                               "arms": {}}
    timings, train_loss = {}, {}
    for arm in config.arms:
        t = time.time()
        params, hist = train_arm(config, arm, seeds)
        last = max(1, config.num_train_steps // 10)
        train_loss[arm] = hist["train/loss"][:, -last:].mean(1).tolist()
        ev = evaluate_arm(config, arm, params, sets)
        summary["arms"][arm] = arm_summary(multiples, ev, seeds)
        summary["arms"][arm]["train_loss_last_tenth_per_seed"] = train_loss[arm]
        if arm == "lssa" and config.reweight_lssa_at_eval:
            ev = evaluate_arm(config, arm, params, sets,
                              softplus_power=float(config.reweight_power))
            summary["lssa_reweight_eval"] = arm_summary(multiples, ev, seeds)
        timings[arm] = round(time.time() - t, 1)
        print(f"{arm}: {timings[arm]} s, loss at {multiples}: "
              f"{np.round(summary['arms'][arm]['loss_mean'], 3).tolist()}", flush=True)
    summary["timings_s"] = timings
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "loss_vs_length.png": lambda path: plot_loss_vs_length(summary, path)})


# --- figure ---------------------------------------------------------------------------------

COLORS = {"softmax": "black", "sigmoid": "tab:orange", "lssa": "tab:blue", "lssar": "tab:red",
          "linear": "tab:green", "lssa_reweight_eval": "tab:purple"}


def plot_loss_vs_length(summary: dict[str, Any], path: str) -> None:
    plt = pyplot()
    lengths = np.asarray(summary["eval_lengths"])
    curves = dict(summary["arms"])
    if "lssa_reweight_eval" in summary:
        curves["lssa_reweight_eval"] = summary["lssa_reweight_eval"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, s in curves.items():
        color = COLORS.get(name)
        ls = ":" if name == "lssa_reweight_eval" else "-"
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(lengths, s[f"{key}_mean"], color=color, ls=ls, marker="o", label=name)
            for row in s[f"{key}_per_seed"]:
                ax.plot(lengths, row, color=color, ls=ls, lw=0.6, alpha=0.35)
    for ax, label in zip(axes, ("copy loss (cross-entropy, nats)", "copy accuracy"),
                         strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.axvline(summary["train_length"], color="gray", ls="--", lw=1)
        ax.set(xlabel="evaluation length (tokens; dashed: training length)", ylabel=label)
    axes[0].set_yscale("log")
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"trained at {summary['train_length']} tokens, rotary positions; mean of "
                 f"seeds {summary['seeds']} (thin: each seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # flags only for the binary: importing run_experiment defines none
    runner.main(run_experiment, "length_extrapolation")
