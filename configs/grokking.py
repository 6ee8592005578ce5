"""Grokking, grokking tickets and corrupted labels on modular addition (docstring: see end).

    python -m experiments.grokking --config=configs/grokking.py --workdir=workdirs/grokking
"""

from ml_collections import ConfigDict

from jaxinterp.train.config import base_config


def get_config():
    c = ConfigDict()
    c.seed = 0
    c.num_train_steps = 9000
    c.eval_every_steps = 50
    c.data = ConfigDict(dict(p=97, op="+", train_fraction=0.5, seed=0))
    c.model = ConfigDict(dict(d_hidden=256, act="relu", init_scale=1.0))
    # The trainer's AdamW (weight decay on the weight matrices), full batch, constant rate.
    c.optimizer = base_config().optimizer
    c.optimizer.update(dict(learning_rate=3e-3, schedule="constant", warmup_steps=0,
                            b2=0.98, weight_decay=0.1, grad_clip_norm=0.0))
    c.sparsity = 0.4  # fraction of each weight matrix the ticket and the random mask remove
    # The corrupted-label arm: the fraction of training pairs given a random wrong label, its
    # steps and weight decay.
    c.corrupted = ConfigDict(dict(fraction=0.1, num_train_steps=4000, weight_decay=1.0))
    c.prune_fractions = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]  # of hidden neurons, by IPR
    return c
