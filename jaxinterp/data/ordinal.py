"""`ordinal`: ordinal sequences (numbers, days, months, letters) among filler tokens.

The data of the successor-head experiment (Gould et al. 2023, "Successor Heads: Recurring,
Interpretable Attention Heads In The Wild"), whose increment task is "Monday, Tuesday, ..."
prompts. Every element of every ordinal family is one token:

    0                  BOS
    1                  SEP (the ", " of the paper's prompts)
    2 .. 2 + F - 1     filler tokens (F = n_filler)
    then, in the order of `families`:
      numbers          0, 1, ..., n_numbers - 1
      days             Monday .. Sunday (7)
      months           January .. December (12)
      letters          A .. Z (26)

A sequence is BOS, then `runs_per_seq` runs and uniform filler tokens in a uniformly random
order (runs may touch). A run is `L` consecutive elements of one family (the family uniform,
L uniform in `[min_run, max_run]`, the start uniform among those that fit; no wrap-around),
separated by SEP:

    e_1 SEP e_2 SEP ... SEP e_L        (2 L - 1 tokens)

SEP occurs only inside runs and is always followed by the successor of the element before it,
so the token after SEP is predictable only by reading the previous token and incrementing it:
the job of a successor head. Features:

    tokens     int32 [seq_len]
    increment  bool  [seq_len]   True at each SEP (the next token is the previous one's successor)
    family     int32 [seq_len]   the run's family index at `increment` positions, -1 elsewhere

    builder = Ordinal(data_dir=..., n_numbers=50, seq_len=48, num_train=4096, num_test=256)
    builder.download_and_prepare()
    source = builder.as_data_source("train")     # source[i]["tokens"]: int32 [48]
    builder.builder_config.family_tokens          # {"numbers": array([34, ..., 83]), ...}
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, chunk_rngs, tensor

BOS, SEP = 0, 1
FAMILY_SIZES = {"days": 7, "months": 12, "letters": 26}  # numbers: n_numbers
FAMILIES = ("numbers", "days", "months", "letters")


@dataclasses.dataclass(eq=False)
class OrdinalConfig(tfds.core.BuilderConfig):
    """Parameters of the `ordinal` dataset (see the module docstring).

    Attributes:
      families: which ordinal families occur, a non-empty subset of `FAMILIES` (in any order;
        token ids follow this order).
      n_numbers: size of the numbers family (the numbers 0 .. n_numbers - 1).
      n_filler: number of filler tokens.
      seq_len: tokens per sequence, BOS included.
      runs_per_seq: ordinal runs per sequence.
      min_run, max_run: elements per run (each >= 2, at most the smallest family's size).
      num_train, num_test: examples in the `train` and `test` splits.
      seed: generation seed (train and test use different streams of it).
    """

    families: tuple[str, ...] = FAMILIES
    n_numbers: int = 100
    n_filler: int = 32
    seq_len: int = 64
    runs_per_seq: int = 2
    min_run: int = 2
    max_run: int = 5
    num_train: int = 16_384
    num_test: int = 512
    seed: int = 0

    def family_size(self, name: str) -> int:
        return self.n_numbers if name == "numbers" else FAMILY_SIZES[name]

    @property
    def family_tokens(self) -> dict[str, np.ndarray]:
        """Token ids of each family's elements, in order (element i of `name` is
        `family_tokens[name][i]`)."""
        out, start = {}, 2 + self.n_filler
        for name in self.families:
            out[name] = np.arange(start, start + self.family_size(name), dtype=np.int32)
            start += self.family_size(name)
        return out

    @property
    def vocab_size(self) -> int:
        return 2 + self.n_filler + sum(self.family_size(f) for f in self.families)

    def validate(self) -> None:
        fams = tuple(self.families)
        check(len(fams) >= 1 and len(set(fams)) == len(fams) and set(fams) <= set(FAMILIES),
              f"ordinal: families must be distinct names from {FAMILIES}, got {fams}")
        check(self.n_numbers >= 2, f"ordinal: n_numbers must be >= 2, got {self.n_numbers}")
        check(self.n_filler >= 1, f"ordinal: n_filler must be >= 1, got {self.n_filler}")
        smallest = min(self.family_size(f) for f in fams)
        check(2 <= self.min_run <= self.max_run <= smallest,
              f"ordinal: need 2 <= min_run <= max_run <= {smallest} (the smallest family's "
              f"size), got min_run={self.min_run}, max_run={self.max_run}")
        check(self.runs_per_seq >= 1, f"ordinal: runs_per_seq must be >= 1, got "
                                      f"{self.runs_per_seq}")
        need = 1 + self.runs_per_seq * (2 * self.max_run - 1)
        check(self.seq_len >= need, f"ordinal: seq_len={self.seq_len} cannot hold BOS and "
                                    f"{self.runs_per_seq} runs of up to {self.max_run} elements"
                                    f" (needs >= {need})")


class Ordinal(SyntheticBuilder, skip_registration=True):
    """Ordinal runs (numbers, days, months, letters) separated by SEP among filler tokens.
    Features `tokens` int32 [seq_len], `increment` bool [seq_len], `family` int32 [seq_len]."""

    CONFIG_CLASS = OrdinalConfig

    def _features(self, cfg):
        n = cfg.seq_len
        return {"tokens": tensor((n,), np.int32), "increment": tensor((n,), np.bool_),
                "family": tensor((n,), np.int32)}

    def _generate_examples(self, n: int, stream: int):
        cfg = self.builder_config
        fam_tokens = [cfg.family_tokens[f] for f in cfg.families]
        for start, count, rng in chunk_rngs(cfg.seed, stream, n):
            for i in range(count):
                yield start + i, _sequence(cfg, fam_tokens, rng)


def _sequence(cfg: OrdinalConfig, fam_tokens: list[np.ndarray], rng: np.random.Generator
              ) -> dict[str, np.ndarray]:
    """One example: the runs and the fillers in a random order after BOS."""
    blocks = []
    for _ in range(cfg.runs_per_seq):
        f = int(rng.integers(len(fam_tokens)))
        length = int(rng.integers(cfg.min_run, cfg.max_run + 1))
        first = int(rng.integers(len(fam_tokens[f]) - length + 1))
        elems = fam_tokens[f][first:first + length]
        toks = np.full(2 * length - 1, SEP, np.int32)
        toks[::2] = elems
        blocks.append((toks, f))
    n_fill = cfg.seq_len - 1 - sum(len(t) for t, _ in blocks)
    items = [None] * n_fill + list(range(len(blocks)))  # None: one filler token
    order = rng.permutation(len(items))
    tokens, family = [np.array([BOS], np.int32)], [np.array([-1], np.int32)]
    for j in order:
        item = items[j]
        if item is None:
            tokens.append(rng.integers(2, 2 + cfg.n_filler, size=1, dtype=np.int32))
            family.append(np.array([-1], np.int32))
        else:
            toks, f = blocks[item]
            tokens.append(toks)
            family.append(np.where(toks == SEP, f, -1).astype(np.int32))
    tokens, family = np.concatenate(tokens), np.concatenate(family)
    return {"tokens": tokens, "increment": tokens == SEP, "family": family}
