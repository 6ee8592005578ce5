"""Successor heads in a small LM trained on ordinal sequences, and what ablating them costs.

    python -m experiments.successor_heads --config=configs/successor_heads.py \
        --workdir=workdirs/successor_heads

Gould et al. 2023 ("Successor Heads: Recurring, Interpretable Attention Heads In The Wild";
checked against the arXiv text, 2312.09230): successor heads are "attention heads that increment
tokens with a natural ordering, such as numbers, months, and days"; a head's *succession score*
is the share of ordinal tokens whose successor gets the highest logit, among the tokens of the
same task, when the head's OV circuit is applied to the token's MLP0 (effective) embedding and
read out through the unembedding; the paper finds "mod-10 features" behind the incrementation
of numbers. Here:

  data   `ordinal` (jaxinterp/data/ordinal.py): runs `e_1 SEP e_2 SEP ... e_L` of consecutive
         numbers (0..n_numbers-1), days, months or letters, every element one token, among
         uniform filler tokens. The token after a SEP is the successor of the token before it:
         the *increment task* (accuracy of the argmax at the SEP positions, on the test split).
  model  a small GPT-2-style transformer (`jaxinterp.models.Transformer`), trained for next-token
         prediction on every position, one run per seed, all seeds one vmapped call
         (`train_vmapped`).
  heads  `analysis.heads.successor_score` on each family's element sequence (the score over all
         families is the share over all their (token, successor) pairs); the top
         `config.k` heads by that score are the successor heads.
  ablate the successor heads' `hook_z` replaced by its batch mean (`ji.Ablate(how="mean")`, one
         intervention per layer with a head mask) against `config.n_random` random sets of k
         other heads, every mask one vmapped evaluation: increment accuracy per family, and the
         loss on all other positions (what else the heads do).
  mod 10 the top successor head's OV logits (`analysis.heads.ov_logits`) from number tokens to
         number tokens: for each period P, the *mod-P lift* is how much more logit (z-scored over
         the number outputs of each input) goes to outputs m with m = n + 1 (mod P) than to the
         others, with the exact successor m = n + 1 and m = n left out. A mod-10 structure is a
         lift at P = 10 (and its divisors) above the other periods; the 10 x 10 matrix of the
         mean z-scored logit from inputs n = r (mod 10) to outputs m = c (mod 10) shows it. The
         number tokens here are atomic (no digits anywhere in the data), so nothing in the data
         rewards a mod-10 structure: the paper's comes from natural text.

Writes `successor_scores.png`, `ablation.png`, `mod10.png` and `summary.json`.
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
from jaxinterp.analysis.heads import ov_logits, successor_score
from jaxinterp.data.ordinal import Ordinal, OrdinalConfig
from jaxinterp.data.synthetic import ARRAY_RECORD
from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.vmapped import train_vmapped

FEATURES = ("tokens", "increment", "family")
PERIODS = tuple(range(2, 21))


# --- data and model ------------------------------------------------------------------------


def load_split(data: ConfigDict | dict, split: str, data_dir: str) -> dict[str, np.ndarray]:
    """Every example of an `ordinal` split as arrays (`FEATURES`, batch axis first)."""
    builder = Ordinal(data_dir=data_dir, **_builder_kwargs(data))
    builder.download_and_prepare(file_format=ARRAY_RECORD)
    src = builder.as_data_source(split)
    rows = [src[i] for i in range(len(src))]
    return {k: np.stack([r[k] for r in rows]) for k in FEATURES}


def _builder_kwargs(data: ConfigDict | dict) -> dict[str, Any]:
    kw = dict(data)
    kw["families"] = tuple(kw["families"])
    return kw


def data_config(data: ConfigDict | dict) -> OrdinalConfig:
    return OrdinalConfig(name="experiment", **_builder_kwargs(data))


def make_model(config: ConfigDict) -> ji.models.Transformer:
    """The config's transformer with `d_vocab` and `n_ctx` set from the data."""
    d = data_config(config.data)
    return ji.models.Transformer(TransformerConfig(**{
        **dict(config.model), "d_vocab": d.vocab_size, "n_ctx": d.seq_len - 1}))


def head_masks(n_layers: int, n_heads: int, chosen: np.ndarray) -> np.ndarray:
    """bool [n_sets, n_layers, n_heads] from int [n_sets, k] flat head indices (layer-major)."""
    masks = np.zeros((len(chosen), n_layers * n_heads), bool)
    np.put_along_axis(masks, np.asarray(chosen, int), True, axis=1)
    return masks.reshape(len(chosen), n_layers, n_heads)


def ablation_interventions(mask: jax.Array) -> list:
    """Mean-ablates (batch mean) the `hook_z` of every head where `mask` [layer, head] holds."""
    return [ji.Ablate(f"blocks.{i}.attn.hook_z", how="mean", heads=mask[i])
            for i in range(mask.shape[0])]


def evaluate(model, params, split: dict[str, jax.Array], n_families: int, mask=None):
    """Increment accuracy (all families and per family) and the loss elsewhere.

    `split`: `tokens` [B, T], `increment` [B, T], `family` [B, T]; predictions at positions
    0..T-2. `mask` [layer, head]: heads to mean-ablate (None: none).
    """
    inputs, targets = split["tokens"][:, :-1], split["tokens"][:, 1:]
    ivs = [] if mask is None else ablation_interventions(mask)
    logits, _ = ji.run(model, {"params": params}, inputs, interventions=ivs)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = logits.argmax(-1) == targets
    inc = split["increment"][:, :-1]
    fam = split["family"][:, :-1]
    per_family = jnp.stack([(correct & (fam == f)).sum() / jnp.maximum((fam == f).sum(), 1)
                            for f in range(n_families)])
    return {"increment_acc": (correct & inc).sum() / inc.sum(),
            "family_acc": per_family,
            "increment_loss": (ce * inc).sum() / inc.sum(),
            "other_loss": (ce * ~inc).sum() / (~inc).sum()}


def train_runs(config: ConfigDict, train: dict[str, np.ndarray], test: dict[str, np.ndarray]):
    """One run per seed of `config.seeds`, in one vmapped call, evaluated on `test` every
    `config.eval_every_steps` steps (0: never, which saves compiling the evaluation). Returns
    (params, history)."""
    model = make_model(config)
    n_fam = len(config.data.families)
    train = jax.tree.map(jnp.asarray, train)
    test = jax.tree.map(jnp.asarray, test)
    n_train, batch = train["tokens"].shape[0], config.batch_size

    def init_fn(key):
        return model.init(key, train["tokens"][:1, :-1])["params"]

    def loss_fn(params, key, args, step):
        del args, step
        tokens = train["tokens"][jax.random.randint(key, (batch,), 0, n_train)]
        logits, _ = ji.run(model, {"params": params}, tokens[:, :-1])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
        return loss, {}

    def eval_fn(params, args):
        del args
        return evaluate(model, params, test, n_fam)

    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in config.seeds])
    return train_vmapped(loss_fn, init_fn, keys, None, config.optimizer, config.num_train_steps,
                         eval_fn=eval_fn if config.eval_every_steps else None,
                         eval_every=config.eval_every_steps)


# --- the analyses ---------------------------------------------------------------------------


def family_scores(model, params, fam_tokens: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """`successor_score` [run, layer, head] of every run (params with a leading run axis) on
    each family and on all families together ("all": the share over all their (token,
    successor) pairs), and with numbers the OV logits among number tokens (`"number_logits"`
    [run, layer, number, head, number], `ov_logits`), one compiled call."""
    seqs = {f: [t.tolist()] for f, t in fam_tokens.items()}
    seqs["all"] = [t.tolist() for t in fam_tokens.values()]

    def scores(p):
        out = {f: successor_score(model, {"params": p}, s) for f, s in seqs.items()}
        if "numbers" in fam_tokens:
            nums = jnp.asarray(fam_tokens["numbers"])
            out["number_logits"] = ov_logits(model, {"params": p}, nums)[..., nums]
        return out

    return jax.jit(jax.vmap(scores))(params)


def mod_structure(logits: np.ndarray, periods=PERIODS) -> dict[str, Any]:
    """Mod-P structure of a head's OV logits among number tokens.

    Args:
      logits: [n, n] logits of output number m (column) given input number n (row).

    Returns:
      `lift` [len(periods)]: mean z-scored logit on outputs m = n + 1 (mod P) minus the mean on
      the other outputs (m = n and m = n + 1 left out, inputs n < n - 1 only); `matrix10`
      [10, 10]: mean z-scored logit from inputs n = r to outputs m = c (mod 10), the same two
      outputs left out; `successor_acc`: share of inputs whose argmax is n + 1; `units_acc`:
      share whose argmax has n + 1's last digit.
    """
    n = logits.shape[0]
    z = (logits - logits.mean(1, keepdims=True)) / (logits.std(1, keepdims=True) + 1e-9)
    rows = np.arange(n - 1)
    m, q = np.meshgrid(np.arange(n), rows)  # m: output column, q: input row
    z = z[:-1]
    keep = (m != q) & (m != q + 1)
    lift = []
    periods = [p for p in periods if p <= n // 2]  # each residue class twice at least
    for p in periods:
        hit = (m % p == (q + 1) % p) & keep
        lift.append(z[hit].mean() - z[keep & ~hit].mean())
    matrix = np.zeros((10, 10))
    for r in range(10):
        for c in range(10):
            sel = keep & (q % 10 == r) & (m % 10 == c)
            matrix[r, c] = z[sel].mean() if sel.any() else np.nan
    best = logits[:-1].argmax(1)
    return {"periods": list(periods), "lift": np.asarray(lift), "matrix10": matrix,
            "successor_acc": float((best == rows + 1).mean()),
            "units_acc": float((best % 10 == (rows + 1) % 10).mean())}


def analyse(config, model, params, test, fam_tokens, rng):
    """Successor scores, the ablations and the number tokens' OV logits of every run (params
    with a leading run axis): one compiled call each, vmapped over runs (and head masks)."""
    c = config.model
    n_runs = jax.tree.leaves(params)[0].shape[0]
    scores = jax.device_get(family_scores(model, params, fam_tokens))
    number_logits = scores.pop("number_logits", None)
    order = np.argsort(-scores["all"].reshape(n_runs, -1), axis=1, kind="stable")
    top, others = order[:, :config.k], order[:, config.k:]
    random_sets = np.stack([np.stack([rng.choice(o, config.k, replace=False)
                                      for _ in range(config.n_random)]) for o in others])
    masks = np.stack([np.concatenate([np.zeros((1, c.n_layers, c.n_heads), bool),
                                      head_masks(c.n_layers, c.n_heads, top[r][None]),
                                      head_masks(c.n_layers, c.n_heads, random_sets[r])])
                      for r in range(n_runs)])  # [run, 2 + n_random, layer, head]
    n_fam = len(fam_tokens)
    per_mask = jax.vmap(lambda p, split, mk: evaluate(model, p, split, n_fam, mk),
                        in_axes=(None, None, 0))
    ev = jax.device_get(jax.jit(jax.vmap(per_mask, in_axes=(0, None, 0)))(
        params, test, jnp.asarray(masks)))  # arguments, not constants for XLA to fold
    out = {"scores": scores, "top": top, "random_sets": random_sets, "eval": ev}
    if number_logits is not None:
        out["number_logits"] = number_logits  # [run, layer, number, head, number]
    return out


# --- the experiment -------------------------------------------------------------------------


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Training, successor scores, ablations, mod-10 analysis, figures and the summary."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    seeds = [int(s) for s in config.seeds]
    t = time.time()
    train = load_split(config.data, "train", data_dir)
    test = load_split(config.data, "test", data_dir)
    data_s = round(time.time() - t, 1)
    fam_tokens = data_config(config.data).family_tokens
    families = list(fam_tokens)
    t = time.time()
    params, hist = train_runs(config, train, test)
    train_s = round(time.time() - t, 1)
    model = make_model(config)
    rng = np.random.default_rng(config.random_heads_seed)
    t = time.time()
    an = analyse(config, model, params, jax.tree.map(jnp.asarray, test), fam_tokens, rng)
    n_heads = config.model.n_heads

    def head(flat):
        return list(divmod(int(flat), n_heads))

    per_seed = []
    for r, seed in enumerate(seeds):
        ev = {k: v[r] for k, v in an["eval"].items()}  # mask 0 clean, 1 top-k, 2.. random
        sc = {f: v[r] for f, v in an["scores"].items()}
        top = an["top"][r]
        rand_acc = ev["increment_acc"][2:]
        row = {
            "seed": seed,
            "final_loss": float(hist["train/loss"][r, -20:].mean()),
            "successor_heads": [head(h) for h in top],
            "successor_heads_score": [float(sc["all"].ravel()[h]) for h in top],
            "max_score_per_family": {f: float(sc[f].max()) for f in families},
            "top_head_score_per_family": {f: float(sc[f].ravel()[top[0]]) for f in families},
            "median_score": float(np.median(sc["all"])),
            "clean_increment_acc": float(ev["increment_acc"][0]),
            "ablated_successor_increment_acc": float(ev["increment_acc"][1]),
            "ablated_random_increment_acc_mean": float(rand_acc.mean()),
            "ablated_random_increment_acc_min": float(rand_acc.min()),
            "clean_family_acc": dict(zip(families, ev["family_acc"][0].tolist(), strict=True)),
            "ablated_successor_family_acc": dict(zip(families, ev["family_acc"][1].tolist(),
                                                     strict=True)),
            "ablated_random_family_acc_mean": dict(zip(
                families, ev["family_acc"][2:].mean(0).tolist(), strict=True)),
            "clean_other_loss": float(ev["other_loss"][0]),
            "ablated_successor_other_loss": float(ev["other_loss"][1]),
            "ablated_random_other_loss_mean": float(ev["other_loss"][2:].mean()),
            "random_sets": [[head(h) for h in s] for s in an["random_sets"][r]],
            "scores_all": sc["all"],
        }
        if "number_logits" in an:
            layer, h = head(top[0])
            m = mod_structure(an["number_logits"][r, layer, :, h])
            lift = dict(zip(m["periods"], m["lift"].tolist(), strict=True))
            row["mod"] = {"head": [layer, h], "successor_acc": m["successor_acc"],
                          "units_acc": m["units_acc"], "lift_by_period": lift,
                          "lift10": lift.get(10), "best_period": max(lift, key=lift.get),
                          "matrix10": m["matrix10"]}
        per_seed.append(row)
    summary = {
        "seeds": seeds, "k": int(config.k), "n_random": int(config.n_random),
        "families": families, "per_seed": per_seed,
        "clean_increment_acc": float(np.mean([s["clean_increment_acc"] for s in per_seed])),
        "ablated_successor_increment_acc": float(np.mean(
            [s["ablated_successor_increment_acc"] for s in per_seed])),
        "ablated_random_increment_acc": float(np.mean(
            [s["ablated_random_increment_acc_mean"] for s in per_seed])),
        "timings": {"data_s": data_s, "train_s": train_s,
                    "analysis_s": round(time.time() - t, 1)},
        "seconds": round(time.time() - t0, 1),
    }
    curves = ({"step": hist["eval_step"], "increment_acc": hist["eval/increment_acc"]}
              if "eval_step" in hist else None)
    return runner.write_outputs(workdir, summary, {
        "successor_scores.png": lambda path: plot_scores(per_seed, config, path),
        "ablation.png": lambda path: plot_ablation(per_seed, families, curves, path),
        "mod10.png": lambda path: plot_mod(per_seed, path),
    })


# --- figures --------------------------------------------------------------------------------


def plot_scores(per_seed, config, path: str) -> None:
    plt = pyplot()
    n = len(per_seed)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 1, 3), squeeze=False)
    for ax, s in zip(axes[0], per_seed, strict=True):
        m = np.asarray(s["scores_all"])
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 0.6 else "black")
        ax.set(title=f"seed {s['seed']}: successor score", xlabel="head", ylabel="layer",
               xticks=range(m.shape[1]), yticks=range(m.shape[0]))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    plt.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_ablation(per_seed, families, curves, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    groups = ["all", *families]
    width = 0.8 / (3 * len(per_seed))
    for r, s in enumerate(per_seed):
        vals = {"clean": [s["clean_increment_acc"]] + [s["clean_family_acc"][f] for f in families],
                "successor heads ablated": [s["ablated_successor_increment_acc"]]
                + [s["ablated_successor_family_acc"][f] for f in families],
                "random heads ablated": [s["ablated_random_increment_acc_mean"]]
                + [s["ablated_random_family_acc_mean"][f] for f in families]}
        for j, (name, color) in enumerate(zip(vals, ("gray", "tab:red", "tab:blue"),
                                              strict=True)):
            x = np.arange(len(groups)) + (3 * r + j - 1.5 * len(per_seed)) * width
            ax.bar(x, vals[name], width, color=color, label=name if r == 0 else None,
                   alpha=0.5 + 0.5 * (r + 1) / len(per_seed))
    ax.set(xticks=range(len(groups)), xticklabels=groups, ylim=(0, 1.02),
           ylabel="increment accuracy (test)",
           title=f"mean-ablating the top-k successor heads vs k random heads "
                 f"(bars: seeds {', '.join(str(s['seed']) for s in per_seed)})")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    ax = axes[1]
    if curves is None:
        ax.set_axis_off()
    else:
        for r, s in enumerate(per_seed):
            ax.plot(curves["step"], curves["increment_acc"][r], label=f"seed {s['seed']}")
        ax.set(xlabel="step", ylabel="increment accuracy (test)", ylim=(0, 1.02),
               title="training")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mod(per_seed, path: str) -> None:
    plt = pyplot()
    rows = [s for s in per_seed if "mod" in s]
    if not rows:
        return
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(3.6 * (len(rows) + 1), 3.4))
    for ax, s in zip(axes[:-1], rows, strict=True):
        m = s["mod"]
        ax.imshow(np.asarray(m["matrix10"], float), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(title=f"seed {s['seed']}, head L{m['head'][0]}H{m['head'][1]}",
               xlabel="output number mod 10", ylabel="input number mod 10",
               xticks=range(10), yticks=range(10))
        ax.title.set_fontsize(9)
    ax = axes[-1]
    for s in rows:
        lift = s["mod"]["lift_by_period"]
        ax.plot([int(p) for p in lift], list(lift.values()), marker="o", ms=3,
                label=f"seed {s['seed']}")
    ax.axvline(10, color="gray", ls=":")
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xlabel="period P", ylabel="lift of m = n + 1 (mod P)",
           title="mod-P lift (exact successor left out)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.suptitle("successor head's OV logits among number tokens (z-scored per input)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # flags only for the binary: importing run_experiment defines none
    runner.main(run_experiment, "successor_heads")
