"""Training: train state, optimizer, sharding over a (data, fsdp, tensor) mesh, steps,
checkpoints and the loop.

    from jaxinterp.train import train, load_params
    train(config, workdir)            # or: python -m experiments.train --config=... --workdir=...
    params = load_params(workdir)     # newest checkpoint's parameters, for analysis
"""

from jaxinterp.train.checkpoint import load_params
from jaxinterp.train.loop import train

__all__ = ["load_params", "train"]
