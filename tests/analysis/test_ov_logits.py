"""`heads.ov_logits`: each head's OV logits on the MLP0 embedding, against NumPy."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxinterp.analysis import heads
from tests.helpers import numpy_transformer
from tests.helpers.tiny_models import tiny


def test_ov_logits_match_numpy_on_a_gpt2_style_model():
    model, variables, _ = tiny("gpt2_small", n_layers=2)
    tokens = np.array([3, 7, 11, 20])
    got = np.asarray(heads.ov_logits(model, variables, tokens))
    c = model.config
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), nn.meta.unbox(variables)["params"])
    act = numpy_transformer.ACT[c.act_fn]

    def ln(x, q):
        x = x - x.mean(-1, keepdims=True)
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + c.eps) * q["w"] + q["b"]

    m = p["blocks_0"]["mlp"]
    x = p["embed"]["W_E"][tokens]
    x = x + act(ln(x, p["blocks_0"]["ln2"]) @ m["W_in"] + m["b_in"]) @ m["W_out"] + m["b_out"]
    want = np.zeros((c.n_layers, len(tokens), c.n_heads, c.d_vocab))
    for layer in range(c.n_layers):
        a = p[f"blocks_{layer}"]["attn"]
        for h in range(c.n_heads):
            v = ln(x, p[f"blocks_{layer}"]["ln1"]) @ a["W_V"][h] + a["b_V"][h]
            want[layer, :, h] = ln(v @ a["W_O"][h], p["ln_final"]) @ p["embed"]["W_E"].T
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="1-d array of token ids"):
        heads.ov_logits(model, variables, np.array([[1, 2]]))
