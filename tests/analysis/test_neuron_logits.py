"""`analysis.neuron_logits` against float64 NumPy, and its meaning: pushing one neuron of the
last MLP by delta, at a frozen final-norm scale, moves the logits by delta x hook_scale x its
decoded row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis import neuron_logits
from jaxinterp.models.transformer import unrolled_params


def _model(norm="LN", tie=False):
    model = ji.models.build("gpt2_small", n_layers=2, d_model=16, n_heads=2, d_head=8,
                            d_mlp=24, d_vocab=20, n_ctx=6, normalization_type=norm,
                            tie_embeddings=tie)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, 20)
    variables = model.init(jax.random.key(0), tokens)
    # non-trivial final-norm weights
    p = jax.tree.map(lambda x: x, unrolled_params(variables))
    p["ln_final"]["w"] = 1.0 + jax.random.normal(jax.random.key(2), (16,))
    return model, {"params": p}, tokens


@pytest.mark.parametrize("norm,tie", [("LN", False), ("RMS", True)])
def test_matches_numpy(norm, tie):
    model, variables, _ = _model(norm, tie)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])
    w_u = p["embed"]["W_E"].T if tie else p["W_U"]
    g = p["ln_final"]["w"]
    for weights in ("out", "in"):
        for fold in ("fold", "none"):
            want = np.zeros((2, 24, 20))
            for layer in range(2):
                for n in range(24):
                    mlp = p[f"blocks_{layer}"]["mlp"]
                    row = mlp["W_out"][n] if weights == "out" else mlp["W_in"][:, n]
                    if fold == "fold":
                        row = (row - row.mean()) * g if norm == "LN" else row * g
                    want[layer, n] = row @ w_u
            got = neuron_logits(model, variables, weights=weights, final_norm=fold)
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_is_the_direct_effect_at_a_frozen_final_norm_scale():
    model, variables, tokens = _model()
    decoded = np.asarray(neuron_logits(model, variables))  # [layer, d_mlp, vocab]
    clean, cache = ji.run(model, variables, tokens, capture=["ln_final.hook_scale"])
    scale = cache["ln_final.hook_scale"]  # [b, pos, 1]: 1 / sqrt(var + eps)
    delta, n = 0.7, 5
    push = jnp.zeros(24).at[n].set(1.0)
    pushed, _ = ji.run(model, variables, tokens, interventions=[
        ji.Add("blocks.1.mlp.hook_post", push, scale=delta),
        ji.Clamp("ln_final.hook_scale", scale)])  # the norm is affine at a frozen scale
    want = delta * np.asarray(scale) * decoded[1, n]  # [b, pos, vocab]
    np.testing.assert_allclose(np.asarray(pushed - clean), want, rtol=1e-3,
                               atol=1e-4 * np.abs(want).max())


def test_errors():
    model, variables, _ = _model()
    with pytest.raises(ValueError, match="weights='up'"):
        neuron_logits(model, variables, weights="up")
    with pytest.raises(ValueError, match="final_norm='ln'"):
        neuron_logits(model, variables, final_norm="ln")
    attn = ji.models.build("attn_only_2l", d_model=16, n_heads=2, d_head=8, d_vocab=20, n_ctx=6)
    v = attn.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))
    with pytest.raises(ValueError, match="attn_only=True"):
        neuron_logits(attn, v)
