"""The synthetic builders: shapes, dtypes, content, determinism, config errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.data_sources.array_record import ArrayRecordDataSource

from jaxinterp import data
from jaxinterp.data.digits import NUM_EXAMPLES, NUM_TEST


def examples(source) -> list[dict]:
    return [source[i] for i in range(len(source))]


def stacked(source) -> dict[str, np.ndarray]:
    exs = examples(source)
    return {k: np.stack([np.asarray(e[k]) for e in exs]) for k in exs[0]}


def prepared(builder_cls, data_dir, **kwargs):
    builder = builder_cls(data_dir=data_dir, **kwargs)
    builder.download_and_prepare()
    return builder


INDUCTION = dict(vocab_size=16, half_len=5, num_train=40, num_test=8)


def test_induction_repeats_first_half(data_dir):
    builder = prepared(data.Induction, data_dir, **INDUCTION)
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    train = builder.as_data_source("train")
    assert isinstance(train, ArrayRecordDataSource)
    assert len(train) == 40 and len(builder.as_data_source("test")) == 8
    tokens = stacked(train)["tokens"]
    assert tokens.shape == (40, 11) and tokens.dtype == np.int32
    assert (tokens[:, 0] == 0).all()
    first, second = tokens[:, 1:6], tokens[:, 6:]
    np.testing.assert_array_equal(first, second)
    assert first.min() >= 1 and first.max() < 16


def test_induction_without_bos(data_dir):
    builder = prepared(
        data.Induction, data_dir, vocab_size=8, half_len=3, bos=False, num_train=4, num_test=2
    )
    tokens = stacked(builder.as_data_source("test"))["tokens"]
    assert tokens.shape == (2, 6)
    np.testing.assert_array_equal(tokens[:, :3], tokens[:, 3:])
    assert tokens.min() >= 1


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = stacked(prepared(data.Induction, tmp_path / "a", **INDUCTION).as_data_source("train"))
    b = stacked(prepared(data.Induction, tmp_path / "b", **INDUCTION).as_data_source("train"))
    c = stacked(
        prepared(data.Induction, tmp_path / "c", seed=1, **INDUCTION).as_data_source("train")
    )
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert not np.array_equal(np.sort(a["tokens"], 0), np.sort(c["tokens"], 0))


def test_config_names_spell_out_overrides(tmp_path):
    default = data.Induction(data_dir=tmp_path)
    assert default.builder_config.name == "default"
    b1 = data.Induction(data_dir=tmp_path, half_len=4, vocab_size=16)
    b2 = data.Induction(data_dir=tmp_path, vocab_size=16, half_len=4)
    assert b1.builder_config.name == b2.builder_config.name == "default-vocab_size16-half_len4"
    assert data.Induction(data_dir=tmp_path, half_len=32).builder_config.name == "default"
    div = data.ModularArithmetic(data_dir=tmp_path, p=7, op="/")
    assert div.builder_config.name == "default-p7-opdiv"


@pytest.mark.parametrize("op", ["+", "-", "/"])
def test_modular_arithmetic_targets_and_split(data_dir, op):
    p = 7
    builder = prepared(data.ModularArithmetic, data_dir, p=p, op=op, train_fraction=0.4)
    splits = {s: stacked(builder.as_data_source(s)) for s in ("train", "test")}
    bs = range(1, p) if op == "/" else range(p)
    all_pairs = {(a, b) for a in range(p) for b in bs}
    seen = {}
    for split, ex in splits.items():
        assert ex["tokens"].dtype == np.int32 and ex["tokens"].shape[1:] == (4,)
        np.testing.assert_array_equal(ex["tokens"][:, 0], ex["a"])
        np.testing.assert_array_equal(ex["tokens"][:, 1], p)
        np.testing.assert_array_equal(ex["tokens"][:, 2], ex["b"])
        np.testing.assert_array_equal(ex["tokens"][:, 3], p + 1)
        for a, b, t in zip(ex["a"], ex["b"], ex["target"], strict=True):
            want = {"+": a + b, "-": a - b, "/": a * pow(int(b), p - 2, p)}[op] % p
            assert t == want, (a, op, b, t)
            if op == "/":
                assert (t * b) % p == a
        seen[split] = set(zip(ex["a"].tolist(), ex["b"].tolist(), strict=True))
    assert not seen["train"] & seen["test"]
    assert seen["train"] | seen["test"] == all_pairs
    assert len(seen["train"]) == round(0.4 * len(all_pairs))


def test_icl_regression_ys_are_linear_in_xs(data_dir):
    builder = prepared(data.IclRegression, data_dir, d=4, n_points=10, num_train=16, num_test=4)
    ex = stacked(builder.as_data_source("train"))
    assert ex["xs"].shape == (16, 10, 4) and ex["xs"].dtype == np.float32
    assert ex["ys"].shape == (16, 10) and ex["ys"].dtype == np.float32
    assert ex["w"].shape == (16, 4)
    np.testing.assert_allclose(ex["ys"], np.einsum("bnd,bd->bn", ex["xs"], ex["w"]), atol=1e-5)
    for xs, ys, w in zip(ex["xs"], ex["ys"], ex["w"], strict=True):  # w recoverable from data
        np.testing.assert_allclose(np.linalg.lstsq(xs, ys, rcond=None)[0], w, atol=1e-4)
    assert len({tuple(w) for w in ex["w"]}) == 16


def test_icl_regression_task_pool(data_dir):
    builder = prepared(data.IclRegression, data_dir, d=3, n_points=4, num_train=20, num_test=5,
                       task_pool_size=2, noise_std=0.5)
    train, test = (stacked(builder.as_data_source(s)) for s in ("train", "test"))
    pool = {tuple(w) for w in train["w"]} | {tuple(w) for w in test["w"]}
    assert len(pool) == 2
    resid = train["ys"] - np.einsum("bnd,bd->bn", train["xs"], train["w"])
    assert 0.2 < resid.std() < 1.0


BURSTY = dict(n_classes=12, n_labels=6, d=32, n_ctx=6, burstiness=3, within_class_noise=0.05,
              num_train=24, num_test=12)


def nearest_class(x, mu):
    return np.argmax(x @ mu.T, axis=-1)


def test_bursty_icl_train_sequences(data_dir):
    builder = prepared(data.BurstyIcl, data_dir, p_bursty=1.0, **BURSTY)
    mu, class_labels = builder.builder_config.classes()
    ex = stacked(builder.as_data_source("train"))
    assert ex["exemplars"].shape == (24, 6, 32) and ex["exemplars"].dtype == np.float32
    assert ex["labels"].shape == (24, 6) and ex["labels"].dtype == np.int32
    assert ex["query"].shape == (24, 32) and ex["target"].shape == (24,)
    for i in range(24):
        ctx = nearest_class(ex["exemplars"][i], mu)
        query = nearest_class(ex["query"][i], mu)
        assert query == ex["query_class"][i]
        np.testing.assert_array_equal(ex["labels"][i], class_labels[ctx])
        assert ex["target"][i] == class_labels[query]
        _, counts = np.unique(ctx, return_counts=True)
        assert (counts == 3).all() and query in ctx  # bursty: 2 classes x 3, query among them


def test_bursty_icl_mixture_and_zipf(data_dir):
    kw = {**BURSTY, "num_train": 512, "p_bursty": 0.5, "zipf_exponent": 2.0}
    builder = prepared(data.BurstyIcl, data_dir, **kw)
    mu, _ = builder.builder_config.classes()
    ex = stacked(builder.as_data_source("train"))
    bursty = [
        sorted(np.unique(nearest_class(x, mu), return_counts=True)[1].tolist()) == [3, 3]
        for x in ex["exemplars"]
    ]
    assert 0.4 < np.mean(bursty) < 0.65  # 0.5 bursty, plus i.i.d. contexts that look bursty
    # Zipf: p(class 0) = 1 / sum(k^-2) ~ 0.64 for an i.i.d. query; a bursty query is one of
    # 2 classes drawn without replacement: p = (p0 + sum_j p_j p0 / (1 - p_j)) / 2 ~ 0.45.
    p = builder.builder_config.class_frequencies()
    p0_bursty = (p[0] + sum(p[j] * p[0] / (1 - p[j]) for j in range(1, 12))) / 2
    expected = 0.5 * p[0] + 0.5 * p0_bursty
    assert abs(np.mean(ex["query_class"] == 0) - expected) < 0.07  # ~3 standard errors


def test_bursty_icl_eval_splits(data_dir):
    builder = prepared(data.BurstyIcl, data_dir, **BURSTY)
    mu, class_labels = builder.builder_config.classes()
    icl = stacked(builder.as_data_source("test_icl"))
    assert (icl["query_class"] == -1).all()
    for exs, labels, query, target in zip(
        icl["exemplars"], icl["labels"], icl["query"], icl["target"], strict=True
    ):
        assert len(set(labels.tolist())) == 2  # two novel classes with distinct labels
        assert labels[np.argmax(exs @ query)] == target  # the nearest exemplar carries the label
    iwl = stacked(builder.as_data_source("test_iwl"))
    for exs, query_class, target in zip(
        iwl["exemplars"], iwl["query_class"], iwl["target"], strict=True
    ):
        assert query_class not in nearest_class(exs, mu)
        assert target == class_labels[query_class]


def test_digits(data_dir):
    from sklearn.datasets import load_digits

    builder = prepared(data.Digits, data_dir)
    train, test = (stacked(builder.as_data_source(s)) for s in ("train", "test"))
    assert len(train["label"]) + len(test["label"]) == NUM_EXAMPLES == 1797
    assert len(test["label"]) == NUM_TEST
    assert train["image"].shape[1:] == (8, 8, 1) and train["image"].dtype == np.uint8
    labels = np.concatenate([train["label"], test["label"]])
    assert labels.min() == 0 and labels.max() == 9
    ref = load_digits()
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(ref.target))
    scaled = np.round(ref.images * 255 / 16).astype(np.int64)
    images = np.concatenate([train["image"], test["image"]]).astype(np.int64)
    assert images.max() == 255 and images.sum() == scaled.sum()


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="did you mean 'half_len'"):
        data.Induction(data_dir=tmp_path, half_length=3)
    with pytest.raises(ValueError, match="prime"):
        data.ModularArithmetic(data_dir=tmp_path, p=8, op="/")
    with pytest.raises(ValueError, match="op must be one of"):
        data.ModularArithmetic(data_dir=tmp_path, op="*")
    with pytest.raises(ValueError, match="empty split"):
        data.ModularArithmetic(data_dir=tmp_path, p=5, train_fraction=1.0)
    with pytest.raises(ValueError, match="must divide n_ctx"):
        data.BurstyIcl(data_dir=tmp_path, n_ctx=8, burstiness=3)
    with pytest.raises(ValueError, match="unknown config"):
        data.Induction(data_dir=tmp_path, config="nope")


def test_induction_variable_length_repeats_end_the_sequence(data_dir):
    builder = prepared(data.Induction, data_dir, vocab_size=16, half_len=6, min_half_len=2,
                       num_train=64, num_test=4)
    tokens = stacked(builder.as_data_source("train"))["tokens"][:, 1:]  # drop BOS
    lengths = set()
    for row in tokens:  # the longest n with row[-2n:-n] == row[-n:] is the repeat length
        n = max(n for n in range(2, 7) if np.array_equal(row[12 - 2 * n: 12 - n], row[12 - n:]))
        lengths.add(n)
    assert len(lengths) >= 3  # the repeat starts at different positions
    with pytest.raises(ValueError, match="min_half_len"):
        data.Induction(data_dir=data_dir, half_len=4, min_half_len=5)


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


def test_induction_new_options_off_by_default_keep_the_data(data_dir):
    """placement="end", skip_prob=0 (the defaults) give exactly the original generator's data."""
    from jaxinterp.data.synthetic import chunk_rngs

    kw = dict(vocab_size=16, half_len=6, min_half_len=2, num_train=1500, num_test=4, seed=3)
    got = stacked(prepared(data.Induction, data_dir, **kw).as_data_source("train"))["tokens"]
    explicit = prepared(data.Induction, data_dir, placement="end", skip_prob=0.0, **kw)
    assert explicit.builder_config.name == prepared(data.Induction, data_dir,
                                                    **kw).builder_config.name
    want = []  # the generator before `placement` and `skip_prob` existed
    for _, count, rng in chunk_rngs(3, 0, 1500):
        rand = rng.integers(1, 16, size=(count, 12), dtype=np.int32)
        lengths = rng.integers(2, 7, size=count)
        for i, n in enumerate(lengths):
            rand[i, 12 - n:] = rand[i, 12 - 2 * n: 12 - n]
        want.append(np.concatenate([np.zeros((count, 1), np.int32), rand], axis=1))
    np.testing.assert_array_equal(_sorted_rows(got), _sorted_rows(np.concatenate(want)))


def test_induction_random_placement(data_dir):
    h = 8
    builder = prepared(data.Induction, data_dir, vocab_size=64, half_len=h, min_half_len=3,
                       placement="random", num_train=300, num_test=4)
    tokens = stacked(builder.as_data_source("train"))["tokens"]
    assert tokens.shape == (300, 2 * h + 1) and (tokens[:, 0] == 0).all()
    x = tokens[:, 1:]
    assert x.min() >= 1 and x.max() < 64
    firsts, gaps, ends = [], [], 0
    for row in x:  # the longest segment that occurs twice without overlap, and where
        found = [(n, a, b) for n in range(h, 2, -1) for a in range(2 * h - 2 * n + 1)
                 for b in range(a + n, 2 * h - n + 1) if np.array_equal(row[a:a + n], row[b:b + n])]
        assert found, row  # every example holds a repeat of >= min_half_len tokens
        n, a, b = found[0]
        firsts.append(a)
        gaps.append(b - a - n)
        ends += b + n == 2 * h
    assert len(set(firsts)) >= 4 and len(set(gaps)) >= 4  # both copies move around
    assert ends < 0.7 * len(x)  # unlike placement="end", the repeat need not end the sequence
    full = prepared(data.Induction, data_dir, vocab_size=16, half_len=5, placement="random",
                    num_train=8, num_test=2)
    t = stacked(full.as_data_source("train"))["tokens"]  # n == half_len: the classic layout
    np.testing.assert_array_equal(t[:, 1:6], t[:, 6:])


def test_induction_skip_prob(data_dir):
    v, h = 16, 6
    always = prepared(data.Induction, data_dir, vocab_size=v, half_len=h, skip_prob=1.0,
                      num_train=50, num_test=4)
    perm = always.builder_config.skip_permutation
    assert perm[0] == 0 and sorted(perm[1:]) == list(range(1, v))
    x = stacked(always.as_data_source("train"))["tokens"][:, 1:]
    np.testing.assert_array_equal(x[:, 2:h], perm[x[:, :h - 2]])  # first copy: all skip-bigram
    np.testing.assert_array_equal(x[:, :h], x[:, h:])
    # The permutation depends only on (seed, vocab_size): the same in every split and config.
    other = data.Induction(data_dir=data_dir, vocab_size=v, half_len=3, skip_prob=0.3)
    np.testing.assert_array_equal(other.builder_config.skip_permutation, perm)
    assert not np.array_equal(
        data.Induction(data_dir=data_dir, vocab_size=v, seed=1).builder_config.skip_permutation,
        perm)

    p = 0.3
    some = prepared(data.Induction, data_dir, vocab_size=v, half_len=16, min_half_len=8,
                    placement="random", skip_prob=p, num_train=2000, num_test=4)
    x = stacked(some.as_data_source("train"))["tokens"][:, 1:]
    frac = (x[:, 2:] == perm[x[:, :-2]]).mean()
    chance = 1 / (v - 1)
    assert p + (1 - p) * chance - 0.05 < frac < p + (1 - p) * chance + 0.05, frac


def test_induction_new_options_are_checked(data_dir):
    with pytest.raises(ValueError, match="placement must be one of"):
        data.Induction(data_dir=data_dir, placement="middle")
    with pytest.raises(ValueError, match="skip_prob"):
        data.Induction(data_dir=data_dir, skip_prob=1.5)
