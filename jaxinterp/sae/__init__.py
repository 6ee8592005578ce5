"""Sparse autoencoders and transcoders: ReLU + L1, TopK and JumpReLU; streaming, sharded
training with dead-latent resampling; metrics (L0, explained variance, loss recovered); and
safetensors + JSON save/load; SAELens-format (and Gemma Scope `params.npz`) save/load; a sparse
TopK training step (`SAEConfig(..., sparse_decode=True)`).

    from jaxinterp import sae
    config = sae.SAEConfig("topk", d_in=64, d_sae=512, k=8, site="blocks.1.hook_resid_post")
    result = sae.fit(config, sae.TrainConfig(num_steps=2000), model, variables, token_batches)
    sae.loss_recovered(model, variables, tokens, result.params, config)
    sae.save("sae_dir", result.params, config)
    sae.save_saelens("saelens_dir", result.params, config)   # sae_lens.SAE.load_from_disk

Sweeps (`jaxinterp.sae.sweep`): many dictionaries from one activation stream, vmapped within a
group; the activation store (`jaxinterp.sae.store`): activations on disk, read with grain.

    configs, trains = sae.grid(config, sae.TrainConfig(), d_sae=[512, 2048], k=[8, 32])
    result = sae.sweep.sweep(configs, trains, model, variables, token_batches, eval_tokens=held_out)
    sae.store.write("acts", model, variables, token_batches, [config.site])
    sae.fit(config, tc, activations=sae.store.loader("acts", batch_size=tc.batch_size))

Cross-layer transcoders (`jaxinterp.sae.clt`: one encoder per layer, each feature writing into
its own and every later layer's MLP output) and the per-head attribution of features of an SAE
on a layer's concatenated `hook_z` (`jaxinterp.sae.heads`).
"""

from jaxinterp.sae import clt, heads, store, sweep  # modules: sae.sweep.sweep(...), ...
from jaxinterp.sae.io import load, save
from jaxinterp.sae.metrics import (
    dead_fraction,
    evaluate,
    explained_variance,
    l0,
    loss_recovered,
    splice,
)
from jaxinterp.sae.model import ARCHITECTURES, SAE, SAEConfig, SAEOutput
from jaxinterp.sae.saelens import load_gemma_scope, load_saelens, save_saelens
from jaxinterp.sae.sweep import SweepResult, grid
from jaxinterp.sae.train import (
    FitResult,
    SAEState,
    TrainConfig,
    activation_fn,
    create_state,
    fit,
    resample_dead,
    stream,
    train_step,
)

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "FitResult",
    "SAEConfig",
    "SAEOutput",
    "SAEState",
    "SweepResult",
    "TrainConfig",
    "activation_fn",
    "clt",
    "create_state",
    "dead_fraction",
    "evaluate",
    "explained_variance",
    "fit",
    "grid",
    "heads",
    "l0",
    "load",
    "load_gemma_scope",
    "load_saelens",
    "loss_recovered",
    "resample_dead",
    "save",
    "save_saelens",
    "splice",
    "store",
    "stream",
    "sweep",
    "train_step",
]
