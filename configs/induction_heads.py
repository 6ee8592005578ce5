"""Induction heads in a 2-layer attention-only transformer, with and without clamping the
previous-token head (the flagship experiment; `make demo`).

    python -m experiments.induction_heads --config=configs/induction_heads.py \
        --workdir=workdirs/induction_heads

Expected on 2 CPU cores: about 2-4 minutes for both arms. The baseline's loss on the repeated
half drops sharply (the phase change) once a layer-1 head reaches an induction score near 1,
composing with a layer-0 previous-token head. In the clamped arm, that previous-token head's
output (`blocks.0.attn.hook_z`) is replaced by its batch mean at every step, and the induction
head forms later or not at all. Figures: <workdir>/loss_curves.png, <workdir>/head_scores.png.
"""

from jaxinterp.train.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.num_train_steps = 1500
    c.batch_size = 64
    c.log_every_steps = 100
    c.eval_every_steps = 50
    c.eval_batches = 2
    c.checkpoint_every_steps = 500

    c.data.name = "induction"
    # Repeats of 8..16 tokens after a random prefix: the repeat's position varies, so only a
    # content-based (induction) mechanism predicts it.
    c.data.builder_kwargs = dict(vocab_size=64, half_len=16, min_half_len=8, bos=True,
                                 num_train=50_000, num_test=512, seed=0)

    c.model = dict(preset="attn_only_2l", n_layers=2, d_model=64, n_heads=4, d_head=16,
                   d_vocab=64, n_ctx=33, normalization_type="LN", init_range=0.02)

    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0

    # The clamped arm: which layer-0 heads to clamp to their mean. "auto": every layer-0 head
    # whose final previous-token score in the baseline is at least half the best one.
    c.clamp_heads = "auto"
    c.score_examples = 64  # sequences used for head scores at each eval
    return c
