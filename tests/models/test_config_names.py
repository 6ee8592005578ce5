"""One name per concept across families (issue 10): `build(name, n_layers=2, d_model=64)` works
for every preset where the concept exists, and the built model really has that many blocks and
that residual width (read from its sites), while the retired per-family names are gone."""

from __future__ import annotations

import dataclasses
import re

import jax
import pytest

from jaxinterp import hooks
from jaxinterp.models import registry
from tests.models.param_trees import example_input

RETIRED = {"num_blocks", "hidden_dim", "embed_dim", "dims", "depths", "channels_mlp_dim",
           "tokens_mlp_dim", "d_ffn", "num_layers", "hidden_size", "kan_groups", "kan_act_init",
           "n_groups", "rational_init"}
"""Per-family names of shared concepts that the configs used before issue 10."""


def _fields(c) -> set[str]:
    return {f.name for f in dataclasses.fields(c)}


def _site_axes(model, x) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    session = hooks.Session(capture=(), interventions=())

    def trace(x):
        variables = model.init(jax.random.key(0), x)
        with hooks.active(session):
            return model.apply(variables, x)

    jax.eval_shape(trace, x)
    return {n: (session.site_axes[n], session.site_shapes[n].shape) for n in session.site_shapes}


@pytest.mark.parametrize("name", sorted(registry.PRESETS))
def test_retired_names_are_gone(name):
    fields = _fields(registry.config(name))
    assert not fields & RETIRED, f"{name}: {sorted(fields & RETIRED)}"


def test_every_family_uses_the_shared_names():
    configs = {type(registry.config(n)).__name__: registry.config(n) for n in registry.PRESETS}
    for cls, c in configs.items():
        fields = _fields(c)
        if cls != "KANConfig":  # per-layer widths: no single d_model (KANConfig docstring)
            assert {"n_layers", "d_model"} <= fields, cls
    vision = [c for c in configs.values() if "image_size" in _fields(c)]
    assert len(vision) >= 8
    for c in vision:
        assert {"num_classes", "image_size", "in_channels"} <= _fields(c), type(c).__name__


@pytest.mark.parametrize("name", [n for n in sorted(registry.PRESETS)
                                  if isinstance(getattr(registry.config(n), "n_layers", None), int)
                                  and "d_model" in _fields(registry.config(n))])
def test_build_two_layers_width_64(name):
    model = registry.build(name, n_layers=2, d_model=64)
    sites = _site_axes(model, example_input(name))
    layers = {int(m.group(1)) for s in sites if (m := re.match(r"blocks\.(\d+)\.", s))}
    assert layers == {0, 1}, (name, sorted(layers))
    widths = {shape[axes.index("d_model")] for axes, shape in sites.values() if "d_model" in axes}
    assert widths == {64}, (name, widths)
