"""Mechanisms of factual recall on a synthetic world (`jaxinterp/data/factual_recall.py`):
causal tracing (Meng et al. 2022, ROME), one head that moves the answer between memory and
context (Yu, Merullo & Pavlick 2023, "Characterizing Mechanisms for Factual Recall in Language
Models"), and the final-layer suppression (Lv et al. 2024, "Interpreting Key Mechanisms of
Factual Recall in Transformer-Based Language Models") seen through direct logit attribution.

    python -m experiments.factual_recall --config=configs/factual_recall.py \
        --workdir=workdirs/factual_recall

`base_model_config()` is the base model every factual-recall experiment trains or tunes on (a
2-layer transformer with MLPs that memorises the fact table and reads in-context
counterfactuals); other experiments import it:

    from configs.factual_recall import base_model_config
    config = base_model_config()            # a jaxinterp.train.config.base_config ConfigDict
    result = jaxinterp.train.train(config, workdir)
    model, variables = jaxinterp.train.load(workdir)

Claims. ROME: causal tracing "reveals a distinct set of steps in middle-layer feed-forward
modules that mediate factual predictions while processing subject tokens" (the early site,
at the last subject token), next to a late site at the last token. Yu et al.: head
attribution finds heads that promote the memorised or the in-context answer; "by scaling up
or down the value vector of these heads, we can control the likelihood of using the in-context
answer on new data", up to "88% of the time simply by scaling a single head". Lv et al.: "a
universal anti-overconfidence mechanism in the final layer of models, which suppresses correct
predictions".

Setup: the default world (32 subjects, half of them two pieces; 4 relations with 8 attributes
each; 8192 training prompts, half with an in-context counterfactual `BOS s r a' SEP s r`) with
`context_trust=0.75` (a counterfactual's answer is a' 3 times in 4, else the memorised a: so
memory and context compete instead of the model saturating on a'); the base model of
`base_model_config` (2 layers, d_model 64, 4 heads, MLP 256; 600 steps, batch 64, AdamW 3e-3),
trained with `jaxinterp.train.train` for seeds 0, 1, 2. Analysis on the 16 two-piece subjects:
64 closed-book facts (trace, noise 3 sigma of the subject embeddings, 10 samples) and 448
counterfactual prompts (each fact with each of its 7 other attributes; 224 calibration, 224
test); scales (0, 0.25, 0.5, 1, 1.5, 2, 3) of one head's whole pattern (`head_scale_sweep`, 56
grid points, one compiled call for the 3 seeds).

Runtime on the shared 2-core machine (load average 20-25, not alone): 768 s wall, 140 s user
+ 13 s sys of CPU (training 486 s of the wall time); not measured alone.

Measured at this config (seeds 0 / 1 / 2):
  The model: closed-book accuracy 1.00 / 1.00 / 1.00; on counterfactual prompts P(in-context)
    0.74 / 0.74 / 0.72 and P(memorised) 0.21 / 0.20 / 0.23 (the data's 0.75 / 0.25), the
    in-context answer the argmax on 90 / 89 / 86%.
  (a) Causal tracing (P clean 0.98, corrupted 0.38 / 0.41 / 0.43; indirect effect, mean of
    the seeds, positions BOS s1 s2 r): attn_out at layer 0 at r 0.52 (0.57 / 0.53 / 0.46) and
    mlp_out at layer 0 at r 0.50 (0.55 / 0.52 / 0.42) carry almost the whole effect;
    the subject tokens' MLP outputs 0.05 (s1) and 0.11 (s2; 0.11 / 0.05 / 0.18), layer-1 MLP
    0.01 everywhere, layer-1 attention at r 0.23. So the fact is looked up by the layer-0 MLP
    AT THE LAST POSITION after layer-0 attention has moved the subject there (a late site);
    ROME's early site (subject-token MLPs) is present only weakly (last subject token > first,
    as in ROME, but 5x below the last position). Not ROME's picture at 2 layers.
  (b) Head attribution picks a layer-0 head as the in-context head (L0H0 / L0H1 / L0H2) and a
    layer-1 head as the memory head (L1H1 / L1H0 / L1H2). Scaling the in-context head's
    pattern (test prompts) from 0 to 3: P(in-context) 0.45 -> 0.82 / 0.31 -> 0.82 / 0.37 ->
    0.85, P(memorised) 0.43 -> 0.11 / 0.56 -> 0.12 / 0.52 -> 0.09; the in-context answer's
    argmax rate 48% -> 92% / 33% -> 88% / 40% -> 94% (unscaled 88 / 88 / 85%). Removing the
    head (scale 0) makes the memorised answer the argmax on 49 / 64 / 59%. Scaling the memory
    head up to 3 raises P(memorised) 0.21 -> 0.31 / 0.22 -> 0.29 / 0.24 -> 0.38 (argmax rate
    12 -> 28 / 12 -> 25 / 14 -> 38%). Yu et al.'s claim reproduces: one head's scale moves
    the answer between memory and context, both ways.
  (c) DLA of logit(memorised) - mean logit(the relation's other attributes) at the last
    position: 7.1 / 7.0 / 7.3 on closed-book prompts, 3.5 / 3.6 / 3.8 on counterfactual ones.
    The drop is mostly the layer-0 MLP's (its contribution 4.2 -> 1.7 / 4.4 -> 2.1 / 3.5 ->
    1.5: change -2.5 / -2.3 / -2.1), every head's change is -0.1 to -0.3; the final layer's
    components together change by -0.7 / -0.7 / -1.0 but stay positive (+1.5 / +1.0 / +1.9 on
    counterfactual prompts): no final-layer component pushes the memorised answer below the
    other attributes. Lv et al.'s final-layer suppression is NOT reproduced here: when the
    context disagrees, the memorised answer loses support where it was recalled (the layer-0
    MLP at the last position, which also reads the in-context head's output), rather than
    being suppressed by the final layer. (The memory head's positive attribution for the
    memorised answer over the in-context one is in layer 1.)
  Tried: `context_trust=1` (counterfactuals always followed; vmapped training, same
    settings): the model saturates (P(in-context) > 0.999), all four layer-0 heads copy the
    context (attribution 0.25-0.6 each) and no single head's scale from 0 to 3 moves the
    answer (rate 97-100% in context at every scale): hence context_trust 0.75.
  Next: deeper models (4-6 layers) to look for ROME's subject-token early site.
"""

from ml_collections import ConfigDict

from jaxinterp.data.factual_recall import FactualRecallConfig
from jaxinterp.models.transformer import TransformerConfig
from jaxinterp.train.config import base_config, dataclass_config

# The world of the default data (builder kwargs of `factual_recall`).
WORLD = dict(n_subjects=32, n_subject_tokens=24, two_token_prob=0.5, n_relations=4,
             n_attributes=32, typed_attributes=True, context_prob=0.5, num_train=8192,
             num_test=512, world_seed=0, seed=0)


def base_model_config(**world) -> ConfigDict:
    """Training config of the base model: next-token loss on the answer only
    (`task.mask_feature='loss_mask'`), on the `factual_recall` data with builder kwargs
    `WORLD` updated by `world`; a 2-layer pre-LN transformer (d_model 64, 4 heads of 16, MLP
    256, learned positions, untied embeddings), AdamW 3e-3, batch 64, 600 steps (train and
    eval accuracy 1.0 by step 300). `d_vocab` and `n_ctx` follow the data."""
    kwargs = {**WORLD, **world}
    data_cfg = FactualRecallConfig(name="x", **kwargs)
    c = base_config(num_train_steps=600, batch_size=64, log_every_steps=100,
                    eval_every_steps=500, eval_batches=2, checkpoint_every_steps=600,
                    keep_checkpoints=1)
    c.data.name = "factual_recall"
    c.data.builder_kwargs = ConfigDict(kwargs)
    c.task = ConfigDict({"name": "next_token", "mask_feature": "loss_mask"})
    c.model = dataclass_config(TransformerConfig, n_layers=2, d_model=64, n_heads=4, d_head=16,
                               d_mlp=256, d_vocab=data_cfg.vocab_size, n_ctx=data_cfg.seq_len,
                               tie_embeddings=False)
    c.model.preset = "gpt2_small"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay = 0.0
    return c


def get_config() -> ConfigDict:
    c = ConfigDict()
    c.seeds = (0, 1, 2)
    c.trainer = "train"  # "train": jaxinterp.train.train per seed; "vmapped": one call
    c.data_dir = ""  # "" means <workdir>/data
    # The base model, on data whose counterfactuals are followed 3 times in 4 (see below).
    c.base = base_model_config(context_trust=0.75)
    c.noise_factor = 3.0  # ROME's s3: noise std = 3 x the subject embeddings' std
    c.num_noise_samples = 10  # ROME's samples
    c.trace_sites = ("resid_pre", "mlp_out", "attn_out")  # analysis.tracing.TRACE_SITES
    c.scales = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)  # head scales swept (1.0: unscaled)
    c.n_counterfactual = 0  # counterfactual attributes per fact (0: every other one)
    c.prompt_seed = 0  # counterfactual choice and calibration / test split
    c.dla_others = 0  # other attributes averaged in the memorised margin (0: all)
    return c
