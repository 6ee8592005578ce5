"""Writes the tiny Hugging Face checkpoints and reference outputs in `tests/pretrained/data/`.

The parity tests (`tests/pretrained/test_hf.py`) load these checkpoints with
`jaxinterp.pretrained.load_hf` (no PyTorch) and compare against what `transformers` computed
here. Each model is RANDOMLY initialised (every weight, bias and norm scale drawn from a normal
far from the default 0 / 1 initialisation, so a mis-mapped tensor cannot hide) and tiny, so
the whole data folder stays well under 1 MB.

What is written, per model `NAME` in `MODELS`:
  data/NAME/config.json + model.safetensors    `save_pretrained(safe_serialization=True)`
                                               (`llama` is sharded: model.safetensors.index.json
                                               plus model-0000k-of-0000n.safetensors)
  data/NAME.npz   input_ids [2, 12] (and token_type_ids for BERT), `logits` (when the model has
                  a head), `last_hidden_state`, `hidden_states` [n_layers + 1, 2, 12, d_model]
                  (`output_hidden_states=True`), all float32.
  data/NAME_padded.npz  (BERT models only, same weights) a padded batch: input_ids,
                  token_type_ids, attention_mask [3, 7] (lengths 7, 5, 3; padding is id 0,
                  type 0, mask 0), and the outputs of `model(..., attention_mask=...)` as above
                  ([3, 7, ...]; HF computes every position, padded ones included).

To regenerate (PyTorch is NOT a dependency of jaxinterp; use a separate venv outside the repo;
the CPU wheel of torch from the local wheel folder, or any CPU build, works):

    python3.11 -m venv /tmp/hfgen
    /tmp/hfgen/bin/pip install torch transformers    # generated with torch 2.13.0+cpu,
                                                     # transformers 5.23.0
    cd <repo root> && /tmp/hfgen/bin/python tests/pretrained/make_hf_fixtures.py [OUT_DIR]

OUT_DIR (default: data/ beside this file) is emptied and rewritten. The output is deterministic
for a given torch version (fixed seeds); writing elsewhere and comparing is how to add a fixture
without touching the committed ones.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import numpy as np
import torch
import transformers

DATA = pathlib.Path(__file__).resolve().parent / "data"
BATCH, SEQ, VOCAB = 2, 12, 100
PADDED_LENGTHS = (7, 5, 3)  # the padded BERT batch: real tokens per row, padded to the longest


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter ~ N(mean, std): norm scales around 1, everything else around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = "norm" in name.lower() or "ln_" in name or name.endswith("ln_f.weight")
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def _gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg), {}


def _bert(with_head: bool):
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, type_vocab_size=2,
        hidden_act="gelu", layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = (transformers.BertForMaskedLM(cfg) if with_head
             else transformers.BertModel(cfg, add_pooling_layer=True))
    types = np.random.RandomState(3).randint(0, 2, (BATCH, SEQ))
    return model, {"token_type_ids": types}


def _padded_inputs() -> dict[str, np.ndarray]:
    """A right-padded batch as a tokenizer gives it: pad id 0, type 0, attention_mask 0."""
    n = max(PADDED_LENGTHS)
    mask = (np.arange(n)[None, :] < np.array(PADDED_LENGTHS)[:, None]).astype(np.int64)
    rng = np.random.RandomState(5)
    ids = rng.randint(1, VOCAB, mask.shape) * mask
    types = rng.randint(0, 2, mask.shape) * mask
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def _outputs(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs (int32) and the model's float32 outputs, as stored in the .npz files."""
    with torch.no_grad():
        out = model(**{k: torch.tensor(v) for k, v in inputs.items()}, output_hidden_states=True)
    arrays = {**{k: v.astype(np.int32) for k, v in inputs.items()},
              "hidden_states": torch.stack(out.hidden_states).numpy()}
    if getattr(out, "logits", None) is not None:
        arrays["logits"] = out.logits.numpy()
    if getattr(out, "last_hidden_state", None) is not None:
        arrays["last_hidden_state"] = out.last_hidden_state.numpy()
    return arrays


def _llama(tied: bool):
    if tied:  # 1 layer, tied embeddings, attention biases but no MLP biases, multi-query
        cfg = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=1, head_dim=4,
            max_position_embeddings=32, rms_norm_eps=1e-5, tie_word_embeddings=True,
            attention_bias=True, mlp_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 100.0})
    else:  # grouped-query attention (4 query heads, 2 KV heads), untied, rope_theta 500
        cfg = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            max_position_embeddings=32, rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    return transformers.LlamaForCausalLM(cfg), {}


MODELS = {
    "gpt2": lambda: _gpt2(),
    "bert_mlm": lambda: _bert(with_head=True),
    "bert": lambda: _bert(with_head=False),
    "llama": lambda: _llama(tied=False),
    "llama_tied": lambda: _llama(tied=True),
}
SHARDED = {"llama": "40KB"}  # save these with several safetensors shards and an index


def main(data: pathlib.Path = DATA) -> None:
    torch.manual_seed(0)
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    ids = np.random.RandomState(0).randint(0, VOCAB, (BATCH, SEQ))
    for seed, (name, make) in enumerate(MODELS.items()):
        model, extra = make()
        model.eval()
        _randomize(model, seed=100 + seed)
        kwargs = {"max_shard_size": SHARDED[name]} if name in SHARDED else {}
        model.save_pretrained(data / name, safe_serialization=True, **kwargs)
        (data / name / "generation_config.json").unlink(missing_ok=True)
        arrays = _outputs(model, {"input_ids": ids, **extra})
        np.savez_compressed(data / f"{name}.npz", **arrays)
        print(name, {k: v.shape for k, v in arrays.items()},
              sorted(p.name for p in (data / name).iterdir()))
        if name.startswith("bert"):
            padded = _outputs(model, _padded_inputs())
            np.savez_compressed(data / f"{name}_padded.npz", **padded)
            print(f"{name}_padded", {k: v.shape for k, v in padded.items()})
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    (data / "VERSIONS.json").write_text(json.dumps(versions, indent=1) + "\n")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
