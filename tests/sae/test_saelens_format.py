"""SAELens interop (`jaxinterp.sae.saelens`): SAEs written by SAELens itself load here with
identical encodings, our SAELens-format files round-trip, and SAELens loaded the files we write
with identical encodings (checked by `make_saelens_fixtures.py` in a venv with torch, recorded
in `data/saelens/ours_in_saelens.json`)."""

import dataclasses
import json
import pathlib
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxinterp.sae.model import SAE, SAEConfig
from jaxinterp.sae.saelens import from_saelens, load_gemma_scope, load_saelens, save_saelens

DATA = pathlib.Path(__file__).resolve().parent / "data" / "saelens"
SITE = "blocks.1.hook_resid_post"


def encode(params, config, x):
    out = SAE(config).apply({"params": {k: jnp.asarray(v) for k, v in params.items()}}, x)
    return np.asarray(out.acts), np.asarray(out.recon)


def assert_same_encodings(params, config, d):
    x = np.load(d / "x.npy")
    acts, recon = encode(params, config, x)
    want_acts, want_recon = np.load(d / "acts.npy"), np.load(d / "recon.npy")
    np.testing.assert_array_equal(acts != 0, want_acts != 0)  # the same latents fire
    np.testing.assert_allclose(acts, want_acts, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(recon, want_recon, rtol=1e-6, atol=1e-6)
    assert (want_acts != 0).any(axis=-1).all()


@pytest.mark.parametrize("name,arch", [("relu", "relu"), ("topk", "topk"),
                                       ("topk_rescaled", "topk"), ("jumprelu", "jumprelu")])
def test_loads_saelens_written_fixture_with_identical_encodings(name, arch):
    params, config = load_saelens(DATA / name)
    assert (config.architecture, config.d_in, config.d_sae, config.site) == (arch, 8, 32, SITE)
    if arch == "topk":
        assert config.k == 4
    assert_same_encodings(params, config, DATA / name)


def test_loads_gemma_scope_params_npz():
    params, config = load_gemma_scope(DATA / "jumprelu" / "params.npz", site=SITE,
                                      model_preset="tiny")
    assert (config.architecture, config.site, config.model_preset) == ("jumprelu", SITE, "tiny")
    assert_same_encodings(params, config, DATA / "jumprelu")


def random_params(config, seed=0):
    rng = np.random.default_rng(seed)
    p = {"W_enc": rng.normal(0, 0.3, (config.d_in, config.d_sae)),
         "b_enc": rng.normal(0, 0.3, config.d_sae),
         "W_dec": rng.normal(0, 0.3, (config.d_sae, config.d_in)),
         "b_dec": rng.normal(0, 0.3, config.d_in)}
    if config.architecture == "jumprelu":
        p["log_threshold"] = np.log(rng.uniform(0.1, 0.6, config.d_sae))
    return {k: v.astype(np.float32) for k, v in p.items()}


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_save_load_round_trip(tmp_path, arch):
    config = SAEConfig(architecture=arch, d_in=8, d_sae=32, k=3, aux_k=5, site=SITE,
                       model_preset="gpt2_small", sparse_decode=arch == "topk")
    params = random_params(config)
    save_saelens(tmp_path, params, config)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard"}.get(arch, arch)
    assert cfg["metadata"]["hook_name"] == cfg["hook_name"] == SITE and cfg["hook_layer"] == 1
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert sorted(load_file(tmp_path / "sae_weights.safetensors")) == sorted(
        ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if arch == "jumprelu" else []))
    if arch == "topk":
        assert cfg["k"] == cfg["activation_fn_kwargs"]["k"] == 3
    loaded, loaded_config = load_saelens(tmp_path)
    assert loaded_config == config
    for k, v in params.items():
        np.testing.assert_allclose(loaded[k], v, rtol=1e-6 if k == "log_threshold" else 0,
                                   err_msg=k)
    # without our metadata (a reader that kept only SAELens's fields): the same encodings
    del cfg["metadata"]["jaxinterp"]
    tensors = load_file(tmp_path / "sae_weights.safetensors")
    p2, c2 = from_saelens(cfg, tensors)
    assert (c2.architecture, c2.k if arch == "topk" else 0, c2.site) == (
        arch, 3 if arch == "topk" else 0, SITE)
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    for a, b in zip(encode(p2, c2, x), encode(params, dataclasses.replace(
            config, sparse_decode=False), x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_files_we_write_loaded_in_saelens_with_identical_encodings(tmp_path, arch):
    record = json.loads((DATA / "ours_in_saelens.json").read_text())
    assert record[arch]["agree"], record[arch]  # SAELens's encodings == ours (rtol 1e-6)
    d = DATA / f"ours_{arch}"
    params, config = load_saelens(d)
    assert_same_encodings(params, config, d)
    # today's save_saelens still writes what SAELens was checked on
    save_saelens(tmp_path, params, config)
    assert json.loads((tmp_path / "cfg.json").read_text()) == json.loads(
        (d / "cfg.json").read_text())
    new, old = load_file(tmp_path / "sae_weights.safetensors"), load_file(
        d / "sae_weights.safetensors")
    assert sorted(new) == sorted(old)
    for k in old:  # exact, but threshold = exp(log(threshold)) in float32
        np.testing.assert_allclose(new[k], old[k], rtol=1e-6 if k == "threshold" else 0,
                                   err_msg=k)


def edited(tmp_path, **changes):
    d = tmp_path / "sae"
    shutil.copytree(DATA / "topk", d)
    cfg = json.loads((d / "cfg.json").read_text())
    for k, v in changes.items():
        if k == "hook_head_index":
            cfg["metadata"][k] = v
        else:
            cfg[k] = v
    (d / "cfg.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize("changes,message", [
    ({"architecture": "gated"}, "SAELens architecture 'gated' is not supported; supported: "
                                "standard, topk, jumprelu"),
    ({"normalize_activations": "layer_norm"}, "normalize_activations='layer_norm' is not "
                                              "supported"),
    ({"hook_head_index": 3}, "hook_head_index=3 is not supported"),
    ({"k": "four"}, "a topk SAE needs an int k"),
    ({"d_sae": 16}, "W_enc has shape"),
])
def test_unsupported_configs_are_clear_errors(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        load_saelens(edited(tmp_path, **changes))


def test_transcoder_save_is_an_error(tmp_path):
    config = SAEConfig(architecture="relu", d_in=8, d_sae=32, d_out=4, transcoder=True)
    with pytest.raises(ValueError, match="transcoder=True is not supported"):
        save_saelens(tmp_path, {}, config)


def test_pre_6_0_config_layout():
    # SAELens < 6.0: no architecture, hook_point, activation_fn_str + activation_fn_kwargs
    cfg = {"d_in": 8, "d_sae": 32, "hook_point": SITE, "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": 4}, "apply_b_dec_to_input": True,
           "normalize_activations": False, "dtype": "float32"}
    params, config = from_saelens(cfg, load_file(DATA / "topk" / "sae_weights.safetensors"))
    assert (config.architecture, config.k, config.site) == ("topk", 4, SITE)
    assert_same_encodings(params, config, DATA / "topk")
