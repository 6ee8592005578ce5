"""Decoding neurons through the final projection (Harry J. Davies 2025, "Decoding specialised
feature neurons in LLMs with the final projection layer", v2 "Flash Interpretability: Decoding
Specialised Feature Neurons in Large Language Models with the LM-Head", arXiv:2501.02688).

    python -m experiments.decoding_neurons --config=configs/decoding_neurons.py \
        --workdir=workdirs/decoding_neurons

Claim (abstract): "it is possible to decode neuron weights directly into token probabilities
through the final projection layer of the model (the LM-head)"; specialised neurons found this
way ("dog", "California") are validated "by clamping these neurons to affect the probability
of the concept in the output".

Setup (method: the experiment's module docstring): the base model of
`configs/relation_neurons.py` (closed-book facts, 48 subjects x 4 relations, 8 typed attributes
each; 2 layers, d_model 64, one head of 64, d_mlp 256: 512 neurons; 600 steps, seed 0; clean
accuracy 1.0 on all 192 facts). Every neuron decoded as `neuron_logits(model, variables)`
(W_out row, ln_final folded: centred, times `ln_final.w`; the per-position 1/sigma left out, it
is > 0 and the same for every neuron); its top 5 tokens; each neuron clamped alone to 3x its
largest activation at the answer-predicting position of all 192 prompts (512 neurons x 2
clamps, one `lax.map`).

Runtime: 200 s wall on the shared 2-core machine (training 127 s; decoding and the 1024
clamped runs ~55 s), 65 s user + 3 s sys.

Measured (seed 0; lift = mean logit change of the neuron's 5 decoded tokens minus that of the
other tokens, in logits; all 256 neurons of each layer are live):
  layer 1 (last): predicted (direct path) 0.97, with the final norm's scale frozen 0.97
    (identical: nothing follows the last MLP), total 0.88 (the norm's scale -0.09). Total
    lift > 0 for 256 / 256 neurons; corr(predicted, total) over neurons 0.998.
  layer 0: predicted 1.31, frozen-scale 1.47 (layer 1's attention and MLP add +0.16), total
    1.37 (the norm's scale -0.10); the direct path is 96% of the total. Total lift > 0 for
    256 / 256; corr 0.985.
  Specialisation: the top decoded token is an attribute token for 99% (layer 0) / 100%
    (layer 1) of neurons, and 98% / 84% of neurons fire more (clean activation at the answer
    position) on prompts whose answer is one of their decoded tokens than on the others. But
    only 7% / 2% have all 5 decoded tokens in one relation's attributes: neurons write
    mixtures of attributes of several relations (superposition), not one "concept".
  The paper's up-projection variant (`--config.weights=in`: decode the W_in column): lifts
    (same clamps, the W_in-decoded top tokens) 0.80 / 0.48 total, positive for 91% / 77% of
    neurons; 98% / 100% fire more on their decoded answers.
What this reproduces: decoding a neuron through the unembedding predicts what clamping it
does to the output (its decoded tokens rise, for every neuron, by about what the direct path
predicts: 96-110% of the total is the direct path), and decoded tokens match what the neurons
respond to. What is not tested: "specialised" single-concept neurons as in Llama 3.1 8B (a
2-layer model trained on 192 facts has no such neurons to find), and the paper's
pretrained-vs-instruct comparison.
"""

from ml_collections import ConfigDict

from configs.relation_neurons import get_config as relation_neurons_config


def get_config():
    c = ConfigDict()
    c.seed = 0  # the base model's seed (one jaxinterp.train.train run)
    # the base model of configs/relation_neurons.py: closed-book facts, 48 subjects x 4
    # relations, 2 layers, one head of 64, d_mlp 256, 600 steps
    c.base = relation_neurons_config().base
    c.base_workdir = ""  # "" means <workdir>; the base model goes to <base_workdir>/base_seed{s}
    c.weights = "out"  # decode each neuron's W_out row ("out") or its W_in column ("in")
    c.final_norm = "fold"  # fold ln_final into the decoding ("fold") or not ("none")
    c.top_k = 5  # a neuron's decoded tokens: its top-k tokens
    c.clamp_scale = 3.0  # clamp each neuron to this x its largest clean activation
    c.min_activation = 0.05  # a live neuron's largest activation exceeds this
    c.n_examples = 3  # example neurons per layer in examples.png
    return c
