"""SAE save/load: exact round trip, the JSON config, and clear errors for bad files."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.sae import io
from jaxinterp.sae.model import SAE, SAEConfig
from tests.helpers.tiny_models import randomize


def params_for(config):
    boxed = SAE(config).init(jax.random.key(0), jnp.zeros((1, config.d_in)))
    return nn.meta.unbox(randomize(boxed, scale=0.3))["params"]


@pytest.mark.parametrize("config", [
    SAEConfig(architecture="topk", d_in=8, d_sae=32, k=3, aux_k=4,
              site="blocks.1.hook_resid_post", model_preset="gpt2_small"),
    SAEConfig(architecture="jumprelu", d_in=8, d_sae=32, bandwidth=0.01),
    SAEConfig(architecture="relu", d_in=8, d_sae=32, d_out=5, transcoder=True,
              site="blocks.0.ln2.hook_normalized", out_site="blocks.0.hook_mlp_out"),
])
def test_round_trip_is_exact(tmp_path, config):
    params = params_for(config)
    io.save(tmp_path, params, config)
    loaded, loaded_config = io.load(tmp_path)
    assert loaded_config == config
    assert sorted(loaded) == sorted(params)
    for k in params:
        assert loaded[k].dtype == np.float32
        np.testing.assert_array_equal(loaded[k], np.asarray(params[k]), err_msg=k)
    x = jax.random.normal(jax.random.key(1), (4, config.d_in))
    np.testing.assert_array_equal(SAE(loaded_config).apply({"params": loaded}, x).recon,
                                  SAE(config).apply({"params": params}, x).recon)
    saved = json.load(open(os.path.join(tmp_path, "config.json")))
    assert saved["format"] == io.FORMAT
    for key in ("architecture", "d_in", "d_sae", "k", "site", "model_preset"):
        assert saved[key] == getattr(config, key)


def _saved(tmp_path, **edits):
    config = SAEConfig(architecture="topk", d_in=8, d_sae=32, k=3)
    io.save(tmp_path, params_for(config), config)
    path = os.path.join(tmp_path, "config.json")
    raw = json.load(open(path))
    raw.update(edits)
    json.dump(raw, open(path, "w"))
    return tmp_path


@pytest.mark.parametrize("edits, match", [
    (dict(architecture="gated"), "unknown SAE architecture 'gated'; this version knows relu"),
    (dict(d_sae=64), r"W_enc has shape \(8, 32\), but the config .*d_sae=64.* needs \(8, 64\)"),
    (dict(d_in=16), r"needs \(16, 32\)"),
    (dict(architecture="jumprelu"), r"missing \['log_threshold'\]"),
    (dict(color="red"), r"unknown field\(s\) \['color'\]"),
])
def test_bad_files_are_clear_errors(tmp_path, edits, match):
    with pytest.raises(ValueError, match=match):
        io.load(_saved(tmp_path, **edits))


def test_save_checks_params_against_config(tmp_path):
    config = SAEConfig(architecture="relu", d_in=8, d_sae=32)
    params = params_for(config)
    with pytest.raises(ValueError, match=r"W_enc has shape \(8, 32\).*needs \(8, 16\)"):
        io.save(tmp_path, params, SAEConfig(architecture="relu", d_in=8, d_sae=16))
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        io.save(tmp_path, {**params, "extra": np.zeros(3)}, config)
