"""Attention sinks per attention variant (Gu et al. 2024, "When Attention Sink Emerges in
Language Models"; Wong et al. 2025, "On the Existence and Behaviour of Secondary Attention
Sinks"; Sun et al. 2024, "Massive Activations in Large Language Models").

    python -m experiments.attention_sinks --config=configs/attention_sinks.py \
        --workdir=workdirs/attention_sinks

Claims. Sinks "emerge after effective optimization on sufficient training data"; with sigmoid
attention "attention sinks do not emerge"; sinks come with massive activations at fixed
feature dimensions; some sinks sit on tokens other than the first (secondary sinks).

Setup: TBD.

Runtime on 2 CPU cores: TBD.

Measured at this config: TBD.
"""

from ml_collections import ConfigDict

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config

# TransformerConfig overrides per arm (see experiments/attention_sinks.py).
ARM_MODEL = {
    "softmax": {},
    "sigmoid": {"attention_type": "sigmoid"},
    "softplus": {"attention_type": "softplus", "softplus_power": 0.0},
    "register": {"n_register_tokens": 1},
    "gated": {"gated_attention": True},
}


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)
    c.arms = tuple(ARM_MODEL)
    c.arm_model = ConfigDict(ARM_MODEL)
    c.num_train_steps = 1500
    c.batch_size = 64
    c.eval_every_steps = 150
    c.sink_threshold = 0.3  # Gu et al.'s epsilon
    c.massive_top_k = 10
    c.analysis_batch = 256
    c.data_dir = ""  # "" means <workdir>/data

    # induction builder fields (jaxinterp/data/induction.py): BOS 0 first, 32 random tokens
    # with skip-bigram structure and one repeated segment of 4..16 tokens.
    c.data = ConfigDict(dict(vocab_size=64, half_len=16, min_half_len=4, bos=True,
                             placement="random", skip_prob=0.5, num_train=20_000,
                             num_test=256, seed=0))

    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=64, n_heads=4, d_head=16,
                               d_mlp=128, d_vocab=64, n_ctx=32)

    c.optimizer = base_config().optimizer
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.schedule = "constant"
    return c
