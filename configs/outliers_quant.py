"""Outliers and 8-bit quantisation: vanilla vs clipped softmax vs gated attention (Bondarenko,
Nagel & Blankevoort 2023, "Quantizable Transformers: Removing Outliers by Helping Attention
Heads Do Nothing", arXiv:2306.12929).

    python -m experiments.outliers_quant --config=configs/outliers_quant.py \
        --workdir=workdirs/outliers_quant

Claim: "models pre-trained using our methods learn significantly smaller outliers while
maintaining and sometimes even improving the floating-point task performance. This enables us
to quantize transformers to full INT8 quantization of the activations without any additional
effort."

Setup (details: experiments/outliers_quant.py): masked-LM (BERT masking, 15%) on `induction`
sequences (BOS + 16 tokens, a 4..8-token segment recurring among random filler, 20% skip
bigrams, 20k training sequences, 256 test); a bidirectional pre-LN Transformer, 2 layers, width
32, 4 heads of 8, GELU MLP 128; AdamW lr 3e-3 (cosine, 100 warmup), weight decay 0.01, batch
64, 3000 steps. Arms: vanilla softmax; clipped softmax gamma = -0.03, zeta = 1 (gamma x
seq_len ~ -0.5; the paper's BERT used gamma -0.025 at length 128); gated attention with the
authors' default gate, `gate_type="linear"` (a Linear(d_model / n_heads -> 1) per head on its
own input features). Seeds 0, 1, 2 for every arm, all 9 runs one vmapped call. W8A8: weights
symmetric per-tensor min-max, activations asymmetric per-tensor min-max on 8 training batches
at 26 sites (every matmul input, the softmax output, residual sums, LayerNorm outputs).

Runtime on 2 CPU cores, alone: 104 s wall (174 s user + 7 s sys); re-run with the final code,
the numbers below unchanged. (On the shared machine, load 18-23: 731 s.)

Measured at this config (seeds 0 / 1 / 2; test split):
  max infinity norm (max over layers of the FFN output and the residual stream, per-sequence
    max |x| averaged over sequences): vanilla 6.31 / 4.14 / 4.19 (mean 4.88), clipped 3.30 /
    2.78 / 3.91 (3.33), gated 3.13 / 2.89 / 3.46 (3.16): lower than vanilla on every seed, by
    ~32-35% on average (the paper's BERT: 735 -> 21 clipped, 39 gated: far larger outliers).
  where: vanilla seed 0's outlier sits at BOS in one fixed feature (feature 24: all 10 of the
    10 largest residual magnitudes; BOS inf norm 6.2-6.3 vs 3.4-3.7 at other positions), the
    paper's "no-op" signature; seed 2 half at BOS, seed 1 none. Clipped and gated: 0-10% of the
    top 10 at BOS in every seed (mean BOS inf norm 2.5-2.8 vs vanilla's 4.5-4.6).
  average kurtosis: vanilla 7.6 / 12.4 / 14.2 (11.4), clipped 4.7 / 5.0 / 18.1 (9.3), gated
    6.7 / 4.3 / 8.5 (6.5): lower for gated on every seed, mixed for clipped.
  FP masked-token accuracy: vanilla 0.409 / 0.434 / 0.431 (0.425), clipped 0.457 / 0.436 /
    0.431 (0.442), gated 0.421 / 0.358 / 0.430 (0.403).
  W8A8 drop (FP - W8A8): vanilla 0.017 / 0.011 / -0.011 (0.006), clipped 0.012 / -0.002 /
    0.003 (0.005), gated -0.003 / -0.002 / 0.002 (-0.001):
    NOT reproduced, no arm loses accuracy at 8 bits (outliers of ~4-6 against typical values
    of ~1-3 cost nothing on a 256-level grid). With fewer activation bits: W8A6 0.411 / 0.433
    / 0.393 (vanilla / clipped / gated), W8A4 0.275 / 0.282 / 0.279: every arm degrades alike.
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
