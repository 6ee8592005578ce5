"""jaxinterp.analysis.editing against NumPy: ROME's rank-one update (W' = W + (v* - W k*)
(C^-1 k*)^T / ((C^-1 k*)^T k*)), the key covariance, the edit at an int and at a traced
(vmapped) layer, the fine-tuning edit, average precision against scikit-learn, and the
neuron clamp against a hand-computed MLP output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

import jaxinterp as ji
from jaxinterp.analysis import editing as E
from jaxinterp.models.transformer import Transformer, TransformerConfig

CFG = dict(n_layers=3, d_model=16, n_heads=2, d_head=8, d_mlp=24, d_vocab=20, n_ctx=8,
           init_range=0.3)


@pytest.fixture(scope="module")
def setup():
    model = Transformer(TransformerConfig(**CFG))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (6, 6), 0, CFG["d_vocab"])
    variables = {"params": jax.tree.map(np.asarray, E._params(
        model.init(jax.random.PRNGKey(0), tokens)))}
    return model, variables, tokens


def _np_posts(model, variables, tokens):
    _, cache = ji.run(model, variables, tokens, capture="blocks.*.mlp.hook_post")
    return [np.asarray(cache[f"blocks.{i}.mlp.hook_post"], np.float64) for i in range(3)]


def test_rank_one_update_matches_numpy():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(50, 6))
    cov = keys.T @ keys / 50
    w, b = rng.normal(size=(6, 4)), rng.normal(size=4)
    k, v = rng.normal(size=6), rng.normal(size=4)
    u = np.linalg.inv(cov) @ k
    want = w + np.outer(u, v - (k @ w + b)) / (u @ k)
    got = w + np.asarray(E.rank_one_update(w, jnp.asarray(cov, jnp.float32),
                                           jnp.asarray(k, jnp.float32),
                                           jnp.asarray(v - (k @ w + b), jnp.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(k @ got + b, v, rtol=1e-4, atol=1e-4)  # W' k* = v*


def test_key_covariance_matches_numpy(setup):
    model, variables, tokens = setup
    mask = np.arange(6)[None] >= np.array([[0], [2], [1], [5], [0], [3]])
    posts = _np_posts(model, variables, tokens)
    got = np.asarray(E.key_covariance(model, variables, tokens, mask=jnp.asarray(mask)))
    for i in range(3):
        k = posts[i][mask]  # [n, d_mlp]
        np.testing.assert_allclose(got[i], k.T @ k / len(k), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(E.key_covariance(model, variables, tokens, 1)),
                               posts[1].reshape(-1, 24).T @ posts[1].reshape(-1, 24) / 36,
                               rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def edits(setup):
    """ROME edits of layers 0 and 1 of 3 (an int each, and both in one vmap over a traced
    layer) and the fine-tuning edit of layer 1, of two prompts of one fact. (The last layer's
    MLP at the subject token cannot reach the answer position: no attention follows it.)"""
    model, variables, tokens = setup
    prompts = tokens[:2].at[:, 2:4].set(jnp.array([[3, 4], [3, 4]]))  # one subject, relation
    prompts = prompts.at[:, 5].set(9)
    subject_pos, answer_pos = jnp.array([2, 2]), jnp.array([5, 5])
    target = 7
    cov = E.key_covariance(model, variables, tokens) + 1e-3 * jnp.eye(24)

    def rome(layer):
        return E.rome_edit(model, variables, prompts, subject_pos, answer_pos, target, layer,
                           cov, steps=15)

    by_int = jax.jit(lambda: rome(1))()
    params_v, info_v = jax.jit(jax.vmap(rome))(jnp.arange(2))
    by_vmap = [(jax.tree.map(lambda x, i=i: x[i], params_v),
                jax.tree.map(lambda x, i=i: x[i], info_v)) for i in range(2)]
    ft = jax.jit(lambda: E.finetune_edit(model, variables, prompts, answer_pos, target, 1,
                                         steps=15, lr=3e-2))()
    return dict(prompts=prompts, subject_pos=subject_pos, answer_pos=answer_pos, target=target,
                cov=cov, by_int=by_int, by_vmap=by_vmap, ft=ft)


def _logprob(model, params, ed):
    logits, _ = ji.run(model, {"params": params}, ed["prompts"])
    return np.asarray(E.target_logprob(logits, ed["answer_pos"], jnp.full(2, ed["target"])))


@pytest.mark.parametrize("layer", [0, 1])
def test_rome_edit_is_the_rank_one_update(setup, edits, layer):
    model, variables, _ = setup
    params, info = edits["by_vmap"][layer]
    posts = _np_posts(model, variables, edits["prompts"])[layer]
    key = posts[[0, 1], [2, 2]].mean(0)
    np.testing.assert_allclose(np.asarray(info["key"]), key, rtol=1e-5, atol=1e-6)
    cov = np.asarray(edits["cov"][layer], np.float64)
    u = np.linalg.solve(cov, key)
    delta = np.asarray(info["delta"], np.float64)
    w = variables["params"][f"blocks_{layer}"]["mlp"]["W_out"]
    np.testing.assert_allclose(params[f"blocks_{layer}"]["mlp"]["W_out"],
                               w + np.outer(u, delta) / (u @ key), rtol=1e-3, atol=1e-4)
    for other in (f"blocks_{i}" for i in range(3) if i != layer):
        assert all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(params[other]), jax.tree.leaves(variables["params"][other]),
            strict=True))
    # the edit makes the model emit the new attribute more (the direction ROME optimises)
    before = _logprob(model, variables["params"], edits)
    after = _logprob(model, params, edits)
    assert (after > before + 0.2).all(), (before, after)
    # W' k* + b = v0-based target at the edited layer: the MLP output moved by delta on k*
    b_out = variables["params"][f"blocks_{layer}"]["mlp"]["b_out"]
    np.testing.assert_allclose(key @ params[f"blocks_{layer}"]["mlp"]["W_out"] + b_out,
                               key @ w + b_out + delta, rtol=1e-3, atol=1e-3)
    # delta respects ROME's clamp
    assert np.linalg.norm(delta) <= 4.0 * np.linalg.norm(info["v0"]) * (1 + 1e-5)


def test_rome_traced_layer_equals_int_layer(edits):
    (params_v, info_v), (params_i, info_i) = edits["by_vmap"][1], edits["by_int"]
    np.testing.assert_allclose(info_v["delta"], info_i["delta"], rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(params_i), jax.tree.leaves(params_v), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_finetune_edit_changes_only_its_layer(setup, edits):
    model, variables, _ = setup
    params, _ = edits["ft"]
    for i in (0, 2):
        assert np.array_equal(params[f"blocks_{i}"]["mlp"]["W_out"],
                              variables["params"][f"blocks_{i}"]["mlp"]["W_out"])
    assert not np.array_equal(params["blocks_1"]["mlp"]["W_out"],
                              variables["params"]["blocks_1"]["mlp"]["W_out"])
    assert (_logprob(model, params, edits) > _logprob(model, variables["params"], edits)).all()


def test_with_w_out_delta_scanned_equals_unrolled(setup):
    from jaxinterp.models import stack_layers
    _, variables, _ = setup
    delta = jnp.ones((24, 16))
    unrolled = E.with_w_out_delta(variables["params"], 1, delta, 3)
    scanned = E.with_w_out_delta(stack_layers(variables["params"]), jnp.array(1), delta, 3)
    np.testing.assert_array_equal(stack_layers(unrolled)["blocks"]["mlp"]["W_out"],
                                  scanned["blocks"]["mlp"]["W_out"])


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(0)
    scores = np.maximum(rng.normal(size=(40, 3, 5)), 0).astype(np.float32)  # ReLU ties at 0
    scores[:, 0, 0] = np.round(scores[:, 0, 0])  # heavy ties
    labels = rng.random(40) < 0.3
    got = np.asarray(E.average_precision(jnp.asarray(scores), jnp.asarray(labels)))
    want = np.array([[average_precision_score(labels, scores[:, i, j]) for j in range(5)]
                     for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    rel = rng.integers(0, 3, 40)
    by_rel = np.asarray(E.relation_neuron_scores(jnp.asarray(scores), jnp.asarray(rel), 3))
    np.testing.assert_allclose(by_rel[2, 1, 3], average_precision_score(rel == 2,
                                                                        scores[:, 1, 3]),
                               rtol=1e-5)


def test_top_and_random_neurons():
    scores = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 7)))
    top = np.asarray(E.top_neurons(scores, 4))
    assert top.shape == (3, 2, 7) and (top.reshape(3, -1).sum(1) == 4).all()
    for r in range(3):
        flat = np.asarray(scores[r]).reshape(-1)
        assert set(np.flatnonzero(top[r].reshape(-1))) == set(np.argsort(-flat)[:4])
    rand = np.asarray(E.random_neurons(jax.random.PRNGKey(0), 5, (2, 7), 4))
    assert rand.shape == (5, 2, 7) and (rand.reshape(5, -1).sum(1) == 4).all()
    with pytest.raises(ValueError, match="k=15"):
        E.top_neurons(scores, 15)


def test_neuron_clamp_matches_hand_computed_mlp_out(setup):
    model, variables, tokens = setup
    mask = np.zeros((3, 24), bool)
    mask[0, [1, 5, 9]] = True
    mask[1, [0, 23]] = True
    ivs = E.neuron_interventions(jnp.asarray(mask))
    _, clean = ji.run(model, variables, tokens, capture="blocks.*.mlp.hook_post")
    _, cache = ji.run(model, variables, tokens, interventions=ivs,
                      capture=["blocks.*.mlp.hook_post", "blocks.*.hook_mlp_out"])
    for i in range(3):
        post = np.asarray(cache[f"blocks.{i}.mlp.hook_post"])
        assert (post[..., mask[i]] == 0).all()
        p = variables["params"][f"blocks_{i}"]["mlp"]
        np.testing.assert_allclose(cache[f"blocks.{i}.hook_mlp_out"],
                                   post @ p["W_out"] + p["b_out"], rtol=1e-4, atol=1e-5)
    # layer 0 unchanged elsewhere; Scale by 0 is the same intervention as the clamp
    np.testing.assert_array_equal(np.asarray(cache["blocks.0.mlp.hook_post"])[..., ~mask[0]],
                                  np.asarray(clean["blocks.0.mlp.hook_post"])[..., ~mask[0]])
    scaled, _ = ji.run(model, variables, tokens,
                       interventions=E.neuron_interventions(jnp.asarray(mask), scale=0.0))
    clamped, _ = ji.run(model, variables, tokens, interventions=ivs)
    np.testing.assert_allclose(scaled, clamped, rtol=1e-6, atol=1e-6)
    acts = np.asarray(E.neuron_activations(model, variables, tokens, pool="mean"))
    np.testing.assert_allclose(acts[:, 1], np.asarray(clean["blocks.1.mlp.hook_post"]).mean(1),
                               rtol=1e-5, atol=1e-6)
