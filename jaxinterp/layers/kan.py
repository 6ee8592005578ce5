"""KAN layers: a learnable univariate function on every edge, summed at the nodes.

Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks" (arXiv:2404.19756). For x [..., d_in]:

    phi_ij(x) = w_base[i, j] silu(x) + sum_f m_f[i, j] sum_n c_f[i, j, n] B_{f,n}(x)
    out_j     = sum_i phi_ij(x_i) (+ bias_j)

`basis` chooses the families f (`kan_basis`): "bspline" (pykan / efficient-kan), "rbf"
(FastKAN), "chebyshev" (ChebyKAN), "fourier" (FourierKAN), or a tuple of them, a selectable
mix as in "Activation Space Selectable KAN" (Yang et al. 2024): each edge combines the families
with learnable weights m[i, j, :], softmax(logits[i, j, :]) when mix="softmax" (logits start at
0: equal weights) or the raw weights when mix="linear" (start at 1 / n_families). With one family
m = 1 and there is no mixing parameter. The base branch w_base silu(x) is on by default for
"bspline" and "rbf" (pykan, FastKAN) and off for the others (`use_base` overrides).

The B-spline grid [d_in, G + 2k + 1] lives in the Flax variable collection "kan_grid" (not
"params"), so it is an input of a compiled function like the parameters are: after
`update_grid` or `extend_grid` a previously jitted apply, given the new variables, computes
with the new grid. The coefficients c_bspline are parameters and are refitted by least squares
so that the edges keep their function.

Group-rational KAN (KAT) is `GroupRationalKAN` (`kan_rational`), re-exported here.

Sites (leading axes [batch] or [batch, pos]; see `kan_common` for when edges materialise):
  hook_basis [..., d_in, n_basis]   B_{f,n}(x_i), families concatenated in `basis` order
  hook_edge  [..., d_in, d_out]     phi_ij(x_i)
  hook_post  [..., d_out]           the output, sum_i hook_edge[..., i, j] (+ bias_j)
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxinterp.hooks import site, wanted
from jaxinterp.layers import kan_basis, kan_common
from jaxinterp.layers.common import param
from jaxinterp.layers.kan_rational import (
    RATIONAL_INITS,
    GroupRationalKAN,
    group_rational,
    rational,
    rational_denominator,
)

GRID_COLLECTION = "kan_grid"
FAMILIES = ("bspline", "rbf", "chebyshev", "fourier")
MIX_MODES = ("softmax", "linear")
_BASE_BY_DEFAULT = ("bspline", "rbf")


def families(basis: str | tuple[str, ...]) -> tuple[str, ...]:
    """The basis families of a `basis` setting, validated."""
    fams = (basis,) if isinstance(basis, str) else tuple(basis)
    bad = [f for f in fams if f not in FAMILIES]
    if not fams or bad or len(set(fams)) != len(fams):
        raise ValueError(f"KAN basis {basis!r}: give one or more distinct families from "
                         f"{FAMILIES}")
    return fams


class KANLayer(nn.Module):
    """x [batch, (pos,) d_in] -> [batch, (pos,) features_out]; formula in the module docstring.

    Attributes:
      features_out: d_out.
      basis: a family from `FAMILIES` or a tuple of them (a mix).
      grid_size: B-spline intervals G (n_basis = G + order).
      order: B-spline order k (3: cubic).
      grid_range: initial (uniform) B-spline grid range.
      rbf_centers: RBF centres (n_basis), equally spaced over `rbf_range`.
      rbf_range: RBF centre range (ends included).
      degree: highest Chebyshev degree (n_basis = degree + 1).
      n_freq: Fourier frequencies (n_basis = 2 n_freq).
      use_base: the w_base silu(x) branch; None: on for "bspline"/"rbf" (in `basis`), else off.
      use_bias: a bias per output.
      mix: "softmax" or "linear" mixing weights (when `basis` has several families).
      coef_std: init std of the coefficients is coef_std / sqrt(d_in * n_basis).
      grid_eps, grid_margin: `update_grid`'s uniform fraction and range margin.
      dtype, param_dtype: compute and parameter dtypes.

    Parameters: `coef_{family}` [d_in, d_out, n_basis_f], `w_base` [d_in, d_out], `mix`
    [d_in, d_out, n_families] (several families), `bias` [d_out]. Variable `kan_grid/grid`
    [d_in, G + 2k + 1] (with "bspline").
    """

    features_out: int
    basis: str | tuple[str, ...] = "bspline"
    grid_size: int = 5
    order: int = 3
    grid_range: tuple[float, float] = (-1.0, 1.0)
    rbf_centers: int = 8
    rbf_range: tuple[float, float] = (-2.0, 2.0)
    degree: int = 4
    n_freq: int = 5
    use_base: bool | None = None
    use_bias: bool = False
    mix: str = "softmax"
    coef_std: float = 1.0
    grid_eps: float = 0.02
    grid_margin: float = 0.01
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _check(self) -> tuple[str, ...]:
        fams = families(self.basis)
        positive = dict(features_out=self.features_out, grid_size=self.grid_size,
                        rbf_centers=self.rbf_centers - 1, n_freq=self.n_freq)
        for name, v in positive.items():
            if v <= 0:
                raise ValueError(f"KANLayer.{name} must be > {0 if name != 'rbf_centers' else 1},"
                                 f" got {getattr(self, name)}")
        if self.order < 0 or self.degree < 0:
            raise ValueError(f"KANLayer: order={self.order} and degree={self.degree} must be >= 0")
        if self.mix not in MIX_MODES:
            raise ValueError(f"KANLayer.mix={self.mix!r}; choose from {MIX_MODES}")
        for name in ("grid_range", "rbf_range"):
            lo, hi = getattr(self, name)
            if not hi > lo:
                raise ValueError(f"KANLayer.{name}={(lo, hi)} must be increasing")
        return fams

    def n_basis(self, family: str) -> int:
        return {"bspline": self.grid_size + self.order, "rbf": self.rbf_centers,
                "chebyshev": self.degree + 1, "fourier": 2 * self.n_freq}[family]

    @nn.compact
    def __call__(self, x: jax.Array, update_grid: bool = False) -> jax.Array:
        """x [batch, (pos,) d_in] -> [batch, (pos,) d_out]. With `update_grid` (needs
        `mutable=["params", "kan_grid"]`), first adapts the B-spline grid to this batch and
        refits c_bspline (pykan's `update_grid_from_samples`); see `update_grid`."""
        fams = self._check()
        lead = kan_common.lead_axes(x, "KANLayer")
        d_in, d_out, pd = x.shape[-1], self.features_out, self.param_dtype
        x = x.astype(self.dtype)
        bases, coefs = [], []
        grid = self._grid_variable(d_in) if "bspline" in fams else None
        for f in fams:
            n = self.n_basis(f)
            coef = param(self, f"coef_{f}",
                         nn.initializers.normal(self.coef_std / (d_in * n) ** 0.5),
                         (d_in, d_out, n), ("kan_in", "kan_out", None), pd)
            if f == "bspline":
                g, coef = self._bspline_update(grid, x, coef) if update_grid else (grid.value,
                                                                                    coef)
                b = kan_basis.bspline_basis_first(x, g, self.order)
            elif f == "rbf":
                b = kan_basis.rbf_basis(x, self.rbf_centers, self.rbf_range)
            elif f == "chebyshev":
                b = kan_basis.chebyshev_basis(x, self.degree)
            else:
                b = kan_basis.fourier_basis(x, self.n_freq)
            bases.append(b if f == "bspline" else jnp.moveaxis(b, -1, 0))  # [n, ..., d_in]
            coefs.append(coef.astype(self.dtype))
        if update_grid and "bspline" not in fams:
            raise ValueError(f"update_grid: this KAN layer ({fams}) has no B-spline grid")

        if len(fams) > 1:
            if self.mix == "softmax":
                logits = param(self, "mix", nn.initializers.zeros, (d_in, d_out, len(fams)),
                               ("kan_in", "kan_out", None), pd)
                m = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
            else:
                m = param(self, "mix", nn.initializers.constant(1.0 / len(fams)),
                          (d_in, d_out, len(fams)), ("kan_in", "kan_out", None),
                          pd).astype(self.dtype)
            coefs = [c * m[..., k : k + 1] for k, c in enumerate(coefs)]
        # Bases are computed basis index first ([n_basis, ..., d_in]: d_in is the vectorised
        # axis); the site sees them [..., d_in, n_basis].
        basis_first = jnp.concatenate(bases, axis=0)
        basis = None
        if wanted(self, "hook_basis"):
            basis = site(self, "hook_basis", jnp.moveaxis(basis_first, 0, -1),
                         (*lead, "d_in", "n_basis"))
        c = jnp.concatenate(coefs, axis=-1)  # [d_in, d_out, n_basis]

        use_base = self.use_base
        if use_base is None:
            use_base = any(f in _BASE_BY_DEFAULT for f in fams)
        w_base = None
        if use_base:
            w_base = param(self, "w_base",
                           nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                           (d_in, d_out), ("kan_in", "kan_out"), pd).astype(self.dtype)
            act = jax.nn.silu(x)

        def edges():
            b = jnp.moveaxis(basis_first, 0, -1) if basis is None else basis
            e = jnp.einsum("...in,ijn->...ij", b, c)  # contract n_basis
            return e if w_base is None else e + act[..., :, None] * w_base

        def fused():
            # The barrier materialises the bases once: fused into the dot, XLA:CPU recomputed
            # them per output tile (5x slower forward).
            bf = jax.lax.optimization_barrier(basis_first)
            y = jnp.einsum("n...i,ijn->...j", bf, c)  # contract (n_basis, d_in)
            return y if w_base is None else y + act @ w_base  # contract d_in

        out = kan_common.sum_edges(self, lead, edges, fused)
        if self.use_bias:
            out = out + param(self, "bias", nn.initializers.zeros, (d_out,), ("kan_out",),
                              pd).astype(self.dtype)
        return site(self, "hook_post", out, (*lead, "d_out"))

    def _grid_variable(self, d_in: int):
        """The `kan_grid/grid` variable [d_in, G + 2k + 1], checked."""
        k, g = self.order, self.grid_size
        if not self.is_initializing() and not self.has_variable(GRID_COLLECTION, "grid"):
            raise ValueError(
                f"B-spline KAN layer {'/'.join(self.path)}: no {GRID_COLLECTION!r} variables. "
                f"Pass all the variables model.init returned (params and {GRID_COLLECTION}), "
                "not only params.")
        grid = self.variable(GRID_COLLECTION, "grid", kan_basis.uniform_grid, d_in, g, k,
                             self.grid_range)
        want = (d_in, g + 2 * k + 1)
        if grid.value.shape != want:
            raise ValueError(f"KAN layer {'/'.join(self.path)}: grid of shape "
                             f"{grid.value.shape}, expected {want} (grid_size={g}, "
                             f"order={k}); after extend_grid build the model with the new "
                             "grid_size")
        return grid

    def _bspline_update(self, grid, x, coef):
        """Adapts `grid` (a variable) to samples x and refits c_bspline; returns both."""
        d_in, k, g = x.shape[-1], self.order, self.grid_size
        xs = x.reshape(-1, d_in).astype(jnp.float32)
        c = coef.astype(jnp.float32)
        y_old = jnp.einsum("sin,ijn->sij", kan_basis.bspline_basis(xs, grid.value, k), c)
        new_grid = kan_basis.grid_from_samples(xs, g, k, self.grid_eps, self.grid_margin)
        new_coef = kan_basis.fit_coefficients(kan_basis.bspline_basis(xs, new_grid, k), y_old)
        grid.value = new_grid
        _put_param(self, "coef_bspline", new_coef.astype(self.param_dtype))
        return new_grid, new_coef.astype(coef.dtype)


def _put_param(module: nn.Module, name: str, value: jax.Array) -> None:
    old = module.get_variable("params", name)
    if isinstance(old, nn.meta.AxisMetadata):
        value = old.replace_boxed(value)
    module.put_variable("params", name, value)


def update_grid(model: nn.Module, variables, *inputs, **apply_kwargs):
    """Variables with every B-spline grid adapted to `inputs` and coefficients refitted.

    Runs `model.apply(variables, *inputs, update_grid=True)`: each B-spline layer, in order,
    builds a grid from its input batch (`kan_basis.grid_from_samples`) and refits c_bspline
    by least squares to its old edge functions at those inputs. Jit it with the model static:
    `jax.jit(update_grid, static_argnums=0)`. Returns the new variables (same structure).
    """
    _, new = model.apply(variables, *inputs, update_grid=True,
                         mutable=["params", GRID_COLLECTION], **apply_kwargs)
    return {**variables, **new}


def extend_grid(variables, new_grid_size: int, order: int, n_samples: int | None = None):
    """Variables with every B-spline grid refined to `new_grid_size` intervals (same range).

    For each layer: `kan_basis.refine_grid`, then c_bspline refitted by least squares to the old
    edge functions at `n_samples` points per input spread evenly over the grid's range
    (default 16 (G' + k)). Functions are kept on the grid range (exactly, up to float32, when
    the new size is a multiple of the old on a uniform grid). Build the model again with
    `grid_size=new_grid_size` to apply the result.
    """
    if new_grid_size <= 0:
        raise ValueError(f"extend_grid: new_grid_size={new_grid_size} must be positive")
    flat_p = traverse_util.flatten_dict(nn.meta.unbox(variables["params"]))
    boxed_p = traverse_util.flatten_dict(variables["params"])
    flat_g = traverse_util.flatten_dict(variables.get(GRID_COLLECTION, {}))
    if not flat_g:
        raise ValueError(f"extend_grid: the variables have no {GRID_COLLECTION!r} collection "
                         "(no B-spline KAN layer, or only params were passed)")
    n_s = n_samples or 16 * (new_grid_size + order)
    new_p, new_g = dict(boxed_p), dict(flat_g)
    for key, grid in flat_g.items():
        prefix = key[:-1]
        box = boxed_p[(*prefix, "coef_bspline")]
        coef = flat_p[(*prefix, "coef_bspline")]
        grid2, coef2 = _refit_finer(grid, coef, order, new_grid_size, n_s)
        coef2 = coef2.astype(coef.dtype)
        new_p[(*prefix, "coef_bspline")] = (box.replace_boxed(coef2)
                                           if isinstance(box, nn.meta.AxisMetadata) else coef2)
        new_g[key] = grid2
    return {**variables, "params": traverse_util.unflatten_dict(new_p),
            GRID_COLLECTION: traverse_util.unflatten_dict(new_g)}


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _refit_finer(grid, coef, order: int, new_grid_size: int, n_s: int):
    """(finer grid, refitted coefficients) of one layer; see `extend_grid`."""
    lo, hi = grid[:, order], grid[:, grid.shape[1] - order - 1]
    xs = lo + jnp.linspace(0.0, 1.0, n_s)[:, None] * (hi - lo)  # [n_s, d_in], ends included
    y_old = jnp.einsum("sin,ijn->sij", kan_basis.bspline_basis(xs, grid, order),
                       coef.astype(jnp.float32))  # contract n_basis
    grid2 = kan_basis.refine_grid(grid, order, new_grid_size)
    return grid2, kan_basis.fit_coefficients(kan_basis.bspline_basis(xs, grid2, order), y_old)


__all__ = ["FAMILIES", "GRID_COLLECTION", "RATIONAL_INITS", "GroupRationalKAN", "KANLayer",
           "extend_grid", "families", "group_rational", "rational", "rational_denominator",
           "update_grid"]
