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

Setup: `bigram_backcopy` data (vocabulary 32 with BOS, 3 triggers (tokens 1, 18, 26: 14% of
the tokens), Dirichlet(0.3) bigram rows, sequences of BOS + 32 tokens, 8192 training and 256
held-out sequences); a 3-layer transformer, one head per layer, d_model 32, ReLU MLPs of width
128, pre-LN, learned positions, no biases; 3000 steps of batch 32 on the loss over every
position; AdamW 3e-3 (betas 0.9, 0.99, weight decay 1e-4) or SGD 0.3 with momentum 0.9 (100x,
as the authors' 3e-4 and 0.03), constant rates. Seeds 0, 1, 2 per arm, one vmapped call each.

Runtime on 2 CPU cores, alone: 131 s wall (223 s user + 8 s sys); re-run with the final code,
the numbers below unchanged. (On the shared machine, load ~20: 757 s.)

Measured at this config (seeds 0 / 1 / 2; the backcopy head is layer 0's in every run but
relu_sgd seed 1's, layer 2; "BOS attention" is hook_pattern[q, 0] from non-trigger / trigger
tokens; ratios are BOS / mean of the other tokens; the residual ratio is at the backcopy head's
input, the embedding):
  softmax_adam  active-dormant: BOS attention 0.66 / 0.39 / 0.61 from non-trigger tokens and
                0.004 / 0.003 / 0.002 from trigger tokens, where the head attends to the
                previous token (0.93 / 0.93 / 0.94); value-norm ratio 0.18 / 0.29 / 0.16
                (value-state drain); residual-norm ratio 1.69 / 1.61 / 1.79, growing slowly
                through training (max over all residual points 2.4 / 2.0 / 1.8): a mild
                residual-state peak, not a massive one.
  relu_adam     no sink: BOS attention 0.000 (all seeds); the head idles by attending to
                nothing (each non-trigger row's total attention 0.04 / 0.03 / 0.06) and still
                copies (trigger loss 0.04 / 0.003 / 0.007); value-norm ratio 1.25 / 0.80 /
                0.24 (no drain on two seeds of three); residual ratio 1.51 / 1.54 / 1.31.
  softmax_sgd   the sink and the drain remain: BOS attention 0.23 / 0.42 / 0.54 (mean 0.40
                vs 0.56 with Adam), 0.02 / 0.007 / 0.004 from triggers; value ratio 0.25 /
                0.15 / 0.19 (as with Adam); residual ratio 1.08 / 1.52 / 1.37 (mean 1.32 vs
                1.70 with Adam).
  relu_sgd      BOS attention 0.000; value ratio 0.75 / 0.76 / 0.81; residual ratio 1.08 /
                1.56 / 1.18.
  Loss at non-trigger tokens 2.47-2.50 in every arm against the bigram part's Bayes loss 2.44;
  at trigger tokens 0.003-0.04.
So ReLU attention removes the attention sink (and mostly the value drain) here; SGD does not
remove the sink or the drain at this scale and lowers the (already small) residual ratio only
a little. A first run with threefry instead of rbg keys (otherwise the same) gave softmax_adam
BOS attention 0.72 / 0.73 / 0.71 against softmax_sgd 0.32 / 0.31 / 0.19, so how much SGD
weakens the sink depends on the seeds; at the test's tiny settings (1 layer, lr 1e-2 / 0.3)
SGD formed a stronger sink than Adam (0.94 vs 0.61, threefry keys). The residual-state peak
("much larger residual-state norms") does not reproduce at this scale: BOS's residual norm is
at most ~2.4x the other tokens'.
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
