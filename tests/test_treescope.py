"""treescope renders jaxinterp caches and (boxed and unboxed) variables as text."""

import flax
import jax
import treescope

import jaxinterp as ji


def test_render_cache_and_variables():
    model = ji.models.build("gpt2_small", n_layers=2, d_model=64, n_heads=4, d_head=16,
                            d_mlp=256, d_vocab=100, n_ctx=32)
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 100)
    variables = model.init(jax.random.key(0), tokens)
    _, cache = ji.run(model, variables, tokens, capture=["blocks.*.attn.hook_pattern"])

    text = treescope.render_to_text(cache)
    assert "blocks.0.attn.hook_pattern" in text
    assert "blocks.1.attn.hook_pattern" in text
    assert "(2, 4, 8, 8)" in text  # [batch, head, query_pos, key_pos]

    text = treescope.render_to_text(variables)
    for name in ("params", "blocks_0", "blocks_1", "attn", "W_Q", "W_O", "W_E"):
        assert name in text, name
    assert "LogicallyPartitioned" in text  # parameters carry logical-axis boxes

    text = treescope.render_to_text(flax.linen.meta.unbox(variables))
    assert "W_Q" in text
    assert "LogicallyPartitioned" not in text
