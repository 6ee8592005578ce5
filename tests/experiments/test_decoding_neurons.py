"""Decoding neurons at tiny settings: clamping a neuron high raises the logits of its decoded
top tokens (through the unembedding) more than the other tokens', by about what the direct
path predicts; for the last layer the frozen-norm-scale effect IS the direct path (nothing
comes after it). One tiny base model, the 3-layer one of tests/helpers/tiny_factual_base.py
(shared with the relation_neurons and localize_edit tests: the first of them to run trains
it): the clamps and decodings are deterministic given it, so there is no seed to vary but the
model's, and the assertions are over every live neuron of each layer.
"""

import json
import os

import pytest

from configs import decoding_neurons
from experiments.decoding_neurons import run_experiment
from tests.helpers.tiny_factual_base import base_workdir, tiny_base


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    c = decoding_neurons.get_config()
    c.base = tiny_base()
    c.update(dict(base_workdir=base_workdir(tmp_path_factory), n_examples=1))
    workdir = str(tmp_path_factory.mktemp("decoding_neurons"))
    out = run_experiment(c, workdir)
    for name in ("lift.png", "examples.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_clamping_raises_the_decoded_tokens(summary, layer):
    s = summary[f"layer{layer}"]
    assert s["live_neurons"] > 10, s
    assert s["mean_lift_predicted"] > 0, s
    assert s["share_total_lift_positive"] > 0.9, s
    assert s["mean_lift_total"] > 0.5 * s["mean_lift_predicted"], s
    assert s["corr_predicted_total"] > 0.8, s


def test_last_layer_effect_is_the_direct_path(summary):
    s = summary["layer2"]
    assert abs(s["later_layers_lift"]) < 1e-3 * s["mean_lift_predicted"], s
