"""`icl_regression`: in-context linear regression (Garg et al. 2022).

Per example, a task vector `w ~ N(0, I_d)` and inputs `x_i ~ N(0, I_d)` give targets
`y_i = w . x_i (+ noise_std * N(0, 1))`. Features:

    xs  float32 [n_points, d]
    ys  float32 [n_points]
    w   float32 [d]            (stored so that analyses and tests can check the model)

With `task_pool_size > 0` every `w` is drawn from a fixed pool of that many task vectors
(shared by all splits; the task-diversity knob of Raventós et al. 2023); with 0 each example
draws a fresh `w`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, chunk_rngs, tensor

_POOL_STREAM = 7


@dataclasses.dataclass(eq=False)
class IclRegressionConfig(tfds.core.BuilderConfig):
    """Parameters of the `icl_regression` dataset.

    Attributes:
      d: input dimension.
      n_points: (x, y) pairs per example.
      noise_std: standard deviation of Gaussian noise added to y (0 = noiseless).
      task_pool_size: number of distinct task vectors w (0 = a fresh w per example).
      num_train, num_test: examples in the `train` and `test` splits.
      seed: generation seed.
    """

    d: int = 8
    n_points: int = 16
    noise_std: float = 0.0
    task_pool_size: int = 0
    num_train: int = 50_000
    num_test: int = 1_000
    seed: int = 0

    def validate(self) -> None:
        check(self.d >= 1 and self.n_points >= 1, "icl_regression: d and n_points must be >= 1")
        check(self.noise_std >= 0, f"icl_regression: noise_std must be >= 0, got {self.noise_std}")
        check(self.task_pool_size >= 0, "icl_regression: task_pool_size must be >= 0")


class IclRegression(SyntheticBuilder, skip_registration=True):
    """In-context linear regression. Features: xs f32 [n, d], ys f32 [n], w f32 [d]."""

    CONFIG_CLASS = IclRegressionConfig

    def _features(self, cfg):
        return {"xs": tensor((cfg.n_points, cfg.d), np.float32),
                "ys": tensor((cfg.n_points,), np.float32), "w": tensor((cfg.d,), np.float32)}

    def _generate_examples(self, n: int, stream: int):
        cfg = self.builder_config
        pool = None
        if cfg.task_pool_size:
            pool_rng = np.random.default_rng([cfg.seed, _POOL_STREAM])
            pool = pool_rng.standard_normal((cfg.task_pool_size, cfg.d)).astype(np.float32)
        for start, count, rng in chunk_rngs(cfg.seed, stream, n):
            if pool is None:
                w = rng.standard_normal((count, cfg.d)).astype(np.float32)
            else:
                w = pool[rng.integers(0, cfg.task_pool_size, size=count)]
            xs = rng.standard_normal((count, cfg.n_points, cfg.d)).astype(np.float32)
            ys = np.einsum("bnd,bd->bn", xs.astype(np.float64), w.astype(np.float64))
            if cfg.noise_std:
                ys = ys + cfg.noise_std * rng.standard_normal(ys.shape)
            ys = ys.astype(np.float32)
            for i in range(count):
                yield start + i, {"xs": xs[i], "ys": ys[i], "w": w[i]}
