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
"""

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
    "TrainConfig",
    "activation_fn",
    "create_state",
    "dead_fraction",
    "evaluate",
    "explained_variance",
    "fit",
    "l0",
    "load",
    "load_gemma_scope",
    "load_saelens",
    "loss_recovered",
    "resample_dead",
    "save",
    "save_saelens",
    "splice",
    "stream",
    "train_step",
]
