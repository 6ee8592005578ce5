"""The run contract: equality with model.apply, capture, site discovery, jit/vmap/grad, mesh."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinterp as ji
from tests.helpers.tiny_models import tiny

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process


@pytest.mark.parametrize("scan", [False, True])
def test_run_without_interventions_is_apply_bit_for_bit(scan):
    model, variables, tokens = tiny(scan_layers=scan)
    expected = model.apply(variables, tokens)
    out, cache = ji.run(model, variables, tokens)
    assert cache == {}
    np.testing.assert_array_equal(out, expected)
    out, cache = ji.run(model, variables, tokens, capture=["blocks.*.hook_resid_post"])
    np.testing.assert_array_equal(out, expected)
    assert list(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]

    jit_apply = jax.jit(model.apply)(variables, tokens)
    jit_run = jax.jit(lambda v, t: ji.run(model, v, t)[0])(variables, tokens)
    np.testing.assert_array_equal(jit_run, jit_apply)


def test_captured_values_are_the_activations():
    """ln_final.hook_normalized is LayerNorm (by hand) of the last block's captured output."""
    model, variables, tokens = tiny(unembed_bias=True, tie_embeddings=False)
    _, cache = ji.run(model, variables, tokens, capture=["blocks.1.hook_resid_post",
                                                         "ln_final.hook_normalized"])
    x = np.asarray(cache["blocks.1.hook_resid_post"], np.float64)
    ln = nn.meta.unbox(variables)["params"]["ln_final"]
    w, b = np.asarray(ln["w"]), np.asarray(ln["b"])
    x = x - x.mean(-1, keepdims=True)
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(cache["ln_final.hook_normalized"], normed, rtol=1e-4, atol=1e-5)


def test_sites_lists_every_transformerlens_site_with_shapes():
    model, _, tokens = tiny()
    names = ji.sites(model, tokens)
    b, n = tokens.shape
    c = model.config
    expected = {
        "hook_embed": (b, n, c.d_model), "hook_pos_embed": (b, n, c.d_model),
        "ln_final.hook_normalized": (b, n, c.d_model), "ln_final.hook_scale": (b, n, 1),
    }
    for i in range(c.n_layers):
        for s in ("ln1.hook_scale", "ln2.hook_scale"):  # 1 / sqrt(var + eps), as in TL
            expected[f"blocks.{i}.{s}"] = (b, n, 1)
        for s in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out",
                  "hook_resid_post", "ln1.hook_normalized", "ln2.hook_normalized"):
            expected[f"blocks.{i}.{s}"] = (b, n, c.d_model)
        for s in ("hook_q", "hook_k", "hook_v", "hook_z"):
            expected[f"blocks.{i}.attn.{s}"] = (b, n, c.n_heads, c.d_head)
        for s in ("hook_attn_scores", "hook_pattern"):
            expected[f"blocks.{i}.attn.{s}"] = (b, c.n_heads, n, n)
        for s in ("hook_pre", "hook_post"):
            expected[f"blocks.{i}.mlp.{s}"] = (b, n, c.d_mlp)
    assert {k: v.shape for k, v in names.items()} == expected
    assert all(isinstance(v, jax.ShapeDtypeStruct) for v in names.values())
    # Execution order: embeddings, then block 0 in order, ..., then the final norm.
    order = list(names)
    assert order[0] == "hook_embed" and order[-1] == "ln_final.hook_normalized"
    assert order.index("blocks.0.hook_resid_post") < order.index("blocks.1.hook_resid_pre")


def test_glob_capture_and_exact_names():
    model, variables, tokens = tiny()
    _, cache = ji.run(model, variables, tokens,
                      capture=["blocks.*.attn.hook_pattern", "hook_embed"])
    assert list(cache) == ["hook_embed", "blocks.0.attn.hook_pattern",
                           "blocks.1.attn.hook_pattern"]
    np.testing.assert_allclose(cache["blocks.1.attn.hook_pattern"].sum(-1), 1.0, rtol=1e-6)
    # Causal: no attention to later positions.
    assert float(jnp.triu(cache["blocks.0.attn.hook_pattern"], k=1).max()) == 0.0


def test_jit_with_interventions_as_arguments_and_no_retrace_for_new_values():
    model, variables, tokens = tiny()
    traces = []

    @jax.jit
    def f(v, iv):
        traces.append(1)
        return ji.run(model, v, tokens, interventions=[iv])[0]

    vec = jnp.ones((model.config.d_model,))
    a = f(variables, ji.Add("blocks.0.hook_resid_post", vec, scale=1.0))
    b = f(variables, ji.Add("blocks.0.hook_resid_post", vec, scale=2.0))
    eager = ji.run(model, variables, tokens,
                   interventions=[ji.Add("blocks.0.hook_resid_post", vec, scale=2.0)])[0]
    assert len(traces) == 1
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_sharded_batch_on_8_device_mesh_equals_single_device(axis_type):
    assert jax.device_count() == 8, "conftest should give tests 8 CPU devices"
    model, variables, _ = tiny()
    tokens = jax.random.randint(jax.random.key(3), (8, 10), 0, model.config.d_vocab)
    vec = jax.random.normal(jax.random.key(4), (model.config.d_model,))
    ivs = [ji.Add("blocks.0.hook_resid_post", vec, scale=3.0),
           ji.Ablate("blocks.1.attn.hook_z", heads=[1]),
           ji.Scale("blocks.1.mlp.hook_post", 0.5, positions=[2, 3])]
    capture = ("blocks.*.attn.hook_pattern",)

    def f(v, t):
        return ji.run(model, v, t, capture=capture, interventions=ivs)

    single_out, single_cache = jax.jit(f)(variables, tokens)
    mesh = jax.make_mesh((8,), ("data",), (getattr(jax.sharding.AxisType, axis_type),))
    sharded_tokens = jax.device_put(tokens, NamedSharding(mesh, P("data")))
    replicated = jax.device_put(variables, NamedSharding(mesh, P()))
    out, cache = jax.jit(f)(replicated, sharded_tokens)
    assert out.sharding.spec[0] == "data"  # the batch stayed sharded
    # Per-device kernels see a batch of 1 and may accumulate in another order: ~1e-6 apart.
    np.testing.assert_allclose(out, single_out, rtol=1e-5, atol=1e-5)
    for k in single_cache:
        np.testing.assert_allclose(cache[k], single_cache[k], rtol=1e-5, atol=1e-5)


def test_sites_function_and_hooks_module_have_one_name_each():
    # `ji.sites` is the function (site discovery); models declare sites through the module
    # `jaxinterp.hooks` (hooks.site, hooks.layer). Neither name means the other.
    import types

    from jaxinterp import hooks, sites

    assert sites is ji.sites is hooks.sites and isinstance(sites, types.FunctionType)
    assert callable(hooks.site) and callable(hooks.layer)
