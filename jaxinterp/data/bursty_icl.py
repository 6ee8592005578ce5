"""`bursty_icl`: bursty in-context classification (Chan et al. 2022; Reddy 2023).

Chan et al. ("Data distributional properties drive emergent in-context learning in
transformers", 2022) showed that in-context learning emerges when training sequences are
*bursty* (the query's class recurs within the context) and classes are many and rare (Zipfian),
while in-weights learning needs classes to recur across sequences with fixed labels. This
builder follows Reddy's ("The mechanistic basis of data dependence and abrupt learning in an
in-context classification task", 2023) synthetic stand-in for Omniglot:

- `n_classes` classes, each a prototype `mu_k ~ N(0, I_d / d)` (fixed by `seed`);
- an exemplar of class k is `(mu_k + eps * eta) / sqrt(1 + eps^2)`, `eta ~ N(0, I_d / d)`,
  with `eps = within_class_noise` (fresh noise for every exemplar);
- each class has a fixed label in `[0, n_labels)` (fixed by `seed`; labels may be shared);
- classes are drawn with Zipfian frequencies `p(k) ~ (k + 1)^-zipf_exponent` (0 = uniform).

A sequence has `n_ctx` (exemplar, label) pairs followed by a query exemplar whose label is the
target. Splits:

- `train`: with probability `p_bursty` a *bursty* sequence: `n_ctx // burstiness` distinct
  classes (drawn by frequency) each appear `burstiness` times, in random order, and the query
  is a new exemplar of one of them; otherwise all `n_ctx + 1` classes are drawn i.i.d. by
  frequency (the query's class may or may not be in context). Labels are the fixed labels.
- `test_icl` (in-context): bursty sequences of *novel* classes (fresh prototypes per sequence)
  whose labels are distinct labels drawn at random per sequence: only in-context learning
  can solve it.
- `test_iwl` (in-weights): i.i.d. sequences of training classes in which the query's class is
  absent from the context, with the fixed labels: only in-weights learning can solve it.

Features:

    exemplars    float32 [n_ctx, d]
    labels       int32   [n_ctx]
    query        float32 [d]
    target       int32   []
    query_class  int32   []      (-1 for the novel classes of `test_icl`)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, chunk_rngs, tensor

_CLASS_STREAM = 11
_SPLIT_STREAMS = {"train": 0, "test_icl": 1, "test_iwl": 2}


@dataclasses.dataclass(eq=False)
class BurstyIclConfig(tfds.core.BuilderConfig):
    """Parameters of the `bursty_icl` dataset (see the module docstring).

    Attributes:
      n_classes: number of training classes (K).
      n_labels: number of labels (L); training classes map to labels at random.
      d: exemplar dimension.
      n_ctx: (exemplar, label) pairs in the context.
      burstiness: copies of each class in a bursty context (must divide n_ctx).
      p_bursty: fraction of bursty sequences in `train`.
      zipf_exponent: exponent of the class-frequency distribution (0 = uniform).
      within_class_noise: eps, the relative size of within-class variation.
      num_train, num_test: examples in `train` and in each of `test_icl`, `test_iwl`.
      seed: generation seed (class prototypes, labels and sequences).
    """

    n_classes: int = 1024
    n_labels: int = 32
    d: int = 64
    n_ctx: int = 8
    burstiness: int = 4
    p_bursty: float = 0.9
    zipf_exponent: float = 0.0
    within_class_noise: float = 0.1
    num_train: int = 100_000
    num_test: int = 1_000
    seed: int = 0

    def validate(self) -> None:
        name = "bursty_icl"
        check(self.n_ctx >= 1 and self.d >= 1, f"{name}: n_ctx and d must be >= 1")
        check(
            self.burstiness >= 1 and self.n_ctx % self.burstiness == 0,
            f"{name}: burstiness ({self.burstiness}) must divide n_ctx ({self.n_ctx})",
        )
        groups = self.n_ctx // self.burstiness
        check(
            self.n_classes >= max(groups, 2),
            f"{name}: n_classes ({self.n_classes}) must be >= max(n_ctx // burstiness, 2)",
        )
        check(
            self.n_labels >= max(groups, 2),
            f"{name}: n_labels ({self.n_labels}) must be >= max(n_ctx // burstiness, 2) so that "
            "test_icl can give each context class a distinct label",
        )
        check(0.0 <= self.p_bursty <= 1.0, f"{name}: p_bursty must be in [0, 1]")
        check(self.zipf_exponent >= 0 and self.within_class_noise >= 0, f"{name}: negative param")

    def class_frequencies(self) -> np.ndarray:
        """Zipfian class probabilities, float64 [n_classes] (class 0 most frequent)."""
        p = np.arange(1, self.n_classes + 1, dtype=np.float64) ** -self.zipf_exponent
        return p / p.sum()

    def classes(self) -> tuple[np.ndarray, np.ndarray]:
        """`(prototypes float32 [n_classes, d], labels int32 [n_classes])` fixed by `seed`."""
        rng = np.random.default_rng([self.seed, _CLASS_STREAM])
        mu = rng.standard_normal((self.n_classes, self.d)) / np.sqrt(self.d)
        labels = rng.integers(0, self.n_labels, size=self.n_classes)
        return mu.astype(np.float32), labels.astype(np.int32)


class BurstyIcl(SyntheticBuilder, skip_registration=True):
    """Bursty in-context classification. Features: exemplars, labels, query, target."""

    CONFIG_CLASS = BurstyIclConfig

    def _features(self, cfg):
        return {"exemplars": tensor((cfg.n_ctx, cfg.d), np.float32),
                "labels": tensor((cfg.n_ctx,), np.int32), "query": tensor((cfg.d,), np.float32),
                "target": tensor((), np.int32), "query_class": tensor((), np.int32)}

    def _split_generators(self, dl_manager):
        del dl_manager
        cfg = self.builder_config
        sizes = {"train": cfg.num_train, "test_icl": cfg.num_test, "test_iwl": cfg.num_test}
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split: str, n: int):
        cfg = self.builder_config
        mu, class_labels = cfg.classes()
        for start, count, rng in chunk_rngs(cfg.seed, _SPLIT_STREAMS[split], n):
            if split == "test_icl":
                chunk = _novel_class_sequences(cfg, rng, count)
            else:
                ctx, query = _sequence_classes(cfg, rng, count, split)
                chunk = {
                    "exemplars": _exemplars(cfg, rng, mu[ctx]),
                    "labels": class_labels[ctx],
                    "query": _exemplars(cfg, rng, mu[query]),
                    "target": class_labels[query],
                    "query_class": query.astype(np.int32),
                }
            for i in range(count):
                yield start + i, {k: v[i] for k, v in chunk.items()}


def _exemplars(cfg: BurstyIclConfig, rng: np.random.Generator, means: np.ndarray) -> np.ndarray:
    """Noisy exemplars `(mu + eps * eta) / sqrt(1 + eps^2)` of prototypes `means [..., d]`."""
    eps = cfg.within_class_noise
    noise = rng.standard_normal(means.shape) / np.sqrt(cfg.d)
    return ((means + eps * noise) / np.sqrt(1.0 + eps**2)).astype(np.float32)


def _sample_without_replacement(rng, logits: np.ndarray, k: int) -> np.ndarray:
    """Per row of `logits [B, K]`, k distinct indices drawn as sequential sampling would
    (Gumbel top-k), int64 [B, k]."""
    keys = logits + rng.gumbel(size=logits.shape)
    return np.argpartition(-keys, k - 1, axis=-1)[:, :k]


def _bursty_context(cfg: BurstyIclConfig, rng, class_ids: np.ndarray):
    """Each of `class_ids [B, groups]` `burstiness` times in random order; a query among them.

    Returns `(ctx [B, n_ctx], query [B])`.
    """
    count, groups = class_ids.shape
    ctx = rng.permuted(np.repeat(class_ids, cfg.burstiness, axis=1), axis=1)
    query = class_ids[np.arange(count), rng.integers(groups, size=count)]
    return ctx, query


def _sequence_classes(cfg: BurstyIclConfig, rng, count: int, split: str):
    """Classes of the context `[count, n_ctx]` and query `[count]` for `train` / `test_iwl`."""
    freq = cfg.class_frequencies()
    ctx = rng.choice(cfg.n_classes, size=(count, cfg.n_ctx), p=freq)
    query = rng.choice(cfg.n_classes, size=count, p=freq)
    if split == "train":
        groups = cfg.n_ctx // cfg.burstiness
        logits = np.broadcast_to(np.log(freq), (count, cfg.n_classes))
        bursty_ctx, bursty_query = _bursty_context(
            cfg, rng, _sample_without_replacement(rng, logits, groups)
        )
        is_bursty = rng.random(count) < cfg.p_bursty
        ctx = np.where(is_bursty[:, None], bursty_ctx, ctx)
        query = np.where(is_bursty, bursty_query, query)
    else:  # test_iwl: redraw context items of the query's class until there are none
        while (clash := ctx == query[:, None]).any():
            ctx[clash] = rng.choice(cfg.n_classes, size=int(clash.sum()), p=freq)
    return ctx, query


def _novel_class_sequences(cfg: BurstyIclConfig, rng, count: int) -> dict[str, np.ndarray]:
    """`test_icl`: bursty sequences of fresh classes with distinct per-sequence labels."""
    groups = cfg.n_ctx // cfg.burstiness
    means = rng.standard_normal((count, groups, cfg.d)) / np.sqrt(cfg.d)
    labels = _sample_without_replacement(rng, np.zeros((count, cfg.n_labels)), groups)
    ctx, query = _bursty_context(cfg, rng, np.broadcast_to(np.arange(groups), (count, groups)))
    rows = np.arange(count)
    return {
        "exemplars": _exemplars(cfg, rng, means[rows[:, None], ctx]),
        "labels": np.take_along_axis(labels, ctx, axis=1).astype(np.int32),
        "query": _exemplars(cfg, rng, means[rows, query]),
        "target": labels[rows, query].astype(np.int32),
        "query_class": np.full(count, -1, np.int32),
    }
