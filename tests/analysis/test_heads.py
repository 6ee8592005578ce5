"""Head detectors against hand-built patterns, a NumPy transcription of TransformerLens's
head detector, and a hand-built successor head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis import heads
from tests.helpers.tiny_models import tiny


def _random_pattern(key, b, h, n):
    scores = jax.random.normal(key, (b, h, n, n)) * 2
    scores = jnp.where(jnp.tril(jnp.ones((n, n), bool)), scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def _tl_detection_patterns(tokens):
    """TransformerLens's get_*_detection_pattern, transcribed to NumPy for one sequence."""
    n = len(tokens)
    prev = np.zeros((n, n))
    prev[1:, :-1] = np.eye(n - 1)
    eq = np.equal.outer(tokens, tokens).astype(float)
    np.fill_diagonal(eq, 0)
    dup = np.tril(eq)
    shifted = np.roll(dup, 1, axis=1)
    ind = np.tril(np.concatenate([np.zeros((n, 1)), shifted[:, 1:]], axis=1))
    return {"prev": prev, "dup": dup, "ind": ind}


def _tl_score(a, d, exclude_bos, exclude_current, measure):
    """TransformerLens's compute_head_attention_similarity_score for one [q, k] pattern."""
    a = a.copy()
    if measure == "mul":
        if exclude_bos:
            a[:, 0] = 0
        if exclude_current:
            np.fill_diagonal(a, 0)
        return (a * d).sum() / a.sum()
    err = np.abs(a - d)
    if exclude_bos:
        err[:, 0] = 0
    if exclude_current:
        np.fill_diagonal(err, 0)
    return 1 - round(err.mean() * len(err), 3)


def test_detection_patterns_by_hand():
    tokens = jnp.array([[1, 2, 1, 2, 1]])
    dup = np.zeros((5, 5))
    dup[2, 0] = dup[3, 1] = dup[4, 0] = dup[4, 2] = 1
    ind = np.zeros((5, 5))
    ind[2, 1] = ind[3, 2] = ind[4, 1] = ind[4, 3] = 1
    np.testing.assert_array_equal(heads.duplicate_token_pattern(tokens)[0], dup)
    np.testing.assert_array_equal(heads.induction_pattern(tokens)[0], ind)
    np.testing.assert_array_equal(heads.previous_token_pattern(5), np.eye(5, k=-1))


@pytest.mark.parametrize("exclude_bos", [False, True])
@pytest.mark.parametrize("exclude_current", [False, True])
@pytest.mark.parametrize("measure", ["mul", "abs"])
def test_detection_score_matches_transformerlens_transcription(exclude_bos, exclude_current,
                                                               measure):
    b, h, n = 3, 4, 9
    pattern = _random_pattern(jax.random.key(0), b, h, n)
    tokens = jax.random.randint(jax.random.key(1), (b, n), 0, 4)  # many repeats
    builders = {"prev": lambda t: heads.previous_token_pattern(n),
                "dup": heads.duplicate_token_pattern, "ind": heads.induction_pattern}
    for kind, build in builders.items():
        got = heads.detection_score(pattern, build(tokens), exclude_bos=exclude_bos,
                                    exclude_current_token=exclude_current, error_measure=measure)
        want = np.mean([[_tl_score(np.asarray(pattern[i, j], np.float64),
                                   _tl_detection_patterns(np.asarray(tokens[i]))[kind],
                                   exclude_bos, exclude_current, measure)
                         for j in range(h)] for i in range(b)], axis=0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-3 if measure == "abs" else 1e-6,
                                   err_msg=kind)


def test_perfect_heads_score_as_stated():
    n = 6
    prev = np.eye(n, k=-1)
    prev[0, 0] = 1
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    pattern = jnp.asarray(np.stack([prev, uniform])[None])  # [1, 2, n, n]
    np.testing.assert_allclose(heads.previous_token_score(pattern), [1.0, np.mean(
        1 / np.arange(2, n + 1))], rtol=1e-6)
    tl = heads.detection_score(pattern, heads.previous_token_pattern(n))
    np.testing.assert_allclose(tl[0], (n - 1) / n, rtol=1e-6)  # row 0 has no target


def test_induction_score_on_a_perfect_induction_head():
    period, start = 4, 1
    n = start + 2 * period
    pattern = np.zeros((n, n))
    pattern[:, 0] = 1  # park on BOS
    for q in range(start + period, n):
        pattern[q] = 0
        pattern[q, q - period + 1] = 1
    got = heads.induction_score(jnp.asarray(pattern)[None, None], period, start)
    np.testing.assert_allclose(got, [1.0])
    tokens = jnp.asarray([[0, 5, 6, 7, 8, 5, 6, 7, 8]])
    tl = heads.detection_score(jnp.asarray(pattern)[None, None], heads.induction_pattern(tokens))
    np.testing.assert_allclose(tl, [period / n], rtol=1e-6)  # 4 of 9 rows have a target


def test_attention_sink_score_by_hand():
    n = 5
    sink = np.zeros((n, n))
    sink[:, 0] = 1
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    pattern = jnp.asarray(np.stack([sink, uniform])[None])
    np.testing.assert_allclose(heads.attention_sink_score(pattern),
                               [1.0, np.mean(1 / np.arange(2, n + 1))], rtol=1e-6)
    tokens = jnp.asarray([[3, 9, 3, 1, 2]])  # token 3 sits at keys 0 and 2
    want_uniform = np.mean([1 / 2, 2 / 3, 2 / 4, 2 / 5])
    np.testing.assert_allclose(
        heads.attention_sink_score(pattern, tokens=tokens, sink_token=3), [1.0, want_uniform],
        rtol=1e-6)
    with pytest.raises(ValueError, match="sink_token needs tokens"):
        heads.attention_sink_score(pattern, sink_token=3)
    with pytest.raises(ValueError, match="outside a sequence"):
        heads.attention_sink_score(pattern, position=7)


def test_retrieval_score_by_hand():
    # context: 0 [needle 11 12 13] 0 | answer: queries 5, 6, 7 emit 11, 12, 13
    tokens = jnp.asarray([[0, 11, 12, 13, 0, 9, 11, 12, 13]])
    n = tokens.shape[1]
    needle = jnp.zeros((1, n), bool).at[0, 1:4].set(True)
    answer = jnp.zeros((1, n), bool).at[0, 5:8].set(True)
    pattern = np.zeros((1, 3, n, n))
    pattern[..., 0] = 1.0
    for q, src in ((5, 1), (6, 2), (7, 3)):
        pattern[0, :, q] = 0
        pattern[0, 0, q, src] = 1  # head 0 copies every needle token
        pattern[0, 1, q, src + 1 if src < 3 else 4] = 1  # head 1 looks at the wrong token
        pattern[0, 2, q, src if q < 7 else 0] = 1  # head 2 copies two of three
    got = heads.retrieval_score(jnp.asarray(pattern), tokens, needle, answer)
    np.testing.assert_allclose(got, [1.0, 0.0, 2 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="needle must be"):
        heads.retrieval_score(jnp.asarray(pattern), tokens, needle[:, :3], answer)


def test_classify_heads_by_hand():
    b, n, h, d = 2, 6, 3, 4
    sink = np.zeros((n, n))
    sink[:, 0] = 1
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    pattern = jnp.asarray(np.stack([sink, sink, uniform])[None].repeat(b, 0))
    z = np.ones((b, n, h, d))
    z[:, :, 0] *= 1e-3  # head 0: sink and silent -> dormant
    z[:, :, 1] *= 2.0  # head 1: sink but writes -> active
    out = heads.classify_heads(pattern, jnp.asarray(z))
    np.testing.assert_array_equal(out["active"], [False, True, True])
    np.testing.assert_allclose(out["sink_mass"], [1.0, 1.0, np.mean(1 / np.arange(2, n + 1))],
                               rtol=1e-6)
    np.testing.assert_allclose(out["z_norm"], [2e-3, 4.0, 2.0], rtol=1e-5)
    stacked = heads.classify_heads(pattern[None].repeat(2, 0), jnp.asarray(z)[None].repeat(2, 0))
    assert stacked["active"].shape == (2, 3)
    with pytest.raises(ValueError, match="z must be"):
        heads.classify_heads(pattern, jnp.asarray(z)[:, :, :2])


def _successor_model(shift_head_ov):
    """Attention-only, no norms, d_model = vocab, W_E = W_U = I: the OV circuit of each head is
    its W_V W_O matrix acting on one-hot tokens."""
    v = 6
    model = ji.models.build("attn_only_2l", n_layers=1, d_model=v, n_heads=2, d_head=v,
                            d_vocab=v, n_ctx=8, normalization_type=None, use_bias=False,
                            positional_embedding_type="none")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))
    params = jax.tree.map(lambda x: x, nn_unbox(variables)["params"])
    params["embed"]["W_E"] = jnp.eye(v)
    params["W_U"] = jnp.eye(v)
    params["b_U"] = jnp.zeros(v)
    attn = params["blocks_0"]["attn"]
    attn["W_V"] = jnp.stack([jnp.eye(v), jnp.eye(v)])
    attn["W_O"] = jnp.stack([shift_head_ov, jnp.eye(v)])
    return model, {"params": params}


def nn_unbox(variables):
    import flax.linen as nn

    return nn.meta.unbox(variables)


def test_successor_score_of_a_hand_built_successor_head():
    v = 6
    shift = np.roll(np.eye(v), 1, axis=1)  # token t -> t + 1 (mod v)
    model, variables = _successor_model(jnp.asarray(shift))
    got = heads.successor_score(model, variables, [[0, 1, 2, 3], [3, 4, 5]])
    np.testing.assert_allclose(got, [[1.0, 0.0]])  # the identity head predicts t, never t + 1
    with pytest.raises(ValueError, match="d_vocab"):
        heads.successor_score(model, variables, [[0, 9]])


def test_successor_score_matches_numpy_on_a_gpt2_style_model():
    import flax.linen as nn

    from tests.helpers import numpy_transformer

    model, variables, _ = tiny("gpt2_small", n_layers=2)
    seqs = [[3, 7, 11, 15, 19], [20, 21, 22]]
    got = np.asarray(heads.successor_score(model, variables, seqs))
    c = model.config
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), nn.meta.unbox(variables)["params"])
    act = numpy_transformer.ACT[c.act_fn]

    def ln(x, q):
        x = x - x.mean(-1, keepdims=True)
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + c.eps) * q["w"] + q["b"]

    want = np.zeros((c.n_layers, c.n_heads))
    for layer in range(c.n_layers):
        blk = p[f"blocks_{layer}"]
        for head in range(c.n_heads):
            hits = []
            for s in seqs:
                for i in range(len(s) - 1):
                    x = p["embed"]["W_E"][s[i]]
                    m = p["blocks_0"]["mlp"]
                    x = x + act(ln(x, p["blocks_0"]["ln2"]) @ m["W_in"] + m["b_in"]) @ m[
                        "W_out"] + m["b_out"]
                    vv = ln(x, blk["ln1"]) @ blk["attn"]["W_V"][head] + blk["attn"]["b_V"][head]
                    out = vv @ blk["attn"]["W_O"][head]
                    logits = ln(out, p["ln_final"]) @ p["embed"]["W_E"].T
                    hits.append(np.argmax(logits[s]) == i + 1)
            want[layer, head] = np.mean(hits)
    np.testing.assert_allclose(got, want)
    assert 0 < want.mean() < 1  # a non-trivial comparison


def test_attention_mass_by_hand():
    # 2 sequences, 2 heads, 4 positions; the last query's row is what counts.
    pattern = np.zeros((2, 2, 4, 4))
    pattern[:, :, :, 0] = 1.0
    pattern[0, 0, 3] = [0.1, 0.2, 0.3, 0.4]
    pattern[1, 0, 3] = [0.5, 0.0, 0.5, 0.0]
    pattern[:, 1, 3] = [0.25, 0.25, 0.25, 0.25]
    keys = np.array([[0, 1, 1, 0], [1, 0, 0, 0]], bool)
    got = heads.attention_mass(jnp.asarray(pattern), keys)
    np.testing.assert_allclose(got, [(0.5 + 0.5) / 2, (0.5 + 0.25) / 2], rtol=1e-6)
    np.testing.assert_allclose(heads.attention_mass(jnp.asarray(pattern), keys[0], query=0),
                               [0.0, 0.0])
    with pytest.raises(ValueError, match="keys must be"):
        heads.attention_mass(jnp.asarray(pattern), np.ones(3, bool))
    with pytest.raises(ValueError, match="query=4 is out of range"):
        heads.attention_mass(jnp.asarray(pattern), keys, query=4)
