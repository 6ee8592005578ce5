"""The README's Python examples run as written, in order, in one namespace (from the repo root,
where the README's relative paths point)."""

import pathlib
import re

import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).parents[1]
README = ROOT / "README.md"


@pytest.mark.slow
def test_readme_python_blocks_run(monkeypatch):
    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 10, "README lost its python examples"
    namespace: dict = {}
    checks = {
        # name defined by a block -> what must hold right after that block
        "last_logits": lambda ns: (
            ns["cache"]["blocks.0.attn.hook_pattern"].shape == (8, 12, 32, 32)
            and ns["last_logits"].shape == (32, 8, 50257)),
        "aux": lambda ns: ns["cache"]["blocks.0.mlp.hook_router_weights"].shape == (2, 17, 4),
        "pz_logits": lambda ns: abs(
            ns["pz_logits"].unwrap("batch", "seq", "vocabulary") - ns["logits"]).max() < 1e-4,
        "path": lambda ns: ns["res"].shape == (2, 8) and ns["by_head"].shape == (2, 4)
        and ns["approx"].shape == (2, 4) and ns["path"].shape == (),
        "fit": lambda ns: ns["logp"].shape == (3, 4, 8, 1) and ns["fit"].test_score > 0.8,
        "steered_tokens": lambda ns: ns["steered_tokens"].shape == (4, 2, 16)
        and ns["out"].tokens.shape == (2, 16) and ns["sampled"].tokens.shape == (2, 16)
        and bool((ns["out"].tokens[:, :8] == ns["prompt"]).all()),
        "steered": lambda ns: ns["steered"].shape == (33, 4, 50),
        # the sweep has its [gamma, layer, head] shape; W8A8 logits stay near the float ones
        "w8a8_logits": lambda ns: ns["scaled"].shape == (
            3, ns["model"].config.n_layers, ns["model"].config.n_heads)
        and bool(jnp.isfinite(ns["scaled"]).all())
        and float(jnp.abs(ns["w8a8_logits"] - ns["model"].apply(
            ns["variables"], ns["tokens"])).max()) < 0.5,
        "vit_accuracy": lambda ns: ns["vit_logits"].shape == (2, 10)
        and ns["vit_cache"]["blocks.1.hook_resid_post"].shape == (2, 17, 32)
        and ns["vit_accuracy"] >= 0.9,
        # only the vector trained; the frozen ViT is the one trained above, bit for bit
        "steer_vector": lambda ns: ns["steer_vector"].shape == (32,)
        and all(bool((a == b).all()) for a, b in zip(
            ns["jax"].tree.leaves(ns["tuned_variables"]["frozen"]["variables"]),
            ns["jax"].tree.leaves(ns["vit_variables"]), strict=True)),
        # completeness: each feature's incoming edges plus its bias give its activation
        "graph_file": lambda ns: ns["graph"].complete and abs(
            ns["graph"].adjacency[:ns["graph"].n_features].sum(1)
            + ns["graph"].biases[:ns["graph"].n_features]
            - ns["graph"].values[:ns["graph"].n_features]).max() < 1e-4
        and set(ns["graph_file"]) == {"metadata", "qParams", "nodes", "links"},
        "saelens_config": lambda ns: ns["saelens_config"] == ns["config"] and all(
            bool((ns["saelens_params"][k] == ns["params"][k]).all()) for k in ns["params"]),
        "das_names": lambda ns: {"das", "loreft", "lofit_scale", "lora",
                                 "steering_controller"} <= set(ns["das_names"]),
        "sae_cache": lambda ns: ns["sae_cache"]["hook_sae_acts"].shape == (4, 256),
        # the CLT writes only forward; head shares sum to 1; semi-NMF's codes are nonnegative
        "links": lambda ns: ns["links"].shape == (64, 64)
        and bool((ns["clt_transcoders"].params["W_dec"][1, 0] == 0).all())
        and bool(jnp.allclose(ns["head_shares"].sum(1), 1.0, atol=1e-5))
        and ns["decoded"].shape[::2] == (2, ns["mlp_model"].config.d_vocab)
        and bool((ns["nmf"].G >= 0).all()),
    }
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
        for name in [n for n in checks if n in namespace]:
            assert checks.pop(name)(namespace), f"README check after defining {name!r} failed"
    assert not checks, f"README no longer defines {sorted(checks)}"
