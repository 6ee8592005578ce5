"""jaxinterp: JAX-native models, compiled interventions and sharded training for
interpretability research.

    import jaxinterp as ji
    model = ji.models.build("gpt2_small", n_layers=2)
    variables = model.init(jax.random.key(0), tokens)
    logits, cache = ji.run(model, variables, tokens,
                           capture=["blocks.*.attn.hook_pattern"],
                           interventions=[ji.Add("blocks.1.hook_resid_post", vec, scale=4.0)])

`import jaxinterp` is light: it loads the models, sites and interventions (jax and flax). The
submodules that need heavier libraries load on first use: `jaxinterp.analysis`, `.data` (TFDS,
grain), `.pretrained` (safetensors; penzai for `to_penzai`), `.sae` and `.train` (orbax, grain).
"""

import importlib

from jaxinterp import hooks, interventions, models
from jaxinterp.generate import Generation, generate
from jaxinterp.hooks import sites
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
    "Generation",
    "Intervention",
    "Patch",
    "ProjectOut",
    "RunningMean",
    "Scale",
    "analysis",
    "data",
    "generate",
    "hooks",
    "interventions",
    "models",
    "pretrained",
    "run",
    "run_with_state",
    "sae",
    "sites",
    "train",
]
__version__ = "0.1.0"

_LAZY = ("analysis", "data", "pretrained", "sae", "train")


def __getattr__(name: str):
    if name in _LAZY:  # loaded on first use (PEP 562), so `import jaxinterp` stays light
        return importlib.import_module(f"jaxinterp.{name}")
    raise AttributeError(f"module 'jaxinterp' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
