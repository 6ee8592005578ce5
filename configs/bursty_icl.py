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
sequences of 4 classes x 2 copies, 1024 classes, 16384 training sequences, 256 test sequences
per split); `IclTransformer`, 2 attention-only
layers, one head each, d_model 32, a residual ReLU readout MLP of width 128; AdamW (no weight
decay) at a constant 1e-3 after 50 warmup steps, batch 128. Seeds 0, 1, 2 everywhere.

Runtime on 2 CPU cores: 517 s measured (8.6 min; the machine shared with three other jobs,
load average 13-15): baseline + clamps 284 s, grid data 25 s, grid 190 s.

Measured at this config (seeds 0 / 1 / 2; a jump is the first eval, every 25 steps, at which the
curve reaches 0.5):
  (a) ICL accuracy (test_icl, novel classes) sits on a plateau at ~0.2 (copying a random
      context label; 4 classes in context) and then jumps to 0.98 / 0.99 / 0.98 at steps
      450 / 500 / 550; the layer-1 induction score (query -> labels of the matching items)
      jumps 0.12 -> 0.78 at 475 / 525 / 575 and the layer-0 previous-token score (label -> its
      exemplar) 0.17 -> 0.95-0.97 at 450 / 525 / 575: the three jumps coincide within one
      eval (25 steps). The layer-1 head attends to the matching labels, not the matching
      exemplars (match score 0.12 -> 0.01-0.02). IWL accuracy stays at 0.04-0.08.
  (b) Grid at 1000 steps (mean of the seeds, ICL on the baseline's test_icl, IWL on each
      cell's test_iwl):      K = 32          K = 1024
        burstiness 0 (iid)   ICL 0.03 IWL 1.00   ICL 0.04 IWL 0.45
        burstiness 2         ICL 0.03 IWL 1.00   ICL 0.95 IWL 0.06
        burstiness 4         ICL 0.04 IWL 1.00   ICL 0.74 IWL 0.07
      Few classes: in-weights only (ICL at chance, below even the context-label plateau);
      many classes: bursty sequences give in-context learning and almost no in-weights
      learning, i.i.d. sequences the reverse.
  (c) Clamps during steps 0-599 (`clamp.until` 0.4 of 1500), released after; the baseline
      has jumped by 450-550:
        prev_token_ov (layer-0 hook_z -> batch mean): no jump while clamped (ICL ~0.2);
          after release the jump comes at 775 / 775 / 775 (225-325 steps after the
          baseline's, 175 after release); final ICL 0.97 released.
        induction_qk (layer-1 pattern -> uniform): no jump while clamped; after release at
          1000 / 1175 / 1150 (550-675 after the baseline's, 400-575 after release: about a
          whole plateau again); final ICL 0.94.
        induction_ov (layer-1 hook_z -> batch mean): no jump while clamped and none in the
          900 steps after release (released ICL 0.25 / 0.35 / 0.26, induction score < 0.1):
          prevented within this run.
      Evaluated with its clamp on, every arm ends at ICL 0.14-0.27.
"""

from ml_collections import ConfigDict

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)
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

    c.grid = ConfigDict(dict(burstiness=(0, 2, 4), n_classes=(32, 1024), num_train=8192,
                             num_train_steps=1000, eval_every_steps=250))
    c.clamp = ConfigDict(dict(arms=("prev_token_ov", "induction_qk", "induction_ov"),
                              until=0.4))
    return c
