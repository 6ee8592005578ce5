"""MAXIM multi-axis gMLP block stack + classifier against a NumPy float64 forward written from the
equations of Tu et al. 2022 and google-research/maxim `maxim/models/maxim.py`
(`ResidualSplitHeadMultiAxisGmlpLayer`, `GridGmlpLayer` / `GridGatingUnit`, `BlockGmlpLayer` /
`BlockGatingUnit`, `RDCAB` without `CALayer`), with the window partitions written independently as
index loops; branch ablations through `jaxinterp.run`, sites, scan == unrolled, jit / vmap, the
preset's parameter count, and input errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.layers.vision import count_params
from jaxinterp.models.maxim import GmlpBranch, Maxim, MaximConfig, partition, unpartition
from tests.helpers.tiny_models import assert_close, randomize

# 12x12 images, patch 2 -> a 6x6 token grid. Local: block_size 3 -> 4 windows of 3x3 = 9
# positions (mixed). Global: grid_size 3 -> 9 windows of 2x2 (mixed across the 9). Distinct
# factors (input 3, grid 4, block 2) give distinct widths: d_branch 9, d_gate 18 (global) and
# 9 (local).
TINY = dict(image_size=12, in_channels=2, num_classes=5, patch_size=2, n_layers=2, d_model=6,
            d_mlp=10, block_size=3, grid_size=3, input_proj_factor=3, grid_gmlp_factor=4,
            block_gmlp_factor=2, init_range=0.3)
IMAGES = jax.random.normal(jax.random.key(1), (3, 12, 12, 2))


def build(**overrides):
    model = Maxim(MaximConfig(**{**TINY, **overrides}))
    return model, randomize(model.init(jax.random.key(0), IMAGES))


def params_of(variables):
    unstacked = ji.models.unstack_layers(variables)["params"]
    return jax.tree.map(lambda a: np.asarray(a, np.float64), unstacked)


# ------------------------------------------------------------------ NumPy reference
def gelu(x):  # Flax nn.gelu default: the tanh approximation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    xhat = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return xhat * p["scale"] + p["bias"]


def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def np_partition(x, fh, fw):
    """Pixel (i, j) -> window (i // fh) * (w // fw) + j // fw, position (i % fh) * fw + j % fw."""
    b, h, w, c = x.shape
    out = np.zeros((b, (h // fh) * (w // fw), fh * fw, c))
    for i in range(h):
        for j in range(w):
            out[:, (i // fh) * (w // fw) + j // fw, (i % fh) * fw + j % fw] = x[:, i, j]
    return out


def np_unpartition(x, h, w, fh, fw):
    out = np.zeros((x.shape[0], h, w, x.shape[-1]))
    for i in range(h):
        for j in range(w):
            out[:, i, j] = x[:, (i // fh) * (w // fw) + j // fw, (i % fh) * fw + j % fw]
    return out


def ident(t):
    return t


def np_branch(P, x, kind, size, name, hooks):
    """GridGmlpLayer (kind "global") / BlockGmlpLayer ("local"): the reference's gating unit
    swaps the mixed axis (-3 for the grid, -2 for the block) to the end and applies a Dense."""
    _, h, w, _ = x.shape
    fh, fw = (size, size) if kind == "local" else (h // size, w // size)
    xp = np_partition(x, fh, fw)
    y = gelu(dense(layer_norm(xp, P["LayerNorm"]), P["in_project"]))
    u, v = np.split(y, 2, axis=-1)
    v = layer_norm(v, P["intermediate_layernorm"])
    axis = -3 if kind == "global" else -2
    v = np.swapaxes(dense(np.swapaxes(v, -1, axis), P["Dense_0"]), -1, axis)
    v = hooks.get(f"{name}.hook_gate", ident)(v)
    y = dense(u * (v + 1.0), P["out_project"])
    return hooks.get(f"{name}.hook_out", ident)(np_unpartition(xp + y, h, w, fh, fw))


def numpy_maxim(P, images, c, hooks=None):
    hooks = hooks or {}
    x = np.asarray(images, np.float64)
    b = x.shape[0]
    p, s = c.patch_size, c.image_size // c.patch_size
    wp = P["patch_embed"]["W_patch"].reshape(-1, c.d_model)
    x = np.stack([x[:, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(b, -1) @ wp
                  for i in range(s) for j in range(s)], 1) + P["patch_embed"]["b_patch"]
    x = x.reshape(b, s, s, c.d_model)
    for i in range(c.n_layers):
        B, name = P[f"blocks_{i}"], f"blocks.{i}"
        z = gelu(dense(layer_norm(x, B["LayerNorm_in"]), B["in_project"]))
        u, v = np.split(z, 2, axis=-1)
        u = np_branch(B["global"], u, "global", c.grid_size, f"{name}.global", hooks)
        v = np_branch(B["local"], v, "local", c.block_size, f"{name}.local", hooks)
        x = x + hooks.get(f"{name}.hook_mix_out", ident)(
            dense(np.concatenate([u, v], -1), B["out_project"]))
        m = B["channel_mlp"]
        hidden = gelu(dense(layer_norm(x, m["LayerNorm"]), m["Dense_0"]))
        x = x + dense(hooks.get(f"{name}.channel_mlp.hook_post", ident)(hidden), m["Dense_1"])
    pooled = layer_norm(x, P["final_norm"]).mean((1, 2))
    return pooled @ P["head"]["W_head"] + P["head"]["b_head"]


# ------------------------------------------------------------------ tests
def test_partition_matches_index_loops():
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, 6, 4, 3)))
    for fh, fw in [(3, 2), (2, 4), (1, 1), (6, 4)]:
        got = np.asarray(partition(jnp.asarray(x), fh, fw))
        np.testing.assert_array_equal(got, np_partition(x, fh, fw))
        np.testing.assert_array_equal(np.asarray(unpartition(jnp.asarray(got), 6, 4, fh, fw)), x)
    # window 1 of a 3x2 partition of a 6x4 map: rows 0..2, columns 2..3
    np.testing.assert_array_equal(np.asarray(partition(jnp.asarray(x), 3, 2))[:, 1],
                                  x[:, 0:3, 2:4].reshape(2, 6, 3))


def test_forward_matches_numpy():
    model, variables = build()
    P = params_of(variables)
    got = jax.jit(model.apply)(variables, IMAGES)
    assert got.shape == (3, 5) and got.dtype == jnp.float32
    assert_close(got, numpy_maxim(P, IMAGES, model.config), rtol=2e-4)


@pytest.mark.parametrize("branch", ["global", "local"])
def test_zero_ablating_a_branch_matches_numpy(branch):
    """Zeroing one branch's output (its half of the concatenation) == the NumPy forward with
    that branch's output set to 0; the other branch and the other block are untouched."""
    model, variables = build()
    P = params_of(variables)
    clean = numpy_maxim(P, IMAGES, model.config)
    site = f"blocks.0.{branch}.hook_out"
    got, cache = ji.run(model, variables, IMAGES, capture=[site, "blocks.0.*.hook_out"],
                        interventions=[ji.Ablate(site)])
    want = numpy_maxim(P, IMAGES, model.config, {site: np.zeros_like})
    assert_close(got, want, rtol=2e-4)
    assert np.abs(want - clean).max() > 1e-2  # the branch matters
    assert np.all(np.asarray(cache[site]) == 0)
    other = "local" if branch == "global" else "global"
    assert np.abs(np.asarray(cache[f"blocks.0.{other}.hook_out"])).max() > 0


def test_gate_and_channel_mlp_interventions_match_numpy():
    """Clamp every other gate channel of the global branch to 0 (the gate is then 1 there:
    u * (0 + 1)) and scale the channel MLP's hidden units; both match NumPy."""
    model, variables = build()
    P = params_of(variables)
    gate = "blocks.1.global.hook_gate"
    d_gate = ji.sites(model, IMAGES)[gate].shape[-1]
    mask = np.arange(d_gate) % 2 == 0

    def clamp(t):
        t = t.copy()
        t[..., mask] = 0
        return t

    got = ji.run(model, variables, IMAGES, interventions=[
        ji.Clamp(gate, 0.0, mask=mask), ji.Scale("blocks.0.channel_mlp.hook_post", 0.5)])[0]
    want = numpy_maxim(P, IMAGES, model.config,
                       {gate: clamp, "blocks.0.channel_mlp.hook_post": lambda t: 0.5 * t})
    assert_close(got, want, rtol=2e-4)
    assert np.abs(want - numpy_maxim(P, IMAGES, model.config)).max() > 1e-2


def test_sites_and_shapes():
    model, _ = build()
    s = ji.sites(model, IMAGES)
    assert s["hook_embed"].shape == (3, 6, 6, 6)
    assert s["blocks.1.hook_resid_pre"].shape == (3, 6, 6, 6)
    assert s["blocks.0.hook_in_proj"].shape == (3, 6, 6, 18)        # d_model * 3
    assert s["blocks.0.global.hook_gate"].shape == (3, 9, 4, 18)    # 3x3 grid of 2x2 windows
    assert s["blocks.0.local.hook_gate"].shape == (3, 4, 9, 9)      # 2x2 blocks of 3x3
    assert s["blocks.0.global.hook_out"].shape == (3, 6, 6, 9)
    assert s["blocks.0.hook_mix_out"].shape == (3, 6, 6, 6)
    assert s["blocks.1.channel_mlp.hook_post"].shape == (3, 6, 6, 10)
    assert s["blocks.1.hook_resid_post"].shape == (3, 6, 6, 6)
    assert list(s)[-1] == "hook_pooled" and s["hook_pooled"].shape == (3, 6)
    order = [n for n in s if n.startswith("blocks.0.")]
    assert order.index("blocks.0.hook_resid_pre") < order.index("blocks.0.global.hook_gate") \
        < order.index("blocks.0.local.hook_gate") < order.index("blocks.0.hook_resid_post")


def test_scan_equals_unrolled():
    model, variables = build()
    scanned = Maxim(dataclasses.replace(model.config, scan_layers=True))
    stacked = ji.models.stack_layers(variables)
    assert_close(scanned.apply(stacked, IMAGES), model.apply(variables, IMAGES), rtol=1e-5)
    site = "blocks.1.local.hook_out"
    a, ca = ji.run(model, variables, IMAGES, capture=[site], interventions=[ji.Scale(site, 0.5)])
    b, cb = ji.run(scanned, stacked, IMAGES, capture=[site], interventions=[ji.Scale(site, 0.5)])
    assert_close(b, a, rtol=1e-5)
    assert_close(cb[site], ca[site], rtol=1e-5)


def test_jit_and_vmap():
    model, variables = build()
    stack = jnp.stack([IMAGES, -IMAGES])  # [2, batch, H, W, C]
    batched = jax.jit(jax.vmap(model.apply, in_axes=(None, 0)))(variables, stack)
    assert_close(batched[1], model.apply(variables, -IMAGES), rtol=1e-5)

    site = "blocks.0.global.hook_out"

    @jax.jit
    def sweep(scales):
        return jax.vmap(lambda s: ji.run(model, variables, IMAGES,
                                         interventions=[ji.Scale(site, s)])[0])(scales)

    out = sweep(jnp.array([0.0, 1.0, 2.0]))
    assert_close(out[1], model.apply(variables, IMAGES), rtol=1e-5)
    assert_close(out[0], ji.run(model, variables, IMAGES, interventions=[ji.Ablate(site)])[0],
                 rtol=1e-5)


def linear(d_in: int, d_out: int) -> int:  # flax nn.Dense(d_out) on d_in features: kernel + bias
    return d_in * d_out + d_out


def layer_norm_params(d: int) -> int:  # flax nn.LayerNorm: scale + bias
    return 2 * d


def maxim_block_params(d: int, d_mlp: int, n_grid: int, n_block: int, ipf: int = 2,
                       grid_factor: int = 2, block_factor: int = 2) -> int:
    """One block, from google-research/maxim `maxim/models/maxim.py`:
    ResidualSplitHeadMultiAxisGmlpLayer = LayerNorm_in(d) + in_project Dense(d -> d*ipf)
      + GridGmlpLayer(d_b) + BlockGmlpLayer(d_b) + out_project Dense(2*d_b -> d), d_b = d*ipf/2;
    {Grid,Block}GmlpLayer(c) = LayerNorm(c) + in_project Dense(c -> c*f)
      + {Grid,Block}GatingUnit [intermediate_layernorm(c*f/2) + Dense_0(n -> n), n the mixed
      axis: grid_size² windows / block_size² positions] + out_project Dense(c*f/2 -> c);
    then RDCAB without CALayer: LayerNorm(d) + channel_mixing Dense(d -> d_mlp), Dense(d_mlp -> d).
    """
    d_b = d * ipf // 2

    def branch(c, f, n):
        return (layer_norm_params(c) + linear(c, c * f) + layer_norm_params(c * f // 2)
                + linear(n, n) + linear(c * f // 2, c))

    return (layer_norm_params(d) + linear(d, d * ipf) + branch(d_b, grid_factor, n_grid)
            + branch(d_b, block_factor, n_block) + linear(2 * d_b, d)
            + layer_norm_params(d) + linear(d, d_mlp) + linear(d_mlp, d))


def test_preset_parameter_count():
    """maxim_block_s: patch conv (8x8x3 -> 256) + 8 blocks (28x28 tokens, 7x7 grid and 7x7
    blocks: both gates mix 49) + final LayerNorm + head Dense(256 -> 1000)."""
    model = ji.models.build("maxim_block_s")
    c = model.config
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    n = count_params(jax.eval_shape(model.init, jax.random.key(0), images)["params"])
    want = (8 * 8 * 3 * 256 + 256 + 8 * maxim_block_params(256, 256, 49, 49)
            + layer_norm_params(256) + linear(256, 1000))
    assert (c.side, c.block_size, c.grid_size) == (28, 7, 7)
    assert n == want == 6_684_680


def test_tiny_parameter_count_with_unequal_factors():
    _, variables = build()
    want = (2 * 2 * 2 * 6 + 6 + 2 * maxim_block_params(6, 10, 9, 9, ipf=3, grid_factor=4,
                                                         block_factor=2)
            + layer_norm_params(6) + linear(6, 5))
    assert count_params(variables["params"]) == want


def test_bad_inputs_are_clear_errors():
    model, variables = build()
    with pytest.raises(ValueError, match="configured for images of shape"):
        model.apply(variables, jnp.zeros((1, 12, 12, 3)))
    with pytest.raises(ValueError, match="block_size=4 must divide the token grid side 6"):
        MaximConfig(**{**TINY, "block_size": 4})
    with pytest.raises(ValueError, match="grid_size=5 must divide the token grid side 6"):
        MaximConfig(**{**TINY, "grid_size": 5})
    with pytest.raises(ValueError, match="patch_size=5"):
        MaximConfig(**{**TINY, "patch_size": 5})
    with pytest.raises(ValueError, match="d_mlp must be a positive int"):
        MaximConfig(**{**TINY, "d_mlp": 0})
    with pytest.raises(ValueError, match="must be even"):
        MaximConfig(**{**TINY, "d_model": 5, "input_proj_factor": 1})
    with pytest.raises(ValueError, match="not a dtype"):
        MaximConfig(**{**TINY, "dtype": "float33"})
    x = jnp.zeros((1, 6, 6, 4))
    with pytest.raises(ValueError, match="block_size=4 must divide the feature map size 6x6"):
        GmlpBranch("local", 4).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="unknown branch kind 'row'"):
        GmlpBranch("row", 3).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="unknown model preset"):
        ji.models.build("maxim_blok_s")
