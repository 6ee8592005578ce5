"""Direct logit attribution: components sum to the logit (difference); each head and neuron
term against a NumPy computation from the reference forward pass."""

import dataclasses

import jax
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis.dla import direct_logit_attribution
from jaxinterp.models.transformer import unrolled_params
from tests.helpers import numpy_transformer
from tests.helpers.tiny_models import assert_close, tiny

CASES = {
    "gpt2": ("gpt2_small", {}),
    "llama": ("llama_small", {}),  # RMSNorm, rotary, GQA, SwiGLU, no biases, untied
    "attn_only_untied": ("gpt2_small", dict(attn_only=True, tie_embeddings=False,
                                            unembed_bias=True)),
    "no_norm": ("gpt2_small", dict(normalization_type=None)),
}


@pytest.mark.parametrize("case", CASES)
def test_components_sum_to_the_logit_difference(case):
    preset, kw = CASES[case]
    model, variables, tokens = tiny(preset, **kw)
    target, baseline = tokens[:, -1], (tokens[:, -1] + 1) % model.config.d_vocab
    attr = jax.jit(lambda v, t: direct_logit_attribution(model, v, t, target, baseline))(
        variables, tokens)
    logits = np.asarray(model.apply(variables, tokens))[:, -1]
    b = np.arange(tokens.shape[0])
    want = logits[b, target] - logits[b, baseline]
    assert_close(attr.logit, want, rtol=1e-5)
    assert_close(attr.total(), want, rtol=1e-5)
    assert attr.heads.shape == (2, 3, 4)
    # every position at once, a single logit
    attr = direct_logit_attribution(model, variables, tokens, tokens, pos=None)
    want = np.take_along_axis(np.asarray(model.apply(variables, tokens)),
                              np.asarray(tokens)[..., None], -1)[..., 0]
    assert_close(attr.total(), want, rtol=1e-5)


def _numpy_dla(cfg, variables, tokens, target, pos):
    """Head and neuron terms from the equations, in float64: component . frozen-LN direction."""
    _, acts = numpy_transformer.forward(cfg, variables, tokens)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), unrolled_params(variables))
    resid = acts[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][:, pos]  # [batch, d_model]
    centred = resid - resid.mean(-1, keepdims=True)
    scale = np.sqrt((centred**2).mean(-1) + cfg.eps)
    w_u = p["embed"]["W_E"].T
    heads, neurons = [], []
    for layer in range(cfg.n_layers):
        blk = p[f"blocks_{layer}"]
        z = acts[f"blocks.{layer}.attn.hook_z"][:, pos]  # [batch, head, d_head]
        post = acts[f"blocks.{layer}.mlp.hook_post"][:, pos]  # [batch, d_mlp]
        head_out = np.einsum("bhd,hdm->bhm", z, blk["attn"]["W_O"])
        neuron_out = post[..., None] * blk["mlp"]["W_out"]  # [batch, d_mlp, d_model]
        for out, acc in ((head_out, heads), (neuron_out, neurons)):
            out = out - out.mean(-1, keepdims=True)  # the final LN centres ...
            out = out / scale[:, None, None] * p["ln_final"]["w"]  # ... and divides by the scale
            acc.append(np.einsum("bcm,bm->bc", out, w_u.T[target]))
    return np.stack(heads), np.stack(neurons)


@pytest.mark.parametrize("scan", [False, True])
def test_each_head_and_neuron_matches_numpy(scan):
    model, variables, tokens = tiny()
    cfg = model.config
    target = tokens[:, 2]
    heads, neurons = _numpy_dla(cfg, variables, tokens, np.asarray(target), pos=4)
    if scan:
        model = ji.models.build("gpt2_small", **{**dataclasses.asdict(cfg), "scan_layers": True})
        variables = ji.models.stack_layers(variables)
    attr = direct_logit_attribution(model, variables, tokens, target, pos=4)
    assert_close(attr.heads, heads, rtol=1e-5)
    assert_close(attr.neurons, neurons, rtol=1e-5)


def test_errors():
    model, variables, tokens = tiny()
    with pytest.raises(ValueError, match=r"target has shape \(2,\)"):
        direct_logit_attribution(model, variables, tokens, tokens[:2, 0])
    with pytest.raises(ValueError, match="must be an int or of shape"):
        direct_logit_attribution(model, variables, tokens, tokens[:, 0], pos=None)
    with pytest.raises(ValueError, match="pos=10 is outside"):
        direct_logit_attribution(model, variables, tokens, 0, pos=10)
    with pytest.raises(ValueError, match="integer token ids"):
        direct_logit_attribution(model, variables, tokens, 0, baseline=1.5)
