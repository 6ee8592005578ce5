"""LoFiT (Yin, Ye and Durrett 2024, "LoFiT: Localized Fine-tuning on LLM Representations").

Two stages, each a method trained through `jaxinterp.train.train` with `config.tuning`:

1. Head selection (`LoFiTScaling`, config name `"lofit_scale"`): a scaling vector
   `A_l^i` [d_head] for every attention head i of every layer l, applied to the head's output
   before the output projection (`blocks.{l}.attn.hook_z`, what W_O multiplies):

       z_l^i' = (1 + A_l^i) * z_l^i                      (elementwise over d_head)

   trained with the task loss plus `l1 * sum_{l,i} |A_l^i|_1`. Then the `k` heads with the
   largest `||A_l^i||_2` are selected (`select_heads`).
2. Bias tuning (`LoFiTBias`, `"lofit_bias"`): offsets `v_l^i` [d_head] on the selected heads
   only, the scalings dropped (A = 0):

       z_l^i' = z_l^i + v_l^i                             ((l, i) in the selected heads)

   trained with the task loss alone. Only the biases are in the final model: k * d_head
   trained parameters.

What was checked against the authors' code (github.com/fc2869/lo-fit, `models/modeling_llama.py`,
`lofit_trainer.py`, `utils/trainers.py`): the attention output before `o_proj`, per head,
becomes `torch.mul(A + 1, attn_output_head) + v` (so hook_z here); `attn_A` and `attn_v` are
[head_dim] per head, initialised N(0, 1e-3) when trained (zeros otherwise: the bias stage runs
with A = 0); the L1 term is `l1_lambda * sum(|p|)` over the trainable parameters, added to the
loss (`l1_lambda` 5e-4 to 1e-3 in the head-selection scripts, 0 in the bias stage); the
heads are ranked by `np.linalg.norm(attn_A[j])` (the L2 norm of each head's A), top k by
`np.argsort(...)[::-1][:k]`, default k = 10% of all heads. The paper's abstract: "identifies a
subset of attention heads that are most important for learning a specific task, then trains
offset vectors to add to the model's hidden representations at those selected heads"; its
Figure 1 caption: "Only the tuned biases are used in the final model". (The paper's equation
text was not among the stored pages; the code above is what the equations here follow.)

The L1 term reaches the loss through the trainer's `losses` collection
(`jaxinterp.train.step.LOSSES`): this method `sow`s `l1 * sum |A|` there and the train step adds
every value sown in it to the task loss (reported as the `penalty` metric). Outside the
trainer (`jaxinterp.run`, `Tuned.apply` without `mutable=["losses"]`) nothing is sown.

    config.tuning.method = {"name": "lofit_scale", "l1": 5e-4}
    train(config, "wd/scale")
    heads = lofit_heads("wd/scale", k=4)            # ((layer, head), ...) best first
    config.tuning.method = {"name": "lofit_bias", "heads": heads}
    train(config, "wd/bias")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.interventions import Add, Scale
from jaxinterp.tuning.frozen import Frozen

LOSSES = "losses"
"""The collection whose sown values the train step adds to the loss (`train.step.LOSSES`)."""


def _z_site(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _n_layers(frozen: Frozen) -> int:
    n = getattr(getattr(frozen.model, "config", None), "n_layers", None)
    if n is None:
        raise ValueError(f"LoFiT needs a model with `config.n_layers` (a jaxinterp "
                         f"transformer); got {type(frozen.model).__name__}")
    return int(n)


def _layers(frozen: Frozen, layers: Sequence[int]) -> list[int]:
    n = _n_layers(frozen)
    out = list(layers) if layers else list(range(n))
    bad = [x for x in out if not 0 <= int(x) < n]
    if bad:
        raise ValueError(f"LoFiT layers {bad} out of range: the base model has layers 0..{n - 1}")
    return [int(x) for x in out]


class LoFiTScaling(nn.Module):
    """LoFiT stage 1: `z' = (1 + A) * z` at every head's `hook_z`, `A` [head, d_head] per layer,
    L1-regularised (module docstring).

    Attributes:
      l1: the L1 weight lambda (`l1 * sum |A|` is sown into `losses`).
      layers: which layers get scalings (empty: all).
      init_std: A is initialised N(0, init_std^2) (the authors' 1e-3).

    Params: `A_{l}` [n_heads, d_head] for each layer l.
    """

    l1: float = 5e-4
    layers: tuple[int, ...] = ()
    init_std: float = 1e-3

    @nn.compact
    def __call__(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> Any:
        interventions, penalty = [], 0.0
        for layer in _layers(frozen, self.layers):
            shape = frozen.site_shape(_z_site(layer), *inputs, **kwargs)[-2:]  # [head, d_head]
            a = self.param(f"A_{layer}", nn.initializers.normal(self.init_std), shape)
            interventions.append(Scale(_z_site(layer), 1.0 + a))
            penalty = penalty + jnp.abs(a).sum()
        if self.l1 and not self.is_initializing():
            self.sow(LOSSES, "lofit_l1", self.l1 * penalty)
        return frozen.run(*inputs, interventions=interventions, **kwargs)[0]


class LoFiTBias(nn.Module):
    """LoFiT stage 2: `z' = z + v` on the selected heads' `hook_z` (module docstring).

    Attributes:
      heads: the selected `(layer, head)` pairs (`select_heads` / `lofit_heads`).
      init_std: v is initialised N(0, init_std^2) (the authors' 1e-3; 0 gives zeros).

    Params: `v_{l}` [number of selected heads in layer l, d_head] for each layer with one; row j
    is head `heads_in_layer[j]` in the order given.
    """

    heads: tuple[tuple[int, int], ...] = ()
    init_std: float = 1e-3

    @nn.compact
    def __call__(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> Any:
        by_layer = _heads_by_layer(self.heads, _n_layers(frozen))
        interventions = []
        for layer, heads in by_layer.items():
            n_heads, d_head = frozen.site_shape(_z_site(layer), *inputs, **kwargs)[-2:]
            bad = [h for h in heads if not 0 <= h < n_heads]
            if bad:
                raise ValueError(f"LoFiT heads {[(layer, h) for h in bad]}: layer {layer} has "
                                 f"heads 0..{n_heads - 1}")
            init = (nn.initializers.normal(self.init_std) if self.init_std
                    else nn.initializers.zeros)
            v = self.param(f"v_{layer}", init, (len(heads), d_head))
            full = jnp.zeros((n_heads, d_head), v.dtype).at[np.asarray(heads)].set(v)
            interventions.append(Add(_z_site(layer), full))
        return frozen.run(*inputs, interventions=interventions, **kwargs)[0]


def _heads_by_layer(heads: Sequence[Sequence[int]], n_layers: int) -> dict[int, list[int]]:
    if not heads:
        raise ValueError("lofit_bias needs `heads`: the (layer, head) pairs chosen by stage 1 "
                         "(jaxinterp.tuning.lofit_heads(workdir, k))")
    out: dict[int, list[int]] = {}
    for pair in heads:
        if len(pair) != 2:
            raise ValueError(f"LoFiT heads must be (layer, head) pairs; got {tuple(pair)!r}")
        layer, head = int(pair[0]), int(pair[1])
        if not 0 <= layer < n_layers:
            raise ValueError(f"LoFiT head {(layer, head)}: the base model has layers "
                             f"0..{n_layers - 1}")
        if head in out.get(layer, []):
            raise ValueError(f"LoFiT head {(layer, head)} is listed twice")
        out.setdefault(layer, []).append(head)
    return dict(sorted(out.items()))


def head_norms(params: Any) -> dict[int, np.ndarray]:
    """`{layer: ||A_l^i||_2 per head i}` ([n_heads] each) from stage 1's trained variables (a
    `Tuned` variables dict, its `params`, or the method's own params: the `A_{l}` leaves are
    found wherever they sit)."""
    found: dict[int, np.ndarray] = {}

    def visit(path, leaf):
        name = getattr(path[-1], "key", None)
        if isinstance(name, str) and name.startswith("A_") and name[2:].isdigit():
            found[int(name[2:])] = np.linalg.norm(np.asarray(leaf, np.float64), axis=-1)

    jax.tree_util.tree_map_with_path(visit, nn.meta.unbox(params))
    if not found:
        raise ValueError("no LoFiT scalings (params named A_<layer>) in these variables: pass "
                         "the variables of a lofit_scale run")
    return dict(sorted(found.items()))


def select_heads(params: Any, k: int) -> tuple[tuple[int, int], ...]:
    """The `k` heads with the largest `||A_l^i||_2`, largest first (ties: lower layer, then
    lower head first), as `(layer, head)` pairs for `LoFiTBias.heads`."""
    norms = head_norms(params)
    table = [(layer, head, float(n)) for layer, row in norms.items()
             for head, n in enumerate(row)]
    if not 1 <= k <= len(table):
        raise ValueError(f"k={k}: choose 1 <= k <= {len(table)} (the scaled heads)")
    table.sort(key=lambda t: (-t[2], t[0], t[1]))
    return tuple((layer, head) for layer, head, _ in table[:k])


def lofit_heads(workdir: str, k: int) -> tuple[tuple[int, int], ...]:
    """`select_heads` of the `lofit_scale` run in `workdir` (its newest checkpoint)."""
    from jaxinterp.train.checkpoint import load

    _, variables = load(workdir)
    return select_heads(variables["params"], k)
