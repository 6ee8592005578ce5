"""act_patch against the naive loop: one jitted `ji.run` with one `ji.Patch` per cell."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis.patching import SITE_KINDS, act_patch
from tests.helpers.tiny_models import tiny, tokens_like

MODEL, VARIABLES, CLEAN = tiny()
CFG = MODEL.config
CORRUPT = tokens_like(CLEAN, seed=11, d_vocab=CFG.d_vocab)
N_POS = CLEAN.shape[1]


def metric(logits):
    """Mean logit difference between tokens 3 and 5 at the last position."""
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


def scanned(model, variables):
    cfg = dataclasses.asdict(model.config)
    return (ji.models.build("gpt2_small", **{**cfg, "scan_layers": True}),
            ji.models.stack_layers(variables))


@functools.partial(jax.jit, static_argnames=("model", "name"))
def _one_patch(variables, tokens, source, positions, heads, *, model, name):
    patch = ji.Patch(name, source, positions=positions, heads=heads)
    return metric(ji.run(model, variables, tokens, interventions=[patch])[0])


def naive(model, variables, site, by, layers, clean=CLEAN, corrupt=CORRUPT):
    """The loop act_patch replaces: one forward pass per (layer, pos[, head]), patching with
    integer indices (act_patch uses one-hot masks under vmap)."""
    hook = {"z": "attn.hook_z", "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v",
            "pattern": "attn.hook_pattern"}.get(site, f"hook_{site}")
    names = [f"blocks.{i}.{hook}" for i in layers]
    _, cache = ji.run(model, variables, clean, capture=names)
    out = []
    for name in names:
        src = cache[name]
        n_heads = src.shape[1 if site == "pattern" else 2] if src.ndim == 4 else None
        pos_idx = [jnp.array([p]) for p in range(N_POS)]
        head_idx = [jnp.array([h]) for h in range(n_heads)] if n_heads else None
        call = functools.partial(_one_patch, variables, corrupt, src, model=model, name=name)
        if by == "layer_pos":
            out.append([call(p, None) for p in pos_idx])
        elif by == "layer_head":
            out.append([call(None, h) for h in head_idx])
        else:
            out.append([[call(p, h) for h in head_idx] for p in pos_idx])
    return np.asarray(out, np.float32)


COMBOS = [(s, by) for s, kind in SITE_KINDS.items() for by in kind.bys]


def test_combos_are_the_transformerlens_ones():
    assert COMBOS == [
        ("resid_pre", "layer_pos"), ("resid_mid", "layer_pos"), ("resid_post", "layer_pos"),
        ("attn_out", "layer_pos"), ("mlp_out", "layer_pos"),
        ("z", "layer_head"), ("z", "layer_pos_head"), ("q", "layer_head"),
        ("q", "layer_pos_head"), ("k", "layer_head"), ("k", "layer_pos_head"),
        ("v", "layer_head"), ("v", "layer_pos_head"),
        ("pattern", "layer_head"), ("pattern", "layer_pos_head")]


@pytest.mark.parametrize("site,by", COMBOS)
def test_every_mode_equals_the_naive_loop(site, by):
    layers = [0, 1] if site in ("resid_pre", "z") else [1]
    got = act_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, site, by, layers=layers)
    shape = {"layer_pos": (len(layers), N_POS), "layer_head": (len(layers), CFG.n_heads),
             "layer_pos_head": (len(layers), N_POS, CFG.n_heads)}[by]
    assert got.shape == shape and got.dtype == jnp.float32
    want = naive(MODEL, VARIABLES, site, by, layers)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The sweep is not trivial: patching changes the metric somewhere, and not everywhere.
    assert np.ptp(want) > 1e-2


@pytest.mark.parametrize("site,by", [("resid_pre", "layer_pos"), ("z", "layer_pos_head"),
                                     ("pattern", "layer_head")])
def test_scanned_model_gives_the_same_numbers(site, by):
    model, variables = scanned(MODEL, VARIABLES)
    got = act_patch(model, variables, CLEAN, CORRUPT, metric, site, by)
    np.testing.assert_allclose(got, naive(MODEL, VARIABLES, site, by, [0, 1]),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("site,by,batch_size", [("resid_pre", "layer_pos", 3),
                                                ("v", "layer_pos_head", 7),
                                                ("q", "layer_head", 1)])
def test_chunked_equals_unchunked(site, by, batch_size):
    whole = act_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, site, by)
    chunks = act_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, site, by,
                       batch_size=batch_size)
    np.testing.assert_allclose(chunks, whole, rtol=1e-6, atol=1e-6)


def test_grouped_query_attention_k_v_have_kv_heads():
    model, variables, _ = tiny("llama_small", n_key_value_heads=2)
    got = act_patch(model, variables, CLEAN, CORRUPT, metric, "k", "layer_head", layers=[1])
    assert got.shape == (1, 2)
    np.testing.assert_allclose(got, naive(model, variables, "k", "layer_head", [1]),
                               rtol=1e-5, atol=1e-5)
    q = act_patch(model, variables, CLEAN, CORRUPT, metric, "q", "layer_head", layers=[1])
    assert q.shape == (1, 4)


def test_patching_everything_recovers_the_clean_metric():
    """Hand check: resid_post of the last layer patched at every position is the clean run, so
    the last position's entry is the clean metric; patching an identical input changes nothing."""
    clean_metric = metric(MODEL.apply(VARIABLES, CLEAN))
    corrupt_metric = metric(MODEL.apply(VARIABLES, CORRUPT))
    got = act_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "resid_post", "layer_pos",
                    layers=[1])
    np.testing.assert_allclose(got[0, -1], clean_metric, rtol=1e-5)
    np.testing.assert_allclose(got[0, :-1], corrupt_metric, rtol=1e-5)  # not read by metric
    same = act_patch(MODEL, VARIABLES, CORRUPT, CORRUPT, metric, "z", "layer_head")
    np.testing.assert_allclose(same, np.full((2, CFG.n_heads), corrupt_metric), rtol=1e-5)


@dataclasses.dataclass
class UnhashableMetric:  # a dataclass with eq=True and no frozen=True has __hash__ = None
    def __call__(self, logits):
        return logits.mean()


@pytest.mark.parametrize("kwargs,match", [
    (dict(site="resid", by="layer_pos"), "unknown patching site 'resid'; valid sites: resid_pre"),
    (dict(site="resid_pre", by="layer_head"), "not valid for site 'resid_pre' .*no head axis"),
    (dict(site="z", by="layer_pos"), "valid for 'z': layer_head, layer_pos_head"),
    (dict(site="z", by="pos"), "unknown by='pos'"),
    (dict(site="z", by="layer_head", layers=[0, 2]), r"layer 2 is out of range.*0\.\.1"),
    (dict(site="z", by="layer_head", metric=lambda out: out[:, -1, 3]), "metric must return a "
     "scalar"),
    (dict(site="z", by="layer_head", batch_size=0), "batch_size must be a positive int"),
    (dict(site="z", by="layer_head", metric=UnhashableMetric()), "not hashable"),
    (dict(site="z", by="layer_head", corrupted_inputs=CORRUPT[:, :5]), "same shape"),
])
def test_bad_input_is_a_clear_error(kwargs, match):
    args = dict(clean_inputs=CLEAN, corrupted_inputs=CORRUPT, metric=metric)
    with pytest.raises(ValueError, match=match):
        act_patch(MODEL, VARIABLES, **{**args, **kwargs})


def test_attention_only_model_has_no_mlp_out():
    model, variables, _ = tiny(attn_only=True)
    with pytest.raises(ValueError, match=r"no site 'blocks\.0\.hook_mlp_out'"):
        act_patch(model, variables, CLEAN, CORRUPT, metric, "mlp_out", "layer_pos")


def test_plot_patching_writes_a_png_with_token_and_layer_labels(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from jaxinterp.analysis.figures import plot_patching

    tokens = [f"t{i}" for i in range(N_POS)]
    result = np.arange(2 * N_POS, dtype=np.float32).reshape(2, N_POS) - 5
    fig = plot_patching(result, tokens, layers=[3, 7], title="resid_pre")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens
    assert [t.get_text() for t in ax.get_yticklabels()] == ["3", "7"]
    assert ax.get_ylabel() == "layer" and ax.get_xlabel() == "position"
    np.testing.assert_array_equal(ax.images[0].get_array(), result)
    assert ax.images[0].get_clim() == (-14.0, 14.0)  # symmetric around 0
    path = tmp_path / "patching.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    heads = plot_patching(np.zeros((2, N_POS, 3)), tokens)  # one panel per head
    titles = [a.get_title() for a in heads.axes if a.images]
    assert titles == ["head 0", "head 1", "head 2"]
    by_head = plot_patching(np.zeros((2, 4)))
    assert [t.get_text() for t in by_head.axes[0].get_xticklabels()] == ["0", "1", "2", "3"]
    assert by_head.axes[0].get_xlabel() == "head"
    with pytest.raises(ValueError, match="9 labels for 10 positions"):
        plot_patching(result, tokens[:-1])
    with pytest.raises(ValueError, match="needs a 3-D result"):
        plot_patching(result, tokens, by="layer_pos_head")
    matplotlib.pyplot.close("all")


def test_act_patch_works_under_jit():
    """Inputs and variables traced (e.g. inside a larger jitted analysis)."""
    fn = jax.jit(lambda v, a, b: act_patch(MODEL, v, a, b, metric, "v", "layer_head",
                                           layers=[0]))
    np.testing.assert_allclose(fn(VARIABLES, CLEAN, CORRUPT),
                               naive(MODEL, VARIABLES, "v", "layer_head", [0]),
                               rtol=1e-5, atol=1e-5)
