"""The lazy-neuron experiment at tiny settings: the summary's per-(family, layer) non-zero
fractions equal those computed directly from `ji.run` captures on the held-out set, and, on
each of three seeds, the transformers (LM, ViT) end with fewer non-zero ReLU activations than
at initialisation (the paper's direction), while the Mixer does not change and the one-block
MLP gets denser (which the test records rather than hides)."""

import os

import jax
import numpy as np
import pytest

import jaxinterp as ji
from configs import lazy_neurons
from experiments.lazy_neurons import (
    SITES,
    load_digits,
    load_final_params,
    load_lm_tokens,
    run_experiment,
)

# The default config's four families and models with fewer steps, two data arms, a two-point
# width sweep of the (cheap, vmapped) MLP, no depth sweep and no Top-k arm.
SMALL = {
    "num_train_steps": 200, "eval_every_steps": 100, "arms": ("clean", "random_labels"),
    "width_sweep.families": ("mlp",), "width_sweep.d_mlp": (32, 512),
    "depth_sweep.families": (), "top_k.k": 0, "lm_data.num_test": 64,
}


def small_config(**overrides):
    config = lazy_neurons.get_config()
    config.update_from_flattened_dict({**SMALL, **overrides})  # dotted keys, e.g. 'data.d'
    return config


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("lazy") / "exp")
    config = small_config()
    return config, workdir, run_experiment(config, workdir)


@pytest.mark.slow
def test_summary_matches_ji_run_captures(experiment):
    # summary.json's final fractions were streamed with activation_stats in batches; here the
    # same held-out set goes through one `ji.run` capturing the MLP post-activation sites.
    config, workdir, summary = experiment
    data_dir = os.path.join(workdir, "data")
    digits = load_digits(data_dir)
    for family, result in summary["families"].items():
        model, params = load_final_params(config, workdir, family)
        held_out = (load_lm_tokens(config, data_dir)["test"][:, :-1] if family == "lm"
                    else digits["test_x"])
        for seed in range(config.n_seeds):
            variables = {"params": jax.tree.map(lambda x, s=seed: x[s], params)}
            _, cache = ji.run(model, variables, held_out, capture=list(SITES[family]))
            assert sorted(cache) == sorted(result["nonzero_final"]), (family, sorted(cache))
            for site, acts in cache.items():
                direct = float((np.asarray(acts) > 0).mean())
                np.testing.assert_allclose(result["nonzero_final"][site][seed], direct,
                                           atol=1e-6, err_msg=f"{family} {site} seed {seed}")
    for name in ("nonzero_over_training.png", "sweeps.png", "top_k.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_direction_of_the_effect(experiment, seed):
    # Measured at these settings (held-out mean over layers, init -> step 200; seeds 0, 1, 2):
    #   lm     0.495 -> 0.471, 0.501 -> 0.468, 0.500 -> 0.453   (sparser: the paper's direction)
    #   vit    0.516 -> 0.471, 0.504 -> 0.448, 0.535 -> 0.451   (sparser)
    #   mixer  0.509 -> 0.500, 0.500 -> 0.504, 0.482 -> 0.502   (no change)
    #   mlp    0.535 -> 0.688, 0.507 -> 0.631, 0.459 -> 0.634   (denser: does not reproduce)
    # So only the two transformers follow the paper here; the test asserts what holds.
    _, _, summary = experiment
    fam = summary["families"]

    def mean(family, key):
        return np.mean([v[seed] for v in fam[family][key].values()])

    for family in ("lm", "vit"):
        assert mean(family, "nonzero_final") < mean(family, "nonzero_init") - 0.015, (
            family, mean(family, "nonzero_init"), mean(family, "nonzero_final"))
        # On training data too.
        assert mean(family, "nonzero_final_train") < mean(family, "nonzero_init"), family
    assert abs(mean("mixer", "nonzero_final") - mean("mixer", "nonzero_init")) < 0.05
    assert mean("mlp", "nonzero_final") > mean("mlp", "nonzero_init") + 0.05
