"""Cross-layer transcoders (CLT; Ameisen et al. 2025, "Circuit Tracing: Revealing Computational
Graphs in Language Models", section "Building an Interpretable Replacement Model").

A CLT has one encoder per layer l, reading that layer's MLP input x_l =
`blocks.{l}.ln2.hook_normalized`, and its features write into the MLP outputs of layer l and
every later layer:

    pre[l]  = x_l W_enc[l] + b_enc[l]                              [batch, layer, d_sae]
    a_l     = σ(pre[l])              (TopK per layer, ReLU or JumpReLU: `sae.model.activate`)
    ŷ[m]    = Σ_{l <= m} a_l W_dec[l, m] + b_dec[m]                [batch, layer, d_model]

trained to predict y[m] = `blocks.{m}.hook_mlp_out` with the paper's loss

    L = Σ_m ||ŷ[m] - y[m]||²  +  λ Σ_l Σ_s tanh(c ||W_dec[l, :, s]|| a_{l,s})

where ||W_dec[l, :, s]|| is the norm of feature (l, s)'s decoder vectors into all layers
concatenated (the paper's "tanh" sparsity penalty; λ = `CLTConfig.sparsity_coeff`, c =
`tanh_scale`). Both terms are averaged over the batch. Other penalties (`CLTConfig.penalty`):
"l1", λ Σ ||W_dec[l, :, s]|| a_{l,s} (the decoder-norm-weighted L1 of the per-layer ReLU SAE);
"l0", λ Σ H(z_{l,s} - θ_{l,s}) (JumpReLU's L0 with its pseudo-gradient, Rajamanoharan et al.
2024); "none" (TopK: sparsity by construction). The JumpReLU threshold θ gets the same
straight-through pseudo-gradient as in `jaxinterp.sae.model`.

Causality: W_dec[l, m] for m < l is held at zero: the forward pass multiplies W_dec by the
causal mask, so those blocks get zero gradients (and zero Adam updates), and the train step
masks them again after each update. Decoders are not held at unit norm (the penalty weights
their norms, as in the paper).

Parameters are exactly `jaxinterp.circuits.Transcoders.cross_layer`'s layout (so
`Transcoders.cross_layer(result.params, result.config.sae)` goes into
`jaxinterp.circuits.attribute`): W_enc [layer, d_model, d_sae], b_enc [layer, d_sae],
W_dec [layer, layer, d_sae, d_model] (source, destination), b_dec [layer, d_model], and for
jumprelu log_threshold [layer, d_sae]. Logical axes: `d_sae` like `mlp`, `d_model` like
`embed`, so a CLT shards like the per-layer SAEs.

Training (`fit`) is `jaxinterp.sae.train`'s loop: the same `TrainConfig`, the same activation
stream (one forward pass captures every layer's MLP input and output), b_dec initialised at the
targets' mean, Adam with warmup, checkpoints under `<workdir>/checkpoints` and bit-exact
resuming. Not implemented here: dead-latent resampling (`TrainConfig.resample_every` must be
0), AuxK, the sparse TopK kernels, and the paper's pre-activation loss.

    config = clt.CLTConfig(SAEConfig("topk", d_in=64, d_sae=512, k=8, transcoder=True),
                           n_layers=2)
    result = clt.fit(config, TrainConfig(num_steps=1000), model, variables, token_batches)
    tc = circuits.Transcoders.cross_layer(result.params, config.sae)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinterp.layers.common import param
from jaxinterp.sae.model import SAEConfig, SAEOutput, activate, step
from jaxinterp.sae.train import (
    FitResult,
    SAEState,
    TrainConfig,
    Trainer,
    check_run,
    init_b_dec_mean,
    make_data,
    optimizer,
    train_loop,
)
from jaxinterp.train import sharding as sharding_lib
from jaxinterp.train import state as state_lib

PENALTIES = ("tanh", "l1", "l0", "none")
SITE_IN = "blocks.{layer}.ln2.hook_normalized"
SITE_OUT = "blocks.{layer}.hook_mlp_out"


@dataclasses.dataclass(frozen=True)
class CLTConfig:
    """A cross-layer transcoder.

    Attributes:
      sae: one layer's encoder (`architecture`, `d_in` = d_model, `d_sae` per layer, `k` for
        topk, `bandwidth` / `threshold_init` for jumprelu); `transcoder` must be True; its
        `site`/`out_site`, `normalize_decoder` and penalty weights are not used.
      n_layers: layers of the model (one encoder per layer).
      penalty: "tanh" (the paper's), "l1", "l0" (jumprelu only) or "none"; None: "none" for
        topk, "tanh" otherwise.
      sparsity_coeff: λ, the penalty's weight.
      tanh_scale: c in tanh(c ||W_dec|| a).
    """

    sae: SAEConfig
    n_layers: int
    penalty: Literal["tanh", "l1", "l0", "none"] | None = None
    sparsity_coeff: float = 1e-3
    tanh_scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.sae, SAEConfig):
            raise ValueError(f"CLTConfig.sae must be an SAEConfig, got {type(self.sae)}")
        if not self.sae.transcoder or self.sae.d_output != self.sae.d_in:
            raise ValueError(f"a CLT maps d_model -> d_model: CLTConfig.sae needs "
                             f"transcoder=True and d_out None or d_in (got transcoder="
                             f"{self.sae.transcoder}, d_out={self.sae.d_out})")
        if self.sae.aux_k or self.sae.sparse_decode:
            raise ValueError(f"AuxK and sparse_decode are not implemented for CLTs (aux_k="
                             f"{self.sae.aux_k}, sparse_decode={self.sae.sparse_decode})")
        if not isinstance(self.n_layers, int) or self.n_layers <= 0:
            raise ValueError(f"CLTConfig.n_layers must be a positive int, got "
                             f"{self.n_layers!r}")
        if self.penalty is not None and self.penalty not in PENALTIES:
            raise ValueError(f"unknown CLT penalty {self.penalty!r}; choose from "
                             f"{', '.join(PENALTIES)} (or None for the architecture's default)")
        if self.sparsity_penalty == "l0" and self.sae.architecture != "jumprelu":
            raise ValueError(f"penalty='l0' needs the jumprelu architecture, not "
                             f"{self.sae.architecture!r}")
        if self.sparsity_coeff < 0 or self.tanh_scale <= 0:
            raise ValueError(f"sparsity_coeff={self.sparsity_coeff} must be >= 0 and "
                             f"tanh_scale={self.tanh_scale} > 0")

    @property
    def sparsity_penalty(self) -> str:
        """The penalty in effect ("none" for topk, "tanh" otherwise, unless set)."""
        if self.penalty is not None:
            return self.penalty
        return "none" if self.sae.architecture == "topk" else "tanh"

    @property
    def layer_configs(self) -> list[SAEConfig]:
        """Per layer, the `sae` config with the sites it reads and predicts (for the stream)."""
        return [dataclasses.replace(self.sae, site=SITE_IN.format(layer=i),
                                    out_site=SITE_OUT.format(layer=i))
                for i in range(self.n_layers)]


def causal_mask(n_layers: int) -> jax.Array:
    """[source, destination, 1, 1] float32: 1 where destination >= source."""
    return jnp.triu(jnp.ones((n_layers, n_layers), jnp.float32))[:, :, None, None]


class CLT(nn.Module):
    """x [batch, layer, d_model] -> SAEOutput(recon [batch, layer, d_model], acts and pre
    [batch, layer, d_sae])."""

    config: CLTConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> SAEOutput:
        c, n = self.config.sae, self.config.n_layers
        if x.shape[-2:] != (n, c.d_in):
            raise ValueError(f"CLT input has shape {x.shape}; expected [..., layer={n}, "
                             f"d_model={c.d_in}]")
        f32 = jnp.float32
        w_enc = param(self, "W_enc", _normal(1.0 / math.sqrt(c.d_in)), (n, c.d_in, c.d_sae),
                      ("layers", "embed", "mlp"), f32)
        b_enc = param(self, "b_enc", nn.initializers.zeros, (n, c.d_sae), ("layers", "mlp"), f32)
        # Each (source, destination) decoder row has norm ~ 1/sqrt(layers), so a feature's
        # decoder vectors concatenated over all layers have norm at most ~1.
        w_dec = param(self, "W_dec", _normal(1.0 / math.sqrt(n * c.d_in), causal=True),
                      (n, n, c.d_sae, c.d_in), ("layers", None, "mlp", "embed"), f32)
        b_dec = param(self, "b_dec", nn.initializers.zeros, (n, c.d_in), ("layers", "embed"),
                      f32)
        log_threshold = None
        if c.architecture == "jumprelu":
            log_threshold = param(self, "log_threshold", nn.initializers.constant(
                math.log(c.threshold_init)), (n, c.d_sae), ("layers", "mlp"), f32)
        x = x.astype(f32)
        pre = jnp.einsum("...ld,lds->...ls", x, w_enc) + b_enc  # contract d_model
        acts = activate(pre, c, log_threshold)  # topk over each layer's d_sae
        w_dec = w_dec * causal_mask(n)
        recon = jnp.einsum("...ls,lmsd->...md", acts, w_dec) + b_dec  # contract source, d_sae
        return SAEOutput(recon=recon, acts=acts, pre=pre)


def _normal(std: float, causal: bool = False):
    def init(key, shape, dtype):
        w = std * jax.random.normal(key, shape, dtype)
        return w * causal_mask(shape[0]).astype(dtype) if causal else w
    return init


def decoder_norms(params: Mapping[str, jax.Array]) -> jax.Array:
    """||W_dec[l, :, s]|| [layer, d_sae]: each feature's decoder vectors into every layer
    (destinations m >= l; the others are zero) concatenated."""
    w = params["W_dec"] * causal_mask(params["W_dec"].shape[0])
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=(1, 3)))


def loss(params: Mapping[str, jax.Array], x: jax.Array, y: jax.Array, config: CLTConfig
         ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The CLT's training loss on x, y [batch, layer, d_model] (see the module docstring).

    Returns:
      (loss, metrics): `mse` (batch mean of Σ_m ||y[m] - ŷ[m]||²) and `mse_per_layer`
      [layer] (its terms), `sparsity` (the weighted
      penalty, batch mean), `l0` (active features per layer per row, mean over rows and
      layers), `l0_per_layer` [layer], `explained_variance` (over every layer),
      `explained_variance_per_layer` [layer], `fired` [layer, d_sae] bool, `acts`.
    """
    out = CLT(config).apply({"params": params}, x)
    err = jnp.sum(jnp.square(y - out.recon), axis=-1)  # [batch, layer]
    mse = jnp.mean(jnp.sum(err, -1))
    var = jnp.sum(jnp.square(y - jnp.mean(y, axis=0)), axis=(0, 2))  # [layer]
    lam, kind = config.sparsity_coeff, config.sparsity_penalty
    if kind == "tanh":
        sparsity = jnp.sum(jnp.tanh(config.tanh_scale * decoder_norms(params) * out.acts), (1, 2))
    elif kind == "l1":
        sparsity = jnp.sum(decoder_norms(params) * out.acts, (1, 2))
    elif kind == "l0":
        theta = jnp.exp(params["log_threshold"])
        sparsity = jnp.sum(step(jax.nn.relu(out.pre), theta, config.sae.bandwidth), (1, 2))
    else:
        sparsity = jnp.zeros(x.shape[0], jnp.float32)
    sparsity = lam * jnp.mean(sparsity)
    active = (out.acts != 0).astype(jnp.float32)
    l0_layer = jnp.mean(jnp.sum(active, -1), 0)
    ev_layer = 1.0 - jnp.sum(err, 0) / jnp.maximum(var, 1e-30)
    metrics = dict(mse=mse, mse_per_layer=jnp.mean(err, 0), sparsity=sparsity,
                   l0=jnp.mean(l0_layer), l0_per_layer=l0_layer,
                   explained_variance=1.0 - jnp.sum(err) / jnp.maximum(jnp.sum(var), 1e-30),
                   explained_variance_per_layer=ev_layer,
                   fired=jnp.any(out.acts != 0, axis=0), acts=out.acts)
    return mse + sparsity, metrics


def evaluate(params: Mapping[str, jax.Array], config: CLTConfig, x: jax.Array, y: jax.Array
             ) -> dict[str, jax.Array]:
    """`loss`'s metrics on held-out x, y [batch, layer, d_model] (without acts/fired)."""
    _, m = loss(params, x, y, config)
    return {k: v for k, v in m.items() if k not in ("acts", "fired")}


def create_state(config: CLTConfig, tx: optax.GradientTransformation, mesh: Mesh,
                 rules=sharding_lib.DEFAULT_RULES, seed: int = 0) -> tuple[SAEState, SAEState]:
    """A fresh `SAEState` (steps_since_fired [layer, d_sae]) placed on `mesh` by `rules`,
    and its shardings."""
    example = np.zeros((1, config.n_layers, config.sae.d_in), np.float32)
    train_state, sh = state_lib.create(CLT(config), tx, example, seed, mesh, rules)
    replicated = NamedSharding(mesh, P())
    counts = jax.device_put(jnp.zeros((config.n_layers, config.sae.d_sae), jnp.int32),
                            replicated)
    state = SAEState(train_state.step, train_state.params, train_state.opt_state,
                     train_state.rng, counts)
    return state, SAEState(sh.step, sh.params, sh.opt_state, sh.rng, replicated)


def train_step(state: SAEState, x: jax.Array, y: jax.Array, *, config: CLTConfig,
               tx: optax.GradientTransformation, lr_schedule: optax.Schedule,
               dead_after_steps: int) -> tuple[SAEState, dict[str, jax.Array]]:
    """One Adam update on x, y [batch, layer, d_model]; W_dec's m < l blocks stay zero."""
    (total, m), grads = jax.value_and_grad(loss, has_aux=True)(state.params, x, y, config)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = {**params, "W_dec": params["W_dec"] * causal_mask(config.n_layers)}
    counts = jnp.where(m["fired"], 0, state.steps_since_fired + 1)
    metrics = {k: v for k, v in m.items() if k not in ("acts", "fired")}
    metrics.update(loss=total, learning_rate=lr_schedule(state.step),
                   dead_fraction=jnp.mean((counts >= dead_after_steps).astype(jnp.float32)))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         steps_since_fired=counts), metrics


def select(config: CLTConfig):
    """`{site: rows [batch, d_model]} -> (x, y) [batch, layer, d_model]`: every layer's MLP
    input and output stacked on a layer axis."""
    def fn(batch):
        return (jnp.stack([batch[SITE_IN.format(layer=i)] for i in range(config.n_layers)], 1),
                jnp.stack([batch[SITE_OUT.format(layer=i)] for i in range(config.n_layers)], 1))
    return fn


@dataclasses.dataclass
class CLTFitResult(FitResult):
    """`FitResult` with the `config` trained."""

    config: CLTConfig | None = None


def fit(config: CLTConfig, tc: TrainConfig, model: nn.Module | None = None,
        variables: Any = None, token_batches: Iterable[Any] | None = None, *,
        activations: Iterable[Mapping[str, Any]] | None = None, mesh: Mesh | None = None,
        rules=sharding_lib.DEFAULT_RULES, workdir: str | os.PathLike | None = None,
        verbose: bool = True) -> CLTFitResult:
    """Trains a CLT on every layer's `ln2.hook_normalized` -> `hook_mlp_out` of `model`.

    Arguments as for `jaxinterp.sae.fit` (`activations`: stored `{site: rows}` batches with
    every layer's two sites). One forward pass per token batch captures all 2 x layer sites.

    Raises:
      ValueError: as `jaxinterp.sae.fit`, and for `tc.resample_every > 0` (not implemented).
    """
    if tc.resample_every:
        raise ValueError(f"TrainConfig.resample_every={tc.resample_every}: dead-latent "
                         "resampling is not implemented for CLTs; set it to 0")
    layers = config.layer_configs
    mesh = check_run(layers, tc, mesh)
    data, _ = make_data(layers, tc, model, variables, token_batches, activations, mesh=mesh,
                        rules=rules, workdir=workdir, seed=tc.seed, pairs=False)
    tx, lr_schedule = optimizer(tc)
    state, shardings = create_state(config, tx, mesh, rules, tc.seed)
    rows = sharding_lib.batch_sharding(mesh)
    step_fn = jax.jit(functools.partial(train_step, config=config, tx=tx,
                                        lr_schedule=lr_schedule,
                                        dead_after_steps=tc.dead_after_steps),
                      in_shardings=(shardings, rows, rows),
                      out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=(0,))
    trainer = Trainer(
        state=state, shardings=shardings, step=step_fn, resample=None,
        init_b_dec=jax.jit(init_b_dec_mean, in_shardings=(shardings, rows),
                           out_shardings=shardings),
        select=jax.jit(select(config), out_shardings=(rows, rows)))
    saved_config = {"clt": dataclasses.asdict(config),
                    "train": dataclasses.asdict(tc)}

    def shown(last: list[dict[str, Any]]) -> dict[str, float]:
        return {k: float(last[0][k]) for k in ("mse", "explained_variance", "l0",
                                               "dead_fraction")}

    (state,), (history,), start = train_loop(
        [trainer], data, tc, workdir=workdir, saved_config=saved_config, single=True,
        what="this CLTConfig (n_layers, d_model, d_sae, architecture)", shown=shown,
        verbose=verbose)
    history = [{k: (v if k == "step" else np.asarray(v, np.float64).tolist())
                for k, v in row.items()} for row in history]
    return CLTFitResult(params=state.params, state=state, history=history, start_step=start,
                        config=config)
