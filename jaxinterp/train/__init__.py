"""Training: train state, optimizer, sharding over a (data, fsdp, tensor) mesh, steps,
checkpoints and the loop.

    from jaxinterp.train import train, load
    train(config, workdir)            # or: python -m experiments.train --config=... --workdir=...
    model, variables = load(workdir)  # the newest checkpoint's model and variables, for analysis

Any registry model trains: `config.task` (`jaxinterp.train.tasks`) says how a dataset element
becomes inputs, targets and a loss; the rest of the loop is the same for every family.
"""

from jaxinterp.train.checkpoint import load, load_params
from jaxinterp.train.loop import train
from jaxinterp.train.tasks import TASKS, Task, make_task

__all__ = ["TASKS", "Task", "load", "load_params", "make_task", "train"]
