"""Editing what a Transformer's MLPs store: rank-one (ROME) and fine-tuning edits of an MLP's
output projection, and relation-specific neurons with their clamp-to-zero intervention.

    C = A.key_covariance(model, variables, tokens, layer=3)                 # [d_mlp, d_mlp]
    params, info = A.rome_edit(model, variables, prompts, subject_pos, answer_pos, new, 3, C)
    ji.run(model, {"params": params}, prompts)                 # the edited model

    acts = A.neuron_activations(model, variables, tokens, mask)             # [N, L, d_mlp]
    masks = A.top_neurons(A.relation_neuron_scores(acts, relation, R), k)   # [R, L, d_mlp]
    ji.run(model, variables, tokens, interventions=A.neuron_interventions(masks[r]))

Rank-one model editing (ROME; Meng et al. 2022, "Locating and Editing Factual Associations
in GPT", Sec. 3): an MLP's output projection is a linear associative memory from keys k (the
MLP's hidden activations, here `blocks.{l}.mlp.hook_post` [d_mlp]) to values (its output,
`blocks.{l}.hook_mlp_out` [d_model]). To store a new (k*, v*) while changing the memory as
little as possible on the keys it has seen, ROME solves
    minimise ||W K - V|| subject to W k* = v*,
whose closed form is the rank-one update (their Eq. 2)
    W' = W + Lambda (C^-1 k*)^T,   Lambda = (v* - W k*) / ((C^-1 k*)^T k*),
with C = K K^T the uncentred covariance (second moment) of keys. This library's layout is
`out = k W_out + b_out` with W_out [d_mlp, d_model] (= ROME's W^T), so the update is
    W_out' = W_out + (C^-1 k*) (v* - (k* W_out + b_out))^T / (k*^T C^-1 k*).
k* is the key at the subject's last token (averaged over the prompts given: ROME averages it
over random prefixes), and v* = v0 + delta where v0 is the MLP's output there and delta is
optimised so that the model emits the new attribute (ROME's `compute_v`): delta is added to
`hook_mlp_out` of the layer at the subject's last token, and Adam minimises
    NLL(new attribute) + weight_decay * ||delta|| / ||v0||^2,
with ||delta|| clamped to `clamp_norm * ||v0||` after each step and the loop frozen once the
loss falls below 0.05. Checked against the official code (github.com/kmeng01/rome,
`rome/compute_u.py`, `compute_v.py`, `rome_main.py`): u = C^-1 k / ||C^-1 k||, the update
`u (v* - W k*)^T / (k*^T u)`, target_init the module output of the first prompt at the fact
token, weight decay `v_weight_decay * ||delta|| / ||target_init||^2`, the clamp
`clamp_norm_factor * ||target_init||`, early stop at loss < 5e-2; defaults from
`hparams/ROME/gpt2-xl.json` (20 steps, lr 0.5, weight decay 0.5, clamp factor 4). Left out:
ROME's KL term on "{subject} is a" prompts (essence drift; `kl_factor` 0.0625 there) and its
random-prefix templates (pass several prompts of the fact instead).

Fine-tuning baseline (`finetune_edit`; Hase et al. 2023's "constrained fine-tuning" without
the norm constraint): Adam on a dense change of the same W_out, the rest frozen, minimising
the NLL of the new attribute.

Both edits take `layer` as a Python int or a traced integer scalar (a `vmap` over layers is
one compiled call): with a traced layer every layer's W_out and `hook_mlp_out` is touched
through a one-hot weight, so only `layer` changes.

Relation-specific neurons (Liu et al. 2025, "On Relation-Specific Neurons in Large Language
Models"; their code, github.com/cisnlp/relation-specific-neurons, builds on Suau et al.'s
"Self-conditioning pre-trained language models"): "The expertise score of a neuron is defined
as the Average Precision (AP) achieved when its responses are considered prediction scores
for the classification problem" (positives: prompts of relation r; negatives: prompts of the
other relations); the top-k neurons by AP are r's neurons, and they are "deactivated" (set to
zero) to test what they do. `average_precision` is scikit-learn's definition (tied scores
form one threshold). How the reference code pools a neuron's response over a prompt's tokens
was not checked: `neuron_activations` pools over a mask of positions by max (default) or mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxinterp.interventions import Add, Clamp, Scale
from jaxinterp.run import run

__all__ = [
    "average_precision",
    "finetune_edit",
    "key_covariance",
    "neuron_activations",
    "neuron_interventions",
    "random_neurons",
    "rank_one_update",
    "relation_neuron_scores",
    "rome_edit",
    "rome_value",
    "target_logprob",
    "top_neurons",
    "with_w_out_delta",
]


# --- parameters and layers ------------------------------------------------------------------


def _n_layers(model: nn.Module) -> int:
    c = getattr(model, "config", None)
    if c is None or not hasattr(c, "n_layers") or getattr(c, "attn_only", False):
        raise ValueError(f"editing needs a jaxinterp Transformer with MLPs, got "
                         f"{type(model).__name__}" + (" (attn_only)" if c is not None else ""))
    return int(c.n_layers)


def _params(variables: Any) -> dict:
    if not isinstance(variables, Mapping) or "params" not in variables:
        keys = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
        raise ValueError(f"variables must contain 'params' (as model.init returns); got {keys}")
    return nn.meta.unbox(variables["params"])


def _weights(layer: Any, n_layers: int) -> list[tuple[int, Any]]:
    """[(i, weight)]: the layers an edit touches and how much (1 at `layer`, 0 elsewhere). A
    Python int gives only that layer; a traced integer gives every layer a one-hot weight."""
    if isinstance(layer, int):
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer={layer}: the model has layers 0..{n_layers - 1}")
        return [(layer, 1.0)]
    layer = jnp.asarray(layer)
    if layer.shape != () or not jnp.issubdtype(layer.dtype, jnp.integer):
        raise ValueError(f"layer must be an int or an integer scalar, got shape "
                         f"{layer.shape} dtype {layer.dtype}")
    return [(i, (layer == i).astype(jnp.float32)) for i in range(n_layers)]


def _w_out(params: dict, i: int) -> jax.Array:
    """Layer i's W_out [d_mlp, d_model] (unrolled `blocks_{i}` or scanned `blocks`)."""
    try:
        if "blocks" in params:
            return params["blocks"]["mlp"]["W_out"][i]
        return params[f"blocks_{i}"]["mlp"]["W_out"]
    except KeyError as e:
        raise ValueError(f"no MLP W_out for layer {i} in the params (editing needs the "
                         f"TransformerLens layout `blocks_{{i}}.mlp.W_out`): missing {e}") from None


def with_w_out_delta(params: Any, layer: Any, delta: jax.Array, n_layers: int) -> dict:
    """`params` (unboxed) with `delta` [d_mlp, d_model] added to layer `layer`'s MLP W_out; a
    pure function (nothing is modified in place). `layer`: an int or a traced integer scalar."""
    params = nn.meta.unbox(params)
    scanned = "blocks" in params
    _w_out(params, 0)  # the layout check
    if scanned:
        w = jnp.stack([jnp.asarray(wt, jnp.float32) for _, wt in _weights(layer, n_layers)])
        idx = jnp.array([i for i, _ in _weights(layer, n_layers)])
        w_out = params["blocks"]["mlp"]["W_out"]
        new = w_out.at[idx].add((w[:, None, None] * delta[None]).astype(w_out.dtype))
        return {**params, "blocks": {**params["blocks"], "mlp": {
            **params["blocks"]["mlp"], "W_out": new}}}
    out = dict(params)
    for i, wt in _weights(layer, n_layers):
        blk = params[f"blocks_{i}"]
        w_out = blk["mlp"]["W_out"]
        out[f"blocks_{i}"] = {**blk, "mlp": {**blk["mlp"],
                                              "W_out": w_out + (wt * delta).astype(w_out.dtype)}}
    return out


# --- keys, values and the update ------------------------------------------------------------


def _select(stacked: jax.Array, layer: Any) -> jax.Array:
    return stacked[layer] if isinstance(layer, int) else jnp.take(stacked, layer, axis=0)


def _hook_posts(model, variables, tokens, interventions=()) -> tuple[jax.Array, jax.Array]:
    """(logits, hook_post of every layer [L, batch, pos, d_mlp])."""
    n = _n_layers(model)
    logits, cache = run(model, variables, tokens, capture="blocks.*.mlp.hook_post",
                        interventions=interventions)
    return logits, jnp.stack([cache[f"blocks.{i}.mlp.hook_post"] for i in range(n)])


def key_covariance(model: nn.Module, variables: Any, tokens: jax.Array, layer: Any = None,
                   mask: jax.Array | None = None) -> jax.Array:
    """Uncentred covariance (second moment) of the MLP keys, C = E[k k^T] over the positions.

    Args:
      tokens: [batch, pos] int (ROME uses ~1e5 Wikipedia positions; here: text the model saw).
      layer: an int or traced integer scalar, or None for every layer.
      mask: optional [batch, pos] bool: the positions averaged over (default all).

    Returns:
      [d_mlp, d_mlp] for one layer, [n_layers, d_mlp, d_mlp] for all.
    """
    _, posts = _hook_posts(model, variables, tokens)
    posts = posts.astype(jnp.float32)
    m = jnp.ones(tokens.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    if m.shape != tokens.shape:
        raise ValueError(f"mask has shape {m.shape}; it must match tokens {tokens.shape}")
    cov = jnp.einsum("bp,lbpm,lbpn->lmn", m, posts, posts) / jnp.maximum(m.sum(), 1.0)
    return cov if layer is None else _select(cov, layer)


def rank_one_update(w_out: jax.Array, cov: jax.Array, key: jax.Array,
                    residual: jax.Array) -> jax.Array:
    """ROME's update of W_out [d_mlp, d_model] (module docstring): the change
    (C^-1 k*) residual^T / (k*^T C^-1 k*) [d_mlp, d_model], residual = v* - (k* W_out + b).
    `cov` [d_mlp, d_mlp] (invertible: add a ridge for dead neurons), `key` [d_mlp]."""
    del w_out  # the change does not depend on W (the residual does); kept for the signature
    u = jnp.linalg.solve(cov, key)  # C^-1 k*
    return jnp.einsum("m,d->md", u, residual) / jnp.dot(u, key)


def target_logprob(logits: jax.Array, answer_pos: jax.Array, target: jax.Array) -> jax.Array:
    """log p(target[b] | prompt b) at position answer_pos[b]: logits [batch, pos, vocab],
    answer_pos, target [batch] int -> [batch]."""
    b = jnp.arange(logits.shape[0])
    lp = jax.nn.log_softmax(logits[b, answer_pos].astype(jnp.float32), -1)
    return lp[b, target]


def _mlp_out_add(model, layer, subject_pos, tokens_shape, delta):
    """Add interventions putting `delta` [d_model] on hook_mlp_out of `layer` at each prompt's
    subject_pos (one-hot over layers when `layer` is traced)."""
    at = jax.nn.one_hot(subject_pos, tokens_shape[1], dtype=jnp.float32)  # [batch, pos]
    vec = at[..., None] * delta  # [batch, pos, d_model]
    return [Add(f"blocks.{i}.hook_mlp_out", wt * vec)
            for i, wt in _weights(layer, _n_layers(model))]


def rome_value(model: nn.Module, variables: Any, tokens: jax.Array, subject_pos: jax.Array,
               answer_pos: jax.Array, target: jax.Array, layer: Any, *, steps: int = 20,
               lr: float = 0.5, weight_decay: float = 0.5, clamp_norm: float = 4.0,
               stop_loss: float = 5e-2) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ROME's v*: the change delta [d_model] of the layer's MLP output at the subject's last
    token that makes the model emit `target` (module docstring; ROME's `compute_v`).

    Args:
      tokens: [batch, pos] int: prompts of the fact (one or several phrasings).
      subject_pos: [batch] int: each prompt's subject last token.
      answer_pos: [batch] int: the position whose next-token prediction is the attribute.
      target: [batch] int (or a scalar): the new attribute's token.
      layer: an int or a traced integer scalar.
      steps, lr, weight_decay, clamp_norm, stop_loss: ROME's v_num_grad_steps, v_lr,
        v_weight_decay, clamp_norm_factor and its early-stop loss.

    Returns:
      (delta [d_model], {"v0": the MLP output at the first prompt's subject token [d_model],
      "loss": the final loss, "steps_taken"}).
    """
    params = _params(variables)
    rest = {k: v for k, v in variables.items() if k != "params"}
    var = {**rest, "params": params}
    target = jnp.broadcast_to(jnp.asarray(target), subject_pos.shape)
    n = _n_layers(model)
    _, cache = run(model, var, tokens, capture=[f"blocks.{i}.hook_mlp_out" for i in range(n)])
    outs = jnp.stack([cache[f"blocks.{i}.hook_mlp_out"] for i in range(n)])
    v0 = _select(outs, layer)[0, subject_pos[0]].astype(jnp.float32)  # ROME's target_init
    v0_norm = jnp.linalg.norm(v0)

    def loss_fn(delta):
        logits, _ = run(model, var, tokens,
                        interventions=_mlp_out_add(model, layer, subject_pos, tokens.shape,
                                                   delta))
        nll = -target_logprob(logits, answer_pos, target).mean()
        return nll + weight_decay * optax.safe_norm(delta, 0.0) / v0_norm ** 2  # grad 0 at 0

    opt = optax.adam(lr)
    grad_fn = jax.value_and_grad(loss_fn)

    def step(carry, _):
        delta, state, done, taken = carry
        loss, g = grad_fn(delta)
        done = done | (loss < stop_loss)
        upd, new_state = opt.update(g, state, delta)
        new = delta + upd
        max_norm = clamp_norm * v0_norm
        norm = jnp.linalg.norm(new)
        new = jnp.where(norm > max_norm, new * max_norm / norm, new)
        keep = lambda a, b: jnp.where(done, a, b)  # frozen once converged
        return (keep(delta, new), jax.tree.map(keep, state, new_state), done,
                taken + (~done).astype(jnp.int32)), loss

    delta0 = jnp.zeros_like(v0)
    (delta, _, _, taken), _ = jax.lax.scan(
        step, (delta0, opt.init(delta0), jnp.array(False), jnp.array(0, jnp.int32)), None,
        length=steps)
    return delta, {"v0": v0, "loss": loss_fn(delta), "steps_taken": taken}


def rome_edit(model: nn.Module, variables: Any, tokens: jax.Array, subject_pos: jax.Array,
              answer_pos: jax.Array, target: jax.Array, layer: Any, cov: jax.Array,
              **value_kwargs: Any) -> tuple[dict, dict[str, jax.Array]]:
    """A ROME edit of layer `layer`'s MLP: `(edited params, info)`.

    k* = the mean over the prompts of `hook_post` at the subject's last token; delta from
    `rome_value` (same arguments; `value_kwargs` its options); the residual
    v* - (k* W_out + b_out) is delta (the MLP output is linear in k, so its mean over prompts
    is k* W_out + b_out); W_out += `rank_one_update(W_out, cov, k*, delta)`.

    Args:
      cov: the layer's key covariance [d_mlp, d_mlp], or every layer's [n_layers, d_mlp,
        d_mlp] (`key_covariance`); add a ridge if some neurons never fire.
      (the rest: `rome_value`.)

    Returns:
      The edited params (unboxed; the input is not modified) and `rome_value`'s info plus
      "key" (k* [d_mlp]) and "delta".
    """
    n = _n_layers(model)
    params = _params(variables)
    var = {**{k: v for k, v in variables.items() if k != "params"}, "params": params}
    _, posts = _hook_posts(model, var, tokens)  # [L, batch, pos, d_mlp]
    b = jnp.arange(tokens.shape[0])
    key = _select(posts, layer)[b, subject_pos].astype(jnp.float32).mean(0)
    if cov.ndim == 3:
        cov = _select(cov, layer)
    delta, info = rome_value(model, var, tokens, subject_pos, answer_pos, target, layer,
                             **value_kwargs)
    change = rank_one_update(None, cov, key, delta)
    return with_w_out_delta(params, layer, change, n), {**info, "key": key, "delta": delta}


def finetune_edit(model: nn.Module, variables: Any, tokens: jax.Array, answer_pos: jax.Array,
                  target: jax.Array, layer: Any, *, steps: int = 25,
                  lr: float = 1e-2) -> tuple[dict, dict[str, jax.Array]]:
    """A fine-tuning edit: Adam on a dense change of layer `layer`'s W_out (every other weight
    frozen), minimising the NLL of `target` at `answer_pos` over the prompts. Returns (edited
    params, {"loss": final NLL}). Arguments as `rome_value`."""
    n = _n_layers(model)
    params = _params(variables)
    rest = {k: v for k, v in variables.items() if k != "params"}
    target = jnp.broadcast_to(jnp.asarray(target), answer_pos.shape)

    def loss_fn(dw):
        logits, _ = run(model, {**rest, "params": with_w_out_delta(params, layer, dw, n)},
                        tokens)
        return -target_logprob(logits, answer_pos, target).mean()

    opt = optax.adam(lr)
    grad_fn = jax.grad(loss_fn)

    def step(carry, _):
        dw, state = carry
        upd, state = opt.update(grad_fn(dw), state, dw)
        return (dw + upd, state), None

    dw0 = jnp.zeros(_w_out(params, 0).shape, jnp.float32)
    (dw, _), _ = jax.lax.scan(step, (dw0, opt.init(dw0)), None, length=steps)
    return with_w_out_delta(params, layer, dw, n), {"loss": loss_fn(dw)}


# --- relation-specific neurons --------------------------------------------------------------


def neuron_activations(model: nn.Module, variables: Any, tokens: jax.Array,
                       mask: jax.Array | None = None, pool: str = "max") -> jax.Array:
    """Every MLP neuron's response to each prompt: `hook_post` pooled over the positions where
    `mask` [batch, pos] holds (default all), by "max" or "mean". Returns [batch, n_layers,
    d_mlp] float32."""
    if pool not in ("max", "mean"):
        raise ValueError(f"pool={pool!r}: choose 'max' or 'mean'")
    _, posts = _hook_posts(model, variables, tokens)
    posts = posts.astype(jnp.float32)  # [L, batch, pos, d_mlp]
    m = jnp.ones(tokens.shape, bool) if mask is None else jnp.asarray(mask, bool)
    if m.shape != tokens.shape:
        raise ValueError(f"mask has shape {m.shape}; it must match tokens {tokens.shape}")
    mm = m[None, :, :, None]
    if pool == "max":
        out = jnp.where(mm, posts, -jnp.inf).max(2)
    else:
        out = (posts * mm).sum(2) / jnp.maximum(mm.sum(2), 1)
    return jnp.swapaxes(out, 0, 1)


def average_precision(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Average precision of `scores` [N, ...] as predictions of `labels` [N] bool, per trailing
    index: AP = sum over thresholds n of (R_n - R_{n-1}) P_n, tied scores one threshold
    (scikit-learn's `average_precision_score`). Returns [...]; nan where no label is set."""
    labels = jnp.asarray(labels, bool)
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels has shape {labels.shape}; it must be [N] with N = "
                         f"scores.shape[0] = {scores.shape[0]}")
    flat = scores.reshape(scores.shape[0], -1).astype(jnp.float32)

    def one(s):
        order = jnp.argsort(-s)
        s_sorted, pos = -s[order], labels[order].astype(jnp.float32)  # ascending -s
        tp = jnp.cumsum(pos)
        precision = tp / jnp.arange(1, s.shape[0] + 1)
        end = jnp.searchsorted(s_sorted, s_sorted, side="right") - 1  # each tie group's end
        return (pos * precision[end]).sum() / pos.sum()

    return jax.vmap(one, in_axes=1)(flat).reshape(scores.shape[1:])


def relation_neuron_scores(acts: jax.Array, relation: jax.Array, n_relations: int) -> jax.Array:
    """Each neuron's expertise for each relation (Liu et al.): the AP of its responses `acts`
    [N, ...] (e.g. [N, n_layers, d_mlp] from `neuron_activations`) at telling prompts of the
    relation (`relation` [N] int in [0, n_relations)) from the other relations' prompts.
    Returns [n_relations, ...]."""
    return jnp.stack([average_precision(acts, relation == r) for r in range(n_relations)])


def top_neurons(scores: jax.Array, k: int) -> jax.Array:
    """bool [R, ...]: each relation's k highest-scoring neurons over all of `scores`' [R, ...]
    trailing axes (e.g. over layers and neurons together)."""
    flat = scores.reshape(scores.shape[0], -1)
    if not 0 < k <= flat.shape[1]:
        raise ValueError(f"k={k}: choose 1..{flat.shape[1]} neurons")
    idx = jax.lax.top_k(flat, k)[1]
    mask = jnp.zeros(flat.shape, bool).at[jnp.arange(flat.shape[0])[:, None], idx].set(True)
    return mask.reshape(scores.shape)


def random_neurons(rng: jax.Array, n: int, shape: tuple[int, ...], k: int) -> jax.Array:
    """bool [n, *shape]: n independent draws of k neurons uniformly without replacement (the
    control for `top_neurons`)."""
    size = 1
    for d in shape:
        size *= d
    if not 0 < k <= size:
        raise ValueError(f"k={k}: choose 1..{size} neurons")
    keys = jax.random.split(rng, n)
    idx = jax.vmap(lambda key: jax.random.permutation(key, size)[:k])(keys)
    mask = jnp.zeros((n, size), bool).at[jnp.arange(n)[:, None], idx].set(True)
    return mask.reshape((n, *shape))


def neuron_interventions(mask: jax.Array, value: float = 0.0,
                         scale: float | None = None) -> list:
    """Interventions on the neurons of `mask` [n_layers, d_mlp] bool (traced masks are fine:
    `vmap` over relations): `ji.Clamp` of `blocks.{l}.mlp.hook_post` to `value` (the paper's
    deactivation: 0) where the mask holds, or, with `scale`, `ji.Scale` of those neurons by
    `scale` (1 elsewhere)."""
    if mask.ndim != 2:
        raise ValueError(f"mask has shape {mask.shape}; it must be [n_layers, d_mlp]")
    if scale is None:
        return [Clamp(f"blocks.{i}.mlp.hook_post", value, mask=mask[i])
                for i in range(mask.shape[0])]
    return [Scale(f"blocks.{i}.mlp.hook_post", jnp.where(mask[i], scale, 1.0))
            for i in range(mask.shape[0])]
