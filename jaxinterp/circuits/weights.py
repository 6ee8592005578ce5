"""Weights-based circuit analysis between transcoder features (Dunefsky, Chlenski & Nanda 2024,
"Transcoders Find Interpretable LLM Feature Circuits", section 3).

A layer-l transcoder feature i writes `a_i(x_t) f_dec^(l,i)` into the residual stream at token
t (f_dec^(l,i) = W_dec^(l)[i], [d_model]); a later transcoder feature i' reads its input through
its encoder column f_enc^(l',i') = W_enc^(l')[:, i'] ([d_model]). Along the residual stream (no
attention or MLP in between) the attribution of i to i' factorises into an input-invariant and
an input-dependent term:

    connection[i, i']     = f_dec^(l,i) . f_enc^(l',i')                        (input-invariant)
    attribution_t[i, i']  = a_i(x_t) connection[i, i']                          (input-dependent)

LayerNorm. The later transcoder reads `ln(x) = (x - mean_d(x)) / sigma(x) * w + b`
(`blocks.{l'}.ln2.hook_normalized`). The weight `w` and the centring are linear and folded into
the encoder (`fold_norm`: f_enc <- centre_d(w * f_enc)); the bias `b` adds the same constant
`b . f_enc` to the pre-activation on every input, so it is nobody's attribution; the scale
`1 / sigma(x_t)` is one positive factor per token, common to every source at that token, and is
ignored, as the paper does (it changes no ranking of sources within a token). Pass `scale`
(`1 / sigma_t`, i.e. `1 / blocks.{l'}.ln2.hook_scale`) to `attributions` to include it: an
attribution is then exactly source i's direct-path share of the pre-activation of i' with sigma
frozen at its value on the input.

Shapes: W_dec [n_src, d_model], W_enc [d_model, n_dst], norm weight [d_model];
connections [n_src, n_dst]; acts [..., n_src]; attributions [..., n_src] (one target's column)
or [..., n_src, n_dst] (a matrix).

    C = connections(tc0["W_dec"], tc1["W_enc"], norm_w=params["blocks_1"]["ln2"]["w"])
    attr = attributions(acts0, C[:, j])              # [tokens, n_src]
    agreement(C[:, j], attr[acts1[:, j] > 0].mean(0), k=10)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats


def fold_norm(w_enc: jax.Array, norm_w: jax.Array | None = None, center: bool = True
              ) -> jax.Array:
    """The encoder as seen from the residual stream: `w * W_enc` (rows scaled by the norm's
    weight `norm_w` [d_model]; None: no weight), centred over d_model when `center`
    (LayerNorm subtracts the mean; RMSNorm: `center=False`). w_enc [d_model, n] -> same."""
    w_enc = jnp.asarray(w_enc)
    if w_enc.ndim != 2:
        raise ValueError(f"W_enc must be [d_model, n_features]; got shape {w_enc.shape}")
    if norm_w is not None:
        norm_w = jnp.asarray(norm_w)
        if norm_w.shape != (w_enc.shape[0],):
            raise ValueError(f"the norm weight has shape {norm_w.shape}; W_enc {w_enc.shape} "
                             f"needs ({w_enc.shape[0]},)")
        w_enc = w_enc * norm_w[:, None]
    if center:
        w_enc = w_enc - jnp.mean(w_enc, axis=0, keepdims=True)
    return w_enc


def connections(w_dec: jax.Array, w_enc: jax.Array, norm_w: jax.Array | None = None,
                center: bool = True) -> jax.Array:
    """Input-invariant connections `W_dec @ fold_norm(W_enc, norm_w, center)`:
    w_dec [n_src, d_model] (the earlier features' decoder rows), w_enc [d_model, n_dst] (the
    later features' encoder) -> [n_src, n_dst]."""
    w_dec = jnp.asarray(w_dec)
    if w_dec.ndim != 2 or w_dec.shape[1] != jnp.shape(w_enc)[0]:
        raise ValueError(f"W_dec {w_dec.shape} must be [n_src, d_model] with d_model = W_enc's "
                         f"first axis ({jnp.shape(w_enc)})")
    return jnp.einsum("sd,dt->st", w_dec, fold_norm(w_enc, norm_w, center))  # contract d_model


def attributions(acts: jax.Array, connection: jax.Array, scale: jax.Array | None = None
                 ) -> jax.Array:
    """Input-dependent attributions `a_i(x) connection[i(, i')]` (times `scale` per row).

    Args:
      acts: the earlier features' activations [..., n_src].
      connection: one target's column [n_src] or a matrix [n_src, n_dst] (`connections`).
      scale: optional [...] factor per row (`1 / sigma` of the later norm; see the module
        docstring); None ignores it, as the paper does.

    Returns:
      [..., n_src] for a column, [..., n_src, n_dst] for a matrix.
    """
    acts, connection = jnp.asarray(acts), jnp.asarray(connection)
    if connection.shape[0] != acts.shape[-1] or connection.ndim not in (1, 2):
        raise ValueError(f"acts {acts.shape} [..., n_src] need a connection [n_src] or "
                         f"[n_src, n_dst]; got {connection.shape}")
    out = acts * connection if connection.ndim == 1 else acts[..., :, None] * connection
    if scale is not None:
        scale = jnp.asarray(scale)
        if scale.shape != acts.shape[:-1]:
            raise ValueError(f"scale has shape {scale.shape}; acts {acts.shape} need "
                             f"{acts.shape[:-1]}")
        out = out * scale.reshape(scale.shape + (1,) * (out.ndim - scale.ndim))
    return out


def top_sources(connection: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest |connection| [n_src] entries, largest first (ties: lower
    index first)."""
    connection = np.asarray(connection)
    if not 0 < k <= connection.shape[0]:
        raise ValueError(f"k={k} must be in [1, {connection.shape[0]}]")
    return np.argsort(-np.abs(connection), kind="stable")[:k]


def agreement(invariant: np.ndarray, dependent: np.ndarray, k: int,
              mask: np.ndarray | None = None) -> dict[str, float]:
    """How well input-invariant connections predict (mean) input-dependent attributions, both
    [n_src] for one target: `spearman` and `pearson` correlations over the sources in `mask`
    (default all), and `top_k_overlap`, the fraction of the top-k sources by |invariant| that
    are among the top-k by |dependent| (chance: about k / n)."""
    inv, dep = np.asarray(invariant, np.float64), np.asarray(dependent, np.float64)
    if inv.shape != dep.shape or inv.ndim != 1:
        raise ValueError(f"invariant {inv.shape} and dependent {dep.shape} must both be [n_src]")
    m = np.ones(inv.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.sum() < 3:
        raise ValueError(f"agreement needs at least 3 sources in the mask; got {int(m.sum())}")
    overlap = len(set(top_sources(inv, k)) & set(top_sources(dep, k))) / k
    return {"spearman": float(stats.spearmanr(inv[m], dep[m]).statistic),
            "pearson": float(np.corrcoef(inv[m], dep[m])[0, 1]),
            "top_k_overlap": float(overlap), "n_sources": int(m.sum())}


__all__ = ["agreement", "attributions", "connections", "fold_norm", "top_sources"]
