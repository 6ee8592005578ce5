"""Length extrapolation of attention variants (Gao & Spratling 2025, "Softplus Attention with
Re-weighting Boosts Length Extrapolation in Large Language Models", arXiv:2501.13428; sigmoid
attention, Ramapuram et al. 2024, arXiv:2409.04431; Hedgehog linear attention, Zhang et al.
2024, arXiv:2402.04347).

    python -m experiments.length_extrapolation --config=configs/length_extrapolation.py \
        --workdir=workdirs/length_extrapolation

Claim: LSSAR (softplus attention with re-weighting) keeps "nearly constant validation loss even
at 16 times the training token length" (GPT-2 small + RoPE trained at 1024 tokens on FineWeb;
softmax's loss grows 3.19 -> 6.28 at 8x, sigmoid's 3.19 -> 14.5, LSSA's 3.19 -> 5.94, LSSAR's
3.19 -> 3.32).

Setup: copy streams (experiments/length_extrapolation.py): 32 distinct random tokens after a
BOS, a 6-12 token segment of them repeated at random positions; vocab 512; loss on the
repeat's predictable tokens. A 2-layer attention-only transformer, d_model 64, 4 heads of 16,
rotary on the whole head, LayerNorm; AdamW (no weight decay) at 3e-3 constant after 100 warmup
steps, batch 32. Evaluated at 1, 2, 4, 8, 16 x 32 tokens (segments and filler scaled alike), 64
fixed streams per length. Seeds 0, 1, 2 per arm.

RUNTIME AND RESULT: to be measured (see the end of this docstring).
"""

from ml_collections import ConfigDict

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)
    c.num_train_steps = 1000
    c.batch_size = 32
    c.data = ConfigDict(dict(length=16, seg_min=3, seg_max=6, vocab=256))
    c.eval_multiples = (1, 2, 4, 8, 16)
    c.eval_examples = 64
    c.eval_chunk = 16
    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=64, n_heads=4, d_head=16,
                               d_vocab=256, attn_only=True, positional_embedding_type="rotary")
    # Each arm: TransformerConfig overrides of the attention alone.
    c.arms = ConfigDict({
        "softmax": {"attention_type": "softmax"},
        "sigmoid": {"attention_type": "sigmoid"},
        "lssa": {"attention_type": "softplus", "softplus_power": 0.0},
        "lssar": {"attention_type": "softplus", "softplus_power": 15.0},
        "linear": {"attention_type": "linear"},
    })
    # The LSSA runs evaluated again with the re-weighting on (at evaluation only).
    c.reweight_lssa_at_eval = True
    c.reweight_power = 15.0
    c.optimizer = base_config().optimizer
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.0
    return c
