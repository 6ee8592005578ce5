"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") and full
fine-tuning as methods on a frozen base model.

LoRA (`LoRA`, config name `"lora"`): each chosen kernel W [fan_in, fan_out] of the frozen base
gets a trained low-rank update,

    W' = W + (alpha / r) A B,        A [fan_in, r], B [r, fan_out]

(the paper's `h = W_0 x + B A x` with `Delta W x` scaled by `alpha / r`, written here for the
row-vector convention `x W` of jaxinterp's kernels, so the paper's B is this A transposed and
vice versa). The paper: "We use a random Gaussian initialization for A and zero for B, so
Delta W = BA is zero at the beginning of training. We then scale Delta W x by alpha / r". The
reference implementations (loralib's `Linear`, PEFT) draw A kaiming-uniform
(`kaiming_uniform_(a=sqrt(5))`, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))): `init="kaiming"`
(default) does that, `init="gaussian"` draws N(0, 1/fan_in). B starts at zero either way, so
the tuned model starts as the base. The forward pass is the base model on the merged weights
(`frozen.run(..., params=merged)`), so every site and intervention still works.

Kernels are chosen by glob patterns over their parameter paths (`"blocks_*/attn/W_Q"`,
`"blocks_*/mlp/W_in"`). As a matrix: a 2-d kernel is [fan_in, fan_out] as stored (`x W`);
the attention kernels are W_Q, W_K, W_V [head, d_model, d_head] with fan_in d_model and fan_out
(head, d_head) (one matrix d_model -> n_heads * d_head, as PyTorch's `q_proj`), and W_O
[head, d_head, d_model] with fan_in (head, d_head). Trained parameters per kernel:
r * (fan_in + fan_out).

Full fine-tuning (`FullFineTune`, `"full"`): a delta on every base parameter, zero at the
start, `params = frozen + delta`. With the same optimizer this is full fine-tuning, with one
difference: the trainer's decoupled weight decay (AdamW's `weight_decay`, on leaves with
ndim >= 2) shrinks the delta, i.e. pulls the weights towards the base model's (an L2-SP-like
prior), not towards zero as decay on the weights themselves would; with `weight_decay=0` the
updates are exactly those of fine-tuning the weights directly.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxinterp.tuning.frozen import Frozen

_FAN_IN_AXES = {"W_Q": (1,), "W_K": (1,), "W_V": (1,), "W_O": (0, 1)}
"""3-d kernels: which axes are fan_in (the rest are fan_out); 2-d kernels: axis 0."""
INITS = ("kaiming", "gaussian")


def fan_in_axes(path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of kernel `path` (e.g. `"blocks_0/attn/W_O"`) that LoRA treats as fan_in."""
    if len(shape) == 2:
        return (0,)
    name = path.rsplit("/", 1)[-1]
    if len(shape) == 3 and name in _FAN_IN_AXES:
        return _FAN_IN_AXES[name]
    raise ValueError(f"LoRA target {path!r} has shape {shape}: LoRA needs a 2-d kernel "
                     f"[fan_in, fan_out] or one of the attention kernels {sorted(_FAN_IN_AXES)}")


def match_kernels(params: Any, patterns: tuple[str, ...]) -> list[str]:
    """The parameter paths (`"blocks_0/attn/W_Q"`, sorted) matching any of `patterns`; a
    pattern that matches nothing is a ValueError listing the paths."""
    paths = sorted(traverse_util.flatten_dict(nn.meta.unbox(params), sep="/"))
    if not patterns:
        raise ValueError("LoRA needs `targets`: glob patterns over parameter paths, e.g. "
                         "('blocks_*/attn/W_Q', 'blocks_*/attn/W_V')")
    out = set()
    for pattern in patterns:
        hits = [p for p in paths if fnmatch.fnmatchcase(p, pattern)]
        if not hits:
            raise ValueError(f"LoRA target {pattern!r} matches no parameter; paths: {paths}")
        out.update(hits)
    return sorted(out)


def lora_delta(a: jax.Array, b: jax.Array, scale: float, in_axes: tuple[int, ...]) -> jax.Array:
    """`scale * A B` laid out as the kernel: `a` [*fan_in, r], `b` [r, *fan_out] -> the kernel's
    shape, whose `in_axes` are the fan_in axes (in order) and the others fan_out."""
    delta = scale * jnp.tensordot(a, b, axes=1)  # contract r: [*fan_in, *fan_out]
    ndim = delta.ndim
    out_axes = [k for k in range(ndim) if k not in in_axes]
    order = list(in_axes) + out_axes  # delta axis j is kernel axis order[j]
    return jnp.transpose(delta, [order.index(k) for k in range(ndim)])


class LoRA(nn.Module):
    """`W' = W + (alpha / r) A B` on the kernels matching `targets` (module docstring).

    Attributes:
      targets: glob patterns over parameter paths (the paper's default: W_Q and W_V).
      rank: r.
      alpha: the scale numerator (alpha / r multiplies A B); the paper sets alpha to the first
        r it tries and does not tune it.
      init: how A is drawn: "kaiming" (loralib / PEFT) or "gaussian" (N(0, 1/fan_in)).

    Params: `lora` = {kernel path as nested dicts: {"A": [*fan_in, r], "B": [r, *fan_out]}}.
    """

    targets: tuple[str, ...] = ("blocks_*/attn/W_Q", "blocks_*/attn/W_V")
    rank: int = 4
    alpha: float = 4.0
    init: str = "kaiming"

    @nn.compact
    def __call__(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> Any:
        if self.rank < 1:
            raise ValueError(f"LoRA rank={self.rank}: must be >= 1")
        if self.init not in INITS:
            raise ValueError(f"LoRA init={self.init!r}; choose from {INITS}")
        base = traverse_util.flatten_dict(nn.meta.unbox(frozen.params), sep="/")
        paths = match_kernels(frozen.params, tuple(self.targets))
        layout = {p: (fan_in_axes(p, base[p].shape), base[p].shape) for p in paths}

        def init_fn(rng):
            out = {}
            for p, key in zip(paths, jax.random.split(rng, len(paths)), strict=True):
                in_axes, shape = layout[p]
                fan_in = [shape[k] for k in in_axes]
                fan_out = [shape[k] for k in range(len(shape)) if k not in in_axes]
                n_in = math.prod(fan_in)
                if self.init == "kaiming":
                    bound = 1.0 / math.sqrt(n_in)
                    a = jax.random.uniform(key, (*fan_in, self.rank), jnp.float32, -bound, bound)
                else:
                    a = jax.random.normal(key, (*fan_in, self.rank), jnp.float32) / math.sqrt(n_in)
                out[p] = {"A": a, "B": jnp.zeros((self.rank, *fan_out), jnp.float32)}
            return traverse_util.unflatten_dict({tuple(p.split("/")): v for p, v in out.items()})

        lora = traverse_util.flatten_dict(self.param("lora", init_fn), sep="/")
        scale = self.alpha / self.rank
        merged = dict(base)
        for p in paths:
            w = base[p]
            delta = lora_delta(lora[f"{p}/A"], lora[f"{p}/B"], scale, layout[p][0])
            merged[p] = w + delta.astype(w.dtype)
        params = traverse_util.unflatten_dict(merged, sep="/")
        return frozen.run(*inputs, params=params, **kwargs)[0]


class FullFineTune(nn.Module):
    """Full fine-tuning as a method: `params = frozen + delta`, `delta` zero-initialised on every
    base parameter (module docstring: how weight decay differs).

    Params: `delta`, the base's parameter tree (same shapes and logical axes).
    """

    @nn.compact
    def __call__(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> Any:
        delta = self.param("delta", lambda rng: jax.tree.map(jnp.zeros_like, frozen.params))
        params = jax.tree.map(lambda w, d: w + d.astype(w.dtype), nn.meta.unbox(frozen.params),
                              delta)
        return frozen.run(*inputs, params=params, **kwargs)[0]
