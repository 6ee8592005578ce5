"""Group-rational KAN (GR-KAN), the feed-forward layer of the Kolmogorov-Arnold Transformer.

Yang & Wang 2024, "Kolmogorov-Arnold Transformer" (arXiv:2409.10594). The d_in input channels
are split into `n_groups` contiguous groups; every channel of group g goes through the same
rational function F_g, and a linear layer follows:

    F_g(x) = P_g(x) / Q_g(x),   P_g(x) = a_0 + a_1 x + ... + a_m x^m        (m = 5)
                                Q_g(x) = 1 + |b_1 x + b_2 x^2 + ... + b_n x^n|  (n = 4)
    out_j  = sum_i F_{g(i)}(x_i) W[i, j] + bias_j

The denominator is KAT's "safe Pade" form, 1 + |sum_k b_k x^k|: Q >= 1 for every input and
every coefficient, so F never meets a pole (and |F| <= |P|). (rational_kat_cu's CUDA kernel
uses 1 + |b_1 x| + ... + |b_n x^n| instead, also >= 1; we keep the paper's form, the single
denominator of this codebase.)

`shared_numerator=True` is rational_kat_cu's `KAT_Group`: ONE numerator row a_0..a_m shared by
all groups (parameter [1, m + 1]) and a denominator per group ([n_groups, n]), 6 + 8 x 4 = 38
coefficients with 8 groups. KAT's presets (`jaxinterp.models.vit`) use it.

Initial coefficients (`rational_init`): "identity" (P = x, Q = 1, exact), "gelu" (exact erf
GELU) and "swish" (x sigmoid(x)). The last two were fitted once, offline, by least squares on
[-6, 6] (a linearised solve, then Gauss-Newton, then Lawson reweighting towards the minimax
fit); the max errors on [-3, 3] are 3.3e-3 (GELU) and 9.0e-5 (swish), and both stay close to
their targets out to |x| = 10. KAT's feed-forward block is
GroupRationalKAN(d_hidden, rational_init="identity") then
GroupRationalKAN(d_model, rational_init="swish") (Adamdad/kat presets; "gelu" in its
`*_gelu_*` variants).

Sites (leading axes [batch] or [batch, pos]):
  hook_basis  [..., d_in]          F_{g(i)}(x_i), one basis function per input channel
  hook_edge   [..., d_in, d_out]   F_{g(i)}(x_i) W[i, j] (only while sites are live: see
                                   `kan_common`; `edge_sites=False` skips it)
  hook_post   [..., d_out]         the output, sum_i edge[..., i, j] + bias_j
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.hooks import site
from jaxinterp.layers import kan_common
from jaxinterp.layers.common import Initializer, param

NUM_DEGREE = 5
DEN_DEGREE = 4

# (a_0..a_5, b_1..b_4), fitted as described in the module docstring.
RATIONAL_INITS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "identity": ((0.0, 1.0, 0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)),
    "gelu": ((-3.26450974e-03, 4.99999982e-01, 4.18291457e-01, 1.23827002e-01,
              1.52094189e-02, 6.40532825e-04),
             (-5.96953057e-07, 2.47654449e-01, -1.08268373e-07, 1.28107418e-03)),
    "swish": ((8.97853926e-05, 5.00000000e-01, 2.49723280e-01, 5.20432877e-02,
               5.31917809e-03, 2.21431630e-04),
              (-9.77267890e-09, 1.04086580e-01, -8.02100784e-10, 4.42863308e-04)),
}


def rational_denominator(x: jax.Array, den: jax.Array) -> jax.Array:
    """Q(x) = 1 + |b_1 x + ... + b_n x^n| >= 1. `den` [..., n] broadcasts against x[..., None]."""
    inner = jnp.zeros_like(x)
    for k in range(den.shape[-1] - 1, -1, -1):  # Horner on x (b_1 + x (b_2 + ...))
        inner = (inner + den[..., k]) * x
    return 1.0 + jnp.abs(inner)


def rational(x: jax.Array, num: jax.Array, den: jax.Array) -> jax.Array:
    """F(x) = P(x) / Q(x). num [..., m + 1] (a_0..a_m), den [..., n] (b_1..b_n); coefficient
    arrays broadcast against `x` with their last axis removed."""
    p = jnp.zeros_like(x) + num[..., -1]
    for k in range(num.shape[-1] - 2, -1, -1):  # Horner
        p = p * x + num[..., k]
    return p / rational_denominator(x, den)


def group_rational(x: jax.Array, num: jax.Array, den: jax.Array) -> jax.Array:
    """x [..., d_in]; num [n_groups or 1, m + 1]; den [n_groups, n] -> [..., d_in].

    Channel i uses group i // (d_in // n_groups) (contiguous groups, as in KAT); a numerator
    with one row is shared by all groups (KAT_Group). The backward pass is written out (a
    custom VJP, as KAT's CUDA kernel does): coefficient gradients are two contractions against
    the powers of x, where differentiating Horner's rule would reduce over the whole activation
    once per coefficient.
    """
    n_groups = den.shape[0]
    d_in = x.shape[-1]
    if num.ndim != 2 or den.ndim != 2 or num.shape[0] not in (1, n_groups):
        raise ValueError(f"GR-KAN: numerator {num.shape} must be [n_groups or 1, m + 1] and "
                         f"denominator {den.shape} [n_groups, n]")
    if d_in % n_groups:
        raise ValueError(f"GR-KAN: d_in={d_in} is not divisible by n_groups={n_groups}")
    xg = x.reshape(-1, n_groups, d_in // n_groups)  # [tokens, group, channel]
    return _group_rational(xg, num, den).reshape(x.shape)


def _power_sums(g_p: jax.Array, g_inner: jax.Array, x: jax.Array, m1: int, n: int,
                shared: bool) -> tuple[jax.Array, jax.Array]:
    """(sum_{t,c} g_p x^k for k < m1, sum_{t,c} g_inner x^k for 1 <= k <= n), for g_p,
    g_inner, x [t, G, c] -> ([G or 1, m1], [G, n]) (the numerator's summed over G if shared).

    All m1 + n sums are one variadic reduction over tokens (one pass over the activations
    instead of one per coefficient), then a sum over the channels of each group.
    """
    terms, kinds, pk = [], [], jnp.ones_like(x)
    for k in range(max(m1, n + 1)):
        if k < m1:
            terms.append(g_p * pk)
            kinds.append("num")
        if 1 <= k <= n:
            terms.append(g_inner * pk)
            kinds.append("den")
        pk = pk * x
    zero = jnp.zeros((), x.dtype)
    cols = jax.lax.reduce(tuple(terms), (zero,) * len(terms),
                          lambda a, b: tuple(u + v for u, v in zip(a, b, strict=True)),
                          (0,))  # over tokens: each [G, c]
    d_num = jnp.stack([c.sum(-1) for c, kd in zip(cols, kinds, strict=True) if kd == "num"], -1)
    d_den = jnp.stack([c.sum(-1) for c, kd in zip(cols, kinds, strict=True) if kd == "den"], -1)
    return (d_num.sum(0, keepdims=True) if shared else d_num), d_den


def _horner(x: jax.Array, coef: jax.Array) -> jax.Array:
    """sum_k coef[:, k] x^k for x [t, G, c], coef [G or 1, K]."""
    out = jnp.zeros_like(x) + coef[:, None, -1]
    for k in range(coef.shape[-1] - 2, -1, -1):
        out = out * x + coef[:, None, k]
    return out


@jax.custom_vjp
def _group_rational(xg: jax.Array, num: jax.Array, den: jax.Array) -> jax.Array:
    return rational(xg, num[:, None, :], den[:, None, :])


def _group_rational_fwd(xg, num, den):
    return _group_rational(xg, num, den), (xg, num, den)


def _group_rational_bwd(res, g):
    xg, num, den = res  # xg [t, G, c], num [G or 1, m + 1], den [G, n]
    m1, n = num.shape[-1], den.shape[-1]
    zero = jnp.zeros_like(den[:, :1])
    p = _horner(xg, num)  # P(x)
    inner = _horner(xg, jnp.concatenate([zero, den], axis=1))  # b_1 x + ... + b_n x^n
    q = 1.0 + jnp.abs(inner)
    g_p = g / q  # dL/dP
    g_inner = -g * p / (q * q) * jnp.sign(inner)  # dL/d(inner)
    dp = _horner(xg, num[:, 1:] * jnp.arange(1, m1, dtype=num.dtype))  # P'(x)
    dinner = _horner(xg, den * jnp.arange(1, n + 1, dtype=den.dtype))  # inner'(x)
    g_p, g_inner = jax.lax.optimization_barrier((g_p, g_inner))  # not recomputed per sum
    d_num, d_den = _power_sums(g_p, g_inner, xg, m1, n, shared=num.shape[0] == 1)
    # materialised once: it feeds matmuls, into which XLA:CPU would fuse (and recompute) it
    g_x = jax.lax.optimization_barrier(g_p * dp + g_inner * dinner)
    return g_x, d_num, d_den


_group_rational.defvjp(_group_rational_fwd, _group_rational_bwd)


def _const_init(values: tuple[float, ...]) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.broadcast_to(jnp.asarray(values, dtype), shape)
    return init


class GroupRationalKAN(nn.Module):
    """GR-KAN layer: x [batch, (pos,) d_in] -> [batch, (pos,) features_out].

    Attributes:
      features_out: d_out.
      n_groups: groups of input channels sharing one rational function (must divide d_in).
      rational_init: initial rational, "identity", "gelu" or "swish" (see `RATIONAL_INITS`).
      shared_numerator: one numerator for all groups (rational_kat_cu `KAT_Group`, used by
        KAT); each group keeps its own denominator.
      use_bias: a bias after the linear layer.
      kernel_init: initialiser of the linear weight W [d_in, d_out].
      kernel_axes: logical axis names of W (e.g. ("embed", "mlp") inside a transformer).
      edge_sites: declare `hook_edge` (materialised only under `jaxinterp.run`).
      dtype, param_dtype: compute and parameter dtypes.

    Parameters: `numerator` [n_groups, 6] ([1, 6] with `shared_numerator`), `denominator`
    [n_groups, 4], `kernel` [d_in, d_out], `bias` [d_out].
    """

    features_out: int
    n_groups: int = 8
    rational_init: str = "gelu"
    shared_numerator: bool = False
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    kernel_axes: tuple[str | None, str | None] = ("kan_in", "kan_out")
    edge_sites: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        lead = kan_common.lead_axes(x, "GroupRationalKAN")
        d_in = x.shape[-1]
        if self.rational_init not in RATIONAL_INITS:
            raise ValueError(f"GroupRationalKAN(rational_init={self.rational_init!r}); "
                             f"choose from {sorted(RATIONAL_INITS)}")
        if self.n_groups <= 0 or d_in % self.n_groups:
            raise ValueError(f"GroupRationalKAN: n_groups={self.n_groups} must be positive and "
                             f"divide d_in={d_in}")
        if self.features_out <= 0:
            raise ValueError(f"GroupRationalKAN: features_out={self.features_out} must be > 0")
        a0, b0 = RATIONAL_INITS[self.rational_init]
        pd = self.param_dtype
        if self.shared_numerator:
            num = param(self, "numerator", _const_init(a0), (1, NUM_DEGREE + 1), (None, None),
                        pd)
        else:
            num = param(self, "numerator", _const_init(a0), (self.n_groups, NUM_DEGREE + 1),
                        ("kan_group", None), pd)
        den = param(self, "denominator", _const_init(b0), (self.n_groups, DEN_DEGREE),
                    ("kan_group", None), pd)
        w = param(self, "kernel", self.kernel_init, (d_in, self.features_out),
                  self.kernel_axes, pd).astype(self.dtype)
        basis = group_rational(x.astype(self.dtype), num.astype(self.dtype),
                               den.astype(self.dtype))
        basis = site(self, "hook_basis", basis, (*lead, "d_in"))

        def fused():
            # materialise F(x) once (fused into the dot, XLA:CPU may recompute it per tile)
            b = jax.lax.optimization_barrier(basis)
            return jnp.einsum("...i,ij->...j", b, w)  # contract d_in

        def edges():
            return basis[..., :, None] * w  # [..., d_in, d_out]

        out = kan_common.sum_edges(self, lead, edges, fused) if self.edge_sites else fused()
        if self.use_bias:
            out = out + param(self, "bias", nn.initializers.zeros, (self.features_out,),
                              (self.kernel_axes[1],), pd).astype(self.dtype)
        return site(self, "hook_post", out.astype(self.dtype), (*lead, "d_out"))


__all__ = ["RATIONAL_INITS", "GroupRationalKAN", "group_rational", "rational",
           "rational_denominator"]
