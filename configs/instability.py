"""Small-scale proxies for training instabilities (Wortsman et al. 2023, "Small-scale proxies
for large-scale Transformer training instabilities", arXiv:2309.14322).

Claim: at high learning rates small transformers show the instabilities seen at scale: without
qk-layernorm the attention logits grow and the loss diverges, qk-layernorm removes that; without
z-loss the output logits drift from log-probabilities (log Z diverges), z-loss prevents it; and
the learning-rate sensitivity (mean over rates of min(final loss, initial loss) minus the best
final loss) drops with the mitigations.

    python -m experiments.instability --config=configs/instability.py \
        --workdir=workdirs/instability

RESULT: (filled in below after the default run)
"""

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = base_config(num_train_steps=1000, batch_size=16)
    c.eval_examples = 256

    # Repeated random tokens where 80% of tokens are a fixed permutation of the token two back
    # (skip bigrams, jaxinterp/data/induction.py): predicting them needs sharp attention to
    # the previous position, so attention logits have a reason to grow, and the loss falls
    # steadily from the first steps (with skip_prob=0.2 it sat near the unigram loss for
    # hundreds of steps, which made final loss vs rate noise). num_train is set to
    # num_train_steps * batch_size by the experiment.
    c.data.builder_kwargs = dict(vocab_size=64, half_len=16, min_half_len=8, bos=True,
                                 placement="random", skip_prob=0.8, num_test=256, seed=0)

    # A 2-layer pre-LN transformer with MLPs, width 64, 4 heads of 16.
    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=64, n_heads=4, d_head=16,
                               d_mlp=256, d_vocab=64, n_ctx=33)

    # The paper's AdamW (b1 0.9, b2 0.95, eps 1e-8, clipping at global norm 1), linear warmup
    # then cosine decay; no weight decay (which the paper finds also mitigates output-logit
    # divergence).
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.0
    c.learning_rates = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]

    c.arms = dict(
        plain=dict(qk_norm=False, z_loss=0.0),
        qk_norm=dict(qk_norm=True, z_loss=0.0),
        z_loss=dict(qk_norm=False, z_loss=1e-4),
        # Both mitigations, the paper's default recipe (its z-loss weight 1e-4).
        qk_norm_z_loss=dict(qk_norm=True, z_loss=1e-4),
    )
    return c
