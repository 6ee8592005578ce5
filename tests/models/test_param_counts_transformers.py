"""Parameter counts of the transformer-family presets against the reference implementations'
counts, written from the Hugging Face module lists (never from our modules)."""

import jax
import jax.numpy as jnp
import pytest

import jaxinterp as ji


def _count(name: str) -> int:
    model = ji.models.build(name)
    tokens = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def _bert_for_masked_lm(vocab=30522, d=768, layers=12, d_mlp=3072, n_pos=512, types=2):
    """HF BertForMaskedLM without the pooler (`add_pooling_layer=False`), decoder tied to the
    word embeddings: embeddings (word, position, token type, LayerNorm), per layer query, key,
    value, attention output dense + LayerNorm, intermediate and output dense + LayerNorm, then
    the MLM head's transform dense + LayerNorm and the decoder bias."""
    embeddings = vocab * d + n_pos * d + types * d + 2 * d
    layer = 4 * (d * d + d) + 2 * d + (d * d_mlp + d_mlp) + (d_mlp * d + d) + 2 * d
    head = d * d + d + 2 * d + vocab
    return embeddings + layers * layer + head


def _llama_for_causal_lm(vocab, d, layers, heads, kv_heads, d_head, d_mlp, tied=False):
    """HF LlamaForCausalLM: embed_tokens, per layer q/k/v/o projections (no bias), gate/up/down
    projections, input and post-attention RMSNorm weights, the final norm and lm_head."""
    attn = d * heads * d_head + 2 * d * kv_heads * d_head + heads * d_head * d
    layer = attn + 3 * d * d_mlp + 2 * d
    return vocab * d + layers * layer + d + (0 if tied else d * vocab)


@pytest.mark.parametrize("name, want", [
    ("bert_base", _bert_for_masked_lm()),
    ("llama_small", _llama_for_causal_lm(32000, 512, 8, 8, 2, 64, 1408)),
])
def test_transformer_preset_counts(name, want):
    assert _count(name) == want


def test_bert_base_is_hf_bert_for_masked_lm():
    # HF `BertForMaskedLM.from_pretrained("bert-base-uncased")` reports 109,514,298 parameters
    # (BertModel with its pooler: 109,482,240; the MLM head has no pooler).
    assert _bert_for_masked_lm() == 109_514_298
    assert _count("bert_base") == 109_514_298
