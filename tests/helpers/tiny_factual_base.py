"""The tiny factual-recall base model that the relation_neurons and localize_edit experiment
tests both analyse (one training run per test session, in a shared workdir)."""

from configs.factual_recall import base_model_config


def tiny_base():
    """The base model both experiment tests analyse (one training run per test session)."""
    c = base_model_config(context_prob=0.0, n_subjects=16, n_subject_tokens=12,
                          num_train=512, num_test=64)
    c.model.update(dict(n_layers=3, d_model=32, n_heads=1, d_head=32, d_mlp=64))
    c.num_train_steps = 300
    c.batch_size = 32
    c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = 300
    c.optimizer.warmup_steps = 30
    return c


def base_workdir(tmp_path_factory) -> str:
    return str(tmp_path_factory.getbasetemp() / "factual_base")
