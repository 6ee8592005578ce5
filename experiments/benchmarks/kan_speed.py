"""KAN speed: forward + backward of KAN layers against MLP baselines, timed in one run.

    python -m experiments.benchmarks.kan_speed [--batch=1024 --repeats=7 ...]

Three comparisons, each a jitted `jax.grad` of a squared-output loss with respect to the
parameters (forward + backward), on the first device (CPU here):

  (1) B-spline KAN 64-64-10 (grid 5, order 3; 42,624 parameters) vs a parameter-matched MLP
      64-568-10 (GELU; 42,618 parameters), batch 1024.             Target: ratio <= 3.
  (2) RBF KAN 64-64-10 (FastKAN: 8 centres + silu base; 42,624 parameters) vs the same MLP.
                                                                     Target: ratio <= 1.5.
  (3) KAT's GR-KAN feed-forward block (`jaxinterp.models.vit.GRKANFeedForward`: GR-KAN
      fc1 d_model -> d_hidden, identity init, then GR-KAN fc2 d_hidden -> d_model, swish init;
      8 groups, shared numerator) vs a GELU feed-forward block of the same widths, on
      [batch, pos, d_model] tokens.                                  Target: ratio <= 1.3.
      The GR-KAN block does one matmul more than the GELU block (the gradient reaching fc1's
      rational, whose coefficients train), so 6/5 = 1.2 is its floor on matmuls alone.

Each function is compiled and run once, then timed alternately with its baseline over
`repeats` blocks of `steps` calls; medians of the per-call times are reported. Under a plain
`apply` (no `jaxinterp.run`) KAN layers do not materialise their per-edge site.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app

from experiments.benchmarks import cli
from jaxinterp.layers.mlp import MLP
from jaxinterp.models.kan import KAN, KANConfig
from jaxinterp.models.vit import GRKANFeedForward

TARGETS = {"bspline": 3.0, "rbf": 1.5, "grkan": 1.3}


class _MLP(nn.Module):
    """[batch, d_in] -> [batch, widths[-1]]: dense layers with GELU between them."""

    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths[1:]):
            x = nn.Dense(w)(x)
            if i < len(self.widths) - 2:
                x = jax.nn.gelu(x, approximate=False)
        return x


def matched_mlp_hidden(n_params: int, d_in: int, d_out: int) -> int:
    """Hidden width h of a d_in-h-d_out MLP (with biases) with about `n_params` parameters."""
    return round((n_params - d_out) / (d_in + 1 + d_out))


def _grad_fn(model: nn.Module, variables, x) -> tuple[Callable, object]:
    """A jitted fn(params) -> grads of sum(model(x)^2), and the params it takes."""
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    @jax.jit
    def f(p):
        return jax.grad(lambda q: jnp.sum(jnp.square(model.apply({"params": q, **rest}, x))))(p)

    return f, params


def _time_pair(fa, pa, fb, pb, steps: int, repeats: int) -> tuple[float, float]:
    jax.block_until_ready(fa(pa))
    jax.block_until_ready(fb(pb))
    ta, tb = [], []
    for _ in range(repeats):
        for f, p, out in ((fa, pa, ta), (fb, pb, tb)):
            t = time.perf_counter()
            for _ in range(steps):
                r = f(p)
            jax.block_until_ready(r)
            out.append((time.perf_counter() - t) / steps)
    return statistics.median(ta), statistics.median(tb)


def _n_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def measure(batch: int = 1024, widths: tuple[int, ...] = (64, 64, 10), ff_batch: int = 16,
            ff_pos: int = 64, d_model: int = 192, d_hidden: int = 768, steps: int = 10,
            repeats: int = 7) -> dict:
    """Times the three pairs; returns times (ms), parameter counts and ratios. The int
    arguments are the binary's flags (`experiments.benchmarks.cli`).

    Args:
      batch: Batch of the 64-64-10 comparisons.
      widths: KAN widths of comparisons (1) and (2) (three: one hidden layer).
      ff_batch: Sequences of the feed-forward comparison.
      ff_pos: Tokens per sequence of the feed-forward comparison.
      d_model: Feed-forward width (KAT-T: 192).
      d_hidden: Feed-forward hidden width (KAT-T: 768).
      steps: Calls per timed block.
      repeats: Timed blocks per function.
    """
    key = jax.random.key(0)
    x = jax.random.uniform(key, (batch, widths[0]), minval=-1, maxval=1)
    res: dict = {"device": str(jax.devices()[0]), "batch": batch, "widths": widths}
    for kind in ("bspline", "rbf"):
        kan = KAN(KANConfig(widths=widths, layer_type=kind, grid_size=5, order=3,
                            rbf_centers=8))
        kv = kan.init(key, x)
        n_kan = _n_params(kv["params"])
        mlp = _MLP((widths[0], matched_mlp_hidden(n_kan, widths[0], widths[-1]), widths[-1]))
        if len(widths) != 3:
            raise ValueError(f"widths={widths}: the matched MLP has one hidden layer; give 3")
        mv = mlp.init(key, x)
        fk, pk = _grad_fn(kan, kv, x)
        fm, pm = _grad_fn(mlp, mv, x)
        tk, tm = _time_pair(fk, pk, fm, pm, steps, repeats)
        res[kind] = {"kan_ms": 1e3 * tk, "mlp_ms": 1e3 * tm, "ratio": tk / tm,
                     "kan_params": n_kan, "mlp_params": _n_params(mv["params"]),
                     "mlp_hidden": mlp.widths[1]}
    xt = jax.random.normal(key, (ff_batch, ff_pos, d_model))
    gr = GRKANFeedForward(d_mlp=d_hidden, groups=8)
    ge = MLP(d_mlp=d_hidden, act_fn="gelu")
    gv, ev = gr.init(key, xt), ge.init(key, xt)
    fg, pg = _grad_fn(gr, gv, xt)
    fe, pe = _grad_fn(ge, ev, xt)
    tg, te = _time_pair(fg, pg, fe, pe, steps, repeats)
    res["grkan"] = {"kan_ms": 1e3 * tg, "mlp_ms": 1e3 * te, "ratio": tg / te,
                    "kan_params": _n_params(gv["params"]), "mlp_params": _n_params(ev["params"]),
                    "shape": (ff_batch, ff_pos, d_model, d_hidden)}
    return res


def report(r: dict) -> str:
    b, f, g = r["bspline"], r["rbf"], r["grkan"]
    w = "-".join(map(str, r["widths"]))
    lines = [f"KAN speed (forward + backward, jitted, medians) on {r['device']}"]
    for name, s, base in ((f"B-spline KAN {w}", b, "MLP"), (f"RBF KAN {w}", f, "MLP")):
        lines.append(
            f"  {name} ({s['kan_params']:,} params): {s['kan_ms']:7.2f} ms   {base} "
            f"{r['widths'][0]}-{s['mlp_hidden']}-{r['widths'][-1]} ({s['mlp_params']:,}): "
            f"{s['mlp_ms']:7.2f} ms   batch {r['batch']}")
    bb, pp, dm, dh = g["shape"]
    lines.append(f"  GR-KAN FF block {dm}-{dh}-{dm} ({g['kan_params']:,} params): "
                 f"{g['kan_ms']:7.2f} ms   GELU FF ({g['mlp_params']:,}): {g['mlp_ms']:7.2f} ms"
                 f"   tokens [{bb}, {pp}]")
    for label, key in (("B-spline KAN / MLP", "bspline"), ("RBF KAN / MLP", "rbf"),
                       ("GR-KAN FF / GELU FF", "grkan")):
        ratio, target = r[key]["ratio"], TARGETS[key]
        verdict = "ok" if ratio <= target else "MISSED"
        lines.append(f"  {label:22s} = {ratio:5.2f}  (target <= {target})  {verdict}")
    return "\n".join(lines)


def main(argv):
    del argv
    print(report(measure(**cli.int_flag_values(measure))))


if __name__ == "__main__":  # flags defined here, so other modules can import measure()
    cli.define_int_flags(measure)  # --batch=1024 ... --repeats=7: measure()'s int arguments
    app.run(main)
