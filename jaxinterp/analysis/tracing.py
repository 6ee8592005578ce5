"""Causal tracing (ROME): where does a corrupted subject's fact get restored?

Meng et al. 2022, "Locating and Editing Factual Associations in GPT" (ROME), section 2.1. Three
runs of a prompt whose answer is o: the clean run (probability P[o]); the corrupted run, in
which the subject tokens' embeddings get Gaussian noise, "we add ε ~ N(0; ν) to each embedding
vector" of the subject (probability P*[o]); and, for each hidden state h_i^(l) (position i,
layer l), the corrupted-with-restoration run, corrupted but with that one state set back to its
clean value (P*_{clean h_i^(l)}[o]). The indirect effect of the state is

    IE(l, i) = P*_{clean h_i^(l)}[o] - P*[o]          (the total effect is P[o] - P*[o])

What was checked against ROME's code (kmeng01/rome, experiments/causal_trace.py):
`trace_with_patch` adds `noise * randn` to the embedding output at the subject's token range
for every corrupted copy of the prompt (`x[1:, b:e] += noise_data`), restores the chosen states
from the clean copy (`h[1:, t] = h[0, t]`), and reports
`softmax(logits[1:, -1, :]).mean(dim=0)[answer_t]`: the answer's probability at the last
position, averaged over the noise samples (`samples=10`), the same noise draws for every
restored state (`numpy.random.RandomState(1)`). The noise level is `--noise_level s3`: 3 x
`collect_embedding_std`, the standard deviation of the embeddings of the subjects' tokens
(`subject_noise` here). `trace_important_states` restores the block output at (token, layer);
`trace_important_window` (kind "mlp" / "attn") restores the MLP or attention output of the
`window=10` layers `max(0, l - window // 2) .. min(n_layers, l - (-window // 2)) - 1` at once.
The heat map ROME plots is the restored probability itself, low_score (P*) marked; here the
difference from P* (the IE) is returned, with P and P* alongside.

Sites (`sites=`), restored at one position of `window` consecutive layers (ROME's window for
"mlp"/"attn"; window=1 is a single state, as ROME does for the hidden state):

    resid_pre   blocks.{l}.hook_resid_pre   (ROME's hidden state is the block output, i.e.
                                             resid_pre of layer l + 1; resid_pre of layer 0
                                             is the embedding itself)
    resid_post  blocks.{l}.hook_resid_post  (ROME's hidden state h_i^(l))
    mlp_out     blocks.{l}.hook_mlp_out
    attn_out    blocks.{l}.hook_attn_out

How it runs: one jitted function. The corruption is a `ji.Add` of noise at `hook_embed`; the
restoration of every (layer, position) cell is a list of `ji.Patch`es, one per layer, whose
`positions` are bool masks: the stacked masks of all cells ([cells, n_layers, pos]) are
vmapped over (and, inside, the noise samples), so the whole sweep is one compiled call, not
a Python loop of forward passes. Unlike `act_patch`, every cell recomputes every layer (the
corruption is in the embedding, so nothing before the restored layer is shared anyway).

    trace = causal_trace(model, variables, tokens, subject_mask, answer, noise=3 * sigma,
                         key=jax.random.key(0), predict_pos=answer_pos - 1)
    trace.effect["resid_pre"]    # [batch, layer, pos]: IE per example
    trace.mean()["mlp_out"]      # [layer, pos]: mean over the batch
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxinterp.interventions import Add, Patch
from jaxinterp.run import run

TRACE_SITES = {
    "resid_pre": "blocks.{}.hook_resid_pre",
    "resid_post": "blocks.{}.hook_resid_post",
    "mlp_out": "blocks.{}.hook_mlp_out",
    "attn_out": "blocks.{}.hook_attn_out",
}


@struct.dataclass
class CausalTrace:
    """Result of `causal_trace`.

    Attributes:
      effect: site -> [batch, layer, pos] indirect effect P*_{clean h}[o] - P*[o] per example
        (probabilities averaged over the noise samples first, as ROME does).
      p_clean: [batch] P[o] of the clean run.
      p_corrupted: [batch] P*[o], the corrupted run (mean over noise samples).
    """

    effect: dict[str, jax.Array]
    p_clean: jax.Array
    p_corrupted: jax.Array

    def mean(self) -> dict[str, jax.Array]:
        """site -> [layer, pos]: the indirect effect averaged over the batch."""
        return {k: v.mean(0) for k, v in self.effect.items()}

    @property
    def total_effect(self) -> jax.Array:
        """[batch] P[o] - P*[o]."""
        return self.p_clean - self.p_corrupted


def subject_noise(model: nn.Module, variables: Any, tokens: jax.Array,
                  subject_mask: jax.Array, factor: float = 3.0) -> float:
    """ROME's noise level `s3`: `factor` x the standard deviation of the embeddings
    (`hook_embed`, all features) of the subject tokens (`subject_mask` [batch, pos])."""
    _, cache = run(model, variables, tokens, capture="hook_embed")
    emb = np.asarray(cache["hook_embed"])[np.asarray(subject_mask, bool)]
    return float(factor * emb.std())


def _answer_prob(logits: jax.Array, predict_pos: jax.Array, answer: jax.Array) -> jax.Array:
    """[batch]: softmax(logits[b, predict_pos[b]])[answer[b]]."""
    rows = jnp.take_along_axis(logits, predict_pos[:, None, None], axis=1)[:, 0]
    probs = jax.nn.softmax(rows.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(probs, answer[:, None], axis=1)[:, 0]


def restore_masks(n_layers: int, n_pos: int, window: int = 1) -> np.ndarray:
    """bool [n_layers * n_pos, n_layers, n_pos]: cell (l, i) (row l * n_pos + i) restores
    position i at layers max(0, l - window // 2) .. min(n_layers, l - (-window // 2)) - 1
    (ROME's `trace_important_window`; window 1: layer l only)."""
    m = np.zeros((n_layers, n_pos, n_layers, n_pos), bool)
    for layer in range(n_layers):
        lo, hi = max(0, layer - window // 2), min(n_layers, layer - (-window // 2))
        for i in range(n_pos):
            m[layer, i, lo:hi, i] = True
    return m.reshape(n_layers * n_pos, n_layers, n_pos)


def causal_trace(model: nn.Module, variables: Any, tokens: jax.Array,
                 subject_mask: jax.Array, answer: jax.Array, *, noise: float,
                 key: jax.Array, sites: Sequence[str] = ("resid_pre", "mlp_out", "attn_out"),
                 num_samples: int = 10, window: int = 1,
                 predict_pos: jax.Array | None = None) -> CausalTrace:
    """ROME's causal tracing of a batch of prompts, every (site, layer, position) in one call.

    Args:
      model: a causal `Transformer` (sites `hook_embed` and those of `TRACE_SITES`).
      variables: its variables.
      tokens: int [batch, pos].
      subject_mask: bool [batch, pos], True at the subject tokens (corrupted).
      answer: int [batch], the token o whose probability is traced.
      noise: the noise's standard deviation ν (ROME: 3 x the subject embeddings' std,
        `subject_noise`).
      key: PRNG key of the noise (the same draws for the corrupted run and every restoration).
      sites: names from `TRACE_SITES`.
      num_samples: noise draws averaged over (ROME: 10).
      window: consecutive layers restored together, centred on the layer (ROME: 10 for the
        MLP / attention traces of GPT-2 XL, 1 for the hidden state).
      predict_pos: int [batch] position whose logits predict `answer`; None: the last.

    Returns:
      `CausalTrace` (effect [batch, layer, pos] per site, p_clean, p_corrupted).
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"causal_trace: tokens must be [batch, pos], got shape {tokens.shape}")
    b, n_pos = tokens.shape
    subject_mask = jnp.asarray(subject_mask, bool)
    if subject_mask.shape != tokens.shape:
        raise ValueError(f"causal_trace: subject_mask has shape {subject_mask.shape}, tokens "
                         f"{tokens.shape}")
    answer = jnp.asarray(answer, jnp.int32)
    if answer.shape != (b,):
        raise ValueError(f"causal_trace: answer must be [batch]=({b},), got {answer.shape}")
    predict_pos = (jnp.full((b,), n_pos - 1, jnp.int32) if predict_pos is None
                   else jnp.asarray(predict_pos, jnp.int32))
    if predict_pos.shape != (b,):
        raise ValueError(f"causal_trace: predict_pos must be [batch]=({b},), got "
                         f"{predict_pos.shape}")
    sites = tuple(sites)
    unknown = [s for s in sites if s not in TRACE_SITES]
    if unknown or not sites:
        raise ValueError(f"causal_trace: sites={sites}; choose from {tuple(TRACE_SITES)}")
    if num_samples < 1 or window < 1:
        raise ValueError(f"causal_trace: num_samples={num_samples} and window={window} must "
                         "be >= 1")
    n_layers = model.config.n_layers
    masks = jnp.asarray(restore_masks(n_layers, n_pos, window))
    return _trace(model, sites, num_samples, variables, tokens, subject_mask, answer,
                  predict_pos, masks, jnp.float32(noise), key)


def _trace_impl(model, sites, num_samples, variables, tokens, subject_mask, answer,
                predict_pos, masks, noise, key):
    n_layers = model.config.n_layers
    names = [TRACE_SITES[s].format(layer) for s in sites for layer in range(n_layers)]
    logits, clean = run(model, variables, tokens, capture=names)
    p_clean = _answer_prob(logits, predict_pos, answer)
    d_model = model.config.d_model
    eps = jax.random.normal(key, (num_samples, *tokens.shape, d_model), jnp.float32)
    eps = noise * eps * subject_mask[None, :, :, None]  # [S, B, pos, d]

    def prob(eps_s, patches):
        out, _ = run(model, variables, tokens,
                        interventions=[Add("hook_embed", eps_s), *patches])
        return _answer_prob(out, predict_pos, answer)

    p_corrupted = jax.vmap(lambda e: prob(e, []))(eps).mean(0)
    effect = {}
    for s in sites:
        def cell(mask, s=s):  # mask: [n_layers, pos]
            patches = [Patch(TRACE_SITES[s].format(k), clean[TRACE_SITES[s].format(k)],
                                positions=mask[k]) for k in range(n_layers)]
            return jax.vmap(lambda e: prob(e, patches))(eps).mean(0)  # [B]

        p = jax.vmap(cell)(masks)  # [cells, B]
        effect[s] = (p - p_corrupted).T.reshape(-1, n_layers, tokens.shape[1])
    return CausalTrace(effect, p_clean, p_corrupted)


_trace = jax.jit(_trace_impl, static_argnums=(0, 1, 2))
