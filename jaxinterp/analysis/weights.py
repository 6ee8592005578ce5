"""TransformerLens-style weight processing: rewrite a transformer's weights so that the function it
computes is unchanged (log-probabilities; `center_unembed` shifts logits by a constant per
position) while the weights become easier to read. Definitions follow TransformerLens's
`HookedTransformer.fold_layer_norm`, `center_writing_weights`, `center_unembed` and
`fold_value_biases` (applied in that order, as its `process_weights_` does).

fold_ln: a norm computes `normalize(x) * w + b`, and every norm feeds a linear map `W` (+ `c`).
  Fold `w` into `W` (`W <- diag(w) W`) and `b` into the bias (`c <- c + b W`), for `ln1` (into
  `W_Q`, `W_K`, `W_V`), `ln2` (into `W_in`, `W_gate`) and `ln_final` (into `W_U`). With
  LayerNorm, `normalize(x)` has zero mean, so the reading weights are then also centred over
  d_model (`W <- W - mean_d_model(W)`), as TransformerLens does by default.
center_writing_weights (LayerNorm only): every reader of the residual stream first subtracts
  its mean, so the mean over d_model of anything written to it is irrelevant: centre `W_E`,
  `W_pos`, the register vectors `W_reg`, `W_O`, `b_O`, `W_out`, `b_out` over d_model.
center_unembed: softmax is shift-invariant: centre `W_U` and `b_U` over the vocabulary.
fold_value_biases: attention patterns sum to 1, so a head's value bias adds the constant
  `b_V W_O` to the layer's output: `b_O <- b_O + sum_h b_V[h] W_O[h]`, `b_V <- 0` (grouped-query
  KV biases are first repeated to one per query head).

Config. TransformerLens replaces a folded norm by a weightless one ("LNPre"/"RMSPre").
`TransformerConfig.normalization_type` has no weightless option, so the folded norms keep their
parameters set to `w = 1`, `b = 0`, which computes the same function. Other config changes are
made where the processed weights need them: a tied unembedding is untied (`tie_embeddings=False`,
`W_U = W_E.T`) when `W_E` or `W_U` change; `unembed_bias=True` (a zero `b_U`) when a LayerNorm
bias is folded into the unembedding; `use_bias=True` (zero biases) when a LayerNorm bias must be
folded into a model without biases.

The arithmetic is done once, in float64 NumPy, and cast back to each parameter's dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.layers.stack import stack_layers
from jaxinterp.models.transformer import check_transformer, unembedding, unrolled_params


def process_weights(
    model: nn.Module,
    variables: Any,
    *,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
) -> tuple[nn.Module, Any]:
    """Processes a `jaxinterp.models.Transformer`'s weights (see the module docstring).

    Args:
      model: the model; its config may change (see the module docstring).
      variables: its variables, boxed (as `model.init` returns) or not, scanned or unrolled;
        the result has the same structure (for the new config).
      fold_ln, center_writing_weights, center_unembed, fold_value_biases: the steps to apply.

    Returns:
      (model, variables): a model with the (possibly) updated config, and its new variables.

    Raises:
      ValueError: for a step that does not apply to this model (folding without norms,
        centring writing weights without LayerNorm, folding value biases without biases,
        folding a LayerNorm into a gated MLP, whose gate has no bias).
    """
    c = check_transformer(model, "process_weights")
    norm = c.normalization_type
    if fold_ln and norm is None:
        raise ValueError("fold_ln: this model has no norms (normalization_type=None) to fold")
    if fold_ln and norm == "LN" and c.gated_mlp and not c.attn_only:
        raise ValueError("fold_ln: a LayerNorm bias cannot be folded into a gated MLP "
                         "(W_gate has no bias); use fold_ln=False")
    if center_writing_weights and norm != "LN":
        raise ValueError(f"center_writing_weights needs LayerNorm (it relies on every reader of "
                         f"the residual stream removing the mean); this model has "
                         f"normalization_type={norm!r}")
    if fold_value_biases and not c.use_bias and not (fold_ln and norm == "LN"):
        raise ValueError("fold_value_biases: this model has no value biases (use_bias=False)")
    if "params" not in variables:
        raise ValueError(f"variables must contain 'params'; got keys {sorted(variables)}")

    boxed = any(isinstance(x, nn.meta.AxisMetadata) for x in jax.tree.leaves(
        variables, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata)))
    plain = unrolled_params(variables)
    dtypes = jax.tree.map(lambda x: x.dtype, plain)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), plain)
    blocks = [p[f"blocks_{i}"] for i in range(c.n_layers)]
    changes: dict[str, Any] = {}

    # -- config changes the processed weights need -------------------------------------------
    if c.tie_embeddings and (fold_ln or center_writing_weights or center_unembed):
        p["W_U"] = np.asarray(unembedding(model, variables)[0], np.float64)  # W_E.T, a copy
        changes["tie_embeddings"] = False
    if fold_ln and norm == "LN" and not c.unembed_bias:
        p["b_U"] = np.zeros(c.d_vocab_out or c.d_vocab)
        changes["unembed_bias"] = True
    if fold_ln and norm == "LN" and not c.use_bias:
        _add_zero_biases(blocks, c)
        changes["use_bias"] = True

    if fold_ln:
        for blk in blocks:
            attn = blk["attn"]
            for x in ("Q", "K", "V"):
                attn[f"W_{x}"], b = _fold(attn[f"W_{x}"], blk["ln1"], norm, axis=1)
                if b is not None:
                    attn[f"b_{x}"] = attn[f"b_{x}"] + b
            _reset(blk["ln1"])
            if not c.attn_only:
                mlp = blk["mlp"]
                mlp["W_in"], b = _fold(mlp["W_in"], blk["ln2"], norm, axis=0)
                if b is not None:
                    mlp["b_in"] = mlp["b_in"] + b
                if c.gated_mlp:  # RMSNorm only (LayerNorm + gated is refused above)
                    mlp["W_gate"], _ = _fold(mlp["W_gate"], blk["ln2"], norm, axis=0)
                _reset(blk["ln2"])
        p["W_U"], b = _fold(p["W_U"], p["ln_final"], norm, axis=0)
        if b is not None:
            p["b_U"] = p["b_U"] + b
        _reset(p["ln_final"])

    if center_writing_weights:
        p["embed"]["W_E"] = _centre(p["embed"]["W_E"], -1)
        if c.positional_embedding_type == "standard":
            p["pos_embed"]["W_pos"] = _centre(p["pos_embed"]["W_pos"], -1)
        if c.n_register_tokens:  # the registers write their rows to the stream too
            p["W_reg"] = _centre(p["W_reg"], -1)
        for blk in blocks:
            writers = [(blk["attn"], "O")] + ([] if c.attn_only else [(blk["mlp"], "out")])
            for module, name in writers:
                module[f"W_{name}"] = _centre(module[f"W_{name}"], -1)
                if f"b_{name}" in module:
                    module[f"b_{name}"] = _centre(module[f"b_{name}"], -1)

    if center_unembed:
        if "W_U" in p:
            p["W_U"] = _centre(p["W_U"], -1)
        if "b_U" in p:
            p["b_U"] = _centre(p["b_U"], -1)

    if fold_value_biases:
        for blk in blocks:
            attn = blk["attn"]
            # KV biases repeated to one per query head: [head, d_head]
            b_v = np.repeat(attn["b_V"], c.n_heads // attn["b_V"].shape[0], axis=0)
            attn["b_O"] = attn["b_O"] + np.einsum("hd,hdm->m", b_v, attn["W_O"])  # head, d_head
            attn["b_V"] = np.zeros_like(attn["b_V"])

    new_model = type(model)(dataclasses.replace(c, **changes)) if changes else model
    params = _cast(p, dtypes, jnp.dtype(c.param_dtype))
    if c.scan_layers:
        params = stack_layers(params)
    if boxed:
        template = jax.eval_shape(new_model.init, jax.random.key(0),
                                  jnp.zeros((1, 1), jnp.int32))["params"]
        params = jax.tree.map(
            lambda box, v: box.replace_boxed(v) if isinstance(box, nn.meta.AxisMetadata) else v,
            template, params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    return new_model, {**variables, "params": params}


def _fold(w: np.ndarray, ln: dict, norm: str, axis: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Folds a norm's `w` (and LayerNorm's `b`) into a reading weight whose d_model axis is
    `axis`: returns (new weight, bias increment or None). LayerNorm: the weight is centred."""
    shape = [1] * w.ndim
    shape[axis] = -1
    bias = None
    if norm == "LN":
        bias = np.sum(w * ln["b"].reshape(shape), axis=axis)  # b W: contract d_model
    w = w * ln["w"].reshape(shape)
    if norm == "LN":
        w = _centre(w, axis)
    return w, bias


def _centre(x: np.ndarray, axis: int) -> np.ndarray:
    return x - x.mean(axis=axis, keepdims=True)


def _reset(ln: dict) -> None:
    ln["w"] = np.ones_like(ln["w"])
    if "b" in ln:
        ln["b"] = np.zeros_like(ln["b"])


def _add_zero_biases(blocks: list[dict], c: Any) -> None:
    for blk in blocks:
        attn = blk["attn"]
        for x in ("Q", "K", "V"):
            attn[f"b_{x}"] = np.zeros(attn[f"W_{x}"].shape[::2])  # [heads, d_head]
        attn["b_O"] = np.zeros(attn["W_O"].shape[-1])
        if not c.attn_only:
            blk["mlp"]["b_in"] = np.zeros(blk["mlp"]["W_in"].shape[-1])
            blk["mlp"]["b_out"] = np.zeros(blk["mlp"]["W_out"].shape[-1])


def _cast(p: Any, dtypes: Any, default: jnp.dtype) -> Any:
    """float64 NumPy tree -> jnp arrays in each parameter's original dtype (new parameters:
    `default`, the config's param_dtype)."""
    if isinstance(p, dict):
        sub = dtypes if isinstance(dtypes, dict) else {}
        return {k: _cast(v, sub.get(k), default) for k, v in p.items()}
    return jnp.asarray(p, dtypes if dtypes is not None else default)


__all__ = ["process_weights"]
