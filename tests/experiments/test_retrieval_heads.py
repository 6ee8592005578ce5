"""Retrieval heads at tiny settings (a 2-layer attention-only model, seeds 0, 1, 2 trained in
one vmapped call). The paper's effect (sparse retrieval heads whose pruning breaks recall) is
NOT reproduced at this scale (configs/retrieval_heads.py), so there is no direction to assert:
the test checks the measurement on every seed. The retrieval scores equal a NumPy transcription
of Wu et al.'s copy-paste score computed from `ji.run`'s `hook_pattern` captures, and the clean
and pruned recall equal direct runs (the top head mean-ablated with `ji.Ablate`).

Not asserted: at the default config 38-50% of heads pass the paper's 0.1 threshold on every seed
(chance copying with 8 values in context), but at these settings (150 steps) seed 1 has no head
above it (its best: 0.098), so that observation does not hold here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from configs import retrieval_heads
from experiments.retrieval_heads import analyse, load_split, make_model, train_runs

SEEDS = (0, 1, 2)
TINY = {
    "num_train_steps": 150, "batch_size": 32, "eval_every_steps": 0, "n_random": 2,
    "data.num_train": 512, "data.num_test": 32,
    "model.d_model": 32, "model.d_head": 8,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = retrieval_heads.get_config()
    config.update_from_flattened_dict(TINY)  # dotted keys, e.g. 'data.num_train'
    config.seeds = SEEDS
    data_dir = str(tmp_path_factory.mktemp("retrieval_heads"))
    train, test = (load_split(config.data, s, data_dir) for s in ("train", "test"))
    params, _ = train_runs(config, train, test)
    model = make_model(config)
    an = analyse(config, model, params, jax.tree.map(jnp.asarray, test),
                 np.random.default_rng(0))
    return config, model, params, test, an


def numpy_retrieval_score(pattern, tokens, needle, answer):
    """Wu et al. 2024, per head: copies (the most-attended key is a needle token equal to the
    token emitted next) over the number of needle tokens, averaged over sequences."""
    batch, n_heads, n_pos, _ = pattern.shape
    out = np.zeros(n_heads)
    for b in range(batch):
        for h in range(n_heads):
            copies = sum(1 for q in range(n_pos - 1) if answer[b, q] and needle[b, j := int(
                np.argmax(pattern[b, h, q]))] and tokens[b, j] == tokens[b, q + 1])
            out[h] += copies / max(needle[b].sum(), 1)
    return out / batch


@pytest.mark.slow
@pytest.mark.parametrize("seed_index", range(len(SEEDS)))
def test_scores_and_pruning_match_direct_computations(run, seed_index):
    config, model, params, test, an = run
    p = jax.tree.map(lambda x: x[seed_index], params)
    inputs = test["tokens"][:, :-1]
    needle, answer = test["needle"][:, :-1], test["answer"][:, :-1]
    logits, cache = ji.run(model, {"params": p}, inputs, capture="blocks.*.attn.hook_pattern")
    for layer in range(config.model.n_layers):
        pattern = np.asarray(cache[f"blocks.{layer}.attn.hook_pattern"])
        np.testing.assert_allclose(
            an["scores"][seed_index, layer],
            numpy_retrieval_score(pattern, inputs, needle, answer), atol=1e-6)
    targets = test["tokens"][:, 1:]
    recall = ((np.asarray(logits).argmax(-1) == targets) & answer).sum() / answer.sum()
    np.testing.assert_allclose(an["clean"]["recall"][seed_index], recall, atol=1e-6)
    layer, head = divmod(int(an["top"][seed_index][0]), config.model.n_heads)
    mask = np.zeros(config.model.n_heads, bool)
    mask[head] = True
    pruned, _ = ji.run(model, {"params": p}, inputs, interventions=[
        ji.Ablate(f"blocks.{layer}.attn.hook_z", how="mean", heads=mask)])
    pruned_recall = ((np.asarray(pruned).argmax(-1) == targets) & answer).sum() / answer.sum()
    np.testing.assert_allclose(an["eval"]["recall"][seed_index, 0], pruned_recall, atol=1e-6)

