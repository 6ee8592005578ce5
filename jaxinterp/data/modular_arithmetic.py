"""`modular_arithmetic`: the grokking task (Power et al. 2022; Nanda et al. 2023).

All pairs `(a, b)` with `a, b` in `[0, p)` (for division `b` in `[1, p)`) become examples

    tokens = [a, op_token, b, eq_token]    int32 [4], op_token = p, eq_token = p + 1
    target = (a op b) mod p                int32 []      (a / b := a * b^(p-2) mod p, p prime)

so the vocabulary is `p + 2` tokens. Features `a` and `b` (int32 []) are stored too. The pairs
are split into `train` (a fraction `train_fraction` of them) and `test` (the rest) by a
permutation drawn from `seed`: the splits are disjoint and together cover every pair.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, tensor

OPS = ("+", "-", "/")


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


def modular_op(a: np.ndarray, b: np.ndarray, op: str, p: int) -> np.ndarray:
    """`(a op b) mod p` elementwise for int arrays; `/` multiplies by b's inverse (p prime)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "/":
        inv = np.array([pow(int(x), -1, p) for x in np.ravel(b)], np.int64).reshape(b.shape)
        return (a * inv) % p
    raise ValueError(f"modular_arithmetic: op must be one of {OPS}, got {op!r}")


@dataclasses.dataclass(eq=False)
class ModularArithmeticConfig(tfds.core.BuilderConfig):
    """Parameters of the `modular_arithmetic` dataset.

    Attributes:
      p: the modulus (must be prime for `/`).
      op: `"+"`, `"-"` or `"/"`.
      train_fraction: fraction of all pairs in the `train` split.
      seed: seed of the train/test permutation.
    """

    p: int = 113
    op: str = "+"
    train_fraction: float = 0.3
    seed: int = 0

    @property
    def vocab_size(self) -> int:
        return self.p + 2

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """All `(a, b)` operand pairs as two int64 arrays, in row-major order."""
        b_values = np.arange(1 if self.op == "/" else 0, self.p)
        a, b = np.meshgrid(np.arange(self.p), b_values, indexing="ij")
        return a.ravel(), b.ravel()

    def split_indices(self) -> dict[str, np.ndarray]:
        """Indices into `pairs()` of the `train` and `test` splits (disjoint, covering all)."""
        n = len(self.pairs()[0])
        perm = np.random.default_rng(self.seed).permutation(n)
        n_train = round(self.train_fraction * n)
        return {"train": np.sort(perm[:n_train]), "test": np.sort(perm[n_train:])}

    def validate(self) -> None:
        check(self.op in OPS, f"modular_arithmetic: op must be one of {OPS}, got {self.op!r}")
        check(self.p >= 2, f"modular_arithmetic: p must be >= 2, got {self.p}")
        check(
            self.op != "/" or _is_prime(self.p),
            f"modular_arithmetic: division needs a prime p, got p={self.p}",
        )
        n = len(self.pairs()[0])
        n_train = round(self.train_fraction * n)
        check(
            0 < n_train < n,
            f"modular_arithmetic: train_fraction={self.train_fraction} leaves an empty split "
            f"({n_train} of {n} pairs in train)",
        )


class ModularArithmetic(SyntheticBuilder, skip_registration=True):
    """Grokking task `(a op b) mod p`. Features: tokens int32 [4], target/a/b int32 []."""

    CONFIG_CLASS = ModularArithmeticConfig
    SUPERVISED_KEYS = ("tokens", "target")

    def _features(self, cfg):
        del cfg
        return {"tokens": tensor((4,), np.int32), "target": tensor((), np.int32),
                "a": tensor((), np.int32), "b": tensor((), np.int32)}

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            split: self._generate_examples(idx)
            for split, idx in self.builder_config.split_indices().items()
        }

    def _generate_examples(self, indices: np.ndarray):
        cfg = self.builder_config
        a_all, b_all = cfg.pairs()
        a, b = a_all[indices], b_all[indices]
        target = modular_op(a, b, cfg.op, cfg.p)
        for i, key in enumerate(indices):
            tokens = np.array([a[i], cfg.p, b[i], cfg.p + 1], np.int32)
            yield (
                int(key),
                {
                    "tokens": tokens,
                    "target": np.int32(target[i]),
                    "a": np.int32(a[i]),
                    "b": np.int32(b[i]),
                },
            )
