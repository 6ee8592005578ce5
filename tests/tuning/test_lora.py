"""LoRA and full fine-tuning against hand-merged weights (NumPy float64 merges).

The tuned forward pass must equal the base model applied to `W + (alpha / r) A B` computed here
with `np.einsum` in the kernels' own layouts (W_Q [head, d_model, d_head]: fan_in d_model; W_O
[head, d_head, d_model]: fan_in (head, d_head); mlp W_in [d_model, d_mlp]), and full fine-tuning
the base on `W + delta`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxinterp import tuning
from jaxinterp.models.transformer import Transformer, TransformerConfig

TARGETS = ("blocks_*/attn/W_Q", "blocks_0/attn/W_O", "blocks_*/mlp/W_in")


@pytest.fixture(scope="module")
def base():
    model = Transformer(TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8,
                                          d_mlp=32, d_vocab=24, n_ctx=8))
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 24)
    variables = nn.meta.unbox(model.init(jax.random.key(0), tokens))
    variables.pop("hooks", None)
    return model, variables, tokens


def _apply(module, variables, tokens):
    return module.apply(variables, tokens)


def _tuned(base, method, seed=2):
    model, variables, tokens = base
    tuned = tuning.Tuned(model, method)
    init = tuning.with_frozen(nn.meta.unbox(tuned.init(jax.random.key(seed), tokens)),
                              variables)
    return tuned, init


def _randomised(params, seed):
    """Every leaf of `params` replaced by N(0, 0.3^2) draws (B non-zero, so A B matters)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, x.shape, x.dtype)
                                     for k, x in zip(keys, leaves, strict=True)])


def test_lora_equals_hand_merged_weights(base):
    model, variables, tokens = base
    rank, alpha = 3, 5.0
    tuned, v = _tuned(base, tuning.LoRA(targets=TARGETS, rank=rank, alpha=alpha))
    lora = v["params"]["method"]["lora"]
    flat = traverse_util.flatten_dict(lora, sep="/")
    assert sorted(flat) == ["blocks_0/attn/W_O/A", "blocks_0/attn/W_O/B", "blocks_0/attn/W_Q/A",
                            "blocks_0/attn/W_Q/B", "blocks_0/mlp/W_in/A", "blocks_0/mlp/W_in/B"]
    assert flat["blocks_0/attn/W_Q/A"].shape == (16, rank)  # fan_in d_model
    assert flat["blocks_0/attn/W_Q/B"].shape == (rank, 2, 8)  # fan_out (head, d_head)
    assert flat["blocks_0/attn/W_O/A"].shape == (2, 8, rank)
    assert flat["blocks_0/attn/W_O/B"].shape == (rank, 16)
    assert not np.any(np.asarray(flat["blocks_0/attn/W_Q/B"]))  # B starts at zero
    np.testing.assert_array_equal(np.asarray(_apply(tuned, v, tokens)),
                                  np.asarray(_apply(model, variables, tokens)))

    params = {"method": {"lora": _randomised(lora, 3)}}
    got = _apply(tuned, {**v, "params": params}, tokens)
    f = {k: np.asarray(x, np.float64) for k, x in
         traverse_util.flatten_dict(params["method"]["lora"], sep="/").items()}
    s = alpha / rank
    w = traverse_util.flatten_dict(jax.tree.map(lambda x: np.asarray(x, np.float64),
                                                variables["params"]), sep="/")
    w["blocks_0/attn/W_Q"] += s * np.einsum("er,rhk->hek", f["blocks_0/attn/W_Q/A"],
                                            f["blocks_0/attn/W_Q/B"])
    w["blocks_0/attn/W_O"] += s * np.einsum("hkr,re->hke", f["blocks_0/attn/W_O/A"],
                                            f["blocks_0/attn/W_O/B"])
    w["blocks_0/mlp/W_in"] += s * f["blocks_0/mlp/W_in/A"] @ f["blocks_0/mlp/W_in/B"]
    merged = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                          traverse_util.unflatten_dict(w, sep="/"))
    want = _apply(model, {**variables, "params": merged}, tokens)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(got), np.asarray(_apply(model, variables, tokens)),
                           atol=1e-3)


def test_lora_init_scale_and_errors(base):
    _, v = _tuned(base, tuning.LoRA(targets=("blocks_0/attn/W_Q",), rank=4))
    a = np.asarray(v["params"]["method"]["lora"]["blocks_0"]["attn"]["W_Q"]["A"])
    assert np.abs(a).max() <= 1 / np.sqrt(16) and a.std() > 0.1 / np.sqrt(16)  # U(+-1/sqrt(16))
    with pytest.raises(ValueError, match="matches no parameter"):
        _tuned(base, tuning.LoRA(targets=("blocks_*/attn/W_X",)))
    with pytest.raises(ValueError, match="2-d kernel"):
        _tuned(base, tuning.LoRA(targets=("blocks_0/ln1/w",)))
    with pytest.raises(ValueError, match="rank=0"):
        _tuned(base, tuning.LoRA(rank=0))


def test_full_fine_tune_is_the_model_on_base_plus_delta(base):
    model, variables, tokens = base
    tuned, v = _tuned(base, tuning.FullFineTune())
    delta = v["params"]["method"]["delta"]
    assert jax.tree.structure(delta) == jax.tree.structure(variables["params"])
    assert not any(np.any(np.asarray(x)) for x in jax.tree.leaves(delta))
    np.testing.assert_array_equal(np.asarray(_apply(tuned, v, tokens)),
                                  np.asarray(_apply(model, variables, tokens)))
    delta = _randomised(delta, 4)
    got = _apply(tuned, {**v, "params": {"method": {"delta": delta}}}, tokens)
    merged = jax.tree.map(lambda w, d: w + d, variables["params"], delta)
    np.testing.assert_allclose(np.asarray(got),
                               np.asarray(_apply(model, {**variables, "params": merged}, tokens)),
                               rtol=1e-6, atol=1e-6)


def test_registered():
    assert tuning.METHODS["lora"] is tuning.LoRA and tuning.METHODS["full"] is tuning.FullFineTune
    m = tuning.make_method({"name": "lora", "rank": 2, "targets": ["blocks_*/attn/W_V"]})
    assert m.targets == ("blocks_*/attn/W_V",) and m.rank == 2
