"""DAS and Boundless DAS: interchange interventions on a learned rotated subspace.

Distributed Alignment Search (Geiger et al. 2023, "Finding Alignments Between Interpretable
Causal Variables and Distributed Neural Representations") tests whether a high-level causal
variable is represented in a subspace of a site. With `R` [k, d] (orthonormal rows) it runs
the base input with the site's representation at the chosen positions replaced by

    h_base' = h_base + Rᵀ M (R h_source - R h_base)           (M = I_k for DAS)

(the source run's coordinates in the subspace put into the base run's, the orthogonal
complement left as the base's), and trains `R` so that the base run's output is the
counterfactual label: what the causal model outputs on the base input with the variable set
to its value on the source input. The fraction of (base, source) pairs where it is, is the
interchange-intervention accuracy (IIA, `interchange_accuracy`).

Boundless DAS (Wu et al. 2023, "Interpretability at Scale: Identifying Causal Mechanisms in
Alpaca") learns the subspace's size too: `R` is a full rotation [d, d] and `M = diag(m)` a
soft boundary mask over the rotated dimensions i = 0..d-1,

    m_i = sigmoid((i - 0) / T) * sigmoid((beta d - i) / T),    beta = clip(boundary, 1e-3, 1)

with the boundary `beta` learned (initialised at 0.5) and the temperature `T` annealed
linearly from `temperature_start` (50) to `temperature_end` (0.1) over `anneal_steps` train
steps, so the mask hardens to the first ~beta d rotated dimensions (`boundary_size`).

Checked against pyvene (`pyvene/models/interventions.py`): `RotatedSpaceIntervention.forward`
rotates base and source (`x @ W`, W [d, d] orthogonal = our Rᵀ), copies the first
`interchange_dim` rotated coordinates from the source and rotates back (`@ W.T`): with R = the
first k rows of Wᵀ that is the equation above (k = `subspace_dim`; the other d - k rows need
not be learned). `BoundlessRotatedSpaceIntervention.forward`: `boundary_mask =
sigmoid_boundary(arange(d), 0.0, clamp(boundaries, 1e-3, 1) * d, temperature)` with
`sigmoid_boundary(x, lo, hi, T) = sigmoid((x - lo) / T) * sigmoid((hi - x) / T)`
(`pyvene/models/basic_utils.py`), `output = ((1 - mask) * R_base + mask * R_source) @ W.T`,
boundaries initialised to 0.5 and temperature to 50; the tutorials anneal it with
`torch.linspace(50, 0.1, total_steps)`. The formula keeps pyvene's lower edge at 0, so the
first rotated dimension's mask tends to 1/2, not 1, as T falls (pyvene's quirk, kept). The
pyvene tutorials add a penalty on the boundary to the loss; through the trainer's tasks the
loss here is the counterfactual cross-entropy alone, so the boundary is free to grow.

Both methods are called `(frozen, base_tokens, source_tokens)` and return the base run's
output under the interchange; train them with the `interchange` task
(`jaxinterp.train.tasks.Interchange`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.interventions import Apply
from jaxinterp.tuning.frozen import Frozen
from jaxinterp.tuning.orthogonal import orthonormal_param

STEP_COLLECTION = "batch_stats"
"""Where Boundless DAS counts its train steps (for the temperature), updated by the trainer
like BatchNorm's statistics (it is in `config.mutable` by default)."""


def interchange(h_base: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
    """`h_base + Rᵀ M (R h_source - R h_base)` on the last axis [..., d] (float32, cast back);
    `params`: `rotation` R [k, d], `mask` M's diagonal [k], `source` h_source (h_base's
    shape)."""
    hb = h_base.astype(jnp.float32)
    r = params["rotation"]
    diff = jnp.einsum("...d,kd->...k", params["source"].astype(jnp.float32) - hb, r)
    return (hb + jnp.einsum("...k,kd->...d", diff * params["mask"], r)).astype(h_base.dtype)


def boundary_mask(boundary: jax.Array, dim: int, temperature: jax.Array) -> jax.Array:
    """Boundless DAS's mask [dim]: `sigmoid(i / T) * sigmoid((clip(boundary, 1e-3, 1) dim -
    i) / T)` for i = 0..dim-1 (pyvene's `sigmoid_boundary` from 0 to beta dim)."""
    i = jnp.arange(dim, dtype=jnp.float32)
    hi = jnp.clip(jnp.reshape(boundary, ()), 1e-3, 1.0) * dim
    return jax.nn.sigmoid(i / temperature) * jax.nn.sigmoid((hi - i) / temperature)


def boundary_size(boundary: Any, dim: int) -> float:
    """The learned subspace size of Boundless DAS: `clip(boundary, 1e-3, 1) * dim` rotated
    dimensions (the hard mask's extent as the temperature goes to 0)."""
    return float(np.clip(np.reshape(np.asarray(boundary), ()), 1e-3, 1.0) * dim)


def _source_run(frozen: Frozen, site: str, source_tokens, kwargs) -> jax.Array:
    _, cache = frozen.run(source_tokens, capture=site, **kwargs)
    (h_source,) = cache.values()
    return jax.lax.stop_gradient(h_source)


class DAS(nn.Module):
    """DAS (module docstring): `rotation` (unconstrained [subspace_dim, d]; R = its
    orthonormalised rows), interchanged from the source run at `site` and `positions`.

    Attributes:
      site: one site of the base model (e.g. `"blocks.0.hook_resid_post"`).
      subspace_dim: k, the aligned subspace's dimension (<= the site's width).
      positions: absolute positions interchanged, negative from the end (empty: all); the
        source's activation at the same positions is used (base and source of one length).
    """

    base_inputs = 1  # Tuned initialises the base on the base tokens alone
    site: str
    subspace_dim: int = 1
    positions: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, frozen: Frozen, base_tokens: Any, source_tokens: Any,
                 **kwargs: Any) -> Any:
        width = frozen.site_shape(self.site, base_tokens, **kwargs)[-1]
        params = {"rotation": orthonormal_param(self, "rotation", self.subspace_dim, width),
                  "mask": jnp.ones((self.subspace_dim,), jnp.float32),
                  "source": _source_run(frozen, self.site, source_tokens, kwargs)}
        swap = Apply(self.site, interchange, params, positions=list(self.positions) or None)
        return frozen.run(base_tokens, interventions=[swap], **kwargs)[0]


class BoundlessDAS(nn.Module):
    """Boundless DAS (module docstring): a full learned rotation (`rotation` [d, d]) and a
    learned `boundary` [1]; the temperature falls linearly from `temperature_start` to
    `temperature_end` over `anneal_steps` train steps (counted in `STEP_COLLECTION`; 0 keeps
    `temperature_start`).

    Attributes:
      site, positions: as `DAS`.
      temperature_start, temperature_end, anneal_steps: the schedule.
      init_boundary: beta at initialisation (pyvene: 0.5).
    """

    base_inputs = 1  # Tuned initialises the base on the base tokens alone
    site: str
    positions: tuple[int, ...] = ()
    temperature_start: float = 50.0
    temperature_end: float = 0.1
    anneal_steps: int = 0
    init_boundary: float = 0.5

    def temperature(self, step: jax.Array) -> jax.Array:
        """T at train step `step`: linear from start to end over `anneal_steps`."""
        if self.anneal_steps <= 0:
            return jnp.asarray(self.temperature_start, jnp.float32)
        frac = jnp.clip(step.astype(jnp.float32) / self.anneal_steps, 0.0, 1.0)
        return self.temperature_start + frac * (self.temperature_end - self.temperature_start)

    @nn.compact
    def __call__(self, frozen: Frozen, base_tokens: Any, source_tokens: Any,
                 **kwargs: Any) -> Any:
        width = frozen.site_shape(self.site, base_tokens, **kwargs)[-1]
        step = self.variable(STEP_COLLECTION, "step", lambda: jnp.zeros((), jnp.int32))
        boundary = self.param("boundary", nn.initializers.constant(self.init_boundary), (1,))
        params = {"rotation": orthonormal_param(self, "rotation", width, width),
                  "mask": boundary_mask(boundary, width, self.temperature(step.value)),
                  "source": _source_run(frozen, self.site, source_tokens, kwargs)}
        if self.is_mutable_collection(STEP_COLLECTION) and not self.is_initializing():
            step.value = step.value + 1
        swap = Apply(self.site, interchange, params, positions=list(self.positions) or None)
        return frozen.run(base_tokens, interventions=[swap], **kwargs)[0]


def interchange_accuracy(model: nn.Module, variables: Any, base_tokens: Any,
                         source_tokens: Any, labels: Any, position: int = -1,
                         batch_size: int = 0) -> float:
    """IIA: the fraction of (base, source) pairs whose interchanged output's argmax at
    `position` (logits [batch, pos, vocab], or [batch, classes]) is the counterfactual label.

    Args:
      model: a `Tuned` DAS / Boundless DAS (or any model called `(base, source)`).
      variables: its variables (`jaxinterp.train.load`'s, or `tuning.with_frozen`'s).
      base_tokens, source_tokens: int [n, L] each.
      labels: int [n], the causal model's output with the variable set from the source.
      position: the position read of sequence logits.
      batch_size: pairs per forward pass (0: all at once).
    """
    base_tokens, source_tokens = np.asarray(base_tokens), np.asarray(source_tokens)
    labels = np.asarray(labels)
    if not (len(base_tokens) == len(source_tokens) == len(labels)):
        raise ValueError(f"interchange_accuracy: {len(base_tokens)} base, "
                         f"{len(source_tokens)} source rows and {len(labels)} labels; they "
                         "must be equal")
    n = len(labels)
    step = batch_size or n

    @jax.jit
    def predict(v, b, s):
        out = model.apply(v, b, s)
        return (out[:, position] if out.ndim == 3 else out).argmax(-1)

    hits = 0
    for i in range(0, n, step):
        pred = predict(variables, base_tokens[i:i + step], source_tokens[i:i + step])
        hits += int((np.asarray(pred) == labels[i:i + step]).sum())
    return hits / max(n, 1)
