"""Logit lens and tuned lens: read the residual stream of every layer as a next-token prediction.

The *logit lens* (nostalgebraist 2020, "interpreting GPT: the logit lens") applies the model's
own final norm and unembedding to an intermediate residual stream `h_l`:

    lens_l(h_l) = unembed(ln_final(h_l))

The *tuned lens* (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the
Tuned Lens", arXiv:2303.08112) first maps `h_l` through a learned affine translator, initialised
to the identity and trained to minimise KL(final distribution || lens distribution):

    tuned_l(h_l) = unembed(ln_final(h_l + h_l A_l + b_l))

Layer indexing (both lenses). There are `n_layers + 1` residual streams, indexed
`0 .. n_layers`: stream 0 is the embeddings (`blocks.0.hook_resid_pre`) and stream `l >= 1` is
`blocks.{l-1}.hook_resid_post`. The last stream is what the model itself unembeds, so both
lenses at `l = n_layers` return the model's logits (the tuned lens has no translator there).
Both read out with `jaxinterp.models.transformer.read_out`, the model's own final norm and
unembedding; with register tokens (`n_register_tokens` = R) the register positions are dropped
as the model drops them, so lens outputs have the token positions [pos] of the model's logits.

Memory. Full lens logits are `[layer, batch, pos, vocab]`; for a large vocabulary ask for
`targets` (log-probs of given tokens, `[layer, batch, pos]`) or `top_k`, which are computed one
layer at a time (`jax.lax.map`) so that only one layer's logits exist at once.

Tuned-lens training streams residuals: each step runs the model on one token batch inside the
same jitted function that updates the translators, so activations are never stored.
Saving writes two files into a directory: `tuned_lens.safetensors` (`weight` [n_layers, d_model,
d_model] and `bias` [n_layers, d_model], float32, via `safetensors.numpy`) and
`tuned_lens.json` (format name, version, `n_layers`, `d_model`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.models.transformer import check_transformer, read_out
from jaxinterp.run import run

_FORMAT = "jaxinterp.tuned_lens"
_VERSION = 1


# -- reading the model ------------------------------------------------------------------------

def residual_stack(model: nn.Module, variables: Any, tokens: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """(model logits [batch, pos, vocab], residual streams [n_layers + 1, batch, R + pos,
    d_model]): the embeddings (`blocks.0.hook_resid_pre`) then every `blocks.{i}.hook_resid_post`,
    as the block sites hold them (with the R = `n_register_tokens` register positions first;
    `read_out` drops them)."""
    c = check_transformer(model, "residual_stack")
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post"
                                           for i in range(c.n_layers)]
    logits, cache = run(model, variables, tokens, capture=names)
    return logits, jnp.stack([cache[n] for n in names])


def _layer_indices(layers: int | Iterable[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers + 1))
    if isinstance(layers, int | np.integer):
        layers = [layers]
    out = []
    for layer in layers:
        if not isinstance(layer, int | np.integer) or not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"unknown layer {layer!r}: lens layers are 0 (embeddings) .. "
                             f"{n_layers} (after the last block), or negative from the end")
        out.append(int(layer) % (n_layers + 1))
    return out


# -- lenses -----------------------------------------------------------------------------------

@flax.struct.dataclass
class TunedLens:
    """Affine translators of the tuned lens, one per residual stream but the last.

    Attributes:
      weight: [n_layers, d_model, d_model]; translator l maps h -> h + h @ weight[l] + bias[l].
      bias: [n_layers, d_model].
    """

    weight: jax.Array
    bias: jax.Array

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    @property
    def d_model(self) -> int:
        return self.weight.shape[-1]

    def translate(self, layer: int, h: jax.Array) -> jax.Array:
        """h [..., d_model] of residual stream `layer` -> translated h (identity at the last)."""
        if layer == self.n_layers:
            return h
        w, b = self.weight[layer], self.bias[layer]
        return h + jnp.einsum("...m,mn->...n", h, w.astype(h.dtype)) + b  # contract d_model


def init_tuned_lens(model: nn.Module) -> TunedLens:
    """Identity translators (zero weight and bias) for `model`."""
    c = check_transformer(model, "init_tuned_lens")
    return TunedLens(weight=jnp.zeros((c.n_layers, c.d_model, c.d_model), jnp.float32),
                     bias=jnp.zeros((c.n_layers, c.d_model), jnp.float32))


def _check_lens(model: nn.Module, lens: TunedLens) -> None:
    c = model.config
    want = (c.n_layers, c.d_model, c.d_model)
    if tuple(lens.weight.shape) != want or tuple(lens.bias.shape) != want[:2]:
        raise ValueError(f"tuned lens has weight {tuple(lens.weight.shape)} and bias "
                         f"{tuple(lens.bias.shape)}; this model needs {want} and {want[:2]}")


def _lens(model, variables, tokens, lens, layers, targets, top_k):
    c = check_transformer(model, "the logit and tuned lenses")
    idx = _layer_indices(layers, c.n_layers)
    if targets is not None and top_k is not None:
        raise ValueError("pass at most one of targets and top_k")
    if targets is not None and tuple(targets.shape) != tuple(tokens.shape):
        raise ValueError(f"targets must be [batch, pos] = {tuple(tokens.shape)} like tokens, "
                         f"got {tuple(targets.shape)}")
    if top_k is not None and not 1 <= top_k <= (c.d_vocab_out or c.d_vocab):
        raise ValueError(f"top_k={top_k} must be in [1, d_vocab_out]")
    _, stack = residual_stack(model, variables, tokens)
    if lens is not None:
        stack = _translate_stack(lens, stack)
    hs = stack[jnp.asarray(idx)]  # [layer, batch, R + pos, d_model]
    if targets is None and top_k is None:
        return read_out(model, variables, hs)

    def one(h):  # [batch, R + pos, d_model] -> reduced outputs of one layer
        logp = jax.nn.log_softmax(read_out(model, variables, h), axis=-1)  # [batch, pos, vocab]
        if targets is not None:
            return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        return jax.lax.top_k(logp, top_k)

    return jax.lax.map(one, hs)


def logit_lens(model: nn.Module, variables: Any, tokens: jax.Array, *,
               layers: int | Iterable[int] | None = None, targets: jax.Array | None = None,
               top_k: int | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The logit lens at every residual stream (see the module docstring for layer indices).

    Args:
      model, variables: a `jaxinterp.models.Transformer` and its variables (any layout).
      tokens: [batch, pos] int.
      layers: residual-stream indices in [0, n_layers] (negative from the end); None: all.
      targets: [batch, pos] token ids; return their log-probabilities instead of logits.
      top_k: return the top-k log-probabilities and token ids instead of logits.

    Returns:
      logits [layer, batch, pos, vocab]; or log-probs [layer, batch, pos] of `targets`; or
      (log-probs, ids), each [layer, batch, pos, top_k].
    """
    return _lens(model, variables, tokens, None, layers, targets, top_k)


def tuned_lens(model: nn.Module, variables: Any, lens: TunedLens, tokens: jax.Array, *,
               layers: int | Iterable[int] | None = None, targets: jax.Array | None = None,
               top_k: int | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The tuned lens; arguments and outputs as `logit_lens`, plus the trained `lens`."""
    check_transformer(model, "tuned_lens")
    _check_lens(model, lens)
    return _lens(model, variables, tokens, lens, layers, targets, top_k)


def _kl(final_logits: jax.Array, lens_logits: jax.Array) -> jax.Array:
    """KL(final || lens) over the last axis, in nats."""
    logp = jax.nn.log_softmax(final_logits, axis=-1)
    logq = jax.nn.log_softmax(lens_logits, axis=-1)
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def lens_kl(model: nn.Module, variables: Any, tokens: jax.Array,
            lens: TunedLens | None = None) -> jax.Array:
    """Mean KL(model's distribution || lens distribution) per residual stream, [n_layers + 1]
    (nats, averaged over batch and positions); the logit lens when `lens` is None. The last
    entry is 0 up to float error."""
    check_transformer(model, "lens_kl")
    if lens is not None:
        _check_lens(model, lens)
    logits, stack = residual_stack(model, variables, tokens)
    if lens is not None:
        stack = _translate_stack(lens, stack)
    return jax.lax.map(lambda h: _kl(logits, read_out(model, variables, h)).mean(), stack)


def _translate_stack(lens: TunedLens, stack: jax.Array) -> jax.Array:
    """Residual streams [n_layers + 1, batch, pos, d_model] -> translated (the last unchanged)."""
    delta = jnp.einsum("lbpm,lmn->lbpn", stack[:-1], lens.weight.astype(stack.dtype))
    delta = delta + lens.bias[:, None, None].astype(stack.dtype)  # contract d_model per layer
    return jnp.concatenate([stack[:-1] + delta, stack[-1:]])


def tuned_lens_loss(lens: TunedLens, model: nn.Module, variables: Any,
                    tokens: jax.Array) -> jax.Array:
    """Training loss: KL(final || tuned lens), averaged over batch, positions and the
    `n_layers` translated streams. Gradients do not flow into the model."""
    logits, stack = residual_stack(model, variables, tokens)
    logits, stack = jax.lax.stop_gradient((logits, stack))
    hs = _translate_stack(lens, stack)[:-1]
    return jax.lax.map(lambda h: _kl(logits, read_out(model, variables, h)).mean(), hs).mean()


def train_tuned_lens(model: nn.Module, variables: Any, batches: Iterable[jax.Array], *,
                     lens: TunedLens | None = None,
                     optimizer: optax.GradientTransformation | None = None,
                     max_steps: int | None = None) -> tuple[TunedLens, np.ndarray]:
    """Trains tuned-lens translators on residuals streamed from `model`, one step per batch.

    Args:
      model, variables: the (frozen) model.
      batches: an iterable of token batches [batch, pos] int (any length; a generator is fine).
      lens: translators to continue from; None: identity (`init_tuned_lens`).
      optimizer: an optax transformation; default `optax.adam(1e-3)`.
      max_steps: stop after this many batches (None: when `batches` ends).

    Returns:
      (trained lens, per-step training losses [steps] as NumPy).
    """
    check_transformer(model, "train_tuned_lens")
    lens = init_tuned_lens(model) if lens is None else lens
    _check_lens(model, lens)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    opt_state = optimizer.init(lens)

    @jax.jit
    def step(lens, opt_state, variables, tokens):
        loss, grads = jax.value_and_grad(tuned_lens_loss)(lens, model, variables, tokens)
        updates, opt_state = optimizer.update(grads, opt_state, lens)
        return optax.apply_updates(lens, updates), opt_state, loss

    losses = []
    for n, tokens in enumerate(batches):
        if max_steps is not None and n >= max_steps:
            break
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"batch {n}: tokens must be [batch, pos] int, got shape "
                             f"{tokens.shape} dtype {tokens.dtype}")
        lens, opt_state, loss = step(lens, opt_state, variables, tokens)
        losses.append(loss)
    if not losses:
        raise ValueError("train_tuned_lens got no batches")
    return lens, np.asarray(jax.device_get(jnp.stack(losses)))


# -- saving -----------------------------------------------------------------------------------

def save_tuned_lens(lens: TunedLens, directory: str | os.PathLike) -> None:
    """Writes `tuned_lens.safetensors` and `tuned_lens.json` into `directory` (created)."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {"weight": np.asarray(lens.weight, np.float32),
               "bias": np.asarray(lens.bias, np.float32)}
    save_file(tensors, os.path.join(directory, "tuned_lens.safetensors"))
    meta = {"format": _FORMAT, "version": _VERSION, "n_layers": lens.n_layers,
            "d_model": lens.d_model}
    with open(os.path.join(directory, "tuned_lens.json"), "w") as f:
        json.dump(meta, f, indent=2)


def load_tuned_lens(directory: str | os.PathLike, model: nn.Module | None = None) -> TunedLens:
    """Reads a lens written by `save_tuned_lens`; checks it fits `model` if one is given."""
    from safetensors.numpy import load_file

    meta_path = os.path.join(directory, "tuned_lens.json")
    if not os.path.exists(meta_path):
        raise ValueError(f"{directory} holds no tuned lens (no tuned_lens.json)")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
        raise ValueError(f"{meta_path} is not a {_FORMAT} v{_VERSION} file: {meta}")
    t = load_file(os.path.join(directory, "tuned_lens.safetensors"))
    lens = TunedLens(weight=jnp.asarray(t["weight"]), bias=jnp.asarray(t["bias"]))
    if (lens.n_layers, lens.d_model) != (meta["n_layers"], meta["d_model"]):
        raise ValueError(f"tuned lens tensors {lens.weight.shape} disagree with {meta_path}")
    if model is not None:
        check_transformer(model, "load_tuned_lens")
        _check_lens(model, lens)
    return lens


# -- neurons read through the unembedding -----------------------------------------------------

FINAL_NORMS = ("fold", "none")
NEURON_WEIGHTS = ("out", "in")


def neuron_logits(model: nn.Module, variables: Any, *, weights: str = "out",
                  final_norm: str = "fold") -> jax.Array:
    """Every MLP neuron's weight vector read as token logits through the unembedding, one einsum.

    Davies 2025 ("Decoding specialised feature neurons in LLMs with the final projection
    layer", arXiv:2501.02688) decodes neurons by passing their weights through the LM head.
    Here a neuron n of layer l is read as

        logits[l, n] = norm(W[l, n]) @ W_U          [d_vocab_out]

    with `W[l, n]` the neuron's output row `W_out[l][n]` [d_model] (`weights="out"`: what
    the neuron writes into the residual stream, so `logits` is its direct effect on the
    logits per unit of activation) or its input column `W_in[l][:, n]` (`weights="in"`: the
    direction it reads, the paper's up-projection weights).

    The final norm (`final_norm="fold"`): LayerNorm computes `(x - mean(x)) * s * w + b` with
    a per-position scale `s = 1/sqrt(var + eps)` (`ln_final.hook_scale`); for a fixed `s` it
    is affine in x, so a change `delta * W[l, n]` of the residual changes the logits by
    `delta * s * ((W[l, n] - mean(W[l, n])) * w) @ W_U`: the mean over d_model is removed and
    `w` multiplied in (RMSNorm: only `w`). `s > 0` is the same for every neuron at a position
    and `b` does not depend on the neuron, so both are left out: multiply by the position's
    `hook_scale` for the first-order direct effect there. `final_norm="none"`: the raw
    `W[l, n] @ W_U`. No `b_U` (a constant per token, the same for every neuron).

    Args:
      model: a `jaxinterp.models.Transformer` with a dense (ungated) MLP.
      variables: its variables (scanned or unrolled).
      weights: "out" or "in" (above).
      final_norm: "fold" or "none" (above).

    Returns:
      float32 [n_layers, d_mlp, d_vocab_out].
    """
    from jaxinterp.models.transformer import unembedding, unrolled_params

    c = check_transformer(model, "neuron_logits")
    if c.attn_only or c.mlp_type != "dense" or c.gated_mlp:
        raise ValueError("neuron_logits reads the neurons of a dense, ungated MLP; this model "
                         f"has attn_only={c.attn_only}, mlp_type={c.mlp_type!r}, "
                         f"gated_mlp={c.gated_mlp}")
    if weights not in NEURON_WEIGHTS:
        raise ValueError(f"weights={weights!r}: choose one of {NEURON_WEIGHTS}")
    if final_norm not in FINAL_NORMS:
        raise ValueError(f"final_norm={final_norm!r}: choose one of {FINAL_NORMS}")
    p = unrolled_params(variables)
    mlps = [p[f"blocks_{i}"]["mlp"] for i in range(c.n_layers)]
    if weights == "out":
        w = jnp.stack([m["W_out"] for m in mlps])  # [layer, d_mlp, d_model]
    else:
        w = jnp.stack([m["W_in"].T for m in mlps])  # [layer, d_mlp, d_model]
    w = w.astype(jnp.float32)
    if final_norm == "fold" and c.normalization_type is not None:
        if c.normalization_type == "LN":
            w = w - w.mean(-1, keepdims=True)
        w = w * p["ln_final"]["w"].astype(jnp.float32)
    w_u, _ = unembedding(model, variables)
    return jnp.einsum("lnd,dv->lnv", w, w_u.astype(jnp.float32))  # contract d_model


__all__ = [
    "FINAL_NORMS",
    "NEURON_WEIGHTS",
    "TunedLens",
    "init_tuned_lens",
    "lens_kl",
    "load_tuned_lens",
    "logit_lens",
    "neuron_logits",
    "residual_stack",
    "save_tuned_lens",
    "train_tuned_lens",
    "tuned_lens",
    "tuned_lens_loss",
]
