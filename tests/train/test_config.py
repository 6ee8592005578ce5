"""`dataclass_config`: a dataclass's defaults as a ConfigDict that builds the dataclass back;
`base_config(**overrides)`."""

import pytest

from jaxinterp.sae.model import SAEConfig
from jaxinterp.sae.train import TrainConfig
from jaxinterp.train.config import base_config, dataclass_config


def test_defaults_and_overrides_build_the_dataclass():
    c = dataclass_config(TrainConfig, num_steps=7)
    assert TrainConfig(**c) == TrainConfig(num_steps=7)
    c = dataclass_config(SAEConfig, exclude=["model_preset"], k=3)
    assert "model_preset" not in c
    assert SAEConfig(**c, model_preset="m") == SAEConfig(k=3, model_preset="m")


def test_a_none_default_is_a_typed_placeholder():
    c = dataclass_config(SAEConfig, transcoder=True)
    assert c.d_out is None and c.get_ref("d_out").get_type() is int
    c.d_out = 128  # as --config.sae.d_out=128 does
    assert SAEConfig(**c).d_out == 128


@pytest.mark.parametrize("kwargs", [dict(no_such=1), dict(exclude=["no_such"])])
def test_unknown_field_names_the_fields(kwargs):
    with pytest.raises(ValueError, match=r"no_such.*its fields"):
        dataclass_config(TrainConfig, **kwargs)


def test_base_config_takes_top_level_overrides():
    c = base_config(num_train_steps=7, eval_batches=0)
    assert (c.num_train_steps, c.eval_batches) == (7, 0)
    assert c.batch_size == base_config().batch_size
    with pytest.raises(ValueError, match=r"no_such.*its fields"):
        base_config(no_such=1)
