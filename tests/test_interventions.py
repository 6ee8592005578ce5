"""Every intervention kind against an independent computation, and the run-API invariants."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from tests.helpers import numpy_transformer
from tests.helpers.tiny_models import assert_close, tiny, tokens_like

MODEL, VARIABLES, TOKENS = tiny()
CFG = MODEL.config
B, N = TOKENS.shape
D = CFG.d_model
CORRUPT = tokens_like(TOKENS, seed=11, d_vocab=CFG.d_vocab)
VEC = jax.random.normal(jax.random.key(5), (D,))


def layout(scan: bool):
    """(model, variables): the test model unrolled, or the same weights stacked for nn.scan."""
    if not scan:
        return MODEL, VARIABLES
    model = ji.models.build("gpt2_small", **{**dataclasses.asdict(CFG), "scan_layers": True})
    return model, ji.models.stack_layers(VARIABLES)


def corrupt_cache(site):
    return ji.run(MODEL, VARIABLES, CORRUPT, capture=[site])[1][site]


def _tanh_scaled(x, p):
    return jnp.tanh(x) * p["gain"]


def _qr_project_out(x, dirs):
    q, _ = np.linalg.qr(np.asarray(dirs, np.float64).T)
    return x - (x @ q) @ q.T


def _cases():
    """(id, interventions, NumPy hooks applying the same change to the reference model)."""
    key = next(k for k in map(jax.random.key, range(100))  # a permutation that moves rows
               if (np.asarray(jax.random.permutation(k, B)) != np.arange(B)).all())
    perm = np.asarray(jax.random.permutation(key, B))
    neuron_mask = np.arange(CFG.d_mlp) % 3 == 0
    head_vec = np.asarray(jax.random.normal(jax.random.key(6), (CFG.n_heads, CFG.d_head)))
    dirs = np.asarray(jax.random.normal(jax.random.key(8), (2, D)))
    mean_value = np.asarray(jax.random.normal(jax.random.key(10), (N, D)))
    source_v = np.asarray(corrupt_cache("blocks.0.attn.hook_v"), np.float64)

    def at(idx, fn):
        def hook(x):
            x = x.copy()
            x[idx] = fn(x)[idx] if callable(fn) else fn
            return x
        return hook

    vec = np.asarray(VEC, np.float64)
    all_ = slice(None)
    return [
        ("add_positions", [ji.Add("blocks.0.hook_resid_post", VEC, scale=2.5, positions=[1, 3])],
         {"blocks.0.hook_resid_post": at((all_, [1, 3]), lambda x: x + 2.5 * vec)}),
        ("add_negative_position", [ji.Add("blocks.1.hook_resid_mid", VEC, positions=[-1])],
         {"blocks.1.hook_resid_mid": at((all_, N - 1), lambda x: x + vec)}),
        ("add_per_head_vector", [ji.Add("blocks.1.attn.hook_z", head_vec, heads=[0, 2])],
         {"blocks.1.attn.hook_z": at((all_, all_, [0, 2]), lambda x: x + head_vec)}),
        ("scale_pattern_head", [ji.Scale("blocks.0.attn.hook_pattern", 0.5, heads=[1])],
         {"blocks.0.attn.hook_pattern": at((all_, 1), lambda x: 0.5 * x)}),
        ("scale_head_mask_positions",
         [ji.Scale("blocks.1.attn.hook_q", 3.0, heads=np.array([True, False, False, True]),
                   positions=[2])],
         {"blocks.1.attn.hook_q": at((all_, 2, [0, 3]), lambda x: 3.0 * x)}),
        ("scale_glob_all_layers", [ji.Scale("blocks.*.attn.hook_z", 0.0, heads=[3])],
         {f"blocks.{i}.attn.hook_z": at((all_, all_, 3), 0.0) for i in range(2)}),
        ("clamp_neurons", [ji.Clamp("blocks.0.mlp.hook_post", 3.0, mask=neuron_mask)],
         {"blocks.0.mlp.hook_post": at((Ellipsis, neuron_mask), 3.0)}),
        ("ablate_zero_head", [ji.Ablate("blocks.1.attn.hook_z", heads=[2])],
         {"blocks.1.attn.hook_z": at((all_, all_, 2), 0.0)}),
        ("ablate_batch_mean", [ji.Ablate("blocks.1.hook_resid_mid", how="mean", positions=[0])],
         {"blocks.1.hook_resid_mid": at((all_, 0), lambda x: np.broadcast_to(
             x.mean(0, keepdims=True), x.shape))}),
        ("ablate_given_mean", [ji.Ablate("blocks.0.hook_attn_out", how="mean", value=mean_value)],
         {"blocks.0.hook_attn_out": lambda x: np.broadcast_to(mean_value, x.shape)}),
        ("ablate_resample", [ji.Ablate("blocks.0.hook_mlp_out", how="resample", key=key)],
         {"blocks.0.hook_mlp_out": lambda x: x[perm]}),
        ("patch_head", [ji.Patch("blocks.0.attn.hook_v", source_v, heads=[3])],
         {"blocks.0.attn.hook_v": at((all_, all_, 3), lambda x: source_v)}),
        ("project_out", [ji.ProjectOut("blocks.1.hook_resid_pre", dirs)],
         {"blocks.1.hook_resid_pre": lambda x: _qr_project_out(x, dirs)}),
        ("apply_fn", [ji.Apply("blocks.0.ln2.hook_normalized", _tanh_scaled,
                               params={"gain": jnp.float32(1.7)}, positions=[0, 1])],
         {"blocks.0.ln2.hook_normalized": at((all_, [0, 1]), lambda x: np.tanh(x) * 1.7)}),
        ("compose_in_order", [ji.Add("blocks.0.hook_resid_post", VEC),
                              ji.Scale("blocks.0.hook_resid_post", -2.0)],
         {"blocks.0.hook_resid_post": lambda x: (x + vec) * -2.0}),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_intervention_matches_reference(case, scan):
    _, interventions, hooks = case
    model, variables = layout(scan)
    logits, _ = jax.jit(lambda v, ivs: ji.run(model, v, TOKENS, interventions=ivs))(
        variables, interventions)
    want, _ = numpy_transformer.forward(CFG, VARIABLES, TOKENS, hooks=hooks)
    clean = MODEL.apply(VARIABLES, TOKENS)
    assert np.abs(want - np.asarray(clean)).max() > 1e-3, "the intervention should matter"
    np.testing.assert_allclose(logits, want, rtol=2e-4, atol=2e-4)


def test_zero_ablating_a_head_equals_hand_computation_from_hook_z_and_W_O():
    h, layer = 2, 1
    site = f"blocks.{layer}.attn.hook_z"
    _, clean = ji.run(MODEL, VARIABLES, TOKENS, capture=[site])
    _, ablated = ji.run(MODEL, VARIABLES, TOKENS, capture=[f"blocks.{layer}.hook_attn_out"],
                        interventions=[ji.Ablate(site, heads=[h])])
    attn = nn.meta.unbox(VARIABLES)["params"][f"blocks_{layer}"]["attn"]
    z = np.asarray(clean[site], np.float64)  # [batch, pos, head, d_head]
    keep = [i for i in range(CFG.n_heads) if i != h]
    by_hand = np.einsum("bphd,hdm->bpm", z[:, :, keep], np.asarray(attn["W_O"])[keep]) \
        + np.asarray(attn["b_O"])
    np.testing.assert_allclose(ablated[f"blocks.{layer}.hook_attn_out"], by_hand,
                               rtol=1e-5, atol=1e-5)


def test_patching_resid_pre_from_clean_run_reproduces_clean_logits():
    clean_logits, clean = ji.run(MODEL, VARIABLES, TOKENS, capture=["blocks.0.hook_resid_pre"])
    corrupt_logits = MODEL.apply(VARIABLES, CORRUPT)
    assert np.abs(clean_logits - corrupt_logits).max() > 0.1
    patched, _ = ji.run(MODEL, VARIABLES, CORRUPT,
                        interventions=[ji.Patch("blocks.0.hook_resid_pre",
                                                clean["blocks.0.hook_resid_pre"])])
    np.testing.assert_allclose(patched, clean_logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scan", [False, True])
def test_clamping_a_site_to_its_own_value_changes_nothing(scan):
    model, variables = layout(scan)
    out, cache = ji.run(model, variables, TOKENS, capture="*")
    for site in ("blocks.0.hook_resid_mid", "blocks.1.attn.hook_pattern", "blocks.1.mlp.hook_pre"):
        again, cache2 = ji.run(model, variables, TOKENS, capture="*",
                               interventions=[ji.Clamp(site, cache[site])])
        np.testing.assert_array_equal(again, out)
        for name in cache:
            np.testing.assert_array_equal(cache2[name], cache[name], err_msg=name)


def test_intervention_at_layer_1_leaves_layer_0_unchanged():
    _, clean = ji.run(MODEL, VARIABLES, TOKENS, capture="*")
    _, steered = ji.run(MODEL, VARIABLES, TOKENS, capture="*",
                        interventions=[ji.Add("blocks.1.hook_resid_pre", VEC, scale=5.0)])
    for name in clean:
        if name.startswith(("hook_", "blocks.0.")):
            np.testing.assert_array_equal(steered[name], clean[name], err_msg=name)
        else:  # everything downstream of the steered site moves
            assert np.abs(steered[name] - clean[name]).max() > 1e-4, name


@pytest.mark.parametrize("scan", [False, True])
def test_vmap_over_stacked_interventions_equals_loop(scan):
    model, variables = layout(scan)
    vecs = jax.random.normal(jax.random.key(12), (5, D))
    scales = jnp.linspace(-4.0, 4.0, 5)
    positions = jnp.arange(5)[:, None]  # one position per sweep element
    ivs = [ji.Add("blocks.0.hook_resid_post", v, scale=s, positions=p)
           for v, s, p in zip(vecs, scales, positions, strict=True)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *ivs)

    def f(iv):
        return ji.run(model, variables, TOKENS, capture=["blocks.1.hook_resid_mid"],
                      interventions=[iv])

    out, cache = jax.jit(jax.vmap(f))(stacked)
    for i, iv in enumerate(ivs):
        loop_out, loop_cache = f(iv)
        assert_close(out[i], loop_out)
        assert_close(cache["blocks.1.hook_resid_mid"][i], loop_cache["blocks.1.hook_resid_mid"])


def test_grad_wrt_add_scale_matches_finite_difference():
    target = 7

    def metric(scale):
        iv = ji.Add("blocks.0.hook_resid_mid", VEC, scale=scale, positions=[4])
        logits, _ = ji.run(MODEL, VARIABLES, TOKENS, interventions=[iv])
        return jax.nn.log_softmax(logits[:, -1])[:, target].mean()

    s0, eps = 1.5, 1e-2
    grad = jax.grad(metric)(jnp.float32(s0))
    fd = (metric(jnp.float32(s0 + eps)) - metric(jnp.float32(s0 - eps))) / (2 * eps)
    assert abs(float(grad)) > 1e-3
    np.testing.assert_allclose(float(grad), float(fd), rtol=1e-3)

    # The same metric differentiated in float64 NumPy terms: d/ds via the reference at s0 ± eps.
    def ref_metric(s):
        hooks = {"blocks.0.hook_resid_mid": lambda x: np.concatenate(
            [x[:, :4], x[:, 4:5] + s * np.asarray(VEC, np.float64), x[:, 5:]], axis=1)}
        lg = numpy_transformer.forward(CFG, VARIABLES, TOKENS, hooks=hooks)[0][:, -1]
        lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
        return (lg[:, target] - lse).mean()

    fd64 = (ref_metric(s0 + 1e-4) - ref_metric(s0 - 1e-4)) / 2e-4
    np.testing.assert_allclose(float(grad), fd64, rtol=1e-3)


def test_grad_flows_to_vector_and_apply_params():
    def metric(vec, gain):
        ivs = [ji.Add("blocks.1.hook_resid_pre", vec),
               ji.Apply("blocks.1.mlp.hook_pre", _tanh_scaled, params={"gain": gain})]
        return ji.run(MODEL, VARIABLES, TOKENS, interventions=ivs)[0].std()

    g_vec, g_gain = jax.grad(metric, argnums=(0, 1))(VEC, jnp.float32(1.0))
    assert g_vec.shape == (D,) and np.abs(g_vec).max() > 0 and abs(float(g_gain)) > 0
    e = jnp.zeros(D).at[3].set(1e-2)
    fd = (metric(VEC + e, 1.0) - metric(VEC - e, 1.0)) / 2e-2
    np.testing.assert_allclose(g_vec[3], fd, rtol=1e-2, atol=1e-4)


def test_scanned_and_unrolled_give_same_effects_for_a_mix_of_interventions():
    scanned, svars = layout(scan=True)
    for _, ivs, _ in CASES:
        a, ca = ji.run(MODEL, VARIABLES, TOKENS, capture="blocks.*.hook_resid_post",
                       interventions=ivs)
        b, cb = ji.run(scanned, svars, TOKENS, capture="blocks.*.hook_resid_post",
                       interventions=ivs)
        assert_close(a, b)
        for k in ca:
            assert_close(ca[k], cb[k], err_msg=k)


def test_interventions_are_pytrees_with_static_site():
    iv = ji.Add("blocks.0.hook_resid_post", VEC, scale=2.0, positions=[1])
    leaves, treedef = jax.tree.flatten(iv)
    assert len(leaves) == 3  # vector, scale, position index; the site name is static
    doubled = jax.tree.map(lambda x: x * 2, iv)
    assert doubled.site == iv.site and float(doubled.scale) == 4.0
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert rebuilt.site == iv.site and np.array_equal(rebuilt.vector, iv.vector)
