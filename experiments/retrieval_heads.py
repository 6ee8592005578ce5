"""Retrieval heads in a small model trained for key-value recall, and what pruning them costs.

    python -m experiments.retrieval_heads --config=configs/retrieval_heads.py \
        --workdir=workdirs/retrieval_heads

Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality"; checked
against the arXiv text, 2404.15574): a head *copies and pastes* a token when, at a decoding step,
its most-attended context token is a needle token equal to the token being generated; its
*retrieval score* is the share of the needle's tokens it copies this way; heads scoring above
0.1 are retrieval heads; "only a small portion (less than 5%) of the attention heads are
retrieval"; "completely pruning retrieval heads leads to failure in retrieving relevant
information ... while pruning random non-retrieval heads does not". Here:

  data   `key_value` (jaxinterp/data/key_value.py): `n_pairs` key-value pairs (one token each)
         among filler tokens, then `QUERY` and `n_queries` queried pairs `k_q v_q`; the needles
         are the queried values in the context, the answer positions the queried keys after
         QUERY (teacher forcing: each emits its value).
  model  a small GPT-2-style transformer, trained with the loss on the answer positions only
         (`config.loss_on="answer"`) or on every position ("all"; with the data's skip-bigram
         keys this rewards a previous-token head early and breaks the plateau of recall),
         one run per seed, all seeds one vmapped call (`train_vmapped`).
  heads  `analysis.heads.retrieval_score` on the test split's `hook_pattern` of every layer;
         retrieval heads: score > `config.threshold` (0.1, the paper's); their share of all heads.
  prune  the top `config.k` heads by retrieval score have their `hook_z` mean-ablated
         (`ji.Ablate(how="mean")`, one intervention per layer with a head mask), against
         `config.n_random` random sets of k other heads; recall accuracy (argmax at the answer
         positions == the queried value), every mask one vmapped evaluation. Chance: 1 /
         n_pairs (a random context value) and 1 / n_values (a random value).

Writes `retrieval_scores.png`, `pruning.png` and `summary.json`.
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
from experiments.successor_heads import ablation_interventions, head_masks
from jaxinterp.analysis.heads import retrieval_score
from jaxinterp.data.key_value import KeyValue, KeyValueConfig
from jaxinterp.data.synthetic import ARRAY_RECORD
from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.vmapped import train_vmapped

FEATURES = ("tokens", "needle", "answer")


def load_split(data: ConfigDict | dict, split: str, data_dir: str) -> dict[str, np.ndarray]:
    """Every example of a `key_value` split as arrays (`FEATURES`, batch axis first)."""
    builder = KeyValue(data_dir=data_dir, **dict(data))
    builder.download_and_prepare(file_format=ARRAY_RECORD)
    src = builder.as_data_source(split)
    rows = [src[i] for i in range(len(src))]
    return {k: np.stack([r[k] for r in rows]) for k in FEATURES}


def make_model(config: ConfigDict) -> ji.models.Transformer:
    """The config's transformer with `d_vocab` and `n_ctx` set from the data."""
    d = KeyValueConfig(name="experiment", **dict(config.data))
    return ji.models.Transformer(TransformerConfig(**{
        **dict(config.model), "d_vocab": d.vocab_size, "n_ctx": d.seq_len - 1}))


def evaluate(model, params, split: dict[str, jax.Array], mask=None, scores: bool = False):
    """Recall accuracy and loss at the answer position (and with `scores` the retrieval score
    [layer, head]). `mask` [layer, head]: heads to mean-ablate (None: none)."""
    inputs = split["tokens"][:, :-1]
    ivs = [] if mask is None else ablation_interventions(mask)
    logits, cache = ji.run(model, {"params": params}, inputs, interventions=ivs,
                           capture=("blocks.*.attn.hook_pattern",) if scores else ())
    answer = split["answer"][:, :-1]
    targets = split["tokens"][:, 1:]
    n_answers = answer.sum()
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    out = {"recall": ((logits.argmax(-1) == targets) & answer).sum() / n_answers,
           "loss": (ce * answer).sum() / n_answers, "all_loss": ce.mean()}
    if scores:
        out["retrieval_score"] = jnp.stack([
            retrieval_score(cache[f"blocks.{i}.attn.hook_pattern"], inputs,
                            split["needle"][:, :-1], answer)
            for i in range(model.config.n_layers)])
    return out


def train_runs(config: ConfigDict, train: dict[str, np.ndarray], test: dict[str, np.ndarray]):
    """One run per seed of `config.seeds`, in one vmapped call, evaluated on `test` every
    `config.eval_every_steps` steps (0: never). Returns (params, history)."""
    model = make_model(config)
    train = jax.tree.map(jnp.asarray, train)
    test = jax.tree.map(jnp.asarray, test)
    n_train, batch = train["tokens"].shape[0], config.batch_size

    def init_fn(key):
        return model.init(key, train["tokens"][:1, :-1])["params"]

    def loss_fn(params, key, args, step):
        del args, step
        idx = jax.random.randint(key, (batch,), 0, n_train)
        out = evaluate(model, params, {k: v[idx] for k, v in train.items()})
        loss = out["all_loss"] if config.loss_on == "all" else out["loss"]
        return loss, {"recall": out["recall"]}

    def eval_fn(params, args):
        del args
        return evaluate(model, params, test, scores=True)

    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in config.seeds])
    return train_vmapped(loss_fn, init_fn, keys, None, config.optimizer, config.num_train_steps,
                         eval_fn=eval_fn if config.eval_every_steps else None,
                         eval_every=config.eval_every_steps)


def analyse(config, model, params, test, rng):
    """Retrieval scores of every run (params with a leading run axis), then the pruning masks
    (clean, top-k, random k-sets) evaluated in one vmapped call."""
    c = config.model
    n_runs = jax.tree.leaves(params)[0].shape[0]
    clean = jax.device_get(jax.jit(jax.vmap(
        lambda p, split: evaluate(model, p, split, scores=True), in_axes=(0, None)))(
            params, test))
    scores = clean["retrieval_score"]  # [run, layer, head]
    order = np.argsort(-scores.reshape(n_runs, -1), axis=1, kind="stable")
    top, others = order[:, :config.k], order[:, config.k:]
    random_sets = np.stack([np.stack([rng.choice(o, config.k, replace=False)
                                      for _ in range(config.n_random)]) for o in others])
    masks = np.stack([np.concatenate([head_masks(c.n_layers, c.n_heads, top[r][None]),
                                      head_masks(c.n_layers, c.n_heads, random_sets[r])])
                      for r in range(n_runs)])  # [run, 1 + n_random, layer, head]
    per_mask = jax.vmap(lambda p, split, mk: evaluate(model, p, split, mk),
                        in_axes=(None, None, 0))
    ev = jax.device_get(jax.jit(jax.vmap(per_mask, in_axes=(0, None, 0)))(
        params, test, jnp.asarray(masks)))
    return {"clean": clean, "scores": scores, "top": top, "random_sets": random_sets,
            "eval": ev}


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Training, retrieval scores, pruning, figures and the summary."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    seeds = [int(s) for s in config.seeds]
    t = time.time()
    train = load_split(config.data, "train", data_dir)
    test = load_split(config.data, "test", data_dir)
    data_s = round(time.time() - t, 1)
    t = time.time()
    params, hist = train_runs(config, train, test)
    train_s = round(time.time() - t, 1)
    model = make_model(config)
    t = time.time()
    an = analyse(config, model, params, jax.tree.map(jnp.asarray, test),
                 np.random.default_rng(config.random_heads_seed))
    n_heads = config.model.n_heads
    n_total = config.model.n_layers * n_heads

    def head(flat):
        return list(divmod(int(flat), n_heads))

    per_seed = []
    for r, seed in enumerate(seeds):
        sc = an["scores"][r]
        rand = an["eval"]["recall"][r, 1:]
        n_ret = int((sc > config.threshold).sum())
        per_seed.append({
            "seed": seed,
            "clean_recall": float(an["clean"]["recall"][r]),
            "pruned_retrieval_recall": float(an["eval"]["recall"][r, 0]),
            "pruned_random_recall_mean": float(rand.mean()),
            "pruned_random_recall_min": float(rand.min()),
            "pruned_random_recall_max": float(rand.max()),
            "pruned_random_broken_share": float((rand < 0.5 * an["clean"]["recall"][r]).mean()),
            "top_heads": [head(h) for h in an["top"][r]],
            "top_heads_score": [float(sc.ravel()[h]) for h in an["top"][r]],
            "n_retrieval_heads": n_ret,
            "retrieval_head_share": n_ret / n_total,
            "retrieval_heads": [head(h) for h in np.flatnonzero(sc.ravel() > config.threshold)],
            "random_sets": [[head(h) for h in s] for s in an["random_sets"][r]],
            "scores": sc,
        })
    d = KeyValueConfig(name="experiment", **dict(config.data))
    summary = {
        "seeds": seeds, "k": int(config.k), "n_random": int(config.n_random),
        "threshold": float(config.threshold), "n_heads_total": n_total,
        "chance_context": 1 / d.n_pairs, "chance_values": 1 / d.n_values,
        "per_seed": per_seed,
        "clean_recall": float(np.mean([s["clean_recall"] for s in per_seed])),
        "pruned_retrieval_recall": float(np.mean([s["pruned_retrieval_recall"]
                                                  for s in per_seed])),
        "pruned_random_recall": float(np.mean([s["pruned_random_recall_mean"]
                                               for s in per_seed])),
        "retrieval_head_share": float(np.mean([s["retrieval_head_share"] for s in per_seed])),
        "timings": {"data_s": data_s, "train_s": train_s,
                    "analysis_s": round(time.time() - t, 1)},
        "seconds": round(time.time() - t0, 1),
    }
    curves = ({"step": hist["eval_step"], "recall": hist["eval/recall"],
               "score": hist["eval/retrieval_score"]} if "eval_step" in hist else None)
    return runner.write_outputs(workdir, summary, {
        "retrieval_scores.png": lambda path: plot_scores(per_seed, config, curves, path),
        "pruning.png": lambda path: plot_pruning(summary, path),
    })


# --- figures --------------------------------------------------------------------------------


def plot_scores(per_seed, config, curves, path: str) -> None:
    plt = pyplot()
    n = len(per_seed)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.4 * (n + 1), 3.2))
    for ax, s in zip(axes[:-1], per_seed, strict=True):
        m = np.asarray(s["scores"])
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.6 else "black")
        ax.set(title=f"seed {s['seed']}: retrieval score ({s['n_retrieval_heads']} > "
                     f"{config.threshold})", xlabel="head", ylabel="layer",
               xticks=range(m.shape[1]), yticks=range(m.shape[0]))
        ax.title.set_fontsize(8)
    ax = axes[-1]
    if curves is None:
        for s in per_seed:
            ax.plot(np.sort(np.ravel(s["scores"]))[::-1], marker="o", ms=3,
                    label=f"seed {s['seed']}")
        ax.axhline(config.threshold, color="gray", ls=":")
        ax.set(xlabel="head rank", ylabel="retrieval score", title="scores, sorted")
    else:
        for r, s in enumerate(per_seed):
            line, = ax.plot(curves["step"], curves["recall"][r], label=f"seed {s['seed']} recall")
            top = curves["score"][r].reshape(len(curves["step"]), -1).max(-1)
            ax.plot(curves["step"], top, color=line.get_color(), ls="--")
        ax.set(xlabel="step", ylim=(0, 1.02), title="recall (solid), top retrieval score (dashed)")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pruning(summary, path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = summary["per_seed"]
    x = np.arange(len(rows))
    ax.bar(x - 0.25, [s["clean_recall"] for s in rows], 0.25, color="gray", label="clean")
    ax.bar(x, [s["pruned_retrieval_recall"] for s in rows], 0.25, color="tab:red",
           label=f"top-{summary['k']} retrieval head(s) pruned")
    ax.bar(x + 0.25, [s["pruned_random_recall_mean"] for s in rows], 0.25, color="tab:blue",
           label=f"{summary['k']} random head(s) pruned (mean; line: range)")
    for i, s in enumerate(rows):
        ax.plot([i + 0.25, i + 0.25], [s["pruned_random_recall_min"],
                                       s["pruned_random_recall_max"]], color="black", lw=0.8)
    ax.axhline(summary["chance_context"], color="black", ls=":", lw=1,
               label="chance (a random context value)")
    ax.set(xticks=x, xticklabels=[f"seed {s['seed']}" for s in rows], ylim=(0, 1.02),
           ylabel="recall accuracy (test)",
           title="mean-ablating retrieval heads vs random heads")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # flags only for the binary: importing run_experiment defines none
    runner.main(run_experiment, "retrieval_heads")
