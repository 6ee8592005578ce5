"""`key_value`: in-context key-value recall (associative recall), for retrieval heads.

The data of the retrieval-head experiment (Wu et al. 2024, "Retrieval Head Mechanistically
Explains Long-Context Factuality"): a context of key-value pairs, then a query key whose value
must be copied from the context (the paper's needle is one pair here). Token layout:

    0                  BOS
    1                  QUERY (marks the question)
    2 .. 2 + F - 1     filler tokens (F = n_filler_tokens)
    next n_keys        keys
    next n_values      values

A sequence is BOS, then `n_pairs` pairs `k_i v_i` (distinct keys, uniform values) and
`n_filler` uniform filler tokens in a uniformly random order (pairs stay intact), then QUERY
and `n_queries` queried pairs `k_q v_q` of distinct context keys, uniform:

    BOS ... k_1 v_1 ... f ... k_n v_n ... QUERY k_q v_q k_q' v_q' ...
                                              (seq_len = 2 n_pairs + n_filler + 2 + 2 n_queries)

With `skip_prob` = p > 0, a pair that directly follows another pair gets, with probability p,
the key `skip_permutation[previous key]` (a fixed random permutation of the keys) when that key
is not yet in the context: skip-bigram structure (as in the `induction` builder) that rewards a
previous-token head early when the loss covers the context, which breaks the long plateau of
learning recall from random pairs.

Features (teacher forcing: the model emits `v_q` at the position of each queried `k_q`):

    tokens   int32 [seq_len]
    needle   bool  [seq_len]   the context positions of the queried values (the needles)
    answer   bool  [seq_len]   the positions of the queried keys after QUERY, which emit them

    builder = KeyValue(data_dir=..., n_pairs=8, num_train=4096, num_test=256)
    builder.download_and_prepare()
    source = builder.as_data_source("train")     # source[i]["tokens"]: int32 [seq_len]
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, chunk_rngs, tensor

BOS, QUERY = 0, 1


@dataclasses.dataclass(eq=False)
class KeyValueConfig(tfds.core.BuilderConfig):
    """Parameters of the `key_value` dataset (see the module docstring).

    Attributes:
      n_keys, n_values: sizes of the key and value vocabularies.
      n_pairs: key-value pairs in each context (distinct keys; at most n_keys).
      n_queries: queried pairs after QUERY (distinct keys of the context; at most n_pairs).
      n_filler: filler tokens among the pairs in each context.
      n_filler_tokens: size of the filler vocabulary.
      num_train, num_test: examples in the `train` and `test` splits.
      seed: generation seed (train and test use different streams of it).
      skip_prob: probability of the skip-bigram key (see the module docstring); 0: none.
    """

    n_keys: int = 32
    n_values: int = 32
    n_pairs: int = 8
    n_queries: int = 1
    n_filler: int = 8
    n_filler_tokens: int = 16
    num_train: int = 16_384
    num_test: int = 512
    seed: int = 0
    skip_prob: float = 0.0

    @property
    def skip_permutation(self) -> np.ndarray:
        """int [n_keys]: key index -> key index of the skip-bigram map (fixed by `seed`)."""
        return np.random.default_rng([self.seed, 2]).permutation(self.n_keys)

    @property
    def seq_len(self) -> int:
        return 2 * self.n_pairs + self.n_filler + 2 + 2 * self.n_queries

    @property
    def key_tokens(self) -> np.ndarray:
        start = 2 + self.n_filler_tokens
        return np.arange(start, start + self.n_keys, dtype=np.int32)

    @property
    def value_tokens(self) -> np.ndarray:
        start = 2 + self.n_filler_tokens + self.n_keys
        return np.arange(start, start + self.n_values, dtype=np.int32)

    @property
    def vocab_size(self) -> int:
        return 2 + self.n_filler_tokens + self.n_keys + self.n_values

    def validate(self) -> None:
        check(self.n_values >= 2, f"key_value: n_values must be >= 2, got {self.n_values}")
        check(1 <= self.n_pairs <= self.n_keys,
              f"key_value: n_pairs must be in [1, n_keys={self.n_keys}], got {self.n_pairs}")
        check(1 <= self.n_queries <= self.n_pairs, f"key_value: n_queries must be in [1, "
                                                   f"n_pairs={self.n_pairs}], got {self.n_queries}")
        check(0.0 <= self.skip_prob <= 1.0,
              f"key_value: skip_prob must be in [0, 1], got {self.skip_prob}")
        check(self.n_filler >= 0 and self.n_filler_tokens >= 1,
              f"key_value: need n_filler >= 0 and n_filler_tokens >= 1, got {self.n_filler}, "
              f"{self.n_filler_tokens}")


class KeyValue(SyntheticBuilder, skip_registration=True):
    """Key-value pairs in context, then a query key and its value. Features `tokens` int32
    [seq_len], `needle` bool [seq_len], `answer` bool [seq_len]."""

    CONFIG_CLASS = KeyValueConfig

    def _features(self, cfg):
        n = cfg.seq_len
        return {"tokens": tensor((n,), np.int32), "needle": tensor((n,), np.bool_),
                "answer": tensor((n,), np.bool_)}

    def _generate_examples(self, n: int, stream: int):
        cfg = self.builder_config
        keys_all, values_all = cfg.key_tokens, cfg.value_tokens
        f0 = 2
        for start, count, rng in chunk_rngs(cfg.seed, stream, n):
            for i in range(count):
                keys = rng.choice(cfg.n_keys, cfg.n_pairs, replace=False)
                values = rng.choice(values_all, cfg.n_pairs, replace=True)
                queried = rng.choice(cfg.n_pairs, cfg.n_queries, replace=False)
                items = [None] * cfg.n_filler + list(range(cfg.n_pairs))
                order = rng.permutation(len(items))
                if cfg.skip_prob > 0:
                    keys = _skip_keys(cfg, [items[j] for j in order], keys, rng)
                keys = keys_all[keys]
                tokens, needle = [BOS], [False]
                for j in order:
                    if items[j] is None:
                        tokens.append(int(rng.integers(f0, f0 + cfg.n_filler_tokens)))
                        needle.append(False)
                    else:
                        p = items[j]
                        tokens += [int(keys[p]), int(values[p])]
                        needle += [False, p in queried]
                tokens.append(QUERY)
                for q in queried:
                    tokens += [int(keys[q]), int(values[q])]
                needle += [False] * (1 + 2 * cfg.n_queries)
                answer = np.zeros(cfg.seq_len, bool)
                answer[-2 * cfg.n_queries::2] = True
                yield start + i, {"tokens": np.asarray(tokens, np.int32),
                                  "needle": np.asarray(needle), "answer": answer}


def _skip_keys(cfg: KeyValueConfig, items: list, keys: np.ndarray, rng: np.random.Generator
               ) -> np.ndarray:
    """Key indices with the skip-bigram structure: walking the items in sequence order, a pair
    right after a pair takes `skip_permutation[previous key]` with probability `skip_prob` when
    it is unused (its old key is swapped to the pair that held it, if any)."""
    keys = keys.copy()
    perm = cfg.skip_permutation
    prev, placed = None, set()
    for item in items:
        if item is None:
            prev = None
            continue
        if prev is not None and rng.random() < cfg.skip_prob:
            want = perm[keys[prev]]
            holder = np.flatnonzero(keys == want)
            if not holder.size or holder[0] not in placed:
                if holder.size:
                    keys[holder[0]] = keys[item]
                keys[item] = want
        placed.add(item)
        prev = item
    return keys
