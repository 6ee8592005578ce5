"""Writes the tiny SAELens fixtures in `tests/sae/data/saelens/` (read by
`tests/sae/test_saelens_format.py`, which needs no PyTorch).

Written by SAELens itself, per NAME in `SAES` (ReLU "standard", TopK, TopK with
rescale_acts_by_decoder_norm, JumpReLU without b_dec centring as Gemma Scope's):
  data/saelens/NAME/cfg.json + sae_weights.safetensors   `SAE.save_model(...)`
  data/saelens/NAME/x.npy      inputs [6, 8]
  data/saelens/NAME/acts.npy   `sae.encode(x)` [6, 32]
  data/saelens/NAME/recon.npy  `sae.decode(sae.encode(x))` [6, 8]
  data/saelens/jumprelu/params.npz   the same JumpReLU in Gemma Scope's layout (W_enc, W_dec,
                                     b_enc, b_dec, threshold)
Every weight is random (N(0, 0.3²); thresholds U(0.1, 0.6)), so a mis-mapped tensor cannot hide.

Written by jaxinterp (`jaxinterp.sae.saelens.save_saelens`, run in the main venv as a
subprocess: `--ours OUT`), then loaded by SAELens here (`SAE.load_from_disk`):
  data/saelens/ours_ARCH/cfg.json + sae_weights.safetensors + x.npy, acts.npy, recon.npy
                                      (our SAE's encodings and reconstructions)
  data/saelens/ours_in_saelens.json   per ARCH: SAELens's class, max |SAELens - ours| of the
                                      encodings and reconstructions, and whether they agree
                                      (rtol 1e-6, atol 1e-6)

To regenerate (PyTorch and sae-lens are NOT dependencies of jaxinterp; use a venv outside the
repo):

    python3.11 -m venv /work/saelensvenv
    /work/saelensvenv/bin/pip install torch==2.13.0 sae-lens   # generated with torch
                                                               # 2.13.0+cpu, sae-lens 6.54.12
    cd <repo root> && /work/saelensvenv/bin/python tests/sae/make_saelens_fixtures.py \
        [--jax_python=/work/main/.venv/bin/python] [OUT_DIR]

OUT_DIR (default: data/saelens/ beside this file) is emptied and rewritten; the output is
deterministic for a given torch version (fixed seeds).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DATA = HERE / "data" / "saelens"
D_IN, D_SAE, K, ROWS = 8, 32, 4, 6
SITE = "blocks.1.hook_resid_post"
OURS = ("relu", "topk", "jumprelu")


def _saelens_fixtures(out: pathlib.Path) -> None:
    import torch
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    saes = {
        "relu": (StandardSAE, StandardSAEConfig, {}),
        "topk": (TopKSAE, TopKSAEConfig, {"k": K}),
        "topk_rescaled": (TopKSAE, TopKSAEConfig, {"k": K, "rescale_acts_by_decoder_norm": True}),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {"apply_b_dec_to_input": False}),
    }
    for i, (name, (cls, cfg_cls, kwargs)) in enumerate(saes.items()):
        cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, metadata=SAEMetadata(
            hook_name=SITE, model_name="tiny-model"), **kwargs)
        sae = cls(cfg)
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for pname, p in sae.named_parameters():
                if pname == "threshold":
                    p.copy_(0.1 + 0.5 * torch.rand(p.shape, generator=g))
                else:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
        d = out / name
        sae.save_model(d)
        x = torch.randn(ROWS, D_IN, generator=g)
        with torch.no_grad():
            acts = sae.encode(x)
            recon = sae.decode(acts)
        np.save(d / "x.npy", x.numpy())
        np.save(d / "acts.npy", acts.numpy())
        np.save(d / "recon.npy", recon.numpy())
        if name == "jumprelu":
            np.savez(d / "params.npz", **{k: v.detach().numpy()
                                          for k, v in sae.state_dict().items()})
        print(f"{name}: {cls.__name__}, active per row {(acts != 0).sum(-1).tolist()}")


def _check_ours_in_saelens(out: pathlib.Path) -> None:
    import sae_lens
    import torch
    from sae_lens.saes.sae import SAE

    results = {"sae_lens_version": sae_lens.__version__, "torch_version": torch.__version__}
    for arch in OURS:
        d = out / f"ours_{arch}"
        sae = SAE.load_from_disk(str(d))
        x = torch.from_numpy(np.load(d / "x.npy"))
        with torch.no_grad():
            acts = sae.encode(x).numpy()
            recon = sae.decode(sae.encode(x)).numpy()
        ours_acts, ours_recon = np.load(d / "acts.npy"), np.load(d / "recon.npy")
        results[arch] = {
            "saelens_class": type(sae).__name__,
            "max_abs_diff_acts": float(np.abs(acts - ours_acts).max()),
            "max_abs_diff_recon": float(np.abs(recon - ours_recon).max()),
            "active_per_row": (ours_acts != 0).sum(-1).tolist(),
            "agree": bool(np.allclose(acts, ours_acts, rtol=1e-6, atol=1e-6)
                          and np.allclose(recon, ours_recon, rtol=1e-6, atol=1e-6)
                          and ((acts != 0) == (ours_acts != 0)).all()),
        }
        print(f"ours_{arch} in SAELens: {results[arch]}")
    with open(out / "ours_in_saelens.json", "w") as f:
        json.dump(results, f, indent=2)


def write_ours(out: pathlib.Path) -> None:
    """(Main venv, jaxinterp) a random SAE per architecture saved with save_saelens, its
    inputs, encodings and reconstructions."""
    import jax.numpy as jnp

    from jaxinterp.sae.model import SAE, SAEConfig
    from jaxinterp.sae.saelens import save_saelens

    for i, arch in enumerate(OURS):
        config = SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, k=K, site=SITE,
                           model_preset="tiny")
        rng = np.random.default_rng(200 + i)
        params = {"W_enc": rng.normal(0, 0.3, (D_IN, D_SAE)), "b_enc": rng.normal(0, 0.3, D_SAE),
                  "W_dec": rng.normal(0, 0.3, (D_SAE, D_IN)), "b_dec": rng.normal(0, 0.3, D_IN)}
        if arch == "jumprelu":
            params["log_threshold"] = np.log(rng.uniform(0.1, 0.6, D_SAE))
        params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
        x = rng.normal(0, 1, (ROWS, D_IN)).astype(np.float32)
        o = SAE(config).apply({"params": params}, x)
        d = out / f"ours_{arch}"
        save_saelens(d, params, config)
        np.save(d / "x.npy", x)
        np.save(d / "acts.npy", np.asarray(o.acts))
        np.save(d / "recon.npy", np.asarray(o.recon))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--ours"]:
        write_ours(pathlib.Path(argv[1]))
        return
    jax_python = "/work/main/.venv/bin/python"
    rest = []
    for a in argv:
        if a.startswith("--jax_python="):
            jax_python = a.split("=", 1)[1]
        else:
            rest.append(a)
    out = pathlib.Path(rest[0]) if rest else DATA
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _saelens_fixtures(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    subprocess.run([jax_python, str(pathlib.Path(__file__).resolve()), "--ours", str(out)],
                   check=True, env=env, cwd=ROOT)
    _check_ours_in_saelens(out)


if __name__ == "__main__":
    main(sys.argv[1:])
