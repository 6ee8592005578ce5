"""Head scaling and attention calibration: scale each head's attention to the sink by gamma
(Yu et al. 2024, "Unveiling and Harnessing Hidden Attention Sinks: Enhancing Large Language
Models without Training through Attention Calibration", ACT).

    python -m experiments.head_scaling --config=configs/head_scaling.py \
        --workdir=workdirs/head_scaling

Claim (ACT's abstract): "not all attention sinks have a positive impact on the achievable
accuracy of LLMs"; calibrating the attention of chosen heads at inference time, without
training (a sink's attention scaled by beta, the freed attention given to the other tokens),
"consistently enhances the accuracy" (up to 7.30% on average for Llama-30B).

Setup: the induction-heads data of `configs/induction_heads.py` (vocab 64, a segment of 8-16
tokens repeated at random positions, 20% skip-bigram tokens, BOS first; 8192 training
sequences); a 2-layer attention-only transformer with 4 heads per layer (d_model 64), 3 seeds
trained together (`train_vmapped`, 600 steps, batch 64, AdamW 3e-3 constant after 50 warmup
steps). Held-out task: next-token accuracy on the repeated half of `[BOS, x_1..x_16,
x_1..x_16]` probes of uniform random tokens (the positions only an induction mechanism can
predict); 256 calibration probes choose the (gamma, layer, head), 256 test probes measure it.
Sweep: gamma in (0, 0.25, 0.5, 0.75, 1.5, 2) x 2 layers x 4 heads, on key 0 (the BOS sink)
and, as the control, on one random non-BOS key per sequence, each in two forms: plain
`ji.Scale` of the pattern and ACT's redistribution (`redistribute_attention`); every sweep is
one compiled call (vmapped over seeds and over sink/control).

Runtime on 2 CPU cores: see the measured line below.

Measured at this config: filled in below from the default run.
"""

from ml_collections import ConfigDict

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)
    c.num_train_steps = 600
    c.batch_size = 64
    c.data_dir = ""  # "" means <workdir>/data
    c.data = ConfigDict(dict(vocab_size=64, half_len=16, min_half_len=8, bos=True,
                             placement="random", skip_prob=0.2, num_train=8192, num_test=128,
                             seed=0))
    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=64, n_heads=4, d_head=16,
                               d_vocab=64, n_ctx=33, attn_only=True)
    c.optimizer = base_config().optimizer
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 50
    c.optimizer.weight_decay = 0.0

    c.probe_len = 16  # probes [BOS, x_1..x_n, x_1..x_n] with n = probe_len
    c.num_calibration = 256  # probes that choose (gamma, layer, head)
    c.num_test = 256  # probes that measure the choice
    c.gammas = (0.0, 0.25, 0.5, 0.75, 1.5, 2.0)
    c.sweep_chunk = 8  # grid points per lax.map chunk (memory)
    c.top_heads = 3  # heads drawn in the metric-vs-gamma figure
    c.timing_repeats = 3  # sweep vs loop: timed calls of each (medians)
    return c
