"""How good is an SAE: sparsity (L0), reconstruction (explained variance), dead latents, and
the language-modelling loss recovered when the SAE is spliced into the model.

Loss recovered (Bricken et al. 2023; Gao et al. 2024 report the same quantity):

    (CE_zero_ablation - CE_spliced) / (CE_zero_ablation - CE_clean)

CE_clean is the model's next-token cross-entropy; CE_spliced replaces the SAE's site by its
reconstruction (`jaxinterp.Apply`), or for a transcoder the MLP's output site by the
transcoder's prediction from the MLP's input (`jaxinterp.Patch`; the input site comes before
the output site in the same block, so its clean value is the value the spliced run sees);
CE_zero_ablation sets that site to zero (`jaxinterp.Ablate`). 1 means the reconstruction is as
good as the real activation, 0 as bad as zeroing it.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.hooks import active
from jaxinterp.interventions import Ablate, Apply, Patch
from jaxinterp.run import run
from jaxinterp.sae.model import SAE, SAEConfig
from jaxinterp.train.loss import cross_entropy


def l0(acts: jax.Array) -> jax.Array:
    """Mean number of non-zero latents per input. acts [..., d_sae] -> scalar."""
    return jnp.mean(jnp.sum(acts != 0, axis=-1).astype(jnp.float32))


def explained_variance(x: jax.Array, recon: jax.Array) -> jax.Array:
    """1 - Σ_b ||x_b - x̂_b||² / Σ_b ||x_b - x̄||² (x̄: the mean row), x, recon [batch, d].

    The fraction of the variance of `x` (summed over features) that the reconstruction
    explains; 1 - FVU, the normalised MSE of Gao et al. 2024. Can be negative.
    """
    x, recon = x.astype(jnp.float32), recon.astype(jnp.float32)
    resid = jnp.sum(jnp.square(x - recon))
    total = jnp.sum(jnp.square(x - jnp.mean(x, axis=0)))
    return 1.0 - resid / total


def dead_fraction(steps_since_fired: jax.Array, dead_after_steps: int) -> jax.Array:
    """Fraction of latents that have not fired for `dead_after_steps` steps."""
    return jnp.mean((steps_since_fired >= dead_after_steps).astype(jnp.float32))


def evaluate(params: dict[str, jax.Array], config: SAEConfig, x: jax.Array,
             y: jax.Array | None = None) -> dict[str, jax.Array]:
    """`mse` (mean over rows of ||y - ŷ||²), `l0` and `explained_variance` on rows
    x [batch, d_in] (targets y [batch, d_out]; an SAE's are x)."""
    y = x if y is None else y
    out = SAE(config).apply({"params": params}, x)
    return dict(mse=jnp.mean(jnp.sum(jnp.square(y - out.recon), axis=-1)),
                l0=l0(out.acts), explained_variance=explained_variance(y, out.recon))


def splice(x: jax.Array, params: dict[str, jax.Array], config: SAEConfig) -> jax.Array:
    """The SAE's reconstruction of a site value x [batch, pos, ...] (same shape), for
    `jaxinterp.Apply(site, functools.partial(splice, config=config), params)`."""
    if config.transcoder:
        raise ValueError("splice replaces a site by its own reconstruction; a transcoder "
                         "predicts another site (see loss_recovered)")
    with active(None):  # the SAE's own sites are not the model's
        recon = SAE(config).apply({"params": params},
                                  x.reshape(*x.shape[:2], -1)).recon
    return recon.reshape(x.shape).astype(x.dtype)


def loss_recovered(model: nn.Module, variables: Any, tokens: jax.Array,
                   params: dict[str, jax.Array], config: SAEConfig) -> dict[str, jax.Array]:
    """CE clean / spliced / zero-ablated and the loss recovered (see the module docstring).

    Args:
      model, variables: the model the SAE was trained on.
      tokens: [batch, pos] int; the loss is next-token cross-entropy of
        logits[:, :-1] against tokens[:, 1:].
      params, config: the SAE (`config.site`, and `config.out_site` for a transcoder).

    Returns:
      `ce_clean`, `ce_spliced`, `ce_zero_ablation`, `loss_recovered` (scalars). Jittable
      (with `model` and `config` static).
    """
    if not config.site or (config.transcoder and not config.out_site):
        raise ValueError("loss_recovered needs SAEConfig.site (and out_site for a transcoder)")

    def ce(interventions) -> jax.Array:
        logits, _ = run(model, variables, tokens, interventions=interventions)
        return cross_entropy(logits[:, :-1], tokens[:, 1:])[0]

    if config.transcoder:
        target = config.out_site
        _, cache = run(model, variables, tokens, capture=[config.site])
        x = cache[config.site]
        pred = SAE(config).apply({"params": params}, x.reshape(*x.shape[:2], -1)).recon
        spliced = ce([Patch(target, pred)])
    else:
        target = config.site
        spliced = ce([Apply(target, functools.partial(splice, config=config), params)])
    clean, zero = ce(()), ce([Ablate(target, "zero")])
    return dict(ce_clean=clean, ce_spliced=spliced, ce_zero_ablation=zero,
                loss_recovered=(zero - spliced) / (zero - clean))
