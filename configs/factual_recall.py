"""Mechanisms of factual recall on a synthetic world (`jaxinterp/data/factual_recall.py`).

`base_model_config()` is the base model every factual-recall experiment trains or tunes on (a
2-layer transformer with MLPs that memorises the fact table and reads in-context
counterfactuals); other experiments import it:

    from configs.factual_recall import base_model_config
    config = base_model_config()            # a jaxinterp.train.config.base_config ConfigDict
    result = jaxinterp.train.train(config, workdir)
    model, variables = jaxinterp.train.load(workdir)

(The experiment's own config, `get_config()`, is documented below it.)
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
    c.base = base_model_config()
    return c
