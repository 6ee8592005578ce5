"""`induction`: repeated random-token sequences, the standard task for induction heads.

Each example is a random sequence of `half_len` tokens drawn uniformly from `[1, vocab_size)`,
repeated twice, optionally preceded by a BOS token `0`:

    tokens = [0]? + r_1 ... r_h + r_1 ... r_h        int32 [seq_len], seq_len = 2*half_len (+1)

A model can only predict the second half by copying (an induction head), so the loss on the
second half measures induction. Token 0 never occurs inside a sequence.

With `min_half_len < half_len`, each example draws its own length `n` in
`[min_half_len, half_len]` and is padded in front with `2 * (half_len - n)` random tokens:

    tokens = [0]? + (random prefix) + r_1 ... r_n + r_1 ... r_n      (same seq_len)

Then the repeat starts at a different position in each example, so a head cannot solve the
task by attending a fixed distance back (a purely positional shortcut that a fixed layout
allows); it must find the previous occurrence of the current token by content.

Two options (off by default) make a small model form the classic two-head circuit (a
previous-token head feeding an induction head) instead of a positional approximation of it:

  `placement="random"`: the two copies of `r_1 ... r_n` sit at independent random positions
    (the second after the first) among random filler tokens, instead of ending the sequence
    back to back. Back-to-back copies let a layer-0 head guess the period from positions: with
    `min_half_len=8`, a 2-layer attention-only model lowers the repeat loss to ~0.5 with
    layer-0 heads spread over offsets 7-10 back, previous-token scores < 0.07 and no induction
    head.
  `skip_prob=p`: filler and repeated tokens carry skip-bigram structure: with probability `p`
    a token is `perm[token two positions before]` (a fixed random permutation of
    `[1, vocab_size)`, the same in every split), otherwise uniform. Predicting those tokens
    needs the token before the current one, which rewards a previous-token head from the
    start. On purely random tokens nothing rewards a previous-token head before an induction
    head exists to use it, and training sits on a long plateau (5000 steps at lr 3e-3 on 2-16
    token repeats: no previous-token head, no induction head). With `p=0.2` and random
    placement, the previous-token head forms within ~250 steps and the induction head composes
    with it by ~300-500 steps (d_model 64, 1 head per layer, lr 1e-3 to 3e-3, batch 64).

    builder = Induction(data_dir=..., vocab_size=64, half_len=16, num_train=1000, num_test=100)
    builder.download_and_prepare()
    source = builder.as_data_source("train")      # source[i]["tokens"]: int32 [33]
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, chunk_rngs, tensor

BOS = 0
PLACEMENTS = ("end", "random")


@dataclasses.dataclass(eq=False)
class InductionConfig(tfds.core.BuilderConfig):
    """Parameters of the `induction` dataset.

    Attributes:
      vocab_size: tokens are ids in `[0, vocab_size)`; random tokens come from `[1, vocab_size)`.
      half_len: length of the random sequence that is repeated (the longest, when
        `min_half_len` is set).
      min_half_len: shortest repeated length; None means always `half_len`.
      bos: whether each sequence starts with the BOS token `0`.
      num_train, num_test: examples in the `train` and `test` splits.
      seed: generation seed (train and test use different streams of it).
      placement: "end": a random prefix, then the two copies back to back, ending the
        sequence. "random": the first copy starts at a uniform position in
        `[0, 2 * (half_len - n)]`, the second at a uniform position after the first ends, with
        random tokens everywhere else. Same when `n == half_len`.
      skip_prob: probability that a token (from the third on, BOS not counted) is
        `skip_permutation[token two before]` instead of uniform; 0 means independent tokens.
    """

    vocab_size: int = 64
    half_len: int = 32
    min_half_len: int | None = None
    bos: bool = True
    num_train: int = 100_000
    num_test: int = 1_000
    seed: int = 0
    placement: str = "end"
    skip_prob: float = 0.0

    @property
    def seq_len(self) -> int:
        return 2 * self.half_len + int(self.bos)

    @property
    def skip_permutation(self) -> np.ndarray:
        """int [vocab_size]: the fixed map of `skip_prob` (0 -> 0, a permutation of the rest);
        a function of `seed` and `vocab_size` only."""
        perm = np.random.default_rng([self.seed, 2]).permutation(self.vocab_size - 1) + 1
        return np.concatenate([[BOS], perm]).astype(np.int32)

    def validate(self) -> None:
        check(self.vocab_size >= 2, f"induction: vocab_size must be >= 2, got {self.vocab_size}")
        check(self.half_len >= 1, f"induction: half_len must be >= 1, got {self.half_len}")
        check(self.min_half_len is None or 1 <= self.min_half_len <= self.half_len,
              f"induction: min_half_len must be in [1, half_len={self.half_len}], got "
              f"{self.min_half_len}")
        check(self.placement in PLACEMENTS,
              f"induction: placement must be one of {PLACEMENTS}, got {self.placement!r}")
        check(0.0 <= self.skip_prob <= 1.0,
              f"induction: skip_prob must be in [0, 1], got {self.skip_prob}")


class Induction(SyntheticBuilder, skip_registration=True):
    """Repeated random-token sequences (induction heads). Feature `tokens`: int32 [seq_len]."""

    CONFIG_CLASS = InductionConfig

    def _features(self, cfg):
        return {"tokens": tensor((cfg.seq_len,), np.int32)}

    def _generate_examples(self, n: int, stream: int):
        cfg = self.builder_config
        for start, count, rng in chunk_rngs(cfg.seed, stream, n):
            h = cfg.half_len
            rand = rng.integers(1, cfg.vocab_size, size=(count, 2 * h), dtype=np.int32)
            lengths = (np.full(count, h) if cfg.min_half_len is None
                       else rng.integers(cfg.min_half_len, h + 1, size=count))
            tokens = rand.copy()
            if cfg.skip_prob > 0:  # (no extra draws otherwise: the default data is unchanged)
                perm = cfg.skip_permutation
                skip = rng.random((count, 2 * h)) < cfg.skip_prob
                for j in range(2, 2 * h):
                    tokens[:, j] = np.where(skip[:, j], perm[tokens[:, j - 2]], tokens[:, j])
            if cfg.placement == "end":  # prefix of 2 (h - n) tokens, then x, x
                firsts, seconds = 2 * h - 2 * lengths, 2 * h - lengths
            else:  # x anywhere, then x again anywhere after it
                firsts = rng.integers(0, 2 * (h - lengths) + 1)
                seconds = rng.integers(firsts + lengths, 2 * h - lengths + 1)
            for i, (n, a, b) in enumerate(zip(lengths, firsts, seconds, strict=True)):
                tokens[i, b: b + n] = tokens[i, a: a + n]
            if cfg.bos:
                tokens = np.concatenate([np.full((count, 1), BOS, np.int32), tokens], axis=1)
            for i in range(count):
                yield start + i, {"tokens": tokens[i]}
