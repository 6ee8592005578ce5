"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality").

    python -m experiments.retrieval_heads --config=configs/retrieval_heads.py \
        --workdir=workdirs/retrieval_heads

Claims. Retrieval heads copy-paste needle tokens from the context (retrieval score > 0.1); they
are sparse ("less than 5%" of heads); "completely pruning retrieval heads leads to failure in
retrieving relevant information ... while pruning random non-retrieval heads does not affect
the model's retrieval ability".

Setup: TODO.

Runtime on 2 CPU cores: TODO.

Measured at this config: TODO.
"""

from ml_collections import ConfigDict

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)
    c.num_train_steps = 1500
    c.batch_size = 64
    c.eval_every_steps = 250
    c.data_dir = ""  # "" means <workdir>/data
    c.threshold = 0.1  # the paper's: heads scoring above it are retrieval heads
    c.k = 1  # top heads by retrieval score pruned
    c.n_random = 32  # random sets of k other heads
    c.random_heads_seed = 0
    c.loss_on = "all"  # "all" positions or the "answer" positions only

    # key_value builder fields (jaxinterp/data/key_value.py).
    c.data = ConfigDict(dict(n_keys=32, n_values=32, n_pairs=8, n_filler=8, n_filler_tokens=16,
                             num_train=16384, num_test=512, seed=0))

    # d_vocab and n_ctx are set from the data by the experiment.
    c.model = dataclass_config(TransformerConfig, n_layers=3, d_model=64, n_heads=8, d_head=8,
                               d_mlp=256)

    c.optimizer = base_config().optimizer
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.0
    return c
