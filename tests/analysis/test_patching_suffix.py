"""Suffix-only act_patch (causal models) against the naive loop of full forward passes, with
one suffix start per position and on a rotary + GQA + sigmoid model; bidirectional models keep
the full path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis.patching import act_patch, suffix_groups
from jaxinterp.models.transformer import Transformer, TransformerConfig


def metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


def _model(**kw):
    c = TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_head=4, d_mlp=32, d_vocab=20,
                          n_ctx=8, init_range=0.4, **kw)
    model = Transformer(c)
    clean = jax.random.randint(jax.random.key(1), (2, 4), 0, 20)
    corrupt = jax.random.randint(jax.random.key(2), (2, 4), 0, 20)
    return model, model.init(jax.random.key(0), clean), clean, corrupt


def _naive(model, variables, clean, corrupt, name, cells):
    """metric of one full uncached forward pass per (positions, heads) cell."""
    _, cache = ji.run(model, variables, clean, capture=name)
    return np.array([metric(ji.run(model, variables, corrupt, interventions=[
        ji.Patch(name, cache[name], positions=p, heads=h)])[0]) for p, h in cells])


def test_suffix_groups_cover_every_position():
    assert suffix_groups(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert suffix_groups(3, None) == [(0, 1), (1, 2), (2, 3)]
    assert suffix_groups(3, 8) == [(0, 1), (1, 2), (2, 3)]


def test_one_start_per_position_on_rotary_gqa_sigmoid_equals_naive():
    model, variables, clean, corrupt = _model(positional_embedding_type="rotary",
                                              n_key_value_heads=2, attention_type="sigmoid")
    got = act_patch(model, variables, clean, corrupt, metric, "v", "layer_pos_head",
                    layers=[0], suffix=True, suffix_starts=None)
    cells = [([p], [h]) for p in range(4) for h in range(2)]
    want = _naive(model, variables, clean, corrupt, "blocks.0.attn.hook_v", cells)
    np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-5, atol=1e-5)
    assert np.ptp(want) > 1e-3


def test_bidirectional_models_keep_the_full_path():
    model, variables, clean, corrupt = _model(causal=False)
    got = act_patch(model, variables, clean, corrupt, metric, "resid_pre", "layer_pos",
                    layers=[1])
    want = _naive(model, variables, clean, corrupt, "blocks.1.hook_resid_pre",
                  [([p], None) for p in range(4)])
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs a causal model"):
        act_patch(model, variables, clean, corrupt, metric, "resid_pre", "layer_pos",
                  suffix=True)
    with pytest.raises(ValueError, match="suffix_starts must be a positive int"):
        act_patch(model, variables, clean, corrupt, metric, "resid_pre", "layer_pos",
                  suffix_starts=0)
    assert jnp.isfinite(got).all()
