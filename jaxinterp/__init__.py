"""jaxinterp: JAX-native models, compiled interventions and sharded training for
interpretability research.

    import jaxinterp as ji
    model = ji.models.build("gpt2_small", n_layers=2)
    variables = model.init(jax.random.key(0), tokens)
    logits, cache = ji.run(model, variables, tokens,
                           capture=["blocks.*.attn.hook_pattern"],
                           interventions=[ji.Add("blocks.1.hook_resid_post", vec, scale=4.0)])
"""

from jaxinterp import analysis, interventions, models, pretrained, sae, sites
from jaxinterp.interventions import (
    Ablate,
    Add,
    Apply,
    Clamp,
    Intervention,
    Patch,
    ProjectOut,
    RunningMean,
    Scale,
)
from jaxinterp.run import run, run_with_state

__all__ = [
    "Ablate",
    "Add",
    "Apply",
    "Clamp",
    "Intervention",
    "Patch",
    "ProjectOut",
    "RunningMean",
    "Scale",
    "analysis",
    "interventions",
    "models",
    "pretrained",
    "run",
    "run_with_state",
    "sae",
    "sites",
]
__version__ = "0.1.0"
