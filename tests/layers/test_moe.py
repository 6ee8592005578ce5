"""Top-k mixture of experts: a NumPy loop over tokens (route, pick top-k, renormalise, mix the
chosen experts) against the model, expert ablation by intervention, load-balancing loss."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from tests.helpers.numpy_transformer import ACT
from tests.helpers.tiny_models import assert_close, assert_scan_matches, tiny

MOE = dict(n_layers=1, mlp_type="moe", n_experts=4, experts_per_token=2, d_mlp=16)


def numpy_moe(cfg, p, x, exclude=(), drop=()):
    """Loop over tokens. x [b, pos, d_model] (the MLP input), p: the `mlp` params.

    exclude: experts that cannot be chosen (routing picks the top-k among the others).
    drop: experts whose (weighted) output is removed after routing, without re-normalising.
    Returns (out [b, pos, d_model], weights [b, pos, expert], expert_out [b, pos, expert, d])."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    act = ACT[cfg.act_fn]
    b, n, d = x.shape
    e = cfg.n_experts
    out = np.zeros((b, n, d))
    weights = np.zeros((b, n, e))
    expert_out = np.zeros((b, n, e, d))
    for i in range(b):
        for t in range(n):
            xt = x[i, t]
            for j in range(e):
                lin = xt @ p["W_in"][j] + p["b_in"][j]
                h = act(xt @ p["W_gate"][j]) * lin if cfg.gated_mlp else act(lin)
                expert_out[i, t, j] = h @ p["W_out"][j] + p["b_out"][j]
            logits = xt @ p["W_router"]
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            ranked = [j for j in np.argsort(-probs, kind="stable") if j not in exclude]
            top = ranked[: cfg.experts_per_token]
            for j in top:
                weights[i, t, j] = probs[j] / probs[top].sum()
            for j in top:
                if j not in drop:
                    out[i, t] += weights[i, t, j] * expert_out[i, t, j]
    return out, weights, expert_out


@pytest.mark.parametrize("overrides", [dict(), dict(gated_mlp=True, act_fn="silu")],
                         ids=["gelu", "swiglu"])
def test_moe_matches_numpy_loop(overrides):
    model, variables, tokens = tiny(**MOE, **overrides)
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.*")
    p = nn.meta.unbox(variables)["params"]["blocks_0"]["mlp"]
    x = np.asarray(cache["blocks.0.ln2.hook_normalized"], np.float64)
    out, weights, expert_out = numpy_moe(model.config, p, x)
    w = np.asarray(cache["blocks.0.mlp.hook_router_weights"])
    assert ((w > 0).sum(-1) == 2).all()  # exactly k experts per token
    assert_close(w, weights, rtol=1e-4, atol_rel=1e-5)
    assert_close(cache["blocks.0.mlp.hook_expert_out"], expert_out, rtol=2e-4, atol_rel=2e-5)
    assert_close(cache["blocks.0.hook_mlp_out"], out, rtol=2e-4, atol_rel=2e-5)
    assert cache["blocks.0.mlp.hook_post"].shape == (3, 10, 4, 16)


def test_ablating_an_expert_by_intervention():
    model, variables, tokens = tiny(**MOE)
    p = nn.meta.unbox(variables)["params"]["blocks_0"]["mlp"]
    _, clean = ji.run(model, variables, tokens, capture="blocks.0.ln2.hook_normalized")
    x = np.asarray(clean["blocks.0.ln2.hook_normalized"], np.float64)
    keep = np.array([1.0, 0.0, 1.0, 1.0])  # ablate expert 1
    want, _, _ = numpy_moe(model.config, p, x, drop=(1,))
    assert np.abs(want - numpy_moe(model.config, p, x)[0]).max() > 1e-2  # expert 1 is used

    # (a) zero its routing weight (no re-normalisation of the others) ...
    iv = ji.Scale("blocks.0.mlp.hook_router_weights", keep)
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.hook_mlp_out", interventions=iv)
    assert_close(cache["blocks.0.hook_mlp_out"], want, rtol=2e-4, atol_rel=2e-5)
    # (b) ... or zero its output: the same numbers.
    iv = ji.Clamp("blocks.0.mlp.hook_expert_out", 0.0, mask=(keep == 0)[:, None])
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.hook_mlp_out", interventions=iv)
    assert_close(cache["blocks.0.hook_mlp_out"], want, rtol=2e-4, atol_rel=2e-5)
    # (c) Re-route instead: a very negative router logit sends its tokens to the next best.
    want, weights, _ = numpy_moe(model.config, p, x, exclude=(1,))
    iv = ji.Add("blocks.0.mlp.hook_router_logits", jnp.asarray([0.0, -1e9, 0.0, 0.0]))
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.*", interventions=iv)
    assert_close(cache["blocks.0.mlp.hook_router_weights"], weights, rtol=1e-4, atol_rel=1e-5)
    assert_close(cache["blocks.0.hook_mlp_out"], want, rtol=2e-4, atol_rel=2e-5)


def test_heads_selector_does_not_address_the_expert_axis():
    # The expert axis is called "expert"; `heads=` looks for a "head" axis and says so.
    model, variables, tokens = tiny(**MOE)
    iv = ji.Scale("blocks.0.mlp.hook_router_weights", 0.0, heads=[1])
    with pytest.raises(ValueError, match="has no 'head' axis"):
        ji.run(model, variables, tokens, interventions=iv)


def test_expert_scale_sweep_under_vmap():
    model, variables, tokens = tiny(**MOE)

    def logits(s):
        scale = jnp.ones(4).at[2].set(s)
        iv = ji.Scale("blocks.0.mlp.hook_router_weights", scale)
        return ji.run(model, variables, tokens, interventions=iv)[0]

    strengths = jnp.asarray([0.0, 0.5, 1.0])
    swept = jax.jit(jax.vmap(logits))(strengths)
    for i, s in enumerate(strengths):
        np.testing.assert_allclose(swept[i], logits(s), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(swept[2], model.apply(variables, tokens), rtol=1e-5, atol=1e-5)


def test_load_balancing_loss():
    model, variables, tokens = tiny(**{**MOE, "n_layers": 2})
    _, cache = ji.run(model, variables, tokens, capture="blocks.*.mlp.hook_router_logits")
    _, state = model.apply(variables, tokens, mutable=["aux_loss"])
    for i in range(2):
        logits = np.asarray(cache[f"blocks.{i}.mlp.hook_router_logits"], np.float64).reshape(-1, 4)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        top = np.argsort(-probs, axis=-1)[:, :2]
        f = np.bincount(top.ravel(), minlength=4) / top.size  # share of routing assignments
        want = 4 * np.sum(f * probs.mean(0))
        got = state["aux_loss"][f"blocks_{i}"]["mlp"]["load_balancing"][0]
        np.testing.assert_allclose(got, want, rtol=1e-5)
    # Perfectly uniform routing (zero router) gives exactly 1.
    zero = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if "W_router" in jax.tree_util.keystr(path) else x,
        nn.meta.unbox(variables))
    _, state = model.apply(zero, tokens, mutable=["aux_loss"])
    np.testing.assert_allclose(state["aux_loss"]["blocks_0"]["mlp"]["load_balancing"][0], 1.0,
                               rtol=1e-6)


def test_moe_sites_and_config_errors():
    model, variables, tokens = tiny(**MOE)
    assert set(variables) == {"params"}  # the aux loss is not sown at init
    s = ji.sites(model, tokens)
    assert s["blocks.0.mlp.hook_router_logits"].shape == (3, 10, 4)
    assert s["blocks.0.mlp.hook_router_weights"].shape == (3, 10, 4)
    assert s["blocks.0.mlp.hook_expert_out"].shape == (3, 10, 4, 32)
    with pytest.raises(ValueError, match=r"experts_per_token=5 must be an int in \[1, n_expe"):
        ji.models.config("gpt2_small", mlp_type="moe", n_experts=4, experts_per_token=5)
    with pytest.raises(ValueError, match="mlp_type='sparse'; choose from"):
        ji.models.config("gpt2_small", mlp_type="sparse")


@pytest.mark.slow
def test_scanned_equals_unrolled_moe_gated_registers():
    model, variables, tokens = tiny(**{**MOE, "n_layers": 2, "gated_attention": True,
                                       "n_register_tokens": 1})
    capture = ("blocks.*.mlp.hook_router_weights", "blocks.*.mlp.hook_expert_out")
    iv = ji.Scale("blocks.1.mlp.hook_router_weights", jnp.asarray([1.0, 0.0, 1.0, 1.0]))
    scanned, svars = assert_scan_matches(model, variables, tokens, capture, interventions=iv)
    _, state = scanned.apply(svars, tokens, mutable=["aux_loss"])
    assert state["aux_loss"]["blocks"]["mlp"]["load_balancing"][0].shape == (2,)


# -- KAN feed-forward (mlp_type="kan") ---------------------------------------------------------


def test_kan_mlp_matches_numpy_chebyshev():
    model, variables, tokens = tiny(n_layers=1, mlp_type="kan", kan_basis="chebyshev", d_mlp=8)
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.*")
    p = nn.meta.unbox(variables)["params"]["blocks_0"]["mlp"]

    def kan(x, coef):  # Chebyshev KAN edge sum: T_n(tanh x) = cos(n arccos(tanh x))
        n = np.arange(coef.shape[-1])
        basis = np.cos(n * np.arccos(np.tanh(x))[..., None])  # [..., d_in, n_basis]
        return np.einsum("...in,ijn->...j", basis, np.asarray(coef, np.float64))

    x = np.asarray(cache["blocks.0.ln2.hook_normalized"], np.float64)
    hidden = kan(x, p["kan_in"]["coef_chebyshev"])
    assert_close(cache["blocks.0.mlp.kan_in.hook_post"], hidden, rtol=2e-4, atol_rel=2e-5)
    assert_close(cache["blocks.0.hook_mlp_out"], kan(hidden, p["kan_out"]["coef_chebyshev"]),
                 rtol=2e-4, atol_rel=2e-5)
    assert cache["blocks.0.mlp.kan_in.hook_edge"].shape == (3, 10, 32, 8)


@pytest.mark.slow
def test_kan_mlp_bspline_scanned_equals_unrolled():
    model = ji.models.build("gpt2_small", n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=8,
                            d_vocab=20, n_ctx=8, mlp_type="kan")
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, 20)
    variables = model.init(jax.random.key(0), tokens)
    assert "kan_grid" in variables
    assert_scan_matches(model, variables, tokens,
                        ("blocks.*.mlp.kan_in.hook_post", "blocks.*.hook_mlp_out"))
    with pytest.raises(ValueError, match="KAN basis 'spline'"):
        ji.models.config("gpt2_small", mlp_type="kan", kan_basis="spline")
