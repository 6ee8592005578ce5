"""Attention sinks: when they emerge, which attention variants avoid them, and the massive
activations that go with them.

    python -m experiments.attention_sinks --config=configs/attention_sinks.py \
        --workdir=workdirs/attention_sinks

Gu et al. 2024 ("When Attention Sink Emerges in Language Models", arXiv:2410.10781): sinks
emerge "after effective optimization on sufficient training data", and with sigmoid attention
(no normalisation across keys) "attention sinks do not emerge". Their metric (Sink_1^eps,
eps = 0.3, checked against their code, `eval_sink_open_source.py`): alpha_h^l(k) = the mean
over queries i >= k of A^{l,h}[i, k], and the sink share is the fraction of (layer, head)
pairs with alpha_h^l(1) > eps. Here alpha is `jaxinterp.analysis.heads.attention_sink_score`:
the mean over the batch and over the queries after the first (their code also counts query 0,
whose row puts all its mass on itself, and thresholds each sequence before averaging; here
the batch mean is thresholded, as the issue asks).

Data: the `induction` builder (jaxinterp/data/induction.py) with its BOS token `0` first:
random tokens with skip-bigram structure (20% of tokens are a fixed function of the token two
back) and one segment of 4..16 tokens repeated at a random later position. Why this stream:
its BOS is a fixed token at a fixed position (the only thing a sink needs), and most of its
positions give a head nothing to do (no earlier copy of the current token for an induction
head, no skip-bigram to read for most tokens), which is the condition under which a
softmax head must put its mass somewhere (Gu et al.'s "key bias" reading; Bondarenko et al.
2023's "heads doing nothing"). Inputs are the first 32 tokens, targets the next 32.

Arms (`config.arms`, each a set of `TransformerConfig` overrides; every arm trains
`config.seeds` in one vmapped, compiled call, `jaxinterp.train.vmapped.train_vmapped`; arms
differ in parameter shapes or in static attention code, so they are a Python loop):
  softmax   the baseline;
  sigmoid   sigmoid(S - log n) (Ramapuram et al. 2024): rows need not sum to 1;
  softplus  LSSA, `attention_type="softplus", softplus_power=0`: softplus scores normalised
            over the keys (rows sum to 1), as `jaxinterp.layers.attention` implements it;
  register  softmax with one learned register token prepended (`n_register_tokens=1`; the
            learnable sink of Xiao et al. 2024). Its "first token" is the register: the first
            position every head sees, and the one designed to take the sink's role. The
            attention to BOS (the first real token) is reported next to it (`bos_*`), and the
            two together (`register_or_bos_*`);
  gated     softmax with a per-head sigmoid output gate (`gated_attention=True`, Bondarenko et
            al. 2023): a head can output nothing by closing its gate instead of attending to a
            sink.

Measured, every `config.eval_every_steps` on `config.data.num_test` held-out sequences:
  sink share: the fraction of the L x H heads whose mean attention to the first token
    exceeds `config.sink_threshold` (0.3), and each head's score;
  the largest |residual stream| per layer (`blocks.{i}.hook_resid_post`) and the loss.
At the end, per arm and seed:
  massive activations (Sun et al. 2024, "Massive Activations in Large Language Models"):
    `jaxinterp.analysis.stats.activation_stats` over `blocks.*.hook_resid_post` of the
    held-out sequences: the top magnitudes with their layer, position and dimension, and their
    ratio to the mean magnitude of that layer;
  secondary sinks (Wong et al. 2025, "On the Existence and Behaviour of Secondary Attention
    Sinks", arXiv:2512.22213: sinks on tokens other than the first, found in their code
    (`src/hidden_state_base.py`) as tokens whose hidden state has |cos| > 0.9 with BOS's):
    (a) by attention: per sequence, the keys k >= 1 (with at least 4 later queries) whose
        mean attention from the queries after them (`jaxinterp.analysis.heads.key_attention`)
        exceeds the threshold in some head; their count per head, the positions and token ids
        they sit on and what fraction of them are the start of the repeated segment;
    (b) by hidden state: the fraction of non-first positions whose residual stream has
        |cos| > 0.9 with BOS's, per layer.

Writes `sink_share.png` (sink share vs step per arm, and the largest |resid_post| vs step),
`massive_activations.png` (per arm and layer, the largest |resid_post| at the end and its ratio
to the layer's mean magnitude),
`sink_head_pattern.png` (the attention pattern of the strongest sink head of the first arm
on one held-out sequence, and its mean over the held-out set), `summary.json`, and per arm
`params_<arm>.msgpack` (final parameters, a leading seed axis), from which the test
recomputes the sink share.
"""

from __future__ import annotations

import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from ml_collections import ConfigDict

import jaxinterp as ji
from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.analysis.heads import attention_sink_score, key_attention
from jaxinterp.analysis.stats import activation_stats
from jaxinterp.data.sources import load_source
from jaxinterp.models.transformer import Transformer, TransformerConfig, drop_registers
from jaxinterp.train.loss import cross_entropy
from jaxinterp.train.vmapped import train_vmapped

PATTERNS = "blocks.*.attn.hook_pattern"
RESID = "blocks.*.hook_resid_post"
MIN_LATER_QUERIES = 8  # a secondary-sink candidate key needs this many queries after it
COS_THRESHOLD = 0.9  # Wong et al.'s hidden-state similarity to BOS


# --- data and model ------------------------------------------------------------------------


def load_tokens(config: ConfigDict, split: str, data_dir: str) -> np.ndarray:
    """int32 [N, 33]: every sequence of an `induction` split (BOS first)."""
    src = load_source("induction", split, data_dir, **dict(config.data))
    return np.stack([src[i]["tokens"] for i in range(len(src))]).astype(np.int32)


def heldout_tokens(config: ConfigDict, data_dir: str) -> np.ndarray:
    """int32 [num_test, 32]: the model inputs of the held-out split (what every score uses)."""
    return load_tokens(config, "test", data_dir)[:, :-1]


def make_model(config: ConfigDict, arm: str) -> Transformer:
    overrides = dict(config.arm_model[arm])
    return Transformer(TransformerConfig(**{**dict(config.model), **overrides}))


def n_registers(model: Transformer) -> int:
    return model.config.n_register_tokens


# --- sink scores ---------------------------------------------------------------------------


def sink_scores(model: Transformer, patterns: list[jax.Array]) -> dict[str, jax.Array]:
    """Per layer and head [L, H]: the mean attention to the first position every head sees
    (`first`: the register for a register model, BOS otherwise), to BOS (`bos`, on the token
    positions alone: queries after BOS, the register column left out), and for sigmoid rows
    that do not sum to 1, `first_normalized`: the first position's share of each row's mass.

    patterns: per layer [batch, head, R + pos, R + pos].
    """
    first = jnp.stack([attention_sink_score(p, position=0) for p in patterns])
    bos = jnp.stack([attention_sink_score(drop_registers(model, p, axis=(-2, -1)), position=0)
                     for p in patterns])
    normalized = jnp.stack([attention_sink_score(p / jnp.maximum(p.sum(-1, keepdims=True),
                                                                 1e-30), position=0)
                            for p in patterns])
    return {"first": first, "bos": bos, "first_normalized": normalized}


def sink_share(scores: np.ndarray | jax.Array, threshold: float) -> jax.Array:
    """The fraction of heads (entries of `scores`, e.g. [L, H]) with a score > threshold."""
    return (jnp.asarray(scores) > threshold).mean()


def capture_patterns(model, params, tokens) -> tuple[jax.Array, list[jax.Array], dict]:
    """(logits, per-layer patterns, the cache) of one forward pass on `tokens`."""
    logits, cache = ji.run(model, {"params": params}, tokens, capture=(PATTERNS, RESID))
    n = model.config.n_layers
    return logits, [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(n)], cache


def evaluate(model, params, tokens: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """The curves measured during training (see the module docstring)."""
    logits, patterns, cache = capture_patterns(model, params, tokens)
    out = {f"score_{k}": v for k, v in sink_scores(model, patterns).items()}
    out["loss"] = cross_entropy(logits, targets)[0]
    resid = jnp.stack([cache[f"blocks.{i}.hook_resid_post"]
                       for i in range(model.config.n_layers)])  # [L, batch, R + pos, d]
    out["resid_max_abs"] = jnp.abs(resid).max(axis=(1, 2, 3))  # [L]
    out["resid_mean_abs"] = jnp.abs(resid).mean(axis=(1, 2, 3))  # [L]
    return out


# --- training ------------------------------------------------------------------------------


def train_arm(config: ConfigDict, arm: str, train: np.ndarray, test: np.ndarray,
              num_steps: int | None = None):
    """All seeds of one arm in one vmapped call. Returns (params [seed, ...], history)."""
    model = make_model(config, arm)
    train_j = jnp.asarray(train)
    inputs, targets = jnp.asarray(test[:, :-1]), jnp.asarray(test[:, 1:])
    batch = config.batch_size

    def init_fn(key):
        return nn.meta.unbox(model.init(key, train_j[:1, :-1])["params"])

    def loss_fn(params, key, args, step):
        del args, step
        seqs = train_j[jax.random.randint(key, (batch,), 0, train_j.shape[0])]
        logits = model.apply({"params": params}, seqs[:, :-1])
        loss, metrics = cross_entropy(logits, seqs[:, 1:])
        return loss, {"accuracy": metrics["accuracy"]}

    def eval_fn(params, args):
        del args
        return evaluate(model, params, inputs, targets)

    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in config.seeds])
    return train_vmapped(loss_fn, init_fn, keys, None, config.optimizer,
                         num_steps or config.num_train_steps, eval_fn=eval_fn,
                         eval_every=config.eval_every_steps)


def save_params(path: str, params: Any) -> None:
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(jax.device_get(params)))


def load_params(workdir: str, arm: str) -> Any:
    """An arm's final parameters as saved by `run_experiment` (a leading seed axis)."""
    with open(os.path.join(workdir, f"params_{arm}.msgpack"), "rb") as f:
        return serialization.msgpack_restore(f.read())


def seed_params(params: Any, i: int) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x[i]), params)


# --- end-of-training analyses --------------------------------------------------------------


def massive_activations(model, params, tokens: np.ndarray, top_k: int, batch: int
                        ) -> dict[str, Any]:
    """The `top_k` largest |resid_post| over the held-out set (`activation_stats`), with layer,
    position (of the sequence the blocks see: registers first), dimension and the ratio to
    that layer's mean magnitude; the mean magnitude per layer."""
    stats = activation_stats(model, {"params": params},
                             (tokens[i:i + batch] for i in range(0, len(tokens), batch)),
                             sites=RESID, top_k=top_k)
    n = model.config.n_layers
    mean_abs = [stats.mean_abs[f"blocks.{i}.hook_resid_post"] for i in range(n)]
    top = []
    for m in stats.massive:
        layer = int(m.site.split(".")[1])
        top.append({"magnitude": m.magnitude, "value": m.value, "layer": layer,
                    "position": m.index[0], "dim": m.index[1], "example": m.example,
                    "ratio_to_mean": m.magnitude / mean_abs[layer]})
    per_layer_max = [stats.top_per_site[f"blocks.{i}.hook_resid_post"][0].magnitude
                     for i in range(n)]
    return {"top": top, "mean_abs_per_layer": mean_abs, "max_abs_per_layer": per_layer_max}


def secondary_sinks(model, patterns: list[jax.Array], cache: dict, tokens: np.ndarray,
                    repeat_start: np.ndarray, threshold: float) -> dict[str, Any]:
    """Sinks on tokens other than the first (see the module docstring, (a) and (b)).

    patterns: per layer [batch, head, R + pos, R + pos]; tokens [batch, pos];
    repeat_start [batch]: the token position where the repeated segment's second copy starts.
    """
    n_layers = len(patterns)
    pos = tokens.shape[1]
    per_head, where, token_ids, at_repeat = [], [], [], 0
    for p in patterns:
        alpha = np.array(key_attention(drop_registers(model, p, axis=(-2, -1))))  # [b, h, k]
        alpha[..., 0] = 0.0  # the first token is the primary sink
        alpha[..., pos - MIN_LATER_QUERIES:] = 0.0  # too few later queries
        hits = alpha > threshold  # [batch, head, key]
        per_head.append(hits.sum(axis=(0, 2)).tolist())
        for b, h, k in zip(*np.nonzero(hits), strict=True):
            where.append(int(k))
            token_ids.append(int(tokens[b, k]))
            at_repeat += int(k == repeat_start[b])
            del h
    n_cand = tokens.shape[0] * (pos - MIN_LATER_QUERIES - 1)  # keys 1..pos-9, per head
    r = n_registers(model)
    cos_frac, cos_positions = [], []
    for i in range(n_layers):
        x = np.asarray(cache[f"blocks.{i}.hook_resid_post"])[:, r:]  # [batch, pos, d]
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        cos = np.einsum("bpd,bd->bp", x[:, 1:], x[:, 0])  # contract d: each token vs BOS
        similar = np.abs(cos) > COS_THRESHOLD  # [batch, pos - 1]
        cos_frac.append(float(similar.mean()))
        cos_positions.append([[int(k) + 1, float(f)] for k, f in enumerate(similar.mean(0))
                              if f > 0.1])
    counts = np.bincount(np.asarray(token_ids, int), minlength=1)
    top_tokens = [[int(t), int(counts[t])] for t in np.argsort(-counts)[:5] if counts[t]]
    pos_counts = np.bincount(np.asarray(where, int), minlength=pos)
    return {"count_per_head": per_head,  # [layer][head]: (sequence, key) hits
            "candidates_per_head": n_cand,
            "total": len(where),
            "fraction_at_repeat_start": at_repeat / len(where) if where else None,
            "top_positions": [[int(k), int(pos_counts[k])] for k in np.argsort(-pos_counts)[:5]
                              if pos_counts[k]],
            "top_tokens": top_tokens,
            "hidden_cos_to_bos_fraction_per_layer": cos_frac,
            # per layer: [position, fraction of sequences] where > 10% are BOS-like
            "hidden_cos_to_bos_positions_per_layer": cos_positions}


def repeat_starts(tokens: np.ndarray, min_len: int) -> np.ndarray:
    """[batch]: the input position where the second copy of the repeated segment starts (the
    first position t whose previous `min_len` tokens occurred before, in order; -1 if none)."""
    out = np.full(tokens.shape[0], -1)
    for b, seq in enumerate(tokens):
        seen = {}
        for t in range(1 + min_len, len(seq) + 1):
            gram = tuple(seq[t - min_len:t])
            if gram in seen and seen[gram] + min_len <= t - min_len:
                out[b] = t - min_len
                break
            seen.setdefault(gram, t - min_len)
    return out


def final_analysis(config: ConfigDict, model, params, test: np.ndarray, capture=None
                   ) -> dict[str, Any]:
    """Massive activations and secondary sinks of one run (one seed) on the held-out set.
    `capture`: a jitted `capture_patterns` of `model` (compiled once per arm)."""
    tokens = test[:, :-1]
    out = {"massive": massive_activations(model, params, tokens, config.massive_top_k,
                                          config.analysis_batch)}
    capture = capture or jax.jit(lambda p, t: capture_patterns(model, p, t))
    _, patterns, cache = capture(params, tokens)
    starts = repeat_starts(tokens, int(config.data.min_half_len))
    out["secondary"] = secondary_sinks(model, patterns, cache, tokens, starts,
                                       config.sink_threshold)
    return out


# --- the experiment -------------------------------------------------------------------------


def arm_summary(config: ConfigDict, hist: dict[str, np.ndarray], analyses: list[dict],
                n_reg: int = 0) -> dict[str, Any]:
    th = config.sink_threshold
    out: dict[str, Any] = {}
    for key, name in (("first", "sink_share"), ("bos", "bos_sink_share"),
                      ("first_normalized", "normalized_sink_share")):
        s = hist[f"eval/score_{key}"]  # [seed, eval, L, H]
        share = (s > th).mean(axis=(2, 3))  # [seed, eval]
        out[f"{name}_final"] = float(share[:, -1].mean())
        out[f"{name}_final_per_seed"] = share[:, -1].tolist()
        out[f"{name}_curve_mean"] = share.mean(axis=0).tolist()
    # The register and BOS together (register arm; the other arms' first token is BOS).
    both = hist["eval/score_first"] + (hist["eval/score_bos"] if n_reg else 0.0)
    out["register_or_bos_sink_share_final_per_seed"] = (
        (both > th).mean(axis=(2, 3))[:, -1].tolist())
    out["sink_scores_final_per_seed"] = hist["eval/score_first"][:, -1].tolist()  # [s][L][H]
    out["sink_scores_init_per_seed"] = hist["eval/score_first"][:, 0].tolist()
    out["max_head_score_final_per_seed"] = hist["eval/score_first"][:, -1].max((1, 2)).tolist()
    out["max_head_score_init_per_seed"] = hist["eval/score_first"][:, 0].max((1, 2)).tolist()
    out["bos_scores_final_per_seed"] = hist["eval/score_bos"][:, -1].tolist()
    out["loss_final_per_seed"] = hist["eval/loss"][:, -1].tolist()
    out["loss_final"] = float(hist["eval/loss"][:, -1].mean())
    out["resid_max_abs_final_per_seed"] = hist["eval/resid_max_abs"][:, -1].tolist()
    out["first_step_share_reaches_half_final"] = first_step_over(
        hist["eval_step"], (hist["eval/score_first"] > th).mean(axis=(2, 3)))
    out["massive_top_per_seed"] = [a["massive"]["top"][:3] for a in analyses]
    out["massive_per_seed"] = [{k: v for k, v in a["massive"].items() if k != "top"}
                               for a in analyses]
    out["secondary_sinks_per_seed"] = [a["secondary"] for a in analyses]
    return out


def first_step_over(steps: np.ndarray, share: np.ndarray) -> list[int | None]:
    """Per seed: the first eval step at which the share reaches half its final value (None if
    the final share is 0)."""
    out = []
    for s in share:
        if s[-1] <= 0:
            out.append(None)
            continue
        out.append(int(steps[np.flatnonzero(s >= 0.5 * s[-1])[0]]))
    return out


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Every arm, the figures and the summary (see the module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    train = load_tokens(config, "train", data_dir)
    test = load_tokens(config, "test", data_dir)
    summary: dict[str, Any] = {"seeds": [int(s) for s in config.seeds],
                               "arms": list(config.arms), "threshold": config.sink_threshold}
    curves, timings, example = {}, {}, {}
    for arm in config.arms:
        t = time.time()
        model = make_model(config, arm)
        params, hist = train_arm(config, arm, train, test)
        timings[f"{arm}_train_s"] = round(time.time() - t, 1)
        save_params(os.path.join(workdir, f"params_{arm}.msgpack"), params)
        t = time.time()
        capture = jax.jit(lambda p, t, model=model: capture_patterns(model, p, t))
        analyses = [final_analysis(config, model, seed_params(params, i), test, capture)
                    for i in range(len(config.seeds))]
        timings[f"{arm}_analysis_s"] = round(time.time() - t, 1)
        summary[arm] = arm_summary(config, hist, analyses, n_registers(model))
        curves[arm] = {"steps": hist["eval_step"],
                       "share": (hist["eval/score_first"] > config.sink_threshold
                                 ).mean(axis=(2, 3)),
                       "bos_share": (hist["eval/score_bos"] > config.sink_threshold
                                     ).mean(axis=(2, 3)),
                       "resid_max": hist["eval/resid_max_abs"]}
        if not example:
            example = sink_head_example(capture, model, seed_params(params, 0), test[:, :-1],
                                        hist["eval/score_first"][0, -1], arm)
    summary["sink_share_final"] = {a: summary[a]["sink_share_final"] for a in config.arms}
    summary["timings"] = timings
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "sink_share.png": lambda path: plot_sink_share(curves, config, path),
        "massive_activations.png": lambda path: plot_massive(summary, config, path),
        "sink_head_pattern.png": lambda path: plot_sink_head(example, path)})


def sink_head_example(capture, model, params, tokens: np.ndarray, scores: np.ndarray,
                      arm: str) -> dict[str, Any]:
    """The pattern of the head with the largest sink score (seed 0 of `arm`); `capture`: a
    jitted `capture_patterns` of `model`."""
    layer, head = np.unravel_index(np.argmax(scores), scores.shape)
    _, patterns, _ = capture(params, tokens)
    p = np.asarray(patterns[layer][:, head])
    return {"arm": arm, "layer": int(layer), "head": int(head), "score": float(scores.max()),
            "one": p[0], "mean": p.mean(0), "tokens": tokens[0], "n_reg": n_registers(model)}


# --- figures --------------------------------------------------------------------------------


def plot_sink_share(curves, config, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, (arm, c) in enumerate(curves.items()):
        color = f"C{i}"
        for r in range(c["share"].shape[0]):
            axes[0].plot(c["steps"], c["share"][r], color=color, alpha=0.8,
                         label=arm if r == 0 else None)
            if arm == "register" or config.arm_model[arm].get("n_register_tokens", 0):
                axes[0].plot(c["steps"], c["bos_share"][r], color=color, ls=":", alpha=0.8,
                             label=f"{arm}: BOS" if r == 0 else None)
            axes[1].plot(c["steps"], c["resid_max"][r].max(-1), color=color, alpha=0.8,
                         label=arm if r == 0 else None)
    axes[0].set(xlabel="step", ylabel=f"share of heads, mean attention to first > "
                f"{config.sink_threshold}", ylim=(-0.02, 1.02),
                title="sink share (register arm: the register; dotted: BOS)")
    axes[1].set(xlabel="step", ylabel="max |resid_post| over layers", yscale="log",
                title="largest residual-stream magnitude")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_massive(summary, config, path: str) -> None:
    plt = pyplot()
    arms = list(config.arms)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    n_layers = config.model.n_layers
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        per_seed = summary[arm]["massive_per_seed"]
        mx = np.array([s["max_abs_per_layer"] for s in per_seed])  # [seed, L]
        mean = np.array([s["mean_abs_per_layer"] for s in per_seed])
        x = np.arange(n_layers) + (i - len(arms) / 2 + 0.5) * width
        axes[0].bar(x, mx.mean(0), width, color=f"C{i}", label=arm)
        axes[0].scatter(np.repeat(x, mx.shape[0]), mx.T.ravel(), color="k", s=6, zorder=3)
        axes[1].bar(x, (mx / mean).mean(0), width, color=f"C{i}", label=arm)
    axes[0].set(xlabel="layer (hook_resid_post)", ylabel="largest |activation|",
                xticks=range(n_layers), title="massive activations (dots: seeds)")
    axes[1].set(xlabel="layer (hook_resid_post)", ylabel="largest / mean |activation|",
                xticks=range(n_layers), yscale="log", title="ratio to the layer's mean")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sink_head(ex, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, key, title in ((axes[0], "one", "one held-out sequence"),
                           (axes[1], "mean", "mean over the held-out set")):
        im = ax.imshow(ex[key], cmap="viridis", vmin=0, vmax=1)
        ax.set(xlabel="key position", ylabel="query position", title=title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{ex['arm']} arm, seed 0: layer {ex['layer']} head {ex['head']} (sink score "
                 f"{ex['score']:.2f}; {ex['n_reg']} register position(s) first)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # flags only for the binary: importing run_experiment defines none
    runner.main(run_experiment, "attention_sinks")
