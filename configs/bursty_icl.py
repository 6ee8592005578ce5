"""Abrupt in-context learning and the induction head (Reddy 2023, "The mechanistic basis of
data dependence and abrupt learning in an in-context classification task"; Singh et al. 2024,
"What needs to go right for an induction head?").

    python -m experiments.bursty_icl --config=configs/bursty_icl.py --workdir=workdirs/bursty_icl

Claims. In a 2-layer attention-only network trained on bursty in-context classification, (a)
in-context accuracy jumps abruptly, at the same time as an induction head forms (a layer-0
head attending from each label to its exemplar, a layer-1 head attending from the query to the
labels of the matching items); (b) burstiness and many classes favour in-context learning,
few classes and i.i.d. sequences in-weights learning; (c) clamping the circuit's parts during
training prevents the jump while clamped and delays it after release.

Setup: `bursty_icl` data (8 (exemplar, label) items, d = 32, 32 labels, noise 0.1, 90% bursty
sequences of 4 classes x 2 copies, 16384 training sequences); `IclTransformer`, 2 attention-only
layers, one head each, d_model 32, a residual ReLU readout MLP of width 128; AdamW (no weight
decay) at a constant 1e-3 after 50 warmup steps, batch 128. Seeds 0, 1, 2 everywhere.

Runtime on 2 CPU cores: RUNTIME

Measured at this config (MEASURED_NOTE):
MEASURED
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
    c.jump_threshold = 0.5  # a curve's jump: the first eval at which it reaches this
    c.data_dir = ""  # "" means <workdir>/data

    # bursty_icl builder fields (jaxinterp/data/bursty_icl.py).
    c.data = ConfigDict(dict(n_classes=1024, n_labels=32, d=32, n_ctx=8, burstiness=2,
                             p_bursty=0.9, zipf_exponent=0.0, within_class_noise=0.1,
                             num_train=16384, num_test=256, seed=0))

    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=32, n_heads=1, d_head=32,
                               d_vocab=32, n_ctx=17, attn_only=True)
    c.d_readout_mlp = 128

    c.optimizer = base_config().optimizer
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.0

    c.grid = ConfigDict(dict(burstiness=[0, 2, 4], n_classes=[32, 1024], num_train=8192,
                             num_train_steps=1000, eval_every_steps=250))
    c.clamp = ConfigDict(dict(arms=["prev_token_ov", "induction_qk", "induction_ov"],
                              until=0.4))
    return c
