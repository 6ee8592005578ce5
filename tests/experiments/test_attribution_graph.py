"""The attribution-graph experiment at tiny settings: removing each of the graph's most
influential features from the real model changes the target logit as the graph predicts
(Pearson r > 0.5 between the graph's predicted and the measured changes), the graph is
complete, and pruning keeps most of the influence while dropping nodes.

Tiny settings: a 2-layer LM (d_model 32, d_mlp 64, 16 tokens) trained for 300 steps on the
induction task (it does not learn induction at this size: the prompt is one the model happens
to complete), TopK transcoders of 64 latents (k 8) per layer for 200 steps at learning rate
1e-2 (explained variance ~0.99 / ~0.86; at 1e-3 and k 4, layer 1's was negative and r fell to
0.43 on seed 1), a 10-token prompt, the 12 most influential features validated. ONE language
model: the seeds are the transcoders' (initialisation and activation order), each in its own
workdir with seed 0's LM workdir linked in.

Measured (seeds 0 / 1 / 2): removal r = 0.94 / 0.77 / 0.70 (doubling, not asserted: 0.71 /
0.47 / 0.60); kept influence 0.84 / 0.85 / 0.84. CPU: one seed costs ~40 s on the 8 test
devices (LM 21 s, transcoders 17 s), over the 20 s budget, so only seed 0 runs in the default
suite and seeds 1 and 2 are marked slow (the three: 71 s user + 10 s sys).
"""

import json
import os

import pytest

from configs import attribution_graph
from experiments.attribution_graph import run_experiment

SEEDS = (0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow))


def tiny_config(seed: int):
    c = attribution_graph.get_config()
    lm = c.lm
    lm.num_train_steps = 300
    lm.eval_every_steps = lm.checkpoint_every_steps = lm.log_every_steps = 300
    lm.eval_batches = 1
    lm.model.update(dict(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=16,
                         n_ctx=13))
    lm.data.builder_kwargs.update(dict(vocab_size=16, half_len=6, min_half_len=4,
                                       num_train=2048, num_test=64))
    c.transcoder.update(dict(d_sae=64, k=8))
    c.train.update(dict(num_steps=200, batch_size=256, learning_rate=1e-2, resample_every=0,
                        resample_until=0, seed=seed, log_every=100, checkpoint_every=0))
    c.model_batch_size = 16
    c.prompt_len = 10
    c.validate_top = 12
    c.chunk_size = 32
    return c


@pytest.fixture(scope="module")
def summary_of(tmp_path_factory):
    """seed -> the experiment's summary (each run once; seed 0's LM trained once, shared)."""
    root = tmp_path_factory.mktemp("attribution_graph")
    done = {}

    def get(seed):
        if seed in done:
            return done[seed]
        workdir = root / f"seed{seed}"
        lm = root / "lm"
        if lm.exists():
            workdir.mkdir()
            os.symlink(lm, workdir / "lm")
        s = run_experiment(tiny_config(seed), str(workdir))
        if not lm.exists():
            os.symlink(workdir / "lm", lm)
        for name in ("graph.png", "validation.png", "graph.json", "summary.json"):
            assert os.path.getsize(workdir / name) > 0
        with open(workdir / "summary.json") as f:
            assert json.load(f) == s
        with open(workdir / "graph.json") as f:
            s["json_nodes"] = len(json.load(f)["nodes"])
        done[seed] = s
        return s

    return get


@pytest.mark.parametrize("seed", SEEDS)
def test_the_graph_predicts_the_effect_of_removing_its_top_features(summary_of, seed):
    s = summary_of(seed)
    assert s["completeness_max_error"] < 1e-3
    ablate = s["ablate"]
    assert ablate["r_total"] > 0.5, ablate


@pytest.mark.parametrize("seed", SEEDS)
def test_pruning_keeps_most_influence_with_fewer_nodes(summary_of, seed):
    s = summary_of(seed)
    assert s["kept_nodes"] < s["n_nodes"] and s["kept_edges"] > 0
    assert 0.5 < s["kept_influence"] <= 1.0, s["kept_influence"]
    assert s["json_nodes"] == s["kept_nodes"]


def test_a_bad_transcoder_kind_is_a_clear_error(tmp_path):
    c = tiny_config(0)
    c.transcoders = "crosslayer"
    with pytest.raises(ValueError, match=r"config.transcoders='crosslayer'; choose from "
                                         r"'per_layer', 'clt'"):
        run_experiment(c, str(tmp_path))
