"""Outliers and 8-bit quantisation: vanilla vs clipped softmax vs gated attention (Bondarenko,
Nagel & Blankevoort 2023, "Quantizable Transformers: Removing Outliers by Helping Attention
Heads Do Nothing", arXiv:2306.12929).

    python -m experiments.outliers_quant --config=configs/outliers_quant.py \
        --workdir=workdirs/outliers_quant

Claim: "models pre-trained using our methods learn significantly smaller outliers while
maintaining and sometimes even improving the floating-point task performance. This enables us
to quantize transformers to full INT8 quantization of the activations without any additional
effort."

MEASURED: (filled in below)
"""

from ml_collections import ConfigDict

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)
    c.arms = ("vanilla", "clipped", "gated")
    c.num_train_steps = 3000
    c.batch_size = 64
    c.eval_seed = 1234
    c.data_dir = ""  # "" means <workdir>/data

    # induction builder fields (jaxinterp/data/induction.py): BOS + 16 tokens, a segment of
    # 4..8 random tokens recurring at a random later position among random filler.
    c.data = ConfigDict(dict(vocab_size=64, half_len=8, min_half_len=4, bos=True,
                             placement="random", skip_prob=0.2, num_train=20_000,
                             num_test=256, seed=0))
    c.task = ConfigDict(dict(mask_token_id=64, mask_prob=0.15, vocab_size=64))

    # A bidirectional pre-LN encoder; every run is the gated model, the arms are interventions
    # (experiments/outliers_quant.py).
    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=32, n_heads=4,
                               d_head=8, d_mlp=128, d_vocab=65, n_ctx=17, causal=False,
                               act_fn="gelu")
    c.gate_type = "linear"  # the authors' per-head gate on its own features
    c.clip_zeta = 1.0
    c.clip_gamma = -0.03

    c.optimizer = base_config().optimizer
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.01

    # W8A8 (`bits`), and W8 with fewer activation bits (`low_act_bits`).
    c.quant = ConfigDict(dict(bits=8, calib_batches=8, per_channel_weights=False,
                              low_act_bits=(6, 4)))
    c.massive_top_k = 10  # 0: skip the activation_stats pass
    return c
