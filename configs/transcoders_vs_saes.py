"""Transcoders vs SAEs on the sparsity-faithfulness frontier, and weights-based circuit analysis
(issue 15, experiment 1).

Dunefsky, Chlenski & Nanda 2024, "Transcoders Find Interpretable LLM Feature Circuits": trained
on the same MLP, transcoders (MLP input -> MLP output) "perform at least on par with SAEs in
terms of sparsity, faithfulness" (L0 against the CE loss with the MLP replaced by the
transcoder, or its output by the SAE's reconstruction); and transcoder circuits "factorize into
input-dependent and input-invariant terms": the attribution of an earlier feature i to a later
feature j through the residual stream is a_i(x) (f_dec^i . f_enc^j).

    python -m experiments.transcoders_vs_saes --config=configs/transcoders_vs_saes.py \\
        --workdir=workdirs/transcoders_vs_saes

Setup: the 2-layer LM of configs/train_sae.py (d_model 64, d_mlp 256, induction sequences over
64 tokens, 600 steps of `jaxinterp.train.train`). Two `jaxinterp.sae.sweep` sweeps, one for
SAEs on `blocks.{0,1}.hook_mlp_out` and one for transcoders `blocks.{0,1}.ln2.hook_normalized ->
hook_mlp_out`, each TopK at widths `widths` x k in `ks`, 1500 steps of 1024 activations from the
same token stream, dead latents resampled every 250 steps until 1000. Metrics on 128 held-out
sequences (`jaxinterp.sae.metrics`: L0, explained variance of hook_mlp_out, loss recovered
against zero-ablating hook_mlp_out). Circuit: the layer-0 and layer-1 transcoders at 512
latents, k 8; the layer-1 feature active on the most held-out tokens; see
experiments/transcoders_vs_saes.py for the definitions (LayerNorm weight and centring folded
into W_enc, its scale ignored, as in the paper).

Measured once at this config: (filled in below after the run)
"""

from ml_collections import ConfigDict

from configs import train_sae
from jaxinterp.sae.train import TrainConfig
from jaxinterp.train.config import dataclass_config


def get_config():
    c = ConfigDict()
    c.lm = train_sae.get_config().lm
    c.layers = (0, 1)
    c.widths = (512,)
    c.ks = (4, 8, 16, 32)
    c.seeds = (0,)              # dictionary seeds (one vmapped group per layer, width, k)
    c.train = dataclass_config(TrainConfig, num_steps=1500, resample_every=250,
                               resample_until=1000, checkpoint_every=500)
    c.model_batch_size = 32     # sequences per model forward (32 x 32 = 1024 activations)
    c.eval_batch_size = 128     # held-out sequences for the metrics and the circuit
    c.circuit = ConfigDict(dict(
        src_layer=0, dst_layer=1, d_sae=512, k=8,
        feature=-1,             # the layer-1 feature; -1: the one active on the most tokens
        top_k=10))              # sources reported, and the k of the top-k overlap
    c.verbose = True
    return c
