"""Attribution graphs on a tiny GPT-2-style model with random per-layer ReLU transcoders (and a
random cross-layer transcoder):

- every edge equals the direct effect computed independently: a float64 NumPy model of the
  frozen replacement model (attention patterns and norm scales taken from the run, everything
  else written from the equations), whose Jacobian-vector products J w_s (a source's write
  pushed through it) are contracted with each target's read direction;
- completeness: each feature's and logit's incoming edges plus its bias term sum to its value;
- chunking, a mesh of 8 devices and the influence-ordered budget do not change the rows;
- pruning keeps the influence it reports (checked against the influence computed with a dense
  matrix inverse), and the JSON has circuit-tracer's fields;
- memory of one compiled chunk, from XLA's memory analysis, grows with the chunk, not the graph.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import circuits
from jaxinterp.sae import SAEConfig

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process

N_LAYERS, D, D_SAE, VOCAB, POS = 2, 16, 24, 20, 6


def _setup():
    model = ji.models.build("gpt2_small", n_layers=N_LAYERS, d_model=D, n_heads=2, d_head=8,
                            d_mlp=32, d_vocab=VOCAB, n_ctx=8)
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (POS,), 0, VOCAB))
    variables = nn.meta.unbox(model.init(jax.random.key(0), tokens[None]))
    # Larger weights than GPT-2's init, so that attention is far from uniform.
    variables = jax.tree_util.tree_map_with_path(
        lambda p, x: x * 15 if str(p[-1].key).startswith("W_") else x, variables)
    keys = jax.random.split(jax.random.key(2), 4 * N_LAYERS).reshape(N_LAYERS, 4)
    params = [{"W_enc": 0.3 * jax.random.normal(k[0], (D, D_SAE)),
               "b_enc": -0.8 + 0.2 * jax.random.normal(k[1], (D_SAE,)),
               "W_dec": 0.3 * jax.random.normal(k[2], (D_SAE, D)),
               "b_dec": 0.1 * jax.random.normal(k[3], (D,))} for k in keys]
    configs = [SAEConfig("relu", d_in=D, d_sae=D_SAE, transcoder=True,
                         site=f"blocks.{i}.ln2.hook_normalized",
                         out_site=f"blocks.{i}.hook_mlp_out") for i in range(N_LAYERS)]
    return model, variables, circuits.Transcoders.stack(params, configs), tokens


@pytest.fixture(scope="module")
def setup():
    model, variables, tc, tokens = _setup()
    graph = circuits.attribute(model, variables, tc, tokens, chunk_size=16)
    return model, variables, tc, tokens, graph


def _frozen_numpy(model, variables, tokens):
    """`F(mlp_writes [L, P, d], embeds [P, d]) -> reads [L + 1, P, d]` in float64: the frozen
    replacement model written from the equations, patterns and norm scales from the run."""
    _, cache = ji.run(model, variables, tokens[None],
                      capture=("blocks.*.attn.hook_pattern", "*hook_scale"))
    def f64(x):
        return np.asarray(x, np.float64)

    p = jax.tree.map(f64, variables["params"])
    pattern = [f64(cache[f"blocks.{i}.attn.hook_pattern"][0]) for i in range(N_LAYERS)]
    s1 = [f64(cache[f"blocks.{i}.ln1.hook_scale"][0]) for i in range(N_LAYERS)]
    s2 = [f64(cache[f"blocks.{i}.ln2.hook_scale"][0]) for i in range(N_LAYERS)]
    sf = f64(cache["ln_final.hook_scale"][0])

    def norm(x, s, q):
        return (x - x.mean(-1, keepdims=True)) * s * q["w"] + q["b"]

    def forward(mlp_writes, embeds, with_constants=True):
        c = 1.0 if with_constants else 0.0
        x = embeds + c * p["pos_embed"]["W_pos"][:POS]
        out = []
        for i in range(N_LAYERS):
            b = p[f"blocks_{i}"]
            a = b["attn"]
            y = norm(x, s1[i], b["ln1"]) if with_constants else (
                (x - x.mean(-1, keepdims=True)) * s1[i] * b["ln1"]["w"])
            v = np.einsum("pm,hmd->phd", y, a["W_V"]) + c * a["b_V"]
            z = np.einsum("hqk,khd->qhd", pattern[i], v)
            mid = x + np.einsum("qhd,hdm->qm", z, a["W_O"]) + c * a["b_O"]
            out.append(norm(mid, s2[i], b["ln2"]) if with_constants else
                       (mid - mid.mean(-1, keepdims=True)) * s2[i] * b["ln2"]["w"])
            x = mid + mlp_writes[i]
        q = p["ln_final"]
        out.append(norm(x, sf, q) if with_constants else
                   (x - x.mean(-1, keepdims=True)) * sf * q["w"])
        return np.stack(out)

    return forward


def _targets(graph, model, variables, tc):
    """Each row's (read index, position, read direction) in float64."""
    feats = graph.active_features[graph.selected_features]
    w_enc = np.asarray(tc.params["W_enc"], np.float64)
    rows = [(int(l_), int(p_), w_enc[l_, :, f]) for l_, p_, f in feats]
    w_u = np.asarray(variables["params"]["embed"]["W_E"], np.float64).T \
        if model.config.tie_embeddings else np.asarray(variables["params"]["W_U"], np.float64)
    w_u = w_u - w_u.mean(1, keepdims=True)
    rows += [(N_LAYERS, POS - 1, w_u[:, v]) for v in graph.logit_tokens]
    return rows


def test_the_numpy_reference_reproduces_the_real_forward_pass(setup):
    model, variables, _, tokens, _ = setup
    forward = _frozen_numpy(model, variables, tokens)
    _, cache = ji.run(model, variables, tokens[None],
                      capture=("hook_embed", "blocks.*.hook_mlp_out",
                               "blocks.*.ln2.hook_normalized", "ln_final.hook_normalized"))
    mlp = np.stack([cache[f"blocks.{i}.hook_mlp_out"][0] for i in range(N_LAYERS)])
    got = forward(np.asarray(mlp, np.float64), np.asarray(cache["hook_embed"][0], np.float64))
    want = np.stack([cache[f"blocks.{i}.ln2.hook_normalized"][0] for i in range(N_LAYERS)]
                    + [cache["ln_final.hook_normalized"][0]])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _check_edges(model, variables, tc, tokens, graph, cross_layer=False):
    """Every edge of `graph` against the float64 NumPy frozen model."""
    forward = _frozen_numpy(model, variables, tokens)
    prompt = circuits.prompt_values(model, variables, tc, tokens)
    zeros_mlp, zeros_emb = np.zeros((N_LAYERS, POS, D)), np.zeros((POS, D))
    w_dec = np.asarray(tc.params["W_dec"], np.float64)
    writes = []  # each source's write: (mlp writes, embed writes)
    for i in graph.selected_features:
        l_, p_, f = graph.active_features[i]
        m = zeros_mlp.copy()
        if cross_layer:  # into its own layer's output and every later one
            for dst in range(l_, N_LAYERS):
                m[dst, p_] = graph.activation_values[i] * w_dec[l_, dst, f]
        else:
            m[l_, p_] = graph.activation_values[i] * w_dec[l_, f]
        writes.append((m, zeros_emb))
    for l_ in range(N_LAYERS):
        for p_ in range(POS):
            m = zeros_mlp.copy()
            m[l_, p_] = prompt.errors[l_, p_]
            writes.append((m, zeros_emb))
    for p_ in range(POS):
        e = zeros_emb.copy()
        e[p_] = prompt.embeds[p_]
        writes.append((zeros_mlp, e))
    # J w_s: the frozen model is affine, so the linear part alone pushes each write through.
    pushed = np.stack([forward(m, e, with_constants=False) for m, e in writes])  # [src, L+1, P, d]
    targets = _targets(graph, model, variables, tc)
    want = np.stack([pushed[:, r, p] @ v for r, p, v in targets])  # [targets, sources]
    rows = np.concatenate([graph.adjacency[:graph.n_features],
                           graph.adjacency[-len(graph.logit_tokens):]])
    n_src = len(writes)
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(rows[:, :n_src], want, rtol=1e-3, atol=2e-4)
    assert not rows[:, n_src:].any()  # logits are never sources


def test_every_edge_equals_the_float64_direct_effect(setup):
    model, variables, tc, tokens, graph = setup
    assert graph.complete and graph.n_features > 20, graph.n_features
    _check_edges(model, variables, tc, tokens, graph)
    # Causality: a feature is fed only by earlier layers' features and errors.
    feats = graph.active_features[graph.selected_features]
    later = feats[None, :, 0] >= feats[:, None, 0]
    assert not graph.adjacency[:graph.n_features, :graph.n_features][later].any()


def test_incoming_edges_plus_bias_sum_to_each_value(setup):
    model, variables, tc, tokens, graph = setup
    forward = _frozen_numpy(model, variables, tokens)
    n_logits = len(graph.logit_tokens)
    rows = np.r_[0:graph.n_features, len(graph.values) - n_logits:len(graph.values)]
    np.testing.assert_allclose(graph.adjacency[rows].sum(1) + graph.biases[rows],
                               graph.values[rows], rtol=1e-4, atol=1e-4)
    # The values are the features' activations and the demeaned logits of the real model.
    np.testing.assert_array_equal(graph.values[:graph.n_features], graph.activation_values)
    logits = np.asarray(model.apply(variables, tokens[None]))[0, -1]
    np.testing.assert_allclose(graph.values[-n_logits:],
                               logits[graph.logit_tokens] - logits.mean(), rtol=1e-5, atol=1e-5)
    # The bias terms: the NumPy model with every write removed (MLP outputs reduced to the
    # transcoders' decoder biases b_dec, no token embeddings).
    b_dec = np.asarray(tc.params["b_dec"], np.float64)
    reads0 = forward(np.broadcast_to(b_dec[:, None], (N_LAYERS, POS, D)), np.zeros((POS, D)))
    b_enc = np.asarray(tc.params["b_enc"], np.float64)
    b_u = np.asarray(variables["params"].get("b_U", np.zeros(VOCAB)), np.float64)
    want = [reads0[r, p] @ v for r, p, v in _targets(graph, model, variables, tc)]
    feats = graph.active_features[graph.selected_features]
    want = np.asarray(want) + np.r_[b_enc[feats[:, 0], feats[:, 2]],
                                    b_u[graph.logit_tokens] - b_u.mean()]
    np.testing.assert_allclose(graph.biases[rows], want, rtol=1e-4, atol=1e-4)


def test_cross_layer_transcoder_edges_and_completeness(setup):
    model, variables, tc, tokens, _ = setup
    p = tc.params
    w_dec = 0.3 * jax.random.normal(jax.random.key(5), (N_LAYERS, N_LAYERS, D_SAE, D))
    clt = circuits.Transcoders.cross_layer({**p, "W_dec": w_dec}, tc.config)
    np.testing.assert_array_equal(np.asarray(clt.params["W_dec"][1, 0]), 0)  # no writes back
    graph = circuits.attribute(model, variables, clt, tokens, chunk_size=16)
    assert graph.complete and graph.n_features > 20
    _check_edges(model, variables, clt, tokens, graph, cross_layer=True)
    n_logits = len(graph.logit_tokens)
    rows = np.r_[0:graph.n_features, len(graph.values) - n_logits:len(graph.values)]
    np.testing.assert_allclose(graph.adjacency[rows].sum(1) + graph.biases[rows],
                               graph.values[rows], rtol=1e-4, atol=1e-4)


def test_chunks_and_an_8_device_mesh_give_the_same_rows(setup):
    model, variables, tc, tokens, graph = setup
    small = circuits.attribute(model, variables, tc, tokens, chunk_size=8)
    np.testing.assert_allclose(small.adjacency, graph.adjacency, rtol=1e-6, atol=1e-6)
    mesh = jax.make_mesh((8,), ("data",))
    sharded = circuits.attribute(model, variables, tc, tokens, chunk_size=8, mesh=mesh)
    np.testing.assert_allclose(sharded.adjacency, graph.adjacency, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_size=12 must be divisible by the mesh's 8"):
        circuits.attribute(model, variables, tc, tokens, chunk_size=12, mesh=mesh)


def test_a_feature_budget_visits_the_most_influential_features_first(setup):
    model, variables, tc, tokens, graph = setup
    budget = graph.n_features // 3
    part = circuits.attribute(model, variables, tc, tokens, chunk_size=4, update_interval=1,
                              max_feature_nodes=budget)
    assert part.n_features == budget and not part.complete
    sel = part.selected_features
    n_logits = len(graph.logit_tokens)
    cols = np.concatenate([sel, np.arange(graph.n_features, graph.adjacency.shape[1] - n_logits)])
    full_rows = np.concatenate([graph.adjacency[sel], graph.adjacency[-n_logits:]])[:, cols]
    part_rows = np.concatenate([part.adjacency[:budget], part.adjacency[-n_logits:]])
    np.testing.assert_allclose(part_rows[:, :len(cols)], full_rows, rtol=1e-6, atol=1e-6)
    # The first features visited are the ones the logit rows alone rank highest.
    direct = np.abs(circuits.normalize(graph.adjacency[-n_logits:])).T @ graph.logit_probabilities
    top = np.argsort(-direct[:graph.n_features], kind="stable")[:4]
    assert set(top) <= set(sel), (top, sel)


def test_pruning_keeps_the_influence_it_reports(setup):
    *_, graph = setup
    kept = circuits.prune(graph.adjacency, graph.logit_probabilities, graph.n_features,
                          graph.n_pos, node_threshold=0.8, edge_threshold=0.98)
    a = circuits.normalize(graph.adjacency)
    w = np.zeros(len(a))
    w[-len(graph.logit_tokens):] = graph.logit_probabilities
    dense = w @ np.linalg.inv(np.eye(len(a)) - a) - w  # w A + w A^2 + ...
    np.testing.assert_allclose(kept.node_influence, dense, rtol=1e-8, atol=1e-10)
    assert kept.kept_influence == pytest.approx(dense[kept.node_mask].sum() / dense.sum())
    assert 0.5 < kept.kept_influence <= 1.0
    assert kept.node_mask[-len(graph.logit_tokens) - graph.n_pos:].all()  # tokens and logits
    assert 0 < kept.node_mask[:graph.n_features].sum() < graph.n_features
    assert not (kept.edge_mask & ~kept.node_mask[:, None]).any()
    with pytest.raises(ValueError, match=r"node_threshold=1.5 must be in \[0, 1\]"):
        circuits.prune(graph.adjacency, graph.logit_probabilities, graph.n_features,
                       graph.n_pos, node_threshold=1.5)


def test_json_and_png(setup, tmp_path):
    *_, graph = setup
    kept = circuits.prune(graph.adjacency, graph.logit_probabilities, graph.n_features,
                          graph.n_pos)
    names = [f"t{i}" for i in range(VOCAB)]
    out = circuits.write_json(graph, kept, tmp_path / "g.json", names, slug="tiny")
    assert json.loads((tmp_path / "g.json").read_text()) == out
    assert set(out) == {"metadata", "qParams", "nodes", "links"}
    assert out["metadata"]["prompt_tokens"] == [names[t] for t in graph.tokens]
    types = {n["feature_type"] for n in out["nodes"]}
    assert {"embedding", "logit", "cross layer transcoder"} <= types
    ids = {n["node_id"] for n in out["nodes"]}
    assert out["links"] and all(e["source"] in ids and e["target"] in ids for e in out["links"])
    assert sum(n["is_target_logit"] for n in out["nodes"]) == 1
    circuits.plot_graph(graph, kept, tmp_path / "g.png", names)
    assert (tmp_path / "g.png").stat().st_size > 10_000


def test_chunk_memory_grows_with_the_chunk_not_the_prompt_nodes():
    model, variables, tc, _ = _setup()
    report = {}
    for n_pos in (4, 8):
        tokens = jnp.zeros((n_pos,), jnp.int32)
        for chunk in (8, 32):
            report[n_pos, chunk] = circuits.rows_memory(model, variables, tc, tokens, chunk)
            print(n_pos, chunk, report[n_pos, chunk])
    for n_pos in (4, 8):
        assert report[n_pos, 32]["temp"] > report[n_pos, 8]["temp"]
        # Temporaries: per row about one backward pass' activations, not [nodes, nodes].
        per_row = (report[n_pos, 32]["temp"] - report[n_pos, 8]["temp"]) / 24
        assert per_row < 64 * (N_LAYERS + 1) * n_pos * D * 4, per_row


def test_bad_inputs_are_clear_errors(setup):
    model, variables, tc, tokens, _ = setup
    with pytest.raises(ValueError, match=r"one prompt: int tokens \[pos\]"):
        circuits.attribute(model, variables, tc, tokens[None])
    bad = SAEConfig("relu", d_in=D, d_sae=D_SAE, transcoder=True,
                    site="blocks.0.hook_resid_mid", out_site="blocks.0.hook_mlp_out")
    with pytest.raises(ValueError, match=r"transcoder 0 reads 'blocks\.0\.hook_resid_mid'"):
        circuits.Transcoders.stack([{}], [bad])
    attn_only = ji.models.build("attn_only_2l", d_model=D, n_heads=2, d_head=8, d_vocab=VOCAB,
                                n_ctx=8)
    with pytest.raises(ValueError, match="need MLP blocks"):
        circuits.attribute(attn_only, variables, tc, tokens)
