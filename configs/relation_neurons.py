"""Relation-specific neurons (Liu et al. 2025, "On Relation-Specific Neurons in Large Language
Models").

    python -m experiments.relation_neurons --config=configs/relation_neurons.py \
        --workdir=workdirs/relation_neurons

Claim (abstract): "We measure the effect of selectively deactivating candidate neurons specific
to relation r on the LLM's ability to handle (1) facts involving relation r and (2) facts
involving a different relation r' != r"; relation-specific neurons exist, several of them
together carry a relation ("neuron cumulativity"), and deactivating one relation's neurons can
even help other relations ("neuron interference"). Issue 14's acceptance: clamping one
relation's neurons to zero drops that relation's accuracy while the other relations move by
at most 5 points.

Setup (method: the experiment's module docstring): the factual-recall world with 48
subjects x 4 relations (8 attributes per relation, closed-book prompts only); the base model of
`base_model_config()` (2 layers, d_model 64, d_mlp 256: 512 neurons) with ONE attention head
of 64 instead of 4 of 16, trained by `jaxinterp.train.train` for 600 steps per seed (train
accuracy 1.0; test-half accuracy 1.0 for every relation and seed). Per seed, 24 subjects
identify the neurons (AP of `hook_post` at the relation token, top-k over both layers) and
the other 24 subjects' 96 facts are evaluated (24 per relation: one fact is 4.2 points).
Control: 8 draws of k random neurons.

Runtime: 864 s wall on the shared machine at high load (6 jobs on 2 cores; 693 s of it the
three trainings), 122 s user + 5 s sys.

Measured (seeds 0 / 1 / 2; accuracy drop in points of each relation's own facts when its
neurons are clamped to zero, relations 0-3):
  k = 128 (a quarter of the neurons): 46 8 46 42 / 38 42 42 0 / 29 62 21 29 (mean 34);
    every other relation's accuracy unchanged (max |change| 0.0 points on every seed);
    128 random neurons: no change at all (max drop 0.0). The acceptance (the own relation
    drops, by > 20 points on average, the others move by <= 5 points) holds on 3 / 3 seeds.
  k = 192: own drops 75 8 62 50 / 62 71 88 12 / 50 88 17 67 (mean 54); other relations
    within 4.2 points (one fact; mean |change| 0.3); random: max drop 4.2. 3 / 3 seeds.
  k = 64: own drops 0-29 (mean 8); others and random unchanged. Not enough neurons.
  The chosen neurons sit in both layers (k=128: 49-81 in layer 0). Their mean AP falls from
  0.68-0.72 (k=64) to 0.49-0.51 (k=192; chance is 0.25).
What this reproduces: relation-specific neurons exist in this model and their deactivation is
specific (Liu et al.'s "(1) vs (2)"), and it is cumulative (the own drop grows with k). What it
does not show: their "interference" (other relations improving) cannot appear here, every
clean accuracy being 1.0; and single relations are robust on some seeds (relation 1 of seed 0
drops 8 points even at k=192; relation 3 of seed 1 drops 0 at k=128). With the base model's 4
heads of 16 (as `base_model_config()`), k <= 64 clamps changed nothing and k=128 dropped
only two relations (38 and 21 points, others 0): the facts also go through attention there.
"""

from ml_collections import ConfigDict

from configs.factual_recall import base_model_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)  # base-model seeds (one jaxinterp.train.train run each)
    # closed-book facts only: 48 subjects x 4 relations, 8 attributes per relation
    c.base = base_model_config(context_prob=0.0, n_subjects=48, n_subject_tokens=40,
                               num_train=4096, num_test=256)
    c.base.num_train_steps = 600
    # one attention head (of 64): with base_model_config's 4 heads the facts also go through
    # attention (clamping even 64 of the 512 neurons did nothing); with one head they need
    # the layer-0 MLP, which is what neuron-level clamping can show
    c.base.model.n_heads = 1
    c.base.model.d_head = 64
    c.base_workdir = ""  # "" means <workdir>; base models go to <base_workdir>/base_seed{s}
    c.share_base = False  # True: every seed analyses the base model of seeds[0] (only the
    # analysis draws differ: cheaper, but three seeds of one model)
    c.positions = "last"  # a neuron's response: hook_post at the relation token ("last") or
    c.pool = "max"  # pooled over the whole prompt ("prompt") by max or mean
    c.ks = (64, 128, 192)  # neurons clamped per relation (of n_layers x d_mlp = 512)
    c.n_random = 8  # random-neuron control draws per k
    c.min_own_drop = 0.2  # acceptance: the own relations' mean accuracy drop exceeds this
    return c
