"""Successor heads (Gould et al. 2023, "Successor Heads: Recurring, Interpretable Attention
Heads In The Wild").

    python -m experiments.successor_heads --config=configs/successor_heads.py \
        --workdir=workdirs/successor_heads

Claims. "Successor heads: attention heads that increment tokens with a natural ordering, such as
numbers, months, and days"; their OV circuit on a token's MLP0 embedding gives the successor the
highest logit among the task's tokens (the succession score); ablating them hurts incrementation;
"mod-10 features" underlie how they increment numbers.

Setup: `ordinal` data (numbers 0-99, days, months, letters, one token each, in runs
`e_1 SEP e_2 SEP ...` of 2-5 elements, two runs per 64-token sequence among 32 filler tokens;
16384 training and 512 test sequences); a 2-layer GPT-2-style transformer (d_model 64, 4 heads
of 16, MLP 256, LayerNorm, learned positions); AdamW at 3e-3 (cosine, 100 warmup steps), batch
64. Seeds 0, 1, 2 trained together. Ablation: mean-ablate (`hook_z`) the top k = 1 heads by
successor score vs 32 random sets of k other heads.

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
    c.eval_every_steps = 100
    c.data_dir = ""  # "" means <workdir>/data
    c.k = 2  # successor heads ablated (the top k by successor score)
    c.n_random = 32  # random sets of k other heads
    c.random_heads_seed = 0

    # ordinal builder fields (jaxinterp/data/ordinal.py).
    c.data = ConfigDict(dict(families=("numbers", "days", "months", "letters"), n_numbers=100,
                             n_filler=32, seq_len=64, runs_per_seq=2, min_run=2, max_run=5,
                             num_train=16384, num_test=512, seed=0))

    # d_vocab and n_ctx are set from the data by the experiment.
    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=64, n_heads=4, d_head=16,
                               attn_only=True)

    c.optimizer = base_config().optimizer
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.0
    return c
