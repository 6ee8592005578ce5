"""A weighted activation-steering controller (Hegazy, Elhoushi & Alanwar 2025, "Guiding Giants:
Lightweight Controllers for Weighted Activation Steering in LLMs", WAS).

A small network reads one activation of the prompt and outputs a global scale and one weight
per layer; every layer's residual stream gets its precomputed steering vector, weighted:

    a            = h_{input_site}[input_position]             first pass, unsteered  [d_in]
    [s, z_1..L]  = W_2 relu(W_1 a + b_1) + b_2                the controller         [1 + L]
    h_l         <- h_l + c * s * sigmoid(z_l) * v_l           l = 1..L, at `positions`

`v_l` are the steering vectors (one per steered site, or one for all), `c` a fixed patch scale.
What was checked (the paper's abstract and the authors' code, github.com/Amr-Hegazy1/
GuidingGiantsWAS, `llmsteering/controller/network.py`): the controller is `fc1 -> ReLU ->
fc2` with `1 + num_layers` outputs; at inference the patch at layer l is
`scalar * refusal_dir * patch_scale_factor * sigmoid(weight_logit_l)` added to the output of
every decoder layer (`hook_resid_post` here) at `apply_pos` (-1: the last position), the
scalar used raw; the input is the concatenated last-position hidden states of chosen layers
(`input_layers`, by default the last 4). Two differences, by design:
  - Training. The authors train the controller on cached activations only: the scalar as a
    harmful/benign classifier (binary cross-entropy with logits) plus a regulariser on the
    weights. Here it is trained end to end (this issue's spec): the loss is the task's loss
    of the *steered* frozen model (`jaxinterp.train.train` with `config.tuning`), so
    gradients flow through `ji.Add` into `s` and `z`. Discriminative data (prompts to steer
    with the steered targets, others with their own targets) plays the role of the paper's
    harmful and benign sets.
  - Vectors. The paper adds one "refusal direction" at every layer; here each steered site
    may have its own vector (a `[L, d]` file; a `[d]` file gives the paper's shared one).

The vectors are precomputed and read from an `.npy` file named by the `vectors` field (a
JSON-able config value, saved with the checkpoints), not learned: as in the paper the
direction is fixed and only *how much* of it each prompt gets, per layer, is trained, which
keeps the method small (the controller's `(d_in + 2 + L) * hidden + 1 + L` parameters) and
makes it directly comparable with the fixed-strength vector it modulates. The controller's
last layer starts at zero, so training starts from `s = 0`: the unsteered model.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import hooks
from jaxinterp.interventions import Add
from jaxinterp.tuning.frozen import Frozen


@functools.lru_cache(maxsize=16)
def _load_vectors(path: str) -> np.ndarray:
    if not path or not os.path.exists(path):
        raise ValueError(f"steering_controller: vectors={path!r} is not an .npy file; save the "
                         "per-site steering vectors ([n_sites, d] or [d]) with np.save first")
    return np.asarray(np.load(path), np.float32)


class SteeringController(nn.Module):
    """Weighted activation steering (module docstring): `h_l += c s sigmoid(z_l) v_l`.

    Attributes:
      vectors: path of an `.npy` file: `[n_sites, d]` (one vector per steered site, in the
        order the sites appear in the model) or `[d]` (the same vector at every site).
      sites: a glob of the steered sites (default every layer's `hook_resid_post`).
      input_site: the site the controller reads (one site; "" means the last steered site).
      input_position: the position it reads there (-1: the last token).
      hidden: the controller's hidden width.
      patch_scale: `c`, a fixed multiplier of every patch.
      positions: absolute positions to steer (empty: all).
    """

    vectors: str
    sites: str = "blocks.*.hook_resid_post"
    input_site: str = ""
    input_position: int = -1
    hidden: int = 64
    patch_scale: float = 1.0
    positions: tuple[int, ...] = ()

    def steered_sites(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> list[str]:
        """The steered sites, in model order."""
        shapes = hooks.sites(frozen.model, *inputs, **kwargs)
        names = [n for n in shapes if fnmatch.fnmatchcase(n, self.sites)]
        if not names:
            raise ValueError(f"steering_controller: sites={self.sites!r} matches no site; "
                             f"some sites: {list(shapes)[:12]}")
        return names

    @nn.compact
    def controls(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> tuple[jax.Array, ...]:
        """`(s [batch], weights sigmoid(z) [batch, n_sites], sites)` for these inputs."""
        sites = self.steered_sites(frozen, *inputs, **kwargs)
        source = self.input_site or sites[-1]
        _, cache = frozen.run(*inputs, capture=source, **kwargs)
        if list(cache) != [source]:
            raise ValueError(f"steering_controller: input_site={source!r} must name one site, "
                             f"got {list(cache)}")
        act = cache[source]
        if act.ndim != 3:
            raise ValueError(f"steering_controller: input_site {source!r} has shape "
                             f"{act.shape}; it needs [batch, pos, d]")
        a = jax.lax.stop_gradient(act[:, self.input_position].astype(jnp.float32))  # [b, d_in]
        x = nn.relu(nn.Dense(self.hidden, name="fc1")(a))
        out = nn.Dense(1 + len(sites), kernel_init=nn.initializers.zeros, name="fc2")(x)
        return out[:, 0], jax.nn.sigmoid(out[:, 1:]), sites

    def __call__(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> Any:
        s, w, sites = self.controls(frozen, *inputs, **kwargs)
        vectors = _load_vectors(self.vectors)
        if vectors.ndim == 1:
            vectors = np.broadcast_to(vectors, (len(sites), vectors.shape[0]))
        if vectors.shape[0] != len(sites):
            raise ValueError(f"steering_controller: {self.vectors!r} has {vectors.shape[0]} "
                             f"vectors for the {len(sites)} sites {sites}")
        strength = self.patch_scale * s[:, None] * w  # [batch, n_sites]
        adds = [Add(site, jnp.asarray(vectors[i]), scale=strength[:, i, None, None],
                    positions=list(self.positions) or None) for i, site in enumerate(sites)]
        return frozen.run(*inputs, interventions=adds, **kwargs)[0]
