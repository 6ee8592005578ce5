"""End to end from a config: train (or resume) a small language model, stream its activations
into an SAE or transcoder, report L0 / explained variance / loss recovered, save the SAE.

    summary = run_experiment(config, workdir)   # `python -m experiments.train_sae ...`

Writes `<workdir>/lm/` (the model's training run, unless `config.lm_workdir` names an existing
one), `<workdir>/sae/` (`sae.safetensors` + `config.json`, see `jaxinterp.sae.io`) and
`<workdir>/summary.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxinterp import data as data_lib
from jaxinterp.sae import io
from jaxinterp.sae.metrics import evaluate, loss_recovered
from jaxinterp.sae.model import SAEConfig
from jaxinterp.sae.train import TrainConfig, activation_fn, fit
from jaxinterp.train import sharding
from jaxinterp.train.checkpoint import load_params
from jaxinterp.train.config import build_model
from jaxinterp.train.loop import train


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs the experiment `config` describes (see `configs/train_sae.py`); returns the summary
    (also written to `<workdir>/summary.json`)."""
    workdir = os.path.abspath(workdir)
    lm_workdir = os.path.abspath(config.lm_workdir or os.path.join(workdir, "lm"))
    lm = config.lm
    if not config.lm_workdir:
        train(lm, lm_workdir)  # resumes; a finished run only reloads its last checkpoint
    model, params = build_model(lm), load_params(lm_workdir)
    variables = {"params": params}

    data_dir = lm.data.data_dir or os.path.join(lm_workdir, "data")
    kwargs = dict(lm.data.builder_kwargs)
    train_src = data_lib.load_source(lm.data.name, lm.data.train_split, data_dir, **kwargs)
    eval_src = data_lib.load_source(lm.data.name, lm.data.eval_split, data_dir, **kwargs)

    sae_config = SAEConfig(**{**dict(config.sae), "model_preset": lm.model.preset})
    tc = TrainConfig(**dict(config.train))
    mesh = sharding.make_mesh(config.mesh)
    result = fit(sae_config, tc, model, variables,
                 _tokens(train_src, config.model_batch_size, tc.seed, None), mesh=mesh)

    eval_tokens = next(_tokens(eval_src, config.eval_batch_size, 0, 1))
    x, y = jax.jit(activation_fn(model, sae_config.site, sae_config.out_site))(variables,
                                                                              eval_tokens)
    held_out = evaluate(result.params, sae_config, x, y)
    recovered = jax.jit(loss_recovered, static_argnums=(0, 4))(
        model, variables, eval_tokens, result.params, sae_config)
    io.save(os.path.join(workdir, "sae"), result.params, sae_config)
    summary = {k: float(v) for k, v in {**held_out, **recovered}.items()}
    summary["dead_fraction"] = result.history[-1]["dead_fraction"]
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print("held-out " + " | ".join(f"{k} {v:.4g}" for k, v in summary.items()), flush=True)
    return summary


def _tokens(source, batch_size: int, seed: int, num_epochs: int | None) -> Iterator[np.ndarray]:
    """Model inputs [batch, seq - 1] (each sequence without its last token, as in training)."""
    it = data_lib.make_iterator(source, batch_size=batch_size, seed=seed,
                                shuffle=num_epochs is None, num_epochs=num_epochs)
    for batch in it:
        yield np.asarray(batch["tokens"][:, :-1], np.int32)
