"""Induction heads in a 2-layer attention-only transformer, with and without clamping the
previous-token head (the flagship experiment; `make demo`).

    python -m experiments.induction_heads --config=configs/induction_heads.py \
        --workdir=workdirs/induction_heads

Expected on 2 CPU cores: about 1.5-2 minutes for both arms (92-111 s measured). In the
baseline, a layer-0 head becomes a previous-token head within a few hundred steps; then the loss
on the repeated segment drops sharply (the phase change) as the layer-1 head's induction score
jumps from ~0.04 to ~0.85, composing with it. In the clamped arm, the previous-token head's
output (`blocks.0.attn.hook_z`) is replaced by its batch mean at every step: the induction head
does not form (the layer-1 score stays ~0.2, the repeat loss stays high). Figures:
<workdir>/loss_curves.png, <workdir>/head_scores.png.

Why this data and this model (measured on this model, batch 64, lr 1e-3 to 3e-3):
  - Fixed layout `[BOS, x(16), x(16)]`: layer-0 heads attend 15 back by position (layer-0
    "induction scores" ~0.97); no induction circuit.
  - Repeats of 8..16 tokens ending the sequence after a random prefix: the repeat loss falls to
    ~0.5 through layer-0 heads smeared over offsets 7-10 (a positional guess of the period);
    previous-token scores < 0.07, layer-1 induction scores ~0.02. With 2..16-token repeats:
    a plateau (5000 steps, no previous-token head).
  - Repeats at random positions (`placement="random"`) of purely random tokens: the repeat loss
    falls to ~0.2-0.4 by 1000-1250 steps, but again without a previous-token head (< 0.06)
    or a layer-1 induction head (< 0.02).
  - Random placement with skip-bigram structure (`skip_prob=0.2`: a token is a fixed function
    of the token two back 20% of the time) rewards a previous-token head from the start; the
    classic circuit forms by ~300-500 steps (previous-token score ~0.5 -> 0.75, induction score
    ~0.85-0.9), for every seed tried.
  - One head per layer: with 4 (or 2) heads per layer, clamping the layer-0 heads that were
    previous-token heads in the baseline does not stop the induction head: in the clamped
    arm another layer-0 head becomes the previous-token head (score ~0.8) and the induction
    heads form as early as in the baseline (score ~0.85-0.9). With one head per layer the
    circuit is one previous-token head and one induction head, and clamping the former removes
    the only way layer 1 can learn which token came before.
"""

from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config


def get_config():
    c = base_config(num_train_steps=1500, batch_size=64, log_every_steps=100,
                    eval_every_steps=50, eval_batches=2)

    # A segment of 8..16 tokens, repeated at a random later position among random tokens that
    # follow a skip-bigram 20% of the time (see the module docstring and
    # jaxinterp/data/induction.py for why both are needed).
    c.data.builder_kwargs = dict(vocab_size=64, half_len=16, min_half_len=8, bos=True,
                                 placement="random", skip_prob=0.2,
                                 num_train=50_000, num_test=512, seed=0)

    # Every TransformerConfig field (each settable as --config.model.<field>), at its default
    # (2 LayerNorm layers of width 64) but for these; the preset picks the module.
    c.model = dataclass_config(TransformerConfig, n_heads=1, d_head=64, d_vocab=64, n_ctx=33,
                               attn_only=True)
    c.model.preset = "attn_only_2l"

    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0

    # The clamped arm: which layer-0 heads to clamp to their mean. "auto": every layer-0 head
    # whose final previous-token score in the baseline is at least half the best one.
    c.clamp_heads = "auto"
    c.score_examples = 64  # sequences used for head scores at each eval
    return c
