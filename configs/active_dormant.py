"""Active-dormant attention heads and extreme tokens (Guo, Pai, Bai, Jiao, Jordan and Mei 2024,
"Active-Dormant Attention Heads: Mechanistically Demystifying Extreme-Token Phenomena in
LLMs", arXiv:2410.13835).

    python -m experiments.active_dormant --config=configs/active_dormant.py \\
        --workdir=workdirs/active_dormant

Claim: extreme-token phenomena "arise in very simple architectures -- transformers with one to
three layers -- trained on ... the Bigram-Backcopy (BB) task": an "active-dormant mechanism,
where attention heads become sinks for specific input domains while remaining non-sinks for
others" (attention sinks on BOS from non-trigger tokens, none from trigger tokens), with
"significantly smaller value states" (value-state drain) and "much larger residual-state
norms" (residual-state peak) at BOS; "replacing softmax with ReLU and Adam with SGD" mitigates
them.

Setup: RESULT_PLACEHOLDER
"""

from ml_collections import ConfigDict

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)
    c.arms = ("softmax_adam", "relu_adam", "softmax_sgd", "relu_sgd")
    c.num_train_steps = 3000
    c.batch_size = 32
    c.eval_every_steps = 250
    c.eval_batch_size = 256  # held-out sequences the scores are measured on
    c.data_dir = ""  # "" means <workdir>/data
    c.prng_impl = "rbg"  # jax.random.key impl of each run's key (rbg compiles fast on CPU)

    # bigram_backcopy builder fields (jaxinterp/data/bigram_backcopy.py).
    c.data = ConfigDict(dict(vocab_size=32, n_triggers=3, seq_len=33, alpha=0.3,
                             num_train=8192, num_test=256, seed=0))

    # attention_type is set per arm.
    c.model = dataclass_config(TransformerConfig, n_layers=3, d_model=32, n_heads=1, d_head=32,
                               d_mlp=128, d_vocab=32, n_ctx=33, act_fn="relu", use_bias=False,
                               exclude=("attention_type",))

    # The authors' optimizers (BBM/train_main.py, scripts/sgd.sh): AdamW (betas 0.9, 0.99;
    # weight decay 1e-4) and SGD with momentum 0.9 and weight decay 1e-4 at 100x the Adam
    # learning rate (theirs: 3e-4 and 0.03), no clipping.
    c.adam = base_config().optimizer
    c.adam.update(name="adamw", learning_rate=3e-3, schedule="constant", warmup_steps=0,
                  b2=0.99, weight_decay=1e-4, grad_clip_norm=0.0)
    c.sgd = base_config().optimizer
    c.sgd.update(name="sgd", learning_rate=0.3, schedule="constant", warmup_steps=0,
                 momentum=0.9, weight_decay=1e-4, grad_clip_norm=0.0)
    return c
