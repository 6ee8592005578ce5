"""Path patching: the effect of sender heads on the metric THROUGH chosen receivers only.

Activation patching measures a head's total effect. Path patching (Wang et al. 2022,
"Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small",
sec. 3.1 and appendix B; Goldowsky-Dill et al. 2023, "Localizing Model Behavior with Path
Patching") restricts it to the paths sender -> receiver -> output, where the receivers are
later heads' query, key or value inputs, or a residual-stream site (e.g. the last layer's
`hook_resid_post`: the sender's direct effect on the logits). We implement the standard three runs:

  (i)   run the clean and the corrupted input; cache every head's output `hook_z`
        (and every `hook_mlp_out` if `freeze_mlps`).
  (ii)  run the CLEAN input with the sender heads' `hook_z` patched from the corrupted run and
        every other head's `hook_z` frozen to its clean value (MLPs too if `freeze_mlps`;
        by default they are recomputed, as in Wang et al.); capture the receivers:
        `blocks.{l}.attn.hook_q|k|v` of the receiver heads, or the receiver site.
  (iii) run the CLEAN input with the receivers patched from run (ii) (a receiver head's
        q / k / v for that head only, a receiver site at every position) and nothing else
        changed; return `metric(output)`.

Freezing in (ii) means a sender's change reaches the receivers only along the residual stream
(and through MLPs unless frozen), not through other heads. As in Wang et al., the patch goes
from the corrupted into the clean run (the opposite direction to `act_patch`), so a sender
that matters makes the metric fall from its clean value. Under grouped-query attention a `k` or
`v` receiver's head is a KV head.

`path_patch(..., senders="each")` sweeps every head as the single sender: one compiled,
vmapped call over one-hot sender masks (in chunks of `batch_size`), `[layer, head]`.

Suffix-only path patching (causal `Transformer`s, the default there; `suffix=False` for the
full runs above; results equal to float rounding, tested to 1e-5). Runs (ii) and (iii) are both
on the CLEAN input, so the clean run is computed once with a KV cache (every layer's keys and
values and `hook_resid_pre` at all T positions, its logits, hook_z, hook_mlp_out). Let p0 be the
first sender position at or after the first position where clean and corrupted tokens differ
(`first_changed_position`): before it a corrupted head output equals the clean one, so run
(ii) equals the clean run at positions < p0, and before its earliest sender layer s at every
position. Run (ii) therefore recomputes only positions [p0, T) of layers min(s, r_1) ..
r_k, starting from the clean `hook_resid_pre` and attending to the clean cache
(`jaxinterp.models.transformer.forward_from`), where r_1 < ... < r_k are the receivers' layers.
Receivers have to be captured, and nothing leaves `forward_from`'s `lax.fori_loop`, so the loop
is split at each receiver layer r_j and that layer is run alone with a static layer index
(`transformer.block_at`), which captures its sites at [p0, T). Run (iii) differs from the
clean run only from r_1 on and (its receivers being clean before p0) only at positions >= p0:
`forward_from` from layer r_1 on [p0, T) with the receivers patched in, the clean logits
before p0, and only the positions the metric reads unembedded (one at a time, so XLA drops the
rest). With `senders="each"` the sender layer s is a traced argument: one compiled function,
called once per sender layer and vmapped over its heads. Receiver sites outside the blocks
(`hook_embed`, `ln_final.hook_normalized`) keep the full path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import hooks
from jaxinterp.analysis.patching import (
    Metric,
    check_batch_size,
    check_metric,
    check_pair,
    chunked,
    use_suffix,
)
from jaxinterp.hooks import sites as list_sites
from jaxinterp.interventions import Patch
from jaxinterp.models import transformer as tfm
from jaxinterp.run import run

QKV = ("q", "k", "v")


def _z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _mlp(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def _receiver_patches(receivers, shapes) -> tuple[tuple[str, tuple[bool, ...] | None], ...]:
    """`((site name, head mask or None for the whole site), ...)`, validated against `shapes`."""
    if isinstance(receivers, str):
        if receivers not in shapes:
            raise ValueError(f"receiver site {receivers!r} is not a site of this model; e.g. "
                             f"{', '.join(n for n in shapes if 'resid' in n)}")
        return ((receivers, None),)
    masks: dict[str, np.ndarray] = {}
    for r in receivers:
        if not (isinstance(r, tuple | list) and len(r) == 3 and r[2] in QKV):
            raise ValueError(f"receiver {r!r}: give (layer, head, 'q'|'k'|'v') tuples or one "
                             "site name such as 'blocks.1.hook_resid_post'")
        layer, head, which = int(r[0]), int(r[1]), r[2]
        name = f"blocks.{layer}.attn.hook_{which}"
        if name not in shapes:
            raise ValueError(f"receiver {tuple(r)!r}: the model has no site {name!r}")
        n = shapes[name].shape[2]
        if not 0 <= head < n:
            raise ValueError(f"receiver {tuple(r)!r}: head {head} out of range; {name} has "
                             f"{n} heads (valid: 0..{n - 1})")
        masks.setdefault(name, np.zeros(n, bool))[head] = True
    if not masks:
        raise ValueError("receivers is empty")
    return tuple((name, tuple(bool(b) for b in m)) for name, m in masks.items())


@functools.partial(jax.jit, static_argnames=("model", "metric", "receivers", "freeze_mlps"))
def _path_metrics(variables, clean_inputs, clean_z, corrupted_z, clean_mlp, sender_masks,
                  pos_mask, *, model, metric, receivers, freeze_mlps):
    """metric after runs (ii) and (iii), for each sender mask: [senders].

    clean_z, corrupted_z: [layer, batch, pos, head, d_head]; sender_masks [senders, layer, head];
    pos_mask [pos] (sender positions); clean_mlp [layer, batch, pos, d_model] or None.
    """
    n_layers = clean_z.shape[0]

    def one(senders):  # [layer, head]
        where = senders[:, None, None, :, None] & pos_mask[None, None, :, None, None]
        mixed = jnp.where(where, corrupted_z, clean_z)  # senders corrupted, the rest clean
        ivs = [Patch(_z(i), mixed[i]) for i in range(n_layers)]
        if freeze_mlps:
            ivs += [Patch(_mlp(i), clean_mlp[i]) for i in range(n_layers)]
        names = tuple(name for name, _ in receivers)
        _, cache = run(model, variables, clean_inputs, capture=names, interventions=ivs)
        ivs = [Patch(name, cache[name], heads=None if heads is None else np.asarray(heads))
               for name, heads in receivers]
        out, _ = run(model, variables, clean_inputs, interventions=ivs)
        return metric(out)

    return jax.vmap(one)(sender_masks)


@functools.partial(jax.jit, static_argnames=("model", "names"))
def _capture(variables, inputs, *, model, names):
    return run(model, variables, inputs, capture=names)[1]


def path_patch(
    model: nn.Module,
    variables: Any,
    clean_inputs: jax.Array,
    corrupted_inputs: jax.Array,
    metric: Metric,
    senders: Sequence[tuple[int, int]] | str,
    receivers: Sequence[tuple[int, int, str]] | str,
    *,
    sender_positions: Sequence[int] | np.ndarray | None = None,
    freeze_mlps: bool = False,
    batch_size: int | None = None,
    suffix: bool | None = None,
) -> jax.Array:
    """Metric of the clean run with the senders' effect let through the receivers only.

    Args:
      model, variables: a jaxinterp transformer and its variables.
      clean_inputs, corrupted_inputs: token arrays of the same shape `[batch, pos]`.
      metric: `metric(model output) -> scalar`; hashable (a static argument of `jax.jit`).
      senders: `[(layer, head), ...]` (patched together), or "each": every head alone.
      receivers: `[(layer, head, "q" | "k" | "v"), ...]` (receiver heads' inputs) or one site
        name, e.g. `"blocks.1.hook_resid_post"` (patched at every position).
      sender_positions: positions (indices or a `[pos]` bool mask) at which the senders are
        patched; default all.
      freeze_mlps: freeze MLP outputs to their clean values in run (ii) as well (the default
        recomputes them, so paths sender -> MLP -> receiver count).
      batch_size: sender sets per compiled call when `senders="each"` (None: all at once;
        suffix-only: the heads of one sender layer at once).
      suffix: recompute only the suffix (module docstring). None: when the model and the
        receivers allow it (a causal `Transformer` without register tokens; receivers inside
        the blocks); True: require it; False: never.

    Returns:
      float32 scalar, or `[layer, head]` for `senders="each"`: the metric after run (iii) (see
      the module docstring).

    Raises:
      ValueError: inputs of different shapes, a non-scalar metric, a sender or receiver out of
        range or not a site of the model, `freeze_mlps` on an attention-only model,
        `suffix=True` for a model or a receiver site that does not allow it.
    """
    check_pair(clean_inputs, corrupted_inputs)
    check_batch_size(batch_size)
    check_metric(model, variables, clean_inputs, metric)
    shapes = list_sites(model, clean_inputs)
    n_layers = sum(1 for n in shapes if n.endswith(".attn.hook_z"))
    _, n_pos, n_heads, _ = shapes[_z(0)].shape
    recv = _receiver_patches(receivers, shapes)
    if freeze_mlps and _mlp(0) not in shapes:
        raise ValueError("freeze_mlps=True, but this model has no MLPs (attention-only)")

    if isinstance(senders, str):
        if senders != "each":
            raise ValueError(f"senders={senders!r}: give [(layer, head), ...] or 'each'")
        sender_masks = np.eye(n_layers * n_heads, dtype=bool).reshape(-1, n_layers, n_heads)
    else:
        one = np.zeros((n_layers, n_heads), bool)
        for s in senders:
            if not (isinstance(s, tuple | list) and len(s) == 2):
                raise ValueError(f"sender {s!r}: give (layer, head) tuples")
            layer, head = int(s[0]), int(s[1])
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise ValueError(f"sender {tuple(s)!r} out of range: the model has {n_layers} "
                                 f"layers and {n_heads} heads per layer")
            one[layer, head] = True
        if not one.any():
            raise ValueError("senders is empty")
        sender_masks = one[None]

    pos_mask = np.ones(n_pos, bool)
    if sender_positions is not None:
        p = np.asarray(sender_positions)
        if p.dtype == bool:
            if p.shape != (n_pos,):
                raise ValueError(f"sender_positions mask has shape {p.shape}, expected ({n_pos},)")
            pos_mask = p
        else:
            p = p.reshape(-1)
            if p.size == 0 or not np.issubdtype(p.dtype, np.integer) or (
                    (p < -n_pos) | (p >= n_pos)).any():
                raise ValueError(f"sender_positions {p.tolist()} must be indices in "
                                 f"{-n_pos}..{n_pos - 1} or a bool mask")
            pos_mask = np.zeros(n_pos, bool)
            pos_mask[p] = True

    z_names = tuple(_z(i) for i in range(n_layers))
    mlp_names = tuple(_mlp(i) for i in range(n_layers)) if freeze_mlps else ()
    if _suffix_ok(model, suffix, recv):
        return _suffix_path_patch(model, variables, clean_inputs, corrupted_inputs, metric,
                                  sender_masks, pos_mask, recv, freeze_mlps, batch_size,
                                  each=isinstance(senders, str), n_heads=n_heads)
    clean = _capture(variables, clean_inputs, model=model, names=z_names + mlp_names)
    corrupted = _capture(variables, corrupted_inputs, model=model, names=z_names)
    clean_z = jnp.stack([clean[n] for n in z_names])
    corrupted_z = jnp.stack([corrupted[n] for n in z_names])
    clean_mlp = jnp.stack([clean[n] for n in mlp_names]) if freeze_mlps else None

    fn = functools.partial(_path_metrics, variables, clean_inputs, clean_z, corrupted_z,
                           clean_mlp, pos_mask=pos_mask, model=model, metric=metric,
                           receivers=recv, freeze_mlps=freeze_mlps)
    out = chunked(fn, [sender_masks], batch_size).astype(jnp.float32)
    return out.reshape(n_layers, n_heads) if isinstance(senders, str) else out[0]


# -- suffix-only path patching (causal transformers) -----------------------------------------

def _receiver_layer(name: str) -> int | None:
    """The block index of a `blocks.{layer}.…` site name, None for any other site."""
    m = re.fullmatch(r"blocks\.(\d+)\..+", name)
    return None if m is None else int(m.group(1))


def _suffix_ok(model: nn.Module, suffix: bool | None, receivers) -> bool:
    if not use_suffix(model, suffix, "path_patch"):
        return False
    outside = [name for name, _ in receivers if _receiver_layer(name) is None]
    if outside and suffix:
        raise ValueError(f"path_patch(suffix=True): receiver site {outside[0]!r} is not inside "
                         "a block ('blocks.{layer}.…'); use suffix=None or False for it")
    return not outside


def first_changed_position(clean_inputs, corrupted_inputs, pos_mask: np.ndarray) -> int:
    """p0 of suffix-only path patching: the first sender position (True in `pos_mask` [pos])
    at or after the first position where clean and corrupted tokens [batch, pos] differ in
    any example; the last position if there is none (then nothing changes at all)."""
    n_pos = pos_mask.shape[0]
    differs = (np.asarray(clean_inputs) != np.asarray(corrupted_inputs)).reshape(-1, n_pos)
    changed = np.flatnonzero(differs.any(axis=0))
    first = int(changed[0]) if changed.size else n_pos
    later = np.flatnonzero(pos_mask[first:])
    return min(first + int(later[0]) if later.size else n_pos, n_pos - 1)


@functools.partial(jax.jit, static_argnames=("model",))
def suffix_inputs(variables, clean_inputs, corrupted_inputs, *, model):
    """The cached runs of suffix-only path patching, in one compiled call: `(blocks, clean
    logits [batch, T, vocab], the clean KV cache, and stacked over layers [layer, batch, T,
    ...]: clean hook_resid_pre, clean and corrupted hook_z, clean hook_mlp_out (None for an
    attention-only model))`, the arguments of `suffix_path_metrics`."""
    n_layers = model.config.n_layers
    z_names = tuple(_z(i) for i in range(n_layers))
    mlp_names = () if model.config.attn_only else tuple(_mlp(i) for i in range(n_layers))
    resid_names = tuple(f"blocks.{i}.hook_resid_pre" for i in range(n_layers))
    cache = tfm.init_cache(model, clean_inputs.shape[0], clean_inputs.shape[1])
    (logits, cache), clean = run(model, variables, clean_inputs, capture=z_names + mlp_names
                                 + resid_names, cache=cache, offset=0)
    _, corrupted = run(model, variables, corrupted_inputs, capture=z_names)

    def stack(cached, names):
        return jnp.stack([cached[n] for n in names]) if names else None

    return (tfm.stacked_blocks(variables), logits, cache, stack(clean, resid_names),
            stack(clean, z_names), stack(corrupted, z_names), stack(clean, mlp_names))


@functools.partial(jax.jit,
                   static_argnames=("model", "metric", "receivers", "freeze_mlps", "offset"))
def suffix_path_metrics(blocks, variables, clean_logits, cache, clean_resid, clean_z,
                        corrupted_z, clean_mlp, sender_masks, pos_mask, start, *, model, metric,
                        receivers, freeze_mlps, offset):
    """metric after runs (ii) and (iii), each computing only positions [offset, T) from the
    earliest sender / receiver layer on: [senders]. The compiled function of suffix-only
    `path_patch` (public so that benchmarks can lower it).

    Args:
      blocks: `jaxinterp.models.transformer.stacked_blocks(variables)`.
      clean_logits, cache: the clean run's logits [batch, T, vocab] and KV cache.
      clean_resid: the clean `hook_resid_pre` of every layer, [layer, batch, T, d_model].
      clean_z, corrupted_z: [layer, batch, T, head, d_head]; clean_mlp: [layer, batch, T,
      d_model] (read only with freeze_mlps); sender_masks [senders, layer, head]; pos_mask [T]
      (the sender positions).
      start: int32 scalar (traced): no sender is in a layer before it.
      offset: p0 (static): no sender changes anything before it (`first_changed_position`).
    """
    n_layers = clean_z.shape[0]
    # positions offset.. only (a chunk-long operand is read as the chunk by `Patch`)
    clean_z, corrupted_z = clean_z[:, :, offset:], corrupted_z[:, :, offset:]
    clean_mlp = clean_mlp[:, :, offset:] if freeze_mlps else None
    pos_mask = pos_mask[offset:]
    by_layer: dict[int, list[str]] = {}
    for name, _ in receivers:
        by_layer.setdefault(_receiver_layer(name), []).append(name)
    layers = sorted(by_layer)

    def one(senders):  # [layer, head]
        where = senders[:, None, None, :, None] & pos_mask[None, None, :, None, None]
        mixed = jnp.where(where, corrupted_z, clean_z)  # senders corrupted, the rest clean
        ivs = [Patch(_z(i), mixed[i]) for i in range(n_layers)]
        if freeze_mlps:
            ivs += [Patch(_mlp(i), clean_mlp[i]) for i in range(n_layers)]
        # (ii): clean before layer min(start, first receiver layer) and before `offset`
        layer = jnp.minimum(start, layers[0])
        x = jax.lax.dynamic_index_in_dim(clean_resid, layer, keepdims=False)[:, offset:]
        captured: dict[str, jax.Array] = {}
        for r in layers:  # the loop up to each receiver layer, that layer alone to capture
            with hooks.active(hooks.Session((), ivs)):
                x = tfm.forward_from(model, blocks, x, cache, offset, layer, r)
            x, got = tfm.block_at(model, blocks, x, cache, offset, r,
                                  hooks.Session(tuple(by_layer[r]), ivs))
            captured |= got
            layer = r + 1
        # (iii): clean before the first receiver layer and before `offset`
        ivs = [Patch(name, captured[name], heads=None if heads is None else np.asarray(heads))
               for name, heads in receivers]
        with hooks.active(hooks.Session((), ivs)):
            x = tfm.forward_from(model, blocks, clean_resid[layers[0]][:, offset:], cache,
                                 offset, layers[0])
        normed = tfm.final_norm(model, variables, x)
        pieces = [tfm.unembed(model, variables, normed[:, i:i + 1])
                  for i in range(normed.shape[1])]  # one per position: unread ones are dropped
        return metric(jnp.concatenate([clean_logits[:, :offset], *pieces], axis=1))

    return jax.vmap(one)(sender_masks)


def _suffix_path_patch(model, variables, clean_inputs, corrupted_inputs, metric, sender_masks,
                       pos_mask, receivers, freeze_mlps, batch_size, *, each, n_heads):
    n_layers = sender_masks.shape[1]
    p0 = first_changed_position(clean_inputs, corrupted_inputs, pos_mask)
    cached = suffix_inputs(variables, clean_inputs, corrupted_inputs, model=model)
    fn = functools.partial(suffix_path_metrics, cached[0], variables, *cached[1:], model=model,
                           metric=metric, receivers=receivers, freeze_mlps=freeze_mlps,
                           offset=p0)
    # one call per earliest sender layer (a traced argument: one compilation)
    if each:
        groups = [(layer, sender_masks[layer * n_heads:(layer + 1) * n_heads])
                  for layer in range(n_layers)]
    else:
        groups = [(int(np.flatnonzero(sender_masks[0].any(axis=1))[0]), sender_masks)]
    out = np.concatenate([np.asarray(chunked(
        functools.partial(fn, pos_mask=pos_mask, start=np.int32(layer)), [masks],
        batch_size)) for layer, masks in groups]).astype(np.float32)
    return jnp.asarray(out.reshape(n_layers, n_heads) if each else out[0])
