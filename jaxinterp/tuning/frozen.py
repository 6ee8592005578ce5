"""A frozen model and the wrapper that trains an intervention method on it.

A *method* (LoFiT, LoReFT, DAS, a steering controller, LoRA, a plain steering vector) is a Flax
Linen module whose parameters are the trainable tree, and whose `__call__` receives the frozen
model as a `Frozen` and returns the model's output:

    class SteeringVector(nn.Module):
        site: str
        @nn.compact
        def __call__(self, frozen: Frozen, tokens):
            vector = self.param("vector", nn.initializers.zeros, (frozen.width(self.site, tokens),))
            return frozen.run(tokens, interventions=[ji.Add(self.site, vector)])[0]

`Tuned(base, method)` is the module the trainer trains: its `params` collection holds only the
method's parameters; the base model's variables live in the `frozen` collection, so they are
sharded by their logical axes, checkpointed and restored with the train state, and never
differentiated or updated (the optimizer never sees them). With `config.tuning` set, the
trainer builds `Tuned` around the model of `config.tuning.base` (a jaxinterp workdir) or
`config.tuning.hf` (a Hugging Face checkpoint folder) and starts from those weights.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from jaxinterp import hooks
from jaxinterp.interventions import Intervention
from jaxinterp.run import run

FROZEN = "frozen"
"""The variable collection of `Tuned` that holds the base model's variables."""


@dataclasses.dataclass(frozen=True)
class Frozen:
    """The frozen base model as a method sees it.

    Attributes:
      model: the base model (a jaxinterp model).
      variables: its variables (`{"params": ..., **other collections}`), never trained.
    """

    model: nn.Module
    variables: Any
    # site shapes by input signature: a method asking for several sites traces the model once
    _sites: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def params(self) -> Any:
        """The base model's `params` collection."""
        return self.variables["params"]

    def run(
        self,
        *inputs: Any,
        capture: str | Sequence[str] = (),
        interventions: Intervention | Sequence[Intervention] = (),
        params: Any = None,
        **apply_kwargs: Any,
    ) -> tuple[Any, dict[str, jax.Array]]:
        """`jaxinterp.run` of the base model: `(output, cache)`.

        `params` replaces the base's `params` collection for this call (LoRA's merged weights);
        by default the frozen ones are used.
        """
        variables = self.variables if params is None else {**self.variables, "params": params}
        return run(self.model, variables, *inputs, capture=capture,
                   interventions=interventions, **apply_kwargs)

    def site_shape(self, site: str, *inputs: Any, **apply_kwargs: Any) -> tuple[int, ...]:
        """The shape of the (one) site matching `site` on `inputs` (traced abstractly); a
        name that matches no site, or several, is a ValueError listing valid names."""
        key = (jax.tree.map(lambda x: (jax.numpy.shape(x), jax.numpy.result_type(x)), inputs),
               repr(sorted(apply_kwargs.items())))
        if key not in self._sites:
            self._sites[key] = hooks.sites(self.model, *inputs, **apply_kwargs)
        shapes = self._sites[key]
        matches = [n for n in shapes if fnmatch.fnmatchcase(n, site)]
        if len(matches) != 1:
            near = matches[:4] or difflib.get_close_matches(site, list(shapes), n=4, cutoff=0)
            raise ValueError(f"site {site!r} matches {len(matches)} sites of the base model; "
                             f"it needs exactly one (nearest: {near})")
        return tuple(shapes[matches[0]].shape)


class Tuned(nn.Module):
    """`method` trained on the frozen `base`: `params` are the method's, `frozen` the base's.

    `Tuned.init` initialises the base at random (shapes and logical axes for the trainer);
    `with_frozen` puts the real base variables in.
    """

    base: nn.Module
    method: nn.Module

    @nn.compact
    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        def init_base():  # a method's `base_inputs` (DAS: 1 of base, source) feed the base
            n = getattr(self.method, "base_inputs", None)
            variables = dict(self.base.init(self.make_rng("params"), *inputs[:n], **kwargs))
            variables.pop(hooks.COLLECTION, None)
            return variables

        base_variables = self.variable(FROZEN, "variables", init_base).value
        frozen = Frozen(self.base, jax.lax.stop_gradient(base_variables))
        return self.method(frozen, *inputs, **kwargs)


def with_frozen(variables: Any, base_variables: Any) -> dict[str, Any]:
    """`Tuned` variables with the base model's `base_variables` in the `frozen` collection;
    their shapes must equal the initialised ones (a ValueError names the first mismatch)."""
    old = variables[FROZEN]["variables"]
    want = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(old))[0]
    have = jax.tree_util.tree_flatten_with_path(base_variables)[0]
    if [p for p, _ in want] != [p for p, _ in have]:
        raise ValueError("the base variables do not have the base model's structure: "
                         f"{len(have)} leaves against {len(want)} (first: "
                         f"{jax.tree_util.keystr(have[0][0]) if have else None} vs "
                         f"{jax.tree_util.keystr(want[0][0]) if want else None})")
    for (path, w), (_, h) in zip(want, have, strict=True):
        if w.shape != h.shape:
            raise ValueError(f"base variable {jax.tree_util.keystr(path)} has shape "
                             f"{h.shape}; the base model's is {w.shape}")
    return {**variables, FROZEN: {"variables": base_variables}}
