"""The layer stack (`jaxinterp.layers.stack`): unrolled and scanned layouts of every stacked
family give the same numbers and the same site names, `stack_layers` / `unstack_layers` convert
between them exactly, and the block-boundary activation constraint really lays activations out
on a mesh."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxinterp as ji
from jaxinterp.layers import axes as ax
from jaxinterp.layers.stack import stack, stack_layers, unstack_layers
from jaxinterp.train import sharding as sharding_lib
from tests.helpers.tiny_models import assert_close, randomize

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process

IMAGES = jax.random.normal(jax.random.key(1), (2, 8, 8, 2))
TOKENS = jax.random.randint(jax.random.key(1), (2, 6), 0, 20)

# family -> (preset, tiny overrides, input, stack name in the parameter tree)
FAMILIES = {
    "mixer": ("mixer_s16", dict(num_classes=5, image_size=8, in_channels=2, patch_size=2,
                                n_layers=2, d_model=12, d_mlp_tokens=10, d_mlp=20), IMAGES,
                "MixerBlock"),
    "vit": ("vit_ti16", dict(image_size=8, patch_size=4, in_channels=2, num_classes=5,
                             n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=24), IMAGES,
            "blocks"),
    "deep_mlp": ("deep_mlp_b6_wi512", dict(image_size=8, in_channels=2, num_classes=5,
                                           n_layers=3, d_model=16), IMAGES, "blocks"),
    "transformer": ("gpt2_small", dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=24,
                                       d_vocab=20, n_ctx=8), TOKENS, "blocks"),
}


def _pair(family: str):
    preset, kw, x, prefix = FAMILIES[family]
    unrolled = ji.models.build(preset, **kw)
    scanned = ji.models.build(preset, **kw, scan_layers=True)
    variables = randomize(unrolled.init(jax.random.key(0), x))  # (heads are zero-initialised)
    return unrolled, scanned, variables, x, prefix


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_stack_layers_gives_the_scanned_model_the_same_numbers_and_sites(family):
    unrolled, scanned, variables, x, prefix = _pair(family)
    stacked = stack_layers(variables)
    assert prefix in stacked["params"] and f"{prefix}_0" not in stacked["params"]
    # the scanned model's own init has exactly this layout
    want = jax.eval_shape(scanned.init, jax.random.key(0), x)
    assert (jax.tree.map(lambda a: a.shape, nn.meta.unbox(want))
            == jax.tree.map(lambda a: a.shape, stacked))
    assert_close(scanned.apply(stacked, x), unrolled.apply(variables, x), rtol=1e-5)

    # unstack_layers round-trips exactly
    back = unstack_layers(stacked)
    flat_a = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(variables))[0]
    flat_b = dict(jax.tree_util.tree_flatten_with_path(back)[0])
    assert len(flat_a) == len(flat_b)
    for path, leaf in flat_a:
        np.testing.assert_array_equal(flat_b[path], leaf, err_msg=jax.tree_util.keystr(path))

    # the same site names (and values) from jaxinterp.run captures
    assert list(ji.sites(scanned, x)) == list(ji.sites(unrolled, x))
    out_u, cache_u = ji.run(unrolled, variables, x, capture=["blocks.*"])
    out_s, cache_s = ji.run(scanned, stacked, x, capture=["blocks.*"])
    n = unrolled.config.n_layers
    assert list(cache_s) == list(cache_u)
    assert {f"blocks.{i}.hook_resid_post" for i in range(n)} <= set(cache_u)
    for k in cache_u:
        assert_close(cache_s[k], cache_u[k], rtol=1e-5, err_msg=k)
    assert_close(out_s, out_u, rtol=1e-5)


def test_mixer_blocks_keep_the_vit_jax_names():
    _, scanned, variables, x, _ = _pair("mixer")
    assert {"MixerBlock_0", "MixerBlock_1"} <= set(variables["params"])
    assert "MixerBlock" in jax.eval_shape(scanned.init, jax.random.key(0), x)["params"]
    # an explicit prefix works as well as the detected one
    assert (jax.tree.structure(stack_layers(variables, prefix="MixerBlock"))
            == jax.tree.structure(stack_layers(variables)))


def test_layout_conversion_errors_are_clear():
    with pytest.raises(ValueError, match=re.escape("no layer stack named 'blocks_{i}'")):
        stack_layers({"params": {"embed": {"W_E": jnp.zeros(2)}}})
    with pytest.raises(ValueError, match="no layer stack"):
        unstack_layers({"params": {"MixerBlock_0": {"w": jnp.zeros(2)}}}, prefix="blocks")
    with pytest.raises(ValueError, match=re.escape("not numbered 0..n-1")):
        stack_layers({"blocks_0": {"w": jnp.zeros(2)}, "blocks_2": {"w": jnp.zeros(2)}})
    with pytest.raises(ValueError, match="several layer stacks"):
        stack_layers({"blocks_0": {"w": jnp.zeros(2)}, "MixerBlock_0": {"w": jnp.zeros(2)}})


def test_a_layout_already_converted_is_returned_as_is():
    tree = {"params": {"blocks": {"w": jnp.ones((2, 3))}}}
    assert jax.tree.map(np.shape, stack_layers(tree)) == jax.tree.map(np.shape, tree)
    unrolled = unstack_layers(tree)
    assert jax.tree.map(np.shape, unstack_layers(unrolled)) == jax.tree.map(np.shape, unrolled)


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x, layer):
        w = self.param("w", nn.initializers.ones, (x.shape[-1],))
        return x * w, None


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return stack(_Block, x, n_layers=2, scan=True, axes=ax.RESID_AXES)


def test_block_boundary_constraint_lays_out_activations_on_the_mesh():
    """Inside the trainer's context (`sharding.on_mesh`) the stack's carry is constrained to
    the logical axes of its site axes: batch over (data, fsdp) although the input arrives
    replicated; outside it the constraint is a no-op."""
    mesh = sharding_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = _Net()
    x = jnp.ones((8, 4, 6))
    variables = model.init(jax.random.key(0), x)
    seen = []

    def forward(v, x):
        y = model.apply(v, x)
        jax.debug.inspect_array_sharding(y, callback=seen.append)
        return y

    replicated = NamedSharding(mesh, P())
    fn = jax.jit(sharding_lib.on_mesh(forward, mesh, sharding_lib.DEFAULT_RULES),
                 in_shardings=replicated, out_shardings=replicated)
    out = fn(variables, x)
    # (embed -> fsdp is dropped: the batch already uses fsdp)
    assert seen and seen[-1].is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"))), 3)
    np.testing.assert_array_equal(out, x)

    seen.clear()
    jax.jit(forward, in_shardings=replicated, out_shardings=replicated)(variables, x)
    assert seen and seen[-1].is_fully_replicated


def test_site_axes_map_to_the_trainer_logical_axes():
    assert ax.logical(ax.RESID_AXES) == ("batch", "pos", "embed")
    assert ax.logical(ax.HEAD_AXES) == ("batch", "pos", "heads", "kv")
    assert ax.logical(ax.MAP_AXES) == ("batch", None, None, "embed")
    assert ax.logical(ax.NEURON_AXES) == ("batch", "pos", "mlp")
    rule_names = {name for name, _ in sharding_lib.DEFAULT_RULES}
    assert {"batch", "pos", "embed", "heads", "mlp", "kv", "vocab", "layers"} <= rule_names
    with pytest.raises(ValueError, match="tuple of names"):
        ax.logical("d_model")
