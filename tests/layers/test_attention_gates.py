"""The gate variants of gated attention (Bondarenko et al. 2023; `gate_type`), against NumPy
written from the authors' code (`BertSelfAttentionWithExtras`), applied to the attention input
the model itself captured."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.layers.attention import GATE_TYPES
from tests.helpers.tiny_models import assert_close, tiny


def _np(x):
    return np.asarray(x, np.float64)


def numpy_gate(gate_type, a, x, n_heads):
    """sigmoid(G(x)) [b, pos, head] from params `a` and the attention input x [b, pos, d]."""
    b, p, d = x.shape
    xh = x.reshape(b, p, n_heads, d // n_heads)  # head h reads features h*s .. (h+1)*s - 1
    if gate_type == "all_heads_linear":
        logits = x @ _np(a["W_G"]) + _np(a["b_G"])
    elif gate_type == "linear":
        logits = (xh * _np(a["W_G"])).sum(-1) + _np(a["b_G"])
    elif gate_type == "mlp":
        hid = np.stack([xh[:, :, h] @ _np(a["W_G1"])[h] for h in range(n_heads)], 2)
        hid = np.maximum(hid + _np(a["b_G1"]), 0.0)
        logits = (hid * _np(a["W_G2"])).sum(-1) + _np(a["b_G2"])
    else:  # unconditional
        logits = np.broadcast_to(_np(a["b_G"]), (b, p, n_heads))
    return 1 / (1 + np.exp(-logits))


@pytest.mark.parametrize("gate_type", GATE_TYPES)
def test_gate_variants_match_numpy(gate_type):
    model, variables, tokens = tiny(n_layers=1, gated_attention=True, gate_type=gate_type)
    a = nn.meta.unbox(variables)["params"]["blocks_0"]["attn"]
    _, cache = ji.run(model, variables, tokens, capture=("blocks.0.*",))
    x = _np(cache["blocks.0.ln1.hook_normalized"])
    gate = numpy_gate(gate_type, a, x, model.config.n_heads)
    assert cache["blocks.0.attn.hook_gate"].shape == gate.shape == (3, 10, 4)
    assert_close(cache["blocks.0.attn.hook_gate"], gate, rtol=2e-4, atol_rel=2e-5)
    assert np.std(gate) > 1e-3 or gate_type == "unconditional"  # the gate is not constant
    # hook_z is the ungated model's z (same other parameters) times the gate.
    _, plain = ji.run(ji.models.build("gpt2_small", **{**model.config.__dict__,
                                                        "gated_attention": False}),
                      variables, tokens, capture=("blocks.0.attn.hook_z",))
    assert_close(cache["blocks.0.attn.hook_z"],
                 gate[..., None] * _np(plain["blocks.0.attn.hook_z"]), rtol=2e-4, atol_rel=2e-5)


def test_gate_parameter_shapes_and_errors():
    shapes = {}
    for gate_type in GATE_TYPES:
        model, variables, _ = tiny(n_layers=1, gated_attention=True, gate_type=gate_type)
        a = nn.meta.unbox(variables)["params"]["blocks_0"]["attn"]
        shapes[gate_type] = {k: v.shape for k, v in a.items() if "_G" in k}
    d, h = model.config.d_model, model.config.n_heads
    s = d // h
    assert shapes == {
        "all_heads_linear": {"W_G": (d, h), "b_G": (h,)},
        "linear": {"W_G": (h, s), "b_G": (h,)},
        "mlp": {"W_G1": (h, s, s // 4), "b_G1": (h, s // 4), "W_G2": (h, s // 4), "b_G2": (h,)},
        "unconditional": {"b_G": (h,)},
    }
    with pytest.raises(ValueError, match="gate_type='per_channel'"):
        ji.models.build("gpt2_small", gated_attention=True, gate_type="per_channel")
    model = ji.models.build("gpt2_small", n_layers=1, d_model=30, n_heads=4, d_head=8, d_mlp=16,
                            d_vocab=20, n_ctx=8, gated_attention=True, gate_type="linear")
    with pytest.raises(ValueError, match="n_heads=4 must divide"):
        model.init(jax.random.key(0), np.zeros((1, 4), np.int32))
