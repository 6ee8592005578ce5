"""Sparse autoencoders (SAEs) and transcoders: ReLU + L1, TopK and JumpReLU.

An SAE writes an activation `x [..., d_in]` as a sparse, non-negative combination of learned
directions (the rows of `W_dec`) and reconstructs it:

    pre   = (x - b_dec) W_enc + b_enc            [..., d_sae]   (transcoder: x W_enc + b_enc)
    acts  = σ(pre)                               [..., d_sae]   (site `hook_sae_acts`)
    recon = acts W_dec + b_dec                   [..., d_out]   (site `hook_sae_recon`)

An SAE reconstructs its own input (`d_out = d_in`); a transcoder (Dunefsky, Chlenski & Nanda
2024, "Transcoders find interpretable LLM feature circuits") reads the MLP's input
(`blocks.{i}.ln2.hook_normalized`) and predicts the MLP's output (`blocks.{i}.hook_mlp_out`),
so it replaces the MLP by a sparse, wide ReLU layer. Its input is not centred by `b_dec`.

The activation σ and the sparsity penalty define the architecture:

  relu:     σ = ReLU, loss = ||y - ŷ||² + l1_coeff Σ_s acts_s ||W_dec[s]|| (Bricken et al. 2023,
            "Towards Monosemanticity"; the L1 weighted by decoder norms of Anthropic's April
            2024 update, which equals the plain L1 while decoder rows are kept at unit norm).
  topk:     σ = ReLU of the k largest pre-activations, all others 0; no penalty; optional AuxK
            loss that reconstructs the residual `y - ŷ` from the top `aux_k` dead latents
            (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").
  jumprelu: σ(z) = z H(z - θ) on z = ReLU(pre), a learned threshold θ = exp(log_threshold) per
            latent; loss = ||y - ŷ||² + l0_coeff Σ_s H(z_s - θ_s) (Rajamanoharan et al. 2024,
            "Jumping ahead: improving reconstruction fidelity with JumpReLU sparse
            autoencoders"). H has zero gradient almost everywhere; θ receives the paper's
            straight-through pseudo-gradient with a rectangle kernel of width `bandwidth`:
            ∂JumpReLU/∂θ = -(θ/ε) K((z-θ)/ε), ∂H/∂θ = -(1/ε) K((z-θ)/ε), K(u) = 1[|u| < 1/2].

Decoder rows are kept at unit norm during training when `normalize_decoder` (the default, for
all three architectures: Towards Monosemanticity, Gao et al. and Gemma Scope all do so); the
training step removes the gradient component parallel to each row and renormalises after
each update (`jaxinterp.sae.train`).

Sparse TopK step: with `SAEConfig(architecture="topk", sparse_decode=True)` (off by default),
`loss` (and so the training step) computes the top k from the dense encoder matmul but decodes,
and backpropagates through the encoder and decoder, as gathers/scatters of the k active latents
per row (`jaxinterp.sae.sparse`); the values, gradients and updates equal the dense ones up to
float summation order. The `SAE` module itself always decodes densely (its `hook_sae_acts` site
may be edited by an intervention, which a decode from the top-k indices would ignore).

Parameters (logical axes: an SAE is an MLP of width d_sae, so `d_sae` shards like `mlp`):
  W_enc [d_in, d_sae] (embed, mlp), b_enc [d_sae], W_dec [d_sae, d_out] (mlp, embed),
  b_dec [d_out], and for jumprelu log_threshold [d_sae].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxinterp.hooks import site
from jaxinterp.layers.common import param
from jaxinterp.sae import sparse

ARCHITECTURES = ("relu", "topk", "jumprelu")
LATENT_AXIS = {"W_enc": 1, "b_enc": 0, "W_dec": 0, "log_threshold": 0}
"""Which axis of each parameter indexes latents (b_dec has none)."""


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """Hyperparameters of an SAE or transcoder.

    Attributes:
      architecture: "relu", "topk" or "jumprelu" (see the module docstring).
      d_in: width of the input activation.
      d_sae: number of latents.
      d_out: width of the reconstruction; None means `d_in`.
      k: latents kept per input (topk).
      aux_k: latents used by the AuxK loss (topk); 0 disables it.
      aux_coeff: weight of the AuxK loss (Gao et al.: 1/32).
      l1_coeff: weight of the L1 penalty (relu).
      l0_coeff: weight of the L0 penalty (jumprelu).
      bandwidth: width ε of the rectangle kernel of the threshold pseudo-gradient (jumprelu).
      threshold_init: initial threshold θ (jumprelu).
      normalize_decoder: keep decoder rows at unit norm during training.
      sparse_decode: (topk) train with the sparse TopK loss: decode and the backward pass as
        gathers/scatters of the k active latents (`jaxinterp.sae.sparse`); same numbers.
      transcoder: read `site` and predict `out_site` (no `b_dec` centring of the input).
      site: the model site the SAE reads (e.g. `blocks.1.hook_resid_post`); "" if unknown.
      out_site: the site a transcoder predicts (e.g. `blocks.1.hook_mlp_out`).
      model_preset: the model the SAE was trained on, if known (metadata).
    """

    architecture: Literal["relu", "topk", "jumprelu"] = "topk"
    d_in: int = 64
    d_sae: int = 512
    d_out: int | None = None
    k: int = 8
    aux_k: int = 0
    aux_coeff: float = 1.0 / 32
    l1_coeff: float = 1e-3
    l0_coeff: float = 1e-3
    bandwidth: float = 1e-3
    threshold_init: float = 1e-3
    normalize_decoder: bool = True
    sparse_decode: bool = False
    transcoder: bool = False
    site: str = ""
    out_site: str = ""
    model_preset: str = ""

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown SAE architecture {self.architecture!r}; choose from "
                             f"{', '.join(ARCHITECTURES)}")
        for f in ("d_in", "d_sae"):
            v = getattr(self, f)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"SAEConfig.{f} must be a positive int, got {v!r}")
        if self.d_out is not None and (not isinstance(self.d_out, int) or self.d_out <= 0):
            raise ValueError(f"SAEConfig.d_out must be a positive int or None, got {self.d_out!r}")
        if not self.transcoder and self.d_out not in (None, self.d_in):
            raise ValueError(f"an SAE reconstructs its input: d_out={self.d_out} must equal "
                             f"d_in={self.d_in} (or set transcoder=True)")
        if self.out_site and not self.transcoder:
            raise ValueError(f"out_site={self.out_site!r} is for transcoders; set "
                             "transcoder=True or leave out_site empty")
        if self.architecture == "topk":
            if not 0 < self.k <= self.d_sae:
                raise ValueError(f"k={self.k} must be in [1, d_sae={self.d_sae}]")
            if not 0 <= self.aux_k <= self.d_sae:
                raise ValueError(f"aux_k={self.aux_k} must be in [0, d_sae={self.d_sae}]")
        if self.sparse_decode and self.architecture != "topk":
            raise ValueError(f"sparse_decode=True is for the topk architecture, not "
                             f"{self.architecture!r}")
        if self.architecture == "jumprelu" and not (self.bandwidth > 0
                                                    and self.threshold_init > 0):
            raise ValueError(f"bandwidth={self.bandwidth} and threshold_init="
                             f"{self.threshold_init} must be positive")
        for f in ("l1_coeff", "l0_coeff", "aux_coeff"):
            if getattr(self, f) < 0:
                raise ValueError(f"SAEConfig.{f} must be >= 0, got {getattr(self, f)}")

    @property
    def d_output(self) -> int:
        """Width of the reconstruction."""
        return self.d_in if self.d_out is None else self.d_out


@struct.dataclass
class SAEOutput:
    """recon [..., d_out]; acts [..., d_sae] (sparse); pre [..., d_sae] (before σ)."""

    recon: jax.Array
    acts: jax.Array
    pre: jax.Array


class SAE(nn.Module):
    """x [..., d_in] -> SAEOutput(recon [..., d_out], acts [..., d_sae], pre [..., d_sae]).

    Usually x is [batch, d_in] (activations flattened over batch and position); any leading
    axes work, e.g. [batch, pos, d_in] when spliced into a model.
    """

    config: SAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> SAEOutput:
        c = self.config
        if x.shape[-1] != c.d_in:
            raise ValueError(f"SAE input has shape {x.shape}; expected [..., d_in={c.d_in}]")
        f32 = jnp.float32
        w_dec = param(self, "W_dec", functools.partial(_unit_rows, unit=c.normalize_decoder),
                      (c.d_sae, c.d_output), ("mlp", "embed"), f32)
        if c.transcoder:
            enc_init = nn.initializers.lecun_normal()
        else:  # tied initialisation (Gao et al.): the encoder starts as the decoder's transpose
            def enc_init(key, shape, dtype):
                del key
                return jnp.asarray(w_dec.T, dtype).reshape(shape)
        w_enc = param(self, "W_enc", enc_init, (c.d_in, c.d_sae), ("embed", "mlp"), f32)
        b_enc = param(self, "b_enc", nn.initializers.zeros, (c.d_sae,), ("mlp",), f32)
        b_dec = param(self, "b_dec", nn.initializers.zeros, (c.d_output,), ("embed",), f32)
        log_threshold = None
        if c.architecture == "jumprelu":
            log_threshold = param(self, "log_threshold", nn.initializers.constant(
                jnp.log(c.threshold_init)), (c.d_sae,), ("mlp",), f32)

        x = x.astype(f32)
        x_in = x if c.transcoder else x - b_dec
        pre = jnp.einsum("...d,ds->...s", x_in, w_enc) + b_enc  # contract d_in
        acts = activate(pre, c, log_threshold)
        lead = _lead_axes(x.ndim - 1)
        acts = site(self, "hook_sae_acts", acts, (*lead, "d_sae"))
        recon = jnp.einsum("...s,so->...o", acts, w_dec) + b_dec  # contract d_sae
        recon = site(self, "hook_sae_recon", recon, (*lead, "d_out"))
        return SAEOutput(recon=recon, acts=acts, pre=pre)


def activate(pre: jax.Array, config: SAEConfig,
             log_threshold: jax.Array | None = None) -> jax.Array:
    """σ(pre) for the configured architecture: pre [..., d_sae] -> acts [..., d_sae]."""
    if config.architecture == "relu":
        return jax.nn.relu(pre)
    if config.architecture == "topk":
        return topk(pre, config.k)
    return jumprelu(jax.nn.relu(pre), jnp.exp(log_threshold), config.bandwidth)


def topk(pre: jax.Array, k: int) -> jax.Array:
    """ReLU of the k largest entries of the last axis, all others 0 (Gao et al. 2024)."""
    values, idx = jax.lax.top_k(pre, k)  # [..., k]
    return jnp.put_along_axis(jnp.zeros_like(pre), idx, jax.nn.relu(values), axis=-1,
                              inplace=False)


def _rectangle(u: jax.Array) -> jax.Array:
    return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


def _sum_to(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sums a broadcast cotangent [..., d] back to `shape` [d]."""
    return g.reshape(-1, *shape).sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(z: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """z H(z - θ). z [..., d_sae], θ [d_sae]; θ's gradient is the KDE pseudo-gradient."""
    return z * (z > threshold)


def _jumprelu_fwd(z, threshold, bandwidth):
    return jumprelu(z, threshold, bandwidth), (z, threshold)


def _jumprelu_bwd(bandwidth, res, g):
    z, threshold = res
    z_grad = (z > threshold) * g
    t_grad = -(threshold / bandwidth) * _rectangle((z - threshold) / bandwidth) * g
    return z_grad, _sum_to(t_grad, threshold.shape)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def step(z: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """H(z - θ) (0/1). No gradient to z; θ gets -(1/ε) K((z-θ)/ε) (the L0 pseudo-gradient)."""
    return (z > threshold).astype(z.dtype)


def _step_fwd(z, threshold, bandwidth):
    return step(z, threshold, bandwidth), (z, threshold)


def _step_bwd(bandwidth, res, g):
    z, threshold = res
    t_grad = -(1.0 / bandwidth) * _rectangle((z - threshold) / bandwidth) * g
    return jnp.zeros_like(z), _sum_to(t_grad, threshold.shape)


step.defvjp(_step_fwd, _step_bwd)


def loss(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, config: SAEConfig,
         dead: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training loss of an SAE (y = x) or transcoder on one batch.

    Args:
      params: the SAE's `params` collection (unboxed).
      x: inputs [batch, d_in].
      y: targets [batch, d_out] (for an SAE, `x` itself).
      config: the SAE's config.
      dead: [d_sae] bool, latents counted as dead (for the AuxK loss); None means none.

    Returns:
      (loss, metrics): `mse` (mean over the batch of ||y - ŷ||², summed over d_out),
      `sparsity` (the penalty term, weighted), `aux` (AuxK, weighted), `l0` (mean active
      latents per input), `explained_variance`, `fired` [d_sae] bool (latents non-zero on
      some row, for dead-latent tracking), `per_example_mse` [batch] and, except with
      `sparse_decode`, `acts` [batch, d_sae].
    """
    if config.sparse_decode:
        return _sparse_topk_loss(params, x, y, config, dead)
    out = SAE(config).apply({"params": params}, x)
    err = jnp.sum(jnp.square(y - out.recon), axis=-1)  # [batch]
    mse = jnp.mean(err)
    total_var = jnp.sum(jnp.square(y - jnp.mean(y, axis=0)))
    zero = jnp.zeros((), jnp.float32)
    sparsity, aux = zero, zero
    if config.architecture == "relu":
        dec_norm = jnp.linalg.norm(params["W_dec"], axis=-1)  # [d_sae]
        sparsity = config.l1_coeff * jnp.mean(jnp.sum(out.acts * dec_norm, axis=-1))
    elif config.architecture == "jumprelu":
        theta = jnp.exp(params["log_threshold"])
        l0_soft = step(jax.nn.relu(out.pre), theta, config.bandwidth)
        sparsity = config.l0_coeff * jnp.mean(jnp.sum(l0_soft, axis=-1))
    elif config.aux_k and dead is not None:
        aux = config.aux_coeff * _aux_k_loss(params, out, y, dead, config.aux_k)
    metrics = dict(mse=mse, sparsity=sparsity, aux=aux,
                   l0=jnp.mean(jnp.sum(out.acts != 0, axis=-1).astype(jnp.float32)),
                   explained_variance=1.0 - jnp.sum(err) / jnp.maximum(total_var, 1e-30),
                   acts=out.acts, fired=jnp.any(out.acts != 0, axis=0), per_example_mse=err)
    return mse + sparsity + aux, metrics


def _sparse_topk_loss(params, x, y, config: SAEConfig, dead):
    """`loss` of a TopK SAE with the sparse kernels: the same values and gradients."""
    w_enc, b_enc, w_dec, b_dec = (params[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    x = x.astype(jnp.float32)
    x_in = x if config.transcoder else x - b_dec
    pre = jax.lax.stop_gradient(jnp.einsum("bd,ds->bs", x_in, w_enc) + b_enc)  # contract d_in
    _, idx = jax.lax.top_k(pre, config.k)  # [batch, k]
    acts = jax.nn.relu(sparse.encode_at(x_in, w_enc, b_enc, idx, pre))  # [batch, k]
    recon = sparse.decode(acts, idx, w_dec) + b_dec  # [batch, d_out]
    err = jnp.sum(jnp.square(y - recon), axis=-1)  # [batch]
    mse = jnp.mean(err)
    total_var = jnp.sum(jnp.square(y - jnp.mean(y, axis=0)))
    aux = jnp.zeros((), jnp.float32)
    if config.aux_k and dead is not None:
        residual = jax.lax.stop_gradient(y - recon)
        _, aux_idx = jax.lax.top_k(jnp.where(dead, pre, -jnp.inf), config.aux_k)
        aux_acts = jnp.where(dead[aux_idx], jax.nn.relu(
            sparse.encode_at(x_in, w_enc, b_enc, aux_idx, pre)), 0.0)  # [batch, aux_k]
        aux_recon = sparse.decode(aux_acts, aux_idx, w_dec)
        nmse = jnp.sum(jnp.square(aux_recon - residual)) / jnp.maximum(
            jnp.sum(jnp.square(residual - residual.mean(0))), 1e-30)
        aux = config.aux_coeff * jnp.where(jnp.any(dead), nmse, 0.0)
    metrics = dict(mse=mse, sparsity=jnp.zeros((), jnp.float32), aux=aux,
                   l0=jnp.mean(jnp.sum(acts != 0, axis=-1).astype(jnp.float32)),
                   explained_variance=1.0 - jnp.sum(err) / jnp.maximum(total_var, 1e-30),
                   fired=sparse.fired(idx, acts, config.d_sae), per_example_mse=err)
    return mse + aux, metrics


def _aux_k_loss(params, out: SAEOutput, y: jax.Array, dead: jax.Array, aux_k: int):
    """Gao et al.'s AuxK: normalised MSE of reconstructing the residual `y - ŷ` (held fixed)
    from the `aux_k` largest pre-activations of dead latents, through the decoder without
    bias. 0 when no latent is dead."""
    residual = jax.lax.stop_gradient(y - out.recon)  # [batch, d_out]
    masked = jnp.where(dead, out.pre, -jnp.inf)
    acts = jnp.where(dead, topk(masked, aux_k), 0.0)
    recon = jnp.einsum("bs,so->bo", acts, params["W_dec"])  # contract d_sae
    nmse = jnp.sum(jnp.square(recon - residual)) / jnp.maximum(
        jnp.sum(jnp.square(residual - residual.mean(0))), 1e-30)
    return jnp.where(jnp.any(dead), nmse, 0.0)


def _unit_rows(key, shape, dtype, unit: bool = True):
    w = jax.random.normal(key, shape, dtype)
    norm = jnp.linalg.norm(w, axis=-1, keepdims=True)
    return w / norm if unit else 0.1 * w / norm


def _lead_axes(n: int) -> tuple[str, ...]:
    names = ("batch", "pos")
    return tuple(names[i] if i < len(names) else f"dim{i}" for i in range(n))
