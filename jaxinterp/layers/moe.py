"""Top-k mixture-of-experts feed-forward block (Shazeer et al. 2017; Mixtral's router,
Jiang et al. 2024, arXiv:2401.04088), computed densely so every expert is a named site.

Routing (Mixtral convention):
    hook_router_logits  l = x W_router                                     [batch, pos, expert]
    p = softmax(l) over experts; S = the experts_per_token largest p (ties: lower index first)
    hook_router_weights w_e = p_e / sum_{e' in S} p_e'  for e in S, else 0  [batch, pos, expert]
(identical to a softmax over the top-k logits only). Each expert is an MLP with TransformerLens
names and a leading expert axis (dense or GLU-gated, like `jaxinterp.layers.mlp.MLP`):
    hook_pre, hook_pre_linear (gated), hook_post                   [batch, pos, expert, d_mlp]
    hook_expert_out  y_e = post_e W_out[e] + b_out[e]              [batch, pos, expert, d_model]
    out = sum_e w_e y_e                                            [batch, pos, d_model]
Every expert runs on every token (no capacity limits or token dropping): exact and simple at the
scales this library studies, and interventions on an expert's output are just masks:
`ji.Scale("blocks.0.mlp.hook_router_weights", keep[None, None, :])` removes an expert's
contribution without re-normalising; adding a large negative number to its router logit
re-routes its tokens to the next-best experts; `ji.Clamp("blocks.0.mlp.hook_expert_out", 0.0,
mask=onehot[:, None])` zeroes an expert's output.

Load balancing. The Switch-Transformer auxiliary loss (Fedus et al. 2021) is sown into the
`"aux_loss"` collection as `load_balancing` (read it with `model.apply(..., mutable=["aux_loss"])`):
    loss = n_experts * sum_e f_e P_e,   f_e = fraction of the batch*pos*k routing assignments
    that go to expert e,   P_e = mean router probability p_e over batch and pos.
It is 1 under perfectly uniform routing (Hugging Face's Mixtral value divided by k). It is not
added to the training loss by this module.

Parameters: W_router [embed, expert]; W_in, W_gate [expert, embed, mlp]; b_in [expert, mlp];
W_out [expert, mlp, embed]; b_out [expert, embed].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.axes import EXPERT_NEURON_AXES, EXPERT_OUT_AXES, ROUTER_AXES
from jaxinterp.layers.common import activation, param

AUX_COLLECTION = "aux_loss"


class MoE(nn.Module):
    """x: [batch, pos, d_model] -> [batch, pos, d_model]."""

    d_mlp: int
    n_experts: int
    experts_per_token: int
    act_fn: str = "gelu_new"
    gated: bool = False
    use_bias: bool = True
    init_range: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_moe_options(self.n_experts, self.experts_per_token)
        d_model = x.shape[-1]
        e, k, dm = self.n_experts, self.experts_per_token, self.d_mlp
        act = activation(self.act_fn)
        init = nn.initializers.normal(self.init_range)
        zeros = nn.initializers.zeros
        pd = self.param_dtype

        w_router = param(self, "W_router", init, (d_model, e), ("embed", "expert"), pd)
        logits = jnp.einsum("bpm,me->bpe", x, w_router.astype(self.dtype))  # contract d_model
        logits = hooks.site(self, "hook_router_logits", logits.astype(jnp.float32), ROUTER_AXES)
        probs = jax.nn.softmax(logits, axis=-1)
        top_p, top_i = jax.lax.top_k(probs, k)  # [batch, pos, k]
        chosen = jax.nn.one_hot(top_i, e, dtype=jnp.float32)  # [batch, pos, k, expert]
        weights = jnp.einsum("bpk,bpke->bpe", top_p / top_p.sum(-1, keepdims=True),
                             chosen)  # scatter the k renormalised weights to their experts
        weights = hooks.site(self, "hook_router_weights", weights, ROUTER_AXES)
        if not self.is_initializing():  # keep `init`'s output to parameters only
            self._sow_load_balancing(probs, chosen.sum(2))

        w_in = param(self, "W_in", init, (e, d_model, dm), ("expert", "embed", "mlp"), pd)
        pre = jnp.einsum("bpm,emn->bpen", x, w_in.astype(self.dtype))  # contract d_model
        if self.use_bias:
            pre = pre + param(self, "b_in", zeros, (e, dm), ("expert", "mlp"), pd)
        pre = pre.astype(self.dtype)
        if self.gated:
            w_gate = param(self, "W_gate", init, (e, d_model, dm), ("expert", "embed", "mlp"), pd)
            gate = jnp.einsum("bpm,emn->bpen", x, w_gate.astype(self.dtype))  # contract d_model
            gate = hooks.site(self, "hook_pre", gate.astype(self.dtype), EXPERT_NEURON_AXES)
            linear = hooks.site(self, "hook_pre_linear", pre, EXPERT_NEURON_AXES)
            post = act(gate) * linear
        else:
            post = act(hooks.site(self, "hook_pre", pre, EXPERT_NEURON_AXES))
        post = hooks.site(self, "hook_post", post.astype(self.dtype), EXPERT_NEURON_AXES)
        w_out = param(self, "W_out", init, (e, dm, d_model), ("expert", "mlp", "embed"), pd)
        y = jnp.einsum("bpen,enm->bpem", post, w_out.astype(self.dtype))  # contract d_mlp
        if self.use_bias:
            y = y + param(self, "b_out", zeros, (e, d_model), ("expert", "embed"), pd)
        y = hooks.site(self, "hook_expert_out", y.astype(self.dtype), EXPERT_OUT_AXES)
        out = jnp.einsum("bpe,bpem->bpm", weights.astype(self.dtype), y)  # contract expert
        return out.astype(self.dtype)

    def _sow_load_balancing(self, probs: jax.Array, chosen: jax.Array) -> None:
        """probs, chosen: [batch, pos, expert] (chosen: 1 where the expert is in the top-k)."""
        f = chosen.mean((0, 1)) / self.experts_per_token
        p = probs.mean((0, 1))
        self.sow(AUX_COLLECTION, "load_balancing", self.n_experts * jnp.sum(f * p))


def load_balancing_loss(router_logits: jax.Array, experts_per_token: int) -> jax.Array:
    """The loss `MoE` sows, from router logits [..., expert] (a scalar)."""
    e = router_logits.shape[-1]
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1).reshape(-1, e)
    _, top_i = jax.lax.top_k(probs, experts_per_token)
    f = jax.nn.one_hot(top_i, e).sum(1).mean(0) / experts_per_token
    return e * jnp.sum(f * probs.mean(0))


def check_moe_options(n_experts: int, experts_per_token: int) -> None:
    """Raises ValueError unless 1 <= experts_per_token <= n_experts."""
    if not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"n_experts={n_experts!r} must be a positive int")
    if not isinstance(experts_per_token, int) or not 1 <= experts_per_token <= n_experts:
        raise ValueError(f"experts_per_token={experts_per_token!r} must be an int in "
                         f"[1, n_experts={n_experts}]")
