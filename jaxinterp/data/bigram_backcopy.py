"""`bigram_backcopy`: the Bigram-Backcopy (BB) task of Guo et al. 2024 (extreme tokens).

Guo, Pai, Bai, Jiao, Jordan and Mei, "Active-Dormant Attention Heads: Mechanistically
Demystifying Extreme-Token Phenomena in LLMs" (arXiv:2410.13835). Their generator (the `bbm`
class of BBM/data.py in github.com/GuoTianYu2000/Active-Dormant-Attention) is, with a
bigram transition matrix P over the ordinary tokens and a set of trigger tokens:

    tokens[0] = BOS                                   (the only BOS; nothing transitions to it)
    tokens[1] ~ marginal with the triggers removed    (renormalised)
    tokens[j + 1] = tokens[j - 1]            if tokens[j] is a trigger        (backcopy)
                  ~ P[tokens[j]]             otherwise                        (bigram)

so the token after a trigger copies the token before it, and every other token follows the
bigram statistics of the current token alone. The authors take P and the marginal from the
character bigrams of a text corpus and the k = 3 most frequent characters as triggers; here P
is synthetic: row x of P is Dirichlet(`alpha`) over the ordinary tokens `[1, vocab_size)`
(small alpha: peaked rows), drawn from the config's `seed` alone (the same in every split),
the marginal is P's stationary distribution, and the triggers are its `n_triggers` most
probable tokens. Token 0 is BOS.

Feature `tokens`: int32 [seq_len] (BOS first). A model trained on next-token prediction over
the whole sequence must copy on trigger tokens (an attention head looking one token back) and
has nothing to attend to elsewhere: the head's "dormant" phase, where it attends to BOS.

    builder = BigramBackcopy(data_dir=..., vocab_size=32, seq_len=65, num_train=4096)
    builder.download_and_prepare()
    source = builder.as_data_source("train")          # source[i]["tokens"]: int32 [65]
    builder.builder_config.triggers                    # int32 [n_triggers]
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, chunk_rngs, tensor

BOS = 0


@dataclasses.dataclass(eq=False)
class BigramBackcopyConfig(tfds.core.BuilderConfig):
    """Parameters of the `bigram_backcopy` dataset.

    Attributes:
      vocab_size: token ids `[0, vocab_size)`; 0 is BOS, `[1, vocab_size)` ordinary tokens.
      n_triggers: trigger tokens (the most probable ones under the stationary distribution).
      seq_len: tokens per sequence, BOS included.
      alpha: Dirichlet concentration of each row of the transition matrix.
      num_train, num_test: sequences in the `train` and `test` splits.
      seed: seed of the transition matrix and of the sequences (train and test use different
        streams of it).
    """

    vocab_size: int = 32
    n_triggers: int = 3
    seq_len: int = 65
    alpha: float = 0.3
    num_train: int = 16384
    num_test: int = 512
    seed: int = 0

    def validate(self) -> None:
        check(self.vocab_size >= 3, f"bigram_backcopy: vocab_size must be >= 3, got "
              f"{self.vocab_size}")
        check(1 <= self.n_triggers <= self.vocab_size - 2,
              f"bigram_backcopy: n_triggers must be in [1, vocab_size - 2 = "
              f"{self.vocab_size - 2}], got {self.n_triggers}")
        check(self.seq_len >= 2, f"bigram_backcopy: seq_len must be >= 2, got {self.seq_len}")
        check(self.alpha > 0, f"bigram_backcopy: alpha must be > 0, got {self.alpha}")

    @property
    def transitions(self) -> np.ndarray:
        """float64 [vocab_size, vocab_size]: P[x, y] = p(next = y | current = x); row and
        column 0 (BOS) are 0."""
        return _chain(self.vocab_size, self.alpha, self.seed)[0]

    @property
    def marginal(self) -> np.ndarray:
        """float64 [vocab_size]: P's stationary distribution (0 on BOS)."""
        return _chain(self.vocab_size, self.alpha, self.seed)[1]

    @property
    def triggers(self) -> np.ndarray:
        """int32 [n_triggers]: the trigger tokens, the most probable under `marginal`."""
        return np.sort(np.argsort(-self.marginal, kind="stable")[:self.n_triggers]).astype(
            np.int32)


@functools.cache
def _chain(vocab_size: int, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 2])
    p = np.zeros((vocab_size, vocab_size))
    p[1:, 1:] = rng.dirichlet(np.full(vocab_size - 1, alpha), size=vocab_size - 1)
    # Stationary distribution: a few hundred power iterations of a mixing chain.
    pi = np.full(vocab_size - 1, 1.0 / (vocab_size - 1))
    for _ in range(1000):
        pi = pi @ p[1:, 1:]
    marginal = np.concatenate([[0.0], pi / pi.sum()])
    p.setflags(write=False)
    marginal.setflags(write=False)
    return p, marginal


def sample(cfg: BigramBackcopyConfig, rng: np.random.Generator, count: int) -> np.ndarray:
    """int32 [count, seq_len]: `count` Bigram-Backcopy sequences (module docstring)."""
    p, triggers = cfg.transitions, cfg.triggers
    is_trigger = np.zeros(cfg.vocab_size, bool)
    is_trigger[triggers] = True
    first = cfg.marginal.copy()
    first[triggers] = 0.0
    cdf = np.cumsum(p, axis=1)
    cdf[:, -1] = 1.0  # rounding: every draw lands in some column
    tokens = np.zeros((count, cfg.seq_len), np.int32)
    tokens[:, 0] = BOS
    if cfg.seq_len > 1:
        tokens[:, 1] = rng.choice(cfg.vocab_size, size=count, p=first / first.sum())
    for j in range(1, cfg.seq_len - 1):
        cur = tokens[:, j]
        bigram = (cdf[cur] < rng.random(count)[:, None]).sum(-1)
        tokens[:, j + 1] = np.where(is_trigger[cur], tokens[:, j - 1], bigram)
    return tokens


def is_trigger(tokens: np.ndarray, triggers: np.ndarray) -> np.ndarray:
    """bool, tokens' shape: which tokens are triggers."""
    return np.isin(tokens, triggers)


class BigramBackcopy(SyntheticBuilder, skip_registration=True):
    """Bigram-Backcopy sequences (Guo et al. 2024). Feature `tokens`: int32 [seq_len]."""

    CONFIG_CLASS = BigramBackcopyConfig

    def _features(self, cfg):
        return {"tokens": tensor((cfg.seq_len,), np.int32)}

    def _generate_examples(self, n: int, stream: int):
        cfg = self.builder_config
        for start, count, rng in chunk_rngs(cfg.seed, stream, n):
            tokens = sample(cfg, rng, count)
            for i in range(count):
                yield start + i, {"tokens": tokens[i]}
