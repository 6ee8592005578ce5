"""Suffix-only path patching (causal models) against the full three runs (`suffix=False`,
itself tested against NumPy in test_path_patching.py), on a plain softmax model and on a
rotary + GQA one, with tokens that differ from the start and from a later position."""

import functools

import jax
import numpy as np
import pytest

from jaxinterp.analysis.path_patching import first_changed_position, path_patch
from jaxinterp.models.transformer import Transformer, TransformerConfig, block_at


def metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


@functools.cache
def _model(**kw):
    c = TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_head=4, d_mlp=32, d_vocab=20,
                          n_ctx=8, init_range=0.4, **kw)
    model = Transformer(c)
    tokens = np.random.default_rng(1).integers(0, 20, (2, 6), dtype=np.int32)
    rng = np.random.default_rng(0)  # N(0, 0.4²) parameters, norms included: nothing compiles
    variables = jax.tree.map(lambda s: rng.normal(0, 0.4, s.shape).astype(s.dtype),
                             jax.eval_shape(model.init, jax.random.key(0), tokens))
    return model, variables, tokens


def _tokens(clean, differ_from):
    """Corrupted tokens: equal to `clean` before position `differ_from`, different after."""
    corrupt = clean.copy()
    shift = np.random.default_rng(2).integers(1, 20, corrupt[:, differ_from:].shape)
    corrupt[:, differ_from:] = (clean[:, differ_from:] + shift) % 20
    return corrupt


def _check(model, variables, clean, corrupt, senders, receivers, **kw):
    """Suffix-only (the default on causal models) == full within 1e-5; the full result."""
    got = path_patch(model, variables, clean, corrupt, metric, senders, receivers, **kw)
    want = path_patch(model, variables, clean, corrupt, metric, senders, receivers,
                      suffix=False, **kw)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return np.asarray(want)


def test_first_changed_position():
    clean = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    later = clean.copy()
    later[1, 2] = 0
    every = np.ones(5, bool)
    assert first_changed_position(clean, later, every) == 2
    assert first_changed_position(clean, later, np.array([1, 1, 0, 0, 1], bool)) == 4
    assert first_changed_position(clean, clean, every) == 4  # nothing differs: nothing changes
    assert first_changed_position(clean, later, np.array([1, 1, 0, 0, 0], bool)) == 4


def test_each_sender_to_heads_in_two_layers_softmax():
    """q/k/v receivers in layers 0 and 1 (run (ii) splits at both), tokens differing from
    position 2, every head as the sender (layer-1 senders start after layer 0)."""
    model, variables, clean = _model()
    want = _check(model, variables, clean, _tokens(clean, 2), "each",
                  [(0, 1, "v"), (1, 2, "q"), (1, 0, "k"), (1, 3, "v")])
    assert want.shape == (2, 4) and np.ptp(want[0]) > 1e-3  # the senders matter


def test_sender_set_to_a_site_frozen_mlps_softmax():
    """Tokens differing from the start, two senders at chosen positions, a residual site."""
    model, variables, clean = _model()
    want = _check(model, variables, clean, _tokens(clean, 0), [(0, 1), (0, 2)],
                  "blocks.0.hook_resid_post", freeze_mlps=True, sender_positions=[1, 3, 5])
    assert abs(float(want) - float(metric(model.apply(variables, clean)))) > 1e-3


def test_each_sender_rotary_gqa_frozen_mlps_from_a_later_position():
    """KV-head k/v receivers and a q receiver; tokens differing from position 2, senders
    patched at positions 1, 3, 5 (so the suffix starts at 3)."""
    model, variables, clean = _model(positional_embedding_type="rotary", n_key_value_heads=2)
    want = _check(model, variables, clean, _tokens(clean, 2), "each",
                  [(1, 1, "k"), (1, 0, "v"), (1, 3, "q")], freeze_mlps=True,
                  sender_positions=[1, 3, 5], batch_size=3)
    assert np.ptp(want[0]) > 1e-3


@pytest.mark.parametrize("causal,receivers,match", [
    (True, "ln_final.hook_normalized", r"'ln_final\.hook_normalized' is not inside a block"),
    (False, [(1, 0, "q")], r"path_patch\(suffix=True\) needs a causal model"),
])
def test_suffix_errors(causal, receivers, match):
    """Raised before anything compiles (abstract variables suffice)."""
    model = Transformer(TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_head=4, d_mlp=32,
                                          d_vocab=20, n_ctx=8, causal=causal))
    clean = np.zeros((2, 6), np.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), clean)
    with pytest.raises(ValueError, match=match):
        path_patch(model, variables, clean, _tokens(clean, 2), metric, [(0, 0)], receivers,
                   suffix=True)


@pytest.mark.parametrize("layer", [2, -1, jax.numpy.int32(0)])
def test_block_at_needs_a_static_layer(layer):
    model = Transformer(TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_head=4, d_mlp=32))
    with pytest.raises(ValueError, match=r"must be a Python int in 0\.\.1"):
        block_at(model, {}, np.zeros((2, 6, 16)), {}, 0, layer)
