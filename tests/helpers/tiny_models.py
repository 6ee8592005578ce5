"""Tiny models with randomised parameters (biases and norm weights far from 0 and 1), so that
comparisons against the NumPy reference exercise every parameter."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji

TINY = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=48, d_vocab=40, n_ctx=16)


def tiny(preset: str = "gpt2_small", **overrides):
    """(model, variables, tokens [3, 10]) for a tiny version of `preset`."""
    model = ji.models.build(preset, **{**TINY, "init_range": 0.3, **overrides})
    tokens = jax.random.randint(jax.random.key(1), (3, 10), 0, model.config.d_vocab)
    variables = model.init(jax.random.key(0), tokens)
    return model, randomize(variables), tokens


def randomize(variables, seed: int = 7, scale: float = 0.2):
    """Adds N(0, scale²) noise to every parameter (keeps logical-partitioning boxes)."""
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [x + scale * jax.random.normal(k, x.shape, x.dtype)
             for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, noisy)


def tokens_like(tokens, seed: int, d_vocab: int):
    return jax.random.randint(jax.random.key(seed), tokens.shape, 0, d_vocab, jnp.int32)


def assert_close(got, want, rtol: float = 1e-5, atol_rel: float | None = None,
                 err_msg: str = ""):
    """Float32 results: `atol = atol_rel * max(1, max |want|)` (default `atol_rel = rtol`),
    a tolerance relative to the array's scale (models without norms have large outputs)."""
    scale = max(1.0, float(np.abs(np.asarray(want)).max()))
    atol = (rtol if atol_rel is None else atol_rel) * scale
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=err_msg)


def assert_scan_matches(model, variables, inputs, capture, *, tol: float = 1e-5, **run_kwargs):
    """The transformer `model` rebuilt with `scan_layers=True` on its stacked variables gives
    the same output and the same captured sites (same names, same order, values within
    rtol = atol = `tol`) through `ji.run(..., capture=capture, **run_kwargs)`.

    Returns (scanned model, stacked variables) for further checks.
    """
    scanned = ji.models.build("gpt2_small", **{**dataclasses.asdict(model.config),
                                               "scan_layers": True})
    svars = ji.models.stack_layers(variables)
    out, cache = ji.run(model, variables, inputs, capture=capture, **run_kwargs)
    sout, scache = ji.run(scanned, svars, inputs, capture=capture, **run_kwargs)
    np.testing.assert_allclose(sout, out, rtol=tol, atol=tol)
    assert list(scache) == list(cache)
    for name in cache:
        np.testing.assert_allclose(scache[name], cache[name], rtol=tol, atol=tol, err_msg=name)
    return scanned, svars


class Recorder(dict):
    """Hooks for a NumPy reference that keep what they see: `rec.hook(key)` stores its input
    under `key` and returns it unchanged (`reference(P, x, {"1.row": rec.hook("row")})`)."""

    def hook(self, key: str):
        def keep(value):
            self[key] = value
            return value
        return keep


def assert_site_shapes(names, shapes: dict[str, tuple[int, ...]], n_blocks: int) -> None:
    """`names` (from `ji.sites`) has `shapes` at those sites, and the `hook_resid_post` sites
    are exactly `blocks.0` ... `blocks.{n_blocks - 1}`, in that order."""
    for name, shape in shapes.items():
        assert names[name].shape == shape, name
    assert [n for n in names if n.endswith("hook_resid_post")] == [
        f"blocks.{i}.hook_resid_post" for i in range(n_blocks)]
