"""Cross-layer transcoders: the loss and its gradient against a float64 NumPy computation of the
paper's equation, training (the loss falls, the decoder stays causal, resuming is exact), and a
trained CLT's attribution graph (complete: every node's inputs sum to its value)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import circuits
from jaxinterp.sae import clt
from jaxinterp.sae.model import SAEConfig
from jaxinterp.sae.train import TrainConfig
from jaxinterp.train import sharding

L, D, S, B = 3, 4, 5, 6


def _one_device():
    """Training on one device compiles faster than on the test session's 8."""
    return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


def _config(arch, penalty, lam=0.3, c=0.7, bandwidth=0.5):
    sae = SAEConfig(arch, d_in=D, d_sae=S, k=2, transcoder=True, bandwidth=bandwidth,
                    threshold_init=0.3)
    return clt.CLTConfig(sae, n_layers=L, penalty=penalty, sparsity_coeff=lam, tanh_scale=c)


def _params(arch, seed=0):
    r = np.random.default_rng(seed)
    p = {"W_enc": r.normal(size=(L, D, S)), "b_enc": 0.3 * r.normal(size=(L, S)),
         "W_dec": 0.5 * r.normal(size=(L, L, S, D)), "b_dec": 0.2 * r.normal(size=(L, D))}
    if arch == "jumprelu":
        p["log_threshold"] = np.log(r.uniform(0.2, 0.6, size=(L, S)))
    return p


def _data(seed=1):
    r = np.random.default_rng(seed)
    return r.normal(size=(B, L, D)), r.normal(size=(B, L, D))


def _np_acts(p, x, config):
    """Per layer l, (pre, z = ReLU(pre), a) [B, S] from layer l's own encoder."""
    out = []
    for layer in range(L):
        pre = x[:, layer] @ p["W_enc"][layer] + p["b_enc"][layer]
        z = np.maximum(pre, 0)
        if config.sae.architecture == "topk":
            a = np.zeros_like(pre)
            top = np.argsort(-pre, axis=-1)[:, :config.sae.k]
            np.put_along_axis(a, top, np.take_along_axis(z, top, -1), -1)
        elif config.sae.architecture == "jumprelu":
            a = z * (z > np.exp(p["log_threshold"][layer]))
        else:
            a = z
        out.append((pre, z, a))
    return out


def np_loss(p, x, y, config):
    """Σ_m ||y_m - Σ_{l<=m} a_l W_dec[l, m] - b_dec[m]||² + λ Σ_l Σ_s penalty, batch means, in
    float64, from the equation (W_dec's m < l blocks are never read)."""
    acts = _np_acts(p, x, config)
    mse = 0.0
    for m in range(L):
        recon = p["b_dec"][m] + sum(acts[layer][2] @ p["W_dec"][layer, m]
                                    for layer in range(m + 1))
        mse += np.sum((y[:, m] - recon) ** 2) / B
    lam, kind, penalty = config.sparsity_coeff, config.sparsity_penalty, 0.0
    for layer, (_, z, a) in enumerate(acts):
        norm = np.sqrt(sum(np.sum(p["W_dec"][layer, m] ** 2, -1) for m in range(layer, L)))
        if kind == "tanh":
            penalty += np.sum(np.tanh(config.tanh_scale * norm * a)) / B
        elif kind == "l1":
            penalty += np.sum(norm * a) / B
        elif kind == "l0":
            penalty += np.sum(z > np.exp(p["log_threshold"][layer])) / B
    return mse + lam * penalty


def _fd_grad(f, p, name, h=1e-6):
    g = np.zeros_like(p[name])
    for idx in np.ndindex(g.shape):
        up = {**p, name: p[name].copy()}
        down = {**p, name: p[name].copy()}
        up[name][idx] += h
        down[name][idx] -= h
        g[idx] = (f(up) - f(down)) / (2 * h)
    return g


CASES = [("relu", "tanh"), ("relu", "l1"), ("topk", None),
         ("jumprelu", "tanh"), ("jumprelu", "l0")]


@pytest.mark.parametrize("arch,penalty", CASES)
def test_loss_and_gradient_equal_float64_numpy(arch, penalty):
    config = _config(arch, penalty)
    p, (x, y) = _params(arch), _data()
    f32 = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    (got, m), grads = jax.jit(jax.value_and_grad(clt.loss, has_aux=True), static_argnums=3)(
        f32, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), config)
    masked = {**p, "W_dec": p["W_dec"] * np.triu(np.ones((L, L)))[:, :, None, None]}
    want = np_loss(masked, x, y, config)
    assert m["sparsity"] > 0 or config.sparsity_penalty == "none"
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # The continuous parameters: the exact gradient (finite differences of the float64 loss;
    # the activation's jumps are far from these points).
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        want_g = _fd_grad(lambda q: np_loss(q, x, y, config), masked, name)
        np.testing.assert_allclose(np.asarray(grads[name]), want_g, rtol=2e-4, atol=2e-5,
                                   err_msg=name)
    np.testing.assert_array_equal(np.asarray(grads["W_dec"])[1, 0], 0)  # m < l: no gradient
    if arch == "jumprelu":  # the threshold: the kernel pseudo-gradient
        want_t = _np_threshold_grad(masked, x, y, config)
        assert np.abs(want_t).max() > 0.05  # some pre-activations fall inside the kernel
        np.testing.assert_allclose(np.asarray(grads["log_threshold"]), want_t, rtol=1e-4,
                                   atol=1e-6)


def _np_threshold_grad(p, x, y, config):
    """dL/d log θ for JumpReLU: dL/dθ_{l,s} = Σ_b (1/B) [∂L_b/∂a_{b,l,s} (-(θ/ε) K((z-θ)/ε))
    + (l0) λ (-(1/ε) K((z-θ)/ε))], K the rectangle of width 1 (the straight-through
    pseudo-gradient of Rajamanoharan et al. 2024), in float64."""
    acts = _np_acts(p, x, config)
    eps, lam, c = config.sae.bandwidth, config.sparsity_coeff, config.tanh_scale
    out = np.zeros((L, S))
    for layer, (_, z, a) in enumerate(acts):
        theta = np.exp(p["log_threshold"][layer])
        kernel = (np.abs((z - theta) / eps) < 0.5).astype(np.float64)
        d_a = np.zeros((B, S))
        for m in range(layer, L):
            recon = p["b_dec"][m] + sum(acts[j][2] @ p["W_dec"][j, m] for j in range(m + 1))
            d_a += -2 * (y[:, m] - recon) @ p["W_dec"][layer, m].T / B
        norm = np.sqrt(sum(np.sum(p["W_dec"][layer, m] ** 2, -1) for m in range(layer, L)))
        d_theta = np.sum(d_a * -(theta / eps) * kernel, 0)
        if config.sparsity_penalty == "tanh":
            d_theta += np.sum(lam * c * norm / np.cosh(c * norm * a) ** 2 / B
                              * -(theta / eps) * kernel, 0)
        else:
            d_theta += np.sum(lam / B * -(1 / eps) * kernel, 0)
        out[layer] = d_theta * theta
    return out


class _Synthetic:
    """Stored-activation batches `{site: [n, D]}` of a planted CLT (sparse features of each
    layer writing into its own and later layers' outputs), batch i drawn from seed i; its
    position (get_state / set_state) is the batch index."""

    def __init__(self, n=256):
        r = np.random.default_rng(0)
        self.n, self.i = n, 0
        self.enc = r.normal(size=(L, D, 16)) / np.sqrt(D)
        self.dec = r.normal(size=(L, L, 16, D)) * np.triu(np.ones((L, L)))[:, :, None, None]

    def __iter__(self):
        return self

    def __next__(self):
        r = np.random.default_rng(100 + self.i)
        self.i += 1
        x = r.normal(size=(self.n, L, D))
        pre = np.einsum("bld,lds->bls", x, self.enc) - 1.0
        y = np.einsum("bls,lmsd->bmd", np.maximum(pre, 0), self.dec)
        return {**{clt.SITE_IN.format(layer=i): x[:, i] for i in range(L)},
                **{clt.SITE_OUT.format(layer=i): y[:, i] for i in range(L)}}

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = int(json.loads(json.dumps(state))["i"])


def _fit(config, steps, workdir=None):
    tc = TrainConfig(num_steps=steps, batch_size=256, learning_rate=1e-2, warmup_steps=10,
                     log_every=10, checkpoint_every=20)
    return clt.fit(config, tc, activations=_Synthetic(), workdir=workdir, verbose=False,
                   mesh=_one_device())


def test_training_lowers_the_loss_keeps_the_decoder_causal_and_resumes_exactly(tmp_path):
    config = clt.CLTConfig(SAEConfig("jumprelu", d_in=D, d_sae=32, transcoder=True,
                                     bandwidth=0.05, threshold_init=0.05),
                           n_layers=L, sparsity_coeff=1e-3)
    full = _fit(config, 40)
    first, last = full.history[0], full.history[-1]
    assert last["mse"] < 0.6 * first["mse"], (first["mse"], last["mse"])
    assert last["explained_variance"] > first["explained_variance"] + 0.1
    w = np.asarray(full.params["W_dec"])
    assert np.abs(w[np.triu_indices(L)]).min() > 0  # every m >= l block is trained
    for src in range(L):
        for dst in range(src):
            np.testing.assert_array_equal(w[src, dst], 0)
    assert set(full.params) == {"W_enc", "b_enc", "W_dec", "b_dec", "log_threshold"}
    assert full.params["W_enc"].shape == (L, D, 32) and w.shape == (L, L, 32, D)
    # Interrupted at step 20 and rerun: the same parameters, bit for bit.
    _fit(config, 20, workdir=str(tmp_path))
    resumed = _fit(config, 40, workdir=str(tmp_path))
    assert resumed.start_step == 20
    for k, v in full.params.items():
        np.testing.assert_array_equal(np.asarray(resumed.params[k]), np.asarray(v), err_msg=k)


def test_a_trained_clt_gives_a_complete_attribution_graph():
    model = ji.models.build("gpt2_small", n_layers=2, d_model=16, n_heads=2, d_head=8,
                            d_mlp=32, d_vocab=20, n_ctx=8, init_range=0.3)
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (64, 8), 0, 20))
    variables = nn.meta.unbox(model.init(jax.random.key(0), tokens[:1]))
    config = clt.CLTConfig(SAEConfig("topk", d_in=16, d_sae=32, k=4, transcoder=True),
                           n_layers=2)
    batches = (tokens[np.random.default_rng(i).integers(0, 64, 16)] for i in range(10**6))
    result = clt.fit(config, TrainConfig(num_steps=60, batch_size=128, buffer_batches=1,
                                         log_every=20, warmup_steps=5), model, variables,
                     batches, verbose=False, mesh=_one_device())
    assert result.history[-1]["mse"] < result.history[0]["mse"]
    tc = circuits.Transcoders.cross_layer(result.params, config.sae)
    graph = circuits.attribute(model, variables, tc, tokens[0], chunk_size=16)
    assert graph.complete and graph.n_features > 10
    n_logits = len(graph.logit_tokens)
    rows = np.r_[0:graph.n_features, len(graph.values) - n_logits:len(graph.values)]
    np.testing.assert_allclose(graph.adjacency[rows].sum(1) + graph.biases[rows],
                               graph.values[rows], rtol=1e-4, atol=1e-4)
    # Features write into later layers: some layer-0 feature has a direct edge to a layer-1
    # feature through its layer-1 decoder block alone.
    assert np.abs(np.asarray(tc.params["W_dec"][0, 1])).max() > 0


def test_bad_configs_are_clear_errors():
    sae = SAEConfig("topk", d_in=D, d_sae=S, k=2, transcoder=True)
    with pytest.raises(ValueError, match="needs transcoder=True"):
        clt.CLTConfig(SAEConfig("topk", d_in=D, d_sae=S, k=2), n_layers=2)
    with pytest.raises(ValueError, match="unknown CLT penalty 'l2'"):
        clt.CLTConfig(sae, n_layers=2, penalty="l2")
    with pytest.raises(ValueError, match="penalty='l0' needs the jumprelu"):
        clt.CLTConfig(sae, n_layers=2, penalty="l0")
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        clt.CLTConfig(sae, n_layers=0)
    with pytest.raises(ValueError, match="resampling is not implemented for CLTs"):
        clt.fit(clt.CLTConfig(sae, n_layers=L), TrainConfig(resample_every=10),
                activations=_Synthetic())
