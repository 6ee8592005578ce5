"""`planted_sum`: a task with a planted intermediate variable, for DAS.

The causal model: from inputs `a, b` in `[0, m)` and `c` in `[1, m)`, the intermediate
variable `s = a + b`, then the answer `y = s * c` (integers in `[0, (2m - 2)(m - 1)]`).
Each example is a base input, a source input (independent, uniform) and the counterfactual
answer: the base's answer with `s` set to its value on the source input,

    tokens         int32 [3]   the base input [a, b, m - 1 + c] (c's tokens are [m, 2m - 1))
    target         int32 []    y = (a + b) * c, the base's answer
    source_tokens  int32 [3]   the source input [a', b', m - 1 + c']
    source_target  int32 []    the source's answer
    counterfactual int32 []    s' * c with s' = a' + b': y with s := s'

so a base model trains on `tokens` -> `target` (`next_token` with `answer_feature="target"`)
and DAS on `(tokens, source_tokens)` -> `counterfactual` (the `interchange` task). Leaving the
base output unchanged is right for a pair only when s' = s (about 1 / (1.4 m) of pairs).
The vocabulary is `[0, (2m - 2)(m - 1) + 1)`; a and b use its first m tokens, c the next
m - 1 (its own tokens, so that attention can keep it apart from the a + b sum).

Why a product: with `y = s + c` a small transformer added a, b and c in one attention head
(the same direction for all three), so no subspace held s apart from c; and
`(a + b + c) mod m` has no low-order correlation between any input and the answer (a small
transformer stayed at chance on it for 2000 steps). `s * c` needs s and c apart, and a
2-layer d_model-32 transformer learns it in ~1000 steps.

    source = load_source("planted_sum", "train", data_dir, num_values=7, num_train=4096)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, chunk_rngs, tensor


@dataclasses.dataclass(eq=False)
class PlantedSumConfig(tfds.core.BuilderConfig):
    """Parameters of `planted_sum`.

    Attributes:
      num_values: m (inputs in [0, m)).
      num_train, num_test: examples (base/source pairs) per split.
      seed: generation seed (train and test use different streams of it).
    """

    num_values: int = 7
    num_train: int = 4096
    num_test: int = 512
    seed: int = 0

    @property
    def vocab_size(self) -> int:
        return (2 * self.num_values - 2) * (self.num_values - 1) + 1

    def validate(self) -> None:
        check(self.num_values >= 3,
              f"planted_sum: num_values must be >= 3, got {self.num_values}")


def planted_sum_labels(base: np.ndarray, source: np.ndarray) -> dict[str, np.ndarray]:
    """The causal model on int [n, 3] inputs: `target`, `source_target`, `counterfactual`."""
    base, source = np.asarray(base, np.int64), np.asarray(source, np.int64)
    return {"target": (base[:, 0] + base[:, 1]) * base[:, 2],
            "source_target": (source[:, 0] + source[:, 1]) * source[:, 2],
            "counterfactual": (source[:, 0] + source[:, 1]) * base[:, 2]}


class PlantedSum(SyntheticBuilder, skip_registration=True):
    """`y = (a + b) * c` with base/source pairs and counterfactual labels for the
    intermediate `s = a + b` (module docstring)."""

    CONFIG_CLASS = PlantedSumConfig
    SUPERVISED_KEYS = ("tokens", "target")

    def _features(self, cfg):
        del cfg
        scalar = tensor((), np.int32)
        return {"tokens": tensor((3,), np.int32), "target": scalar,
                "source_tokens": tensor((3,), np.int32), "source_target": scalar,
                "counterfactual": scalar}

    def _generate_examples(self, n: int, stream: int):
        m = self.builder_config.num_values
        for start, count, rng in chunk_rngs(self.builder_config.seed, stream, n):
            base, source = (np.concatenate([rng.integers(0, m, size=(count, 2)),
                                            rng.integers(1, m, size=(count, 1))], axis=1)
                            for _ in range(2))
            labels = planted_sum_labels(base, source)
            base[:, 2] += m - 1  # c's tokens
            source[:, 2] += m - 1
            for i in range(count):
                yield start + i, {
                    "tokens": base[i].astype(np.int32),
                    "source_tokens": source[i].astype(np.int32),
                    **{k: np.int32(v[i]) for k, v in labels.items()},
                }
