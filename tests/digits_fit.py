"""A small optax loop that fits an image classifier on the 8x8 digits and measures accuracy.

For tests of any image model `images [batch, 8, 8, 1] float -> logits [batch, 10]`:

    from tests.digits_fit import fit, load_digits
    data = load_digits(tmp_dir)                         # prepares the TFDS builder once per dir
    result = fit(model, data, steps=600, learning_rate=3e-3)
    assert result.test_accuracy >= 0.9

The data come from the `digits` TFDS builder (`jaxinterp.data.sources.load_source`): 1437 train
and 360 test images, pixel values scaled to [0, 1].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class Digits:
    """Digits as arrays: images float32 [n, 8, 8, 1] in [0, 1], labels int32 [n]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class FitResult:
    variables: Any
    losses: np.ndarray  # [steps] training loss per step
    train_accuracy: float
    test_accuracy: float


@functools.cache
def load_digits(data_dir: str) -> Digits:
    """Prepares the `digits` builder in `data_dir` (once per process) and returns the arrays."""
    import tensorflow_datasets as tfds

    from jaxinterp.data.sources import load_source

    tfds.display_progress_bar(False)
    out = {}
    for split in ("train", "test"):
        source = load_source("digits", split, data_dir)
        examples = [source[i] for i in range(len(source))]
        images = np.stack([e["image"] for e in examples]).astype(np.float32) / 255.0
        labels = np.asarray([e["label"] for e in examples], np.int32)
        out[split] = (images, labels)
    return Digits(*out["train"], *out["test"])


def accuracy(model: nn.Module, variables: Any, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 512) -> float:
    """Fraction of `images` whose argmax logit is the label."""
    predict = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x), -1))
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((np.asarray(predict(variables, images[i:i + batch_size]))
                        == labels[i:i + batch_size]).sum())
    return correct / len(images)


def fit(model: nn.Module, data: Digits, *, steps: int = 600, batch_size: int = 64,
        learning_rate: float = 3e-3, weight_decay: float = 1e-4, warmup: int = 50,
        seed: int = 0) -> FitResult:
    """AdamW with linear warmup and cosine decay on softmax cross-entropy; minibatches drawn
    without replacement, reshuffled every epoch (NumPy RNG `seed`)."""
    variables = model.init(jax.random.key(seed), jnp.asarray(data.train_images[:2]))
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, steps)
    tx = optax.adamw(schedule, weight_decay=weight_decay)
    opt_state = tx.init(variables)

    @jax.jit
    def step(variables, opt_state, images, labels):
        def loss_fn(v):
            logits = model.apply(v, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(variables)
        updates, opt_state = tx.update(grads, opt_state, variables)
        return optax.apply_updates(variables, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    n = len(data.train_labels)
    order, cursor = rng.permutation(n), 0
    losses = []
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = rng.permutation(n), 0
        idx = order[cursor:cursor + batch_size]
        cursor += batch_size
        variables, opt_state, loss = step(variables, opt_state, data.train_images[idx],
                                          data.train_labels[idx])
        losses.append(loss)
    return FitResult(
        variables=variables,
        losses=np.asarray(jax.device_get(losses)),
        train_accuracy=accuracy(model, variables, data.train_images, data.train_labels),
        test_accuracy=accuracy(model, variables, data.test_images, data.test_labels),
    )
