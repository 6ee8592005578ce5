"""Abrupt in-context learning and the induction head (Reddy 2023; Singh et al. 2024).

(docstring with measured numbers: to come)
"""

from ml_collections import ConfigDict

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = ConfigDict()
    c.seeds = [0, 1, 2]
    c.num_train_steps = 1500
    c.batch_size = 128
    c.eval_every_steps = 25
    c.data_dir = ""  # "" means <workdir>/data

    # bursty_icl builder fields (jaxinterp/data/bursty_icl.py).
    c.data = ConfigDict(dict(n_classes=1024, n_labels=32, d=32, n_ctx=8, burstiness=2,
                             p_bursty=0.9, zipf_exponent=0.0, within_class_noise=0.1,
                             num_train=16384, num_test=512, seed=0))

    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=32, n_heads=1, d_head=32,
                               d_vocab=32, n_ctx=17, attn_only=True)
    c.d_readout_mlp = 128

    c.optimizer = base_config().optimizer
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.0

    c.grid = ConfigDict(dict(burstiness=[0, 2, 4], n_classes=[32, 1024], num_train=16384,
                             num_train_steps=1000))
    c.clamp = ConfigDict(dict(arms=["prev_token_ov", "induction_qk", "induction_ov"],
                              until=0.4))
    return c
