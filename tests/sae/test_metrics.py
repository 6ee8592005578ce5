"""SAE metrics against NumPy: L0, explained variance, dead fraction, and loss recovered against
a hand computation on the NumPy reference transformer."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.sae import metrics
from jaxinterp.sae.model import SAE, SAEConfig
from tests.helpers import numpy_transformer
from tests.helpers.numpy_sae import np_forward
from tests.helpers.tiny_models import randomize, tiny

MODEL, VARIABLES, TOKENS = tiny()
D = MODEL.config.d_model


def sae_params(config, seed=0, scale=0.3):
    boxed = SAE(config).init(jax.random.key(seed), jnp.zeros((1, config.d_in)))
    return nn.meta.unbox(randomize(boxed, seed=seed + 1, scale=scale))["params"]


def np_ce(logits, tokens):
    """Mean next-token cross-entropy of logits[:, :-1] against tokens[:, 1:] (float64)."""
    z = np.asarray(logits, np.float64)[:, :-1]
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    t = np.asarray(tokens)[:, 1:]
    return -np.take_along_axis(logp, t[..., None], -1).mean()


def test_l0_explained_variance_dead_fraction():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(5, 7)) * (rng.random((5, 7)) < 0.4)
    np.testing.assert_allclose(metrics.l0(acts), (acts != 0).sum(1).mean(), rtol=1e-6)
    x, recon = rng.normal(size=(20, 6)) + 3.0, rng.normal(size=(20, 6))
    want = 1 - ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    np.testing.assert_allclose(metrics.explained_variance(x, recon), want, rtol=1e-5)
    np.testing.assert_allclose(metrics.explained_variance(x, x), 1.0)
    np.testing.assert_allclose(metrics.explained_variance(x, np.broadcast_to(x.mean(0), x.shape)),
                               0.0, atol=1e-6)
    counts = np.array([0, 5, 10, 11, 200])
    np.testing.assert_allclose(metrics.dead_fraction(counts, 10), 3 / 5)


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_loss_recovered_matches_hand_computation(arch):
    site = "blocks.1.hook_resid_mid"
    config = SAEConfig(architecture=arch, d_in=D, d_sae=64, k=8, site=site)
    params = sae_params(config)
    got = jax.jit(metrics.loss_recovered, static_argnums=(0, 4))(
        MODEL, VARIABLES, TOKENS, params, config)

    cfg = MODEL.config
    clean = np_ce(numpy_transformer.forward(cfg, VARIABLES, TOKENS)[0], TOKENS)
    spliced = np_ce(numpy_transformer.forward(cfg, VARIABLES, TOKENS, hooks={
        site: lambda a: np_forward(params, a, config)[0]})[0], TOKENS)
    zero = np_ce(numpy_transformer.forward(cfg, VARIABLES, TOKENS, hooks={
        site: lambda a: np.zeros_like(a)})[0], TOKENS)
    assert abs(zero - clean) > 0.05 and abs(spliced - clean) > 1e-3  # a meaningful ratio
    np.testing.assert_allclose(got["ce_clean"], clean, rtol=1e-4)
    np.testing.assert_allclose(got["ce_spliced"], spliced, rtol=1e-4)
    np.testing.assert_allclose(got["ce_zero_ablation"], zero, rtol=1e-4)
    np.testing.assert_allclose(got["loss_recovered"], (zero - spliced) / (zero - clean),
                               rtol=1e-3)


def test_transcoder_loss_recovered_matches_hand_computation():
    config = SAEConfig(architecture="relu", d_in=D, d_sae=64, transcoder=True,
                       site="blocks.0.ln2.hook_normalized", out_site="blocks.0.hook_mlp_out")
    params = sae_params(config, seed=3)
    got = metrics.loss_recovered(MODEL, VARIABLES, TOKENS, params, config)
    seen = {}

    def keep(a):
        seen["ln2"] = a
        return a

    cfg = MODEL.config
    spliced = np_ce(numpy_transformer.forward(cfg, VARIABLES, TOKENS, hooks={
        config.site: keep,
        config.out_site: lambda a: np_forward(params, seen["ln2"], config)[0]})[0], TOKENS)
    clean = np_ce(numpy_transformer.forward(cfg, VARIABLES, TOKENS)[0], TOKENS)
    zero = np_ce(numpy_transformer.forward(cfg, VARIABLES, TOKENS, hooks={
        config.out_site: lambda a: np.zeros_like(a)})[0], TOKENS)
    np.testing.assert_allclose(got["ce_spliced"], spliced, rtol=1e-4)
    np.testing.assert_allclose(got["loss_recovered"], (zero - spliced) / (zero - clean),
                               rtol=1e-3)


def test_perfect_reconstruction_recovers_all_the_loss():
    # An SAE whose decoder inverts its encoder on every input: W_enc = [I, -I], W_dec = [I; -I]
    # (ReLU(x) - ReLU(-x) = x), so the spliced run is the clean run and the ratio is 1.
    site = "blocks.0.hook_resid_post"
    config = SAEConfig(architecture="relu", d_in=D, d_sae=2 * D, site=site,
                       normalize_decoder=False)
    eye = np.eye(D, dtype=np.float32)
    params = {"W_enc": np.concatenate([eye, -eye], 1), "b_enc": np.zeros(2 * D, np.float32),
              "W_dec": np.concatenate([eye, -eye], 0), "b_dec": np.zeros(D, np.float32)}
    got = metrics.loss_recovered(MODEL, VARIABLES, TOKENS, params, config)
    np.testing.assert_allclose(got["loss_recovered"], 1.0, rtol=1e-5)


def test_splice_sees_no_model_sites_and_keeps_the_site_shape():
    site = "blocks.0.attn.hook_z"  # [batch, pos, head, d_head]: the SAE reads heads concatenated
    c = MODEL.config
    config = SAEConfig(architecture="topk", d_in=c.n_heads * c.d_head, d_sae=64, k=4, site=site)
    params = sae_params(config)
    fn = functools.partial(metrics.splice, config=config)
    _, cache = ji.run(MODEL, VARIABLES, TOKENS, capture=[site],
                      interventions=[ji.Apply(site, fn, params)])
    clean = ji.run(MODEL, VARIABLES, TOKENS, capture=[site])[1][site]
    want = np_forward(params, np.asarray(clean).reshape(*clean.shape[:2], -1), config)[0]
    np.testing.assert_allclose(cache[site], want.reshape(clean.shape), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="matches no site"):  # the SAE's sites stay its own
        ji.run(MODEL, VARIABLES, TOKENS, capture=["hook_sae_acts"],
               interventions=[ji.Apply(site, fn, params)])


def test_loss_recovered_errors():
    config = SAEConfig(architecture="relu", d_in=D, d_sae=16)
    with pytest.raises(ValueError, match=r"needs SAEConfig\.site"):
        metrics.loss_recovered(MODEL, VARIABLES, TOKENS, sae_params(config), config)
    wrong = dataclasses.replace(config, site="blocks.0.hook_resid_pots")
    with pytest.raises(ValueError, match="matches no site"):
        metrics.loss_recovered(MODEL, VARIABLES, TOKENS, sae_params(config), wrong)
