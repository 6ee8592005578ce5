"""The tiny factual-recall base models that the relation_neurons and localize_edit experiment
tests both analyse: one per seed, trained once per test session (by whichever test runs
first) in a shared workdir.

Every subject is two pieces out of 8 (16 subjects: pairs of pieces, no subject a single
token). With one-piece subjects (the previous tiny base: 16 subjects, half of them one
token), a subject's embedding alone can hold its four attributes (one per relation group,
read out linearly through attention's OV and the unembedding), and on one of three
independently trained bases clamping even two thirds of the MLP neurons changed no fact.
With pieces shared between subjects, a fact is a function of the PAIR of pieces, which a sum
of their embeddings cannot give: the lookup needs the MLPs, on every seed (measured: own
relation's mean drop 0.19 / 0.16 / 0.19 with 96 of 192 neurons clamped, bases 0 / 1 / 2).
500 steps: at 300 some bases still miss a fact of the table.
"""

from configs.factual_recall import base_model_config


def tiny_base():
    """The base model config (the seed is set per run)."""
    c = base_model_config(context_prob=0.0, n_subjects=16, n_subject_tokens=8,
                          two_token_prob=1.0, num_train=512, num_test=64)
    c.model.update(dict(n_layers=3, d_model=32, n_heads=1, d_head=32, d_mlp=64))
    c.num_train_steps = 500
    c.batch_size = 32
    c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = 500
    c.optimizer.warmup_steps = 30
    return c


def base_workdir(tmp_path_factory) -> str:
    return str(tmp_path_factory.getbasetemp() / "factual_base")
