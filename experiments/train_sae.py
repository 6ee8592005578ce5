"""Train a sparse autoencoder or transcoder on a model's activations.

    python -m experiments.train_sae --config=configs/train_sae.py --workdir=workdirs/train_sae

End to end from a config: train (or resume) a small language model, stream its activations
into an SAE or transcoder, report L0 / explained variance / loss recovered, save the SAE.
Every config field can be overridden (`--config.sae.architecture=jumprelu`). From a notebook:

    from experiments.train_sae import run_experiment
    summary = run_experiment(config, workdir)

Writes `<workdir>/lm/` (the model's training run, unless `config.lm_workdir` names an existing
one), `<workdir>/sae/checkpoints/` (the SAE's training checkpoints), `<workdir>/sae/`
(`sae.safetensors` + `config.json`, see `jaxinterp.sae.io`) and `<workdir>/summary.json`.

Rerunning the same command resumes: the model's run from its newest checkpoint, then the SAE's
from its own (the token stream is a grain iterator, so its position is checkpointed with the SAE
state), and a killed run ends with the same SAE, bit for bit, as an uninterrupted one. A finished
run only reloads its last checkpoints and evaluates again.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from ml_collections import ConfigDict

from experiments import runner
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
    # Each process reads its own rows of every global model batch; the iterator's position
    # is checkpointed with the SAE, so a rerun resumes the stream where it stopped.
    train_tokens = data_lib.make_iterator(train_src, batch_size=config.model_batch_size,
                                          seed=tc.seed, shuffle=True, num_epochs=None,
                                          transform=_model_inputs)
    result = fit(sae_config, tc, model, variables, train_tokens, mesh=mesh,
                 workdir=os.path.join(workdir, "sae"))

    # The same held-out batch on every process (process_count=1: all of its rows).
    eval_tokens = next(data_lib.make_iterator(
        eval_src, batch_size=config.eval_batch_size, seed=0, shuffle=False, num_epochs=1,
        process_index=0, process_count=1, transform=_model_inputs))["inputs"]
    x, y = jax.jit(activation_fn(model, sae_config.site, sae_config.out_site))(variables,
                                                                              eval_tokens)
    # The trained SAE, whole, as NumPy on every process (its arrays are sharded on the mesh).
    sae_params, steps_since_fired = multihost_utils.process_allgather(
        (result.params, result.state.steps_since_fired), tiled=True)
    held_out = evaluate(sae_params, sae_config, x, y)
    recovered = jax.jit(loss_recovered, static_argnums=(0, 4))(
        model, variables, eval_tokens, sae_params, sae_config)
    summary = {k: float(v) for k, v in {**held_out, **recovered}.items()}
    # From the state, not the history: a rerun of a finished run trains no steps.
    summary["dead_fraction"] = float(np.mean(steps_since_fired >= tc.dead_after_steps))
    if jax.process_index() == 0:
        io.save(os.path.join(workdir, "sae"), sae_params, sae_config)
    return runner.write_outputs(workdir, summary)


def _model_inputs(example: dict[str, Any]) -> dict[str, np.ndarray]:
    """A sequence as model inputs: `{"inputs": int32 [seq - 1]}` (without its last token, as
    in training)."""
    return {"inputs": np.asarray(example["tokens"][:-1], np.int32)}


if __name__ == "__main__":
    runner.main(run_experiment, "train_sae")
