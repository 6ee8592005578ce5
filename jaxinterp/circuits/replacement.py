"""The local replacement model of one prompt (Ameisen et al. 2025, "Circuit Tracing: Revealing
Computational Graphs in Language Models"; circuit-tracer's `ReplacementModel`).

The base transformer runs on the prompt with every MLP replaced by its transcoder plus an error
node, and with the attention patterns and the normalisation scales frozen at their values on
the prompt. Each layer's MLP output is then

    mlp_out[l] = sum_s a_s W_dec[l, s] + b_dec[l] + error[l]      error = true mlp_out - recon

(with a cross-layer transcoder, CLT, features of every layer l <= m write into layer m's
output: mlp_out[m] = sum_{l <= m} sum_s a_{l,s} W_dec[l, m, s] + b_dec[m] + error[m])

and, with patterns and scales frozen, every path from a write into the residual stream (a
token embedding, a feature's decoder row, an error) to a later read (a transcoder's input
`blocks.{l}.ln2.hook_normalized`, or `ln_final.hook_normalized` for the logits) is linear. The
forward values are the real model's, exactly: freezing only removes the gradient paths through
the patterns, the scales (`hook_scale`) and the MLPs (`hook_mlp_out` is held fixed and a zero
probe is added to it, so the gradient with respect to the probe is the gradient with respect
to that layer's MLP output through everything downstream that is linear).

Frozen means replaced by the prompt's values (`Prompt.frozen`: every `hook_pattern` and
`hook_scale`, patched in), so `reads(probes)` is exactly affine in `probes` everywhere, not only
near zero; `jaxinterp.circuits.attribution` takes its VJPs to get direct effects and evaluates
it with every write removed to get the bias terms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.interventions import Apply, Patch
from jaxinterp.run import run
from jaxinterp.sae.model import SAEConfig, activate

FEATURE_INPUT = "blocks.{layer}.ln2.hook_normalized"
FEATURE_OUTPUT = "blocks.{layer}.hook_mlp_out"
FINAL_READ = "ln_final.hook_normalized"


@dataclasses.dataclass(frozen=True)
class Transcoders:
    """Per-layer transcoders (PLT) or a cross-layer transcoder (CLT), stacked by layer.

    `params[name]`: W_enc [layer, d_model, d_sae], b_enc [layer, d_sae], b_dec [layer, d_model],
    log_threshold [layer, d_sae] for JumpReLU, and W_dec [layer, d_sae, d_model] (PLT: layer l's
    features write into layer l's MLP output) or [layer, layer, d_sae, d_model] (CLT: W_dec[l, m]
    from layer l's features into layer m's output, zero for m < l). `config` is the shared
    `SAEConfig` of one layer's encoder. Build with `stack` (PLT) or `cross_layer` (CLT).
    """

    params: dict[str, Any]
    config: SAEConfig

    @classmethod
    def cross_layer(cls, params: dict[str, Any], config: SAEConfig) -> Transcoders:
        """A CLT from stacked params (W_dec [layer, layer, d_sae, d_model]; its entries for
        m < l are zeroed: a feature writes only into its own and later layers)."""
        w_dec = jnp.asarray(params["W_dec"], jnp.float32)
        n = w_dec.shape[0]
        if w_dec.ndim != 4 or w_dec.shape[1] != n:
            raise ValueError(f"a CLT's W_dec is [layer, layer, d_sae, d_model]; got "
                             f"{w_dec.shape}")
        causal = jnp.triu(jnp.ones((n, n), jnp.float32))[:, :, None, None]  # [src, dst]
        stacked = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
        return cls({**stacked, "W_dec": w_dec * causal},
                   dataclasses.replace(config, site="", out_site=""))

    @property
    def is_cross_layer(self) -> bool:
        return self.params["W_dec"].ndim == 4

    @classmethod
    def stack(cls, params: Sequence[dict[str, Any]], configs: Sequence[SAEConfig]
              ) -> Transcoders:
        """From per-layer transcoders (`jaxinterp.sae` params and configs, layer 0 first)
        reading `blocks.{l}.ln2.hook_normalized` and writing `blocks.{l}.hook_mlp_out`; they
        must share architecture and widths."""
        if not params or len(params) != len(configs):
            raise ValueError(f"need one transcoder per layer: {len(params)} params, "
                             f"{len(configs)} configs")
        for layer, c in enumerate(configs):
            want = (FEATURE_INPUT.format(layer=layer), FEATURE_OUTPUT.format(layer=layer))
            if not c.transcoder or (c.site, c.out_site) != want:
                raise ValueError(f"transcoder {layer} reads {c.site!r} and writes "
                                 f"{c.out_site!r} (transcoder={c.transcoder}); the replacement "
                                 f"model needs transcoder=True, site={want[0]!r}, "
                                 f"out_site={want[1]!r}")
            shape = (c.architecture, c.d_in, c.d_sae, c.d_output, c.k)
            first = configs[0]
            if shape != (first.architecture, first.d_in, first.d_sae, first.d_output, first.k):
                raise ValueError(f"transcoder {layer} is {shape[:3]}, transcoder 0 "
                                 f"{(first.architecture, first.d_in, first.d_sae)}: the layers "
                                 "must share architecture and widths")
        stacked = {k: jnp.stack([jnp.asarray(p[k], jnp.float32) for p in params])
                   for k in params[0]}
        return cls(stacked, dataclasses.replace(configs[0], site="", out_site=""))

    @property
    def n_layers(self) -> int:
        return int(self.params["W_enc"].shape[0])

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [layer, pos, d_model] -> (pre, acts) [layer, pos, d_sae], each layer its own
        transcoder (`pre = x W_enc + b_enc`, `acts = σ(pre)`)."""
        p = self.params
        pre = jnp.einsum("lpd,lds->lps", x, p["W_enc"]) + p["b_enc"][:, None]  # contract d_model
        thresholds = p.get("log_threshold")
        if thresholds is None:
            return pre, activate(pre, self.config)
        return pre, jax.vmap(lambda z, t: activate(z, self.config, t))(pre, thresholds)

    def decode(self, acts: jax.Array) -> jax.Array:
        """acts [layer, pos, d_sae] -> recon [layer, pos, d_model] (CLT: layer m's output sums
        the writes of layers l <= m)."""
        p = self.params
        if self.is_cross_layer:  # contract source layer and d_sae
            return jnp.einsum("lps,lmsd->mpd", acts, p["W_dec"]) + p["b_dec"][:, None]
        return jnp.einsum("lps,lsd->lpd", acts, p["W_dec"]) + p["b_dec"][:, None]  # contract d_sae

    def decoder_rows(self, layers: np.ndarray, features: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The writes of features (layer, feature) [n]: `(rows [n, k, d_model], dst [n, k])`,
        row j going into layer dst[:, j]'s output (PLT: k = 1, its own layer; CLT: k = layers)."""
        w = np.asarray(self.params["W_dec"])
        if self.is_cross_layer:
            dst = np.broadcast_to(np.arange(w.shape[0]), (len(layers), w.shape[0]))
            return w[layers, :, features], np.ascontiguousarray(dst)
        return w[layers, features][:, None], np.asarray(layers)[:, None]


@dataclasses.dataclass(frozen=True)
class Prompt:
    """The replacement model's values on one prompt (NumPy, float32).

    tokens [pos]; logits [pos, vocab] (the base model's, exact); acts [layer, pos, d_sae]
    (feature activations of the transcoders on the real MLP inputs); errors [layer, pos,
    d_model] (true MLP output minus the transcoder's reconstruction); embeds [pos, d_model]
    (`hook_embed`: the token nodes' writes); frozen: the values the replacement model holds
    fixed, `{site: [1, ...]}`: every `hook_pattern` and `hook_scale`, `hook_embed` and each
    layer's `hook_mlp_out`.
    """

    tokens: np.ndarray
    logits: np.ndarray
    acts: np.ndarray
    errors: np.ndarray
    embeds: np.ndarray
    frozen: dict[str, np.ndarray]


def check_model(model: nn.Module, transcoders: Transcoders) -> None:
    """The replacement model needs a transformer with MLPs and normalisation (the transcoders
    read `ln2.hook_normalized`), one transcoder per layer of matching width."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "n_layers"):
        raise ValueError(f"attribution graphs need a jaxinterp transformer, got {type(model)}")
    if getattr(cfg, "attn_only", False) or not cfg.normalization_type:
        raise ValueError("attribution graphs need MLP blocks with a normalisation before them "
                         f"(attn_only={cfg.attn_only}, normalization_type="
                         f"{cfg.normalization_type!r})")
    if transcoders.n_layers != cfg.n_layers:
        raise ValueError(f"{transcoders.n_layers} transcoders for a model of {cfg.n_layers} "
                         "layers: one per layer")
    if transcoders.config.d_in != cfg.d_model or transcoders.config.d_output != cfg.d_model:
        raise ValueError(f"transcoders map {transcoders.config.d_in} -> "
                         f"{transcoders.config.d_output}; the model's d_model is {cfg.d_model}")


def prompt_values(model: nn.Module, variables: Any, transcoders: Transcoders,
                  tokens: jax.Array) -> Prompt:
    """Runs the base model on `tokens` [pos] and the transcoders on its MLP inputs."""
    n_layers = transcoders.n_layers
    capture = (*FROZEN_SITES, "blocks.*.ln2.hook_normalized")

    @jax.jit
    def values(variables, tokens):
        logits, cache = run(model, variables, tokens[None], capture=capture)
        x = jnp.stack([cache[FEATURE_INPUT.format(layer=i)][0] for i in range(n_layers)])
        out = jnp.stack([cache[FEATURE_OUTPUT.format(layer=i)][0] for i in range(n_layers)])
        _, acts = transcoders.encode(x)
        frozen = {k: v for k, v in cache.items() if "ln2.hook_normalized" not in k}
        return logits[0], acts, out - transcoders.decode(acts), frozen

    logits, acts, errors, frozen = jax.device_get(values(variables, jnp.asarray(tokens)))
    return Prompt(np.asarray(tokens), logits, acts, errors, frozen["hook_embed"][0], frozen)


FROZEN_SITES = ("hook_embed", "blocks.*.attn.hook_pattern", "*hook_scale",
                "blocks.*.hook_mlp_out")


def _plus(x: jax.Array, value_and_probe: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The site's prompt value (held: no gradient to the model) plus a probe [pos, d]."""
    del x
    value, probe = value_and_probe
    return jax.lax.stop_gradient(value) + probe[None]


def reads(model: nn.Module, variables: Any, tokens: jax.Array, frozen: dict[str, jax.Array],
          probes: dict[str, jax.Array]) -> jax.Array:
    """The frozen replacement model's reads: [layer + 1, pos, d_model] (each layer's MLP input
    `ln2.hook_normalized`, then `ln_final.hook_normalized`), exactly affine in `probes`:
    `{"mlp": [layer, pos, d_model], "embed": [pos, d_model]}` added to each layer's MLP output
    and to the token embeddings, held at their prompt values (`frozen`, `Prompt.frozen`), as
    are the attention patterns and norm scales. At zero probes the values are the base
    model's on the prompt."""
    n_layers = probes["mlp"].shape[0]
    held = [n for n in frozen if n.endswith(("hook_pattern", "hook_scale"))]
    interventions = [Patch(n, jax.lax.stop_gradient(frozen[n])) for n in held]
    interventions.append(Apply("hook_embed", _plus, (frozen["hook_embed"][0], probes["embed"])))
    interventions += [Apply(FEATURE_OUTPUT.format(layer=i), _plus,
                            (frozen[FEATURE_OUTPUT.format(layer=i)][0], probes["mlp"][i]))
                      for i in range(n_layers)]
    capture = ("blocks.*.ln2.hook_normalized", FINAL_READ)
    _, cache = run(model, variables, tokens[None], capture=capture, interventions=interventions)
    return jnp.stack([cache[FEATURE_INPUT.format(layer=i)][0] for i in range(n_layers)]
                     + [cache[FINAL_READ][0]])
