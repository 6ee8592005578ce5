"""SAE and transcoder forward passes, losses and the JumpReLU pseudo-gradient against NumPy
written from the papers' equations; config errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.sae.model import SAE, SAEConfig, loss
from tests.helpers.numpy_sae import np_forward
from tests.helpers.tiny_models import randomize

D_IN, D_SAE, B = 8, 16, 6


def make(arch="relu", seed=0, **kw):
    """(config, params as NumPy-able arrays with every entry non-trivial, x [B, d_in])."""
    config = SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, k=3, **kw)
    boxed = SAE(config).init(jax.random.key(seed), jnp.zeros((1, D_IN)))
    params = nn.meta.unbox(randomize(boxed, seed=seed + 1, scale=0.3))["params"]
    if arch == "jumprelu":  # thresholds spread over the pre-activations' range
        params["log_threshold"] = jnp.log(jnp.linspace(0.05, 1.0, D_SAE))
    x = jax.random.normal(jax.random.key(seed + 2), (B, D_IN))
    return config, params, x


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_forward_matches_numpy(arch):
    config, params, x = make(arch)
    out = jax.jit(lambda p, x: SAE(config).apply({"params": p}, x))(params, x)
    recon, acts, pre = np_forward(params, x, config)
    np.testing.assert_allclose(out.pre, pre, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.acts, acts, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.recon, recon, rtol=1e-5, atol=1e-5)
    n_active = (acts != 0).sum(-1)
    assert 0 < n_active.mean() < D_SAE  # the test exercises both sides of the nonlinearity
    if arch == "topk":
        assert (n_active <= config.k).all()


def test_transcoder_forward_matches_numpy_formula():
    # Dunefsky et al.: z = ReLU(x W_enc + b_enc), ŷ = z W_dec + b_dec; input not centred.
    config = SAEConfig(architecture="relu", d_in=D_IN, d_sae=D_SAE, d_out=5, transcoder=True)
    boxed = SAE(config).init(jax.random.key(3), jnp.zeros((1, D_IN)))
    p = {k: np.asarray(v, np.float64)
         for k, v in nn.meta.unbox(randomize(boxed, scale=0.3))["params"].items()}
    assert p["W_dec"].shape == (D_SAE, 5) and p["b_dec"].shape == (5,)
    x = np.asarray(jax.random.normal(jax.random.key(4), (B, D_IN)), np.float64)
    want = np.maximum(x @ p["W_enc"] + p["b_enc"], 0) @ p["W_dec"] + p["b_dec"]
    got = SAE(config).apply({"params": p}, jnp.asarray(x, jnp.float32)).recon
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_leading_axes_and_sites_under_run():
    config, params, x = make("topk")
    x3 = x.reshape(2, 3, D_IN)  # [batch, pos, d_in]
    out, cache = ji.run(SAE(config), {"params": params}, x3,
                        capture=["hook_sae_acts", "hook_sae_recon"])
    flat = SAE(config).apply({"params": params}, x)
    np.testing.assert_allclose(cache["hook_sae_acts"], flat.acts.reshape(2, 3, D_SAE), atol=1e-6)
    np.testing.assert_allclose(cache["hook_sae_recon"], out.recon, atol=0)
    np.testing.assert_allclose(out.recon.reshape(B, D_IN), flat.recon, atol=1e-6)


def test_vmap_over_stacked_saes():
    config, p0, x = make("relu", seed=0)
    _, p1, _ = make("relu", seed=10)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), p0, p1)
    both = jax.vmap(lambda p: SAE(config).apply({"params": p}, x).recon)(stacked)
    for i, p in enumerate((p0, p1)):
        np.testing.assert_allclose(both[i], np_forward(p, x, config)[0], rtol=1e-5, atol=1e-5)


def test_initial_decoder_rows_unit_and_encoder_tied():
    config = SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=2)
    p = nn.meta.unbox(SAE(config).init(jax.random.key(0), jnp.zeros((1, D_IN))))["params"]
    np.testing.assert_allclose(np.linalg.norm(p["W_dec"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(p["W_enc"], p["W_dec"].T)


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_loss_matches_numpy(arch):
    config, params, x = make(arch, l1_coeff=0.3, l0_coeff=0.2)
    total, m = loss(params, x, x, config)
    recon, acts, _ = np_forward(params, x, config)
    mse = np.mean(np.sum((np.asarray(x, np.float64) - recon) ** 2, -1))
    if arch == "relu":  # L1 weighted by decoder row norms (Anthropic, April 2024)
        dec_norm = np.linalg.norm(np.asarray(params["W_dec"], np.float64), axis=1)
        penalty = 0.3 * np.mean(np.sum(acts * dec_norm, -1))
    else:  # L0: number of latents above threshold
        penalty = 0.2 * np.mean(np.sum(acts != 0, -1))
    np.testing.assert_allclose(m["mse"], mse, rtol=1e-5)
    np.testing.assert_allclose(total, mse + penalty, rtol=1e-5)


def test_aux_k_loss_matches_numpy():
    config, params, x = make("topk", aux_k=2, aux_coeff=0.5)
    dead = np.arange(D_SAE) % 3 == 0
    _, m = loss(params, x, x, config, jnp.asarray(dead))
    recon, _, pre = np_forward(params, x, config)
    resid = np.asarray(x, np.float64) - recon
    masked = np.where(dead, pre, -np.inf)
    aux_acts = np.zeros_like(pre)
    top = np.argsort(-masked, -1)[:, :2]
    np.put_along_axis(aux_acts, top, np.maximum(np.take_along_axis(masked, top, -1), 0), -1)
    aux_recon = aux_acts @ np.asarray(params["W_dec"], np.float64)
    nmse = np.sum((aux_recon - resid) ** 2) / np.sum((resid - resid.mean(0)) ** 2)
    assert nmse > 0
    np.testing.assert_allclose(m["aux"], 0.5 * nmse, rtol=1e-5)
    _, none_dead = loss(params, x, x, config, jnp.zeros(D_SAE, bool))
    assert float(none_dead["aux"]) == 0.0


def test_jumprelu_threshold_pseudo_gradient():
    """d loss / d log θ from the paper's STE (rectangle kernel K, bandwidth ε), by hand:
    d/dθ_s = Σ_b [∂mse/∂acts_bs (-θ_s/ε) K((z_bs-θ_s)/ε) - (λ/B)(1/ε) K((z_bs-θ_s)/ε)]."""
    eps, lam = 0.4, 0.2
    config, params, x = make("jumprelu", bandwidth=eps, l0_coeff=lam)
    g = jax.grad(lambda p: loss(p, x, x, config)[0])(params)["log_threshold"]
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    recon, _, pre = np_forward(params, x, config)
    z, theta = np.maximum(pre, 0), np.exp(p["log_threshold"])
    d_acts = 2.0 / B * (recon - np.asarray(x, np.float64)) @ p["W_dec"].T  # [B, d_sae]
    kernel = (np.abs((z - theta) / eps) < 0.5).astype(np.float64)
    d_theta = np.sum(d_acts * (-theta / eps) * kernel - lam / B / eps * kernel, axis=0)
    assert (kernel.sum(0) > 0).sum() >= D_SAE // 2  # the kernel is active for most latents
    np.testing.assert_allclose(g, d_theta * theta, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(architecture="gated"), "unknown SAE architecture 'gated'.*relu, topk, jumprelu"),
    (dict(architecture="topk", d_sae=16, k=17), r"k=17 must be in \[1, d_sae=16\]"),
    (dict(architecture="topk", k=0), "k=0"),
    (dict(d_in=8, d_out=4), "d_out=4 must equal d_in=8"),
    (dict(out_site="blocks.0.hook_mlp_out"), "transcoder=True"),
    (dict(d_sae=0), "d_sae must be a positive int"),
    (dict(architecture="jumprelu", bandwidth=0.0), "must be positive"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAEConfig(**kwargs)


def test_wrong_input_width_is_an_error():
    config, params, _ = make("relu")
    with pytest.raises(ValueError, match=r"expected \[..., d_in=8\]"):
        SAE(config).apply({"params": params}, jnp.zeros((2, 9)))
