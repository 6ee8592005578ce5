"""Linear and logistic probes: is a property linearly decodable from an activation?
(Alain & Bengio 2016, "Understanding intermediate layers using linear classifier probes";
Belinkov 2022, "Probing Classifiers: Promises, Shortcomings, and Advances".)

Probes read activations `x [n, d]` and labels `y [n]` (or `[n, k]` targets for a linear probe),
hold out part of the data, and report a score on the held-out part:

- `fit_linear_probe` (least squares / ridge, `l2 * ||W||^2`, bias unpenalised; score R^2, the
  mean over output columns as scikit-learn's `r2_score`). Solved exactly from the sufficient
  statistics `[x, 1]^T [x, 1]`, `[x, 1]^T y`, `sum y^2`, accumulated in float64, so the streamed
  version (`fit_linear_probe_stream`, one pass over an iterator of batches) needs memory
  `O(d^2)` and gives the same answer as the in-memory one on the same split.
- `fit_logistic_probe` (multinomial logistic regression, loss `mean CE + l2/2 ||W||^2`, bias
  unpenalised; score accuracy) runs full-batch L-BFGS (optax). scikit-learn's
  `LogisticRegression(C=C)` minimises `C sum CE + ||W||^2 / 2`, i.e. `l2 = 1 / (C n_train)`.
  `fit_logistic_probe_stream` trains with Adam over minibatches for some epochs, so it needs
  a re-iterable source (a list, or a zero-argument callable returning a fresh iterator).

Held-out split: in memory, a seeded permutation puts `round(test_fraction * n)` examples in the
test set; streamed, each example goes to the test set with probability `test_fraction`, from a
generator seeded once per pass (so every pass splits the same stream the same way).

`site_batches` streams `(x, y)` batches of one site's activations from a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.run import run


@flax.struct.dataclass
class _AffineProbe:
    """The affine map of both probes: x @ weight + bias; weight [d, ...], bias [...]."""

    weight: jax.Array
    bias: jax.Array

    def _affine(self, x: jax.Array) -> jax.Array:
        """x [n, d] -> [n, ...]."""
        return jnp.einsum("nd,d...->n...", x, self.weight) + self.bias  # contract d


@flax.struct.dataclass
class LinearProbe(_AffineProbe):
    """y ≈ x @ weight + bias. weight [d, k] (or [d] for a scalar target), bias [k] (or []);
    `predict` maps x [n, d] to y [n, k] (or [n])."""

    def predict(self, x: jax.Array) -> jax.Array:
        return self._affine(x)


@flax.struct.dataclass
class LogisticProbe(_AffineProbe):
    """p(class | x) = softmax(x @ weight + bias). weight [d, n_classes], bias [n_classes]."""

    def logits(self, x: jax.Array) -> jax.Array:
        """x [n, d] -> [n, n_classes]."""
        return self._affine(x)

    def predict(self, x: jax.Array) -> jax.Array:
        """x [n, d] -> predicted class [n]."""
        return jnp.argmax(self.logits(x), axis=-1)


class ProbeFit(NamedTuple):
    """A fitted probe and its scores (R^2 for linear probes, accuracy for logistic ones)."""

    probe: LinearProbe | LogisticProbe
    train_score: float
    test_score: float
    n_train: int
    n_test: int


# -- checks and splits ----------------------------------------------------------------------

def _check_xy(x: Any, y: Any, classes: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"activations must be [n, d], got shape {x.shape}")
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"labels have length {y.shape[0] if y.ndim else 'scalar'} but there "
                         f"are {x.shape[0]} activations; they must match")
    if classes:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"class labels must be [n] integers, got shape {y.shape} dtype "
                             f"{y.dtype}")
        if y.size and y.min() < 0:
            raise ValueError(f"class labels must be >= 0, got {y.min()}")
    elif y.ndim not in (1, 2):
        raise ValueError(f"linear-probe targets must be [n] or [n, k], got shape {y.shape}")
    return x, y


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def train_test_split(n: int, test_fraction: float = 0.2, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of a seeded permutation of `range(n)`."""
    _check_fraction(test_fraction)
    n_test = round(test_fraction * n)
    if n_test < 1 or n_test >= n:
        raise ValueError(f"test_fraction={test_fraction} of {n} examples leaves an empty split")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _passes(batches: Any) -> Callable[[], Iterable]:
    """A zero-argument callable returning a fresh pass over `batches`."""
    if callable(batches):
        return batches
    if iter(batches) is batches:
        raise ValueError("a one-shot iterator can be read only once; pass a list or a "
                         "zero-argument callable that returns a fresh iterator")
    return lambda: batches


# -- linear probes --------------------------------------------------------------------------

class _Stats:
    """Sufficient statistics of least squares with a bias: [x 1]^T [x 1], [x 1]^T y, sums."""

    def __init__(self):
        self.a = self.b = self.ysq = self.ysum = None
        self.n = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if not len(x):
            return
        xa = np.concatenate([x.astype(np.float64), np.ones((len(x), 1))], axis=1)
        y2 = y.reshape(len(y), -1).astype(np.float64)
        upd = (xa.T @ xa, xa.T @ y2, (y2 * y2).sum(0), y2.sum(0))
        if self.a is None:
            self.a, self.b, self.ysq, self.ysum = upd
        else:
            self.a, self.b, self.ysq, self.ysum = (s + u for s, u in zip(
                (self.a, self.b, self.ysq, self.ysum), upd, strict=True))
        self.n += len(x)

    def solve(self, l2: float) -> np.ndarray:
        """[d + 1, k]: weights then bias, minimising SSE + l2 ||W||^2."""
        pen = np.full(self.a.shape[0], float(l2))
        pen[-1] = 0.0
        return np.linalg.lstsq(self.a + np.diag(pen), self.b, rcond=None)[0]

    def r2(self, w: np.ndarray) -> float:
        sse = self.ysq - 2 * np.einsum("dk,dk->k", w, self.b) \
            + np.einsum("dk,de,ek->k", w, self.a, w)  # per output column
        sst = self.ysq - self.ysum ** 2 / self.n
        return float(np.mean(1.0 - sse / np.maximum(sst, 1e-300)))


def _linear_fit(train: _Stats, test: _Stats, l2: float, scalar: bool) -> ProbeFit:
    if train.n <= 1 or test.n < 2:
        raise ValueError(f"need at least 2 train and 2 test examples, got {train.n} and "
                         f"{test.n}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    w = train.solve(l2)
    weight, bias = w[:-1], w[-1]
    if scalar:
        weight, bias = weight[:, 0], bias[0]
    probe = LinearProbe(weight=jnp.asarray(weight, jnp.float32),
                        bias=jnp.asarray(bias, jnp.float32))
    return ProbeFit(probe, train.r2(w), test.r2(w), train.n, test.n)


def fit_linear_probe(x: Any, y: Any, *, l2: float = 0.0, test_fraction: float = 0.2,
                     seed: int = 0) -> ProbeFit:
    """Least-squares (ridge if `l2 > 0`) probe of `x [n, d]` for `y [n]` or `[n, k]`; scores are
    R^2 on the train and held-out parts."""
    x, y = _check_xy(x, y, classes=False)
    train_idx, test_idx = train_test_split(len(x), test_fraction, seed)
    train, test = _Stats(), _Stats()
    train.add(x[train_idx], y[train_idx])
    test.add(x[test_idx], y[test_idx])
    return _linear_fit(train, test, l2, y.ndim == 1)


def fit_linear_probe_stream(batches: Iterable[tuple[Any, Any]], *, l2: float = 0.0,
                            test_fraction: float = 0.2, seed: int = 0) -> ProbeFit:
    """`fit_linear_probe` over an iterable of `(x [b, d], y [b] or [b, k])` batches, in one pass
    with O(d^2) memory (see the module docstring for the split)."""
    _check_fraction(test_fraction)
    rng = np.random.default_rng(seed)
    train, test = _Stats(), _Stats()
    scalar = None
    for i, (x, y) in enumerate(batches):
        try:
            x, y = _check_xy(x, y, classes=False)
        except ValueError as e:
            raise ValueError(f"batch {i}: {e}") from None
        scalar = y.ndim == 1 if scalar is None else scalar
        held = rng.random(len(x)) < test_fraction
        train.add(x[~held], y[~held])
        test.add(x[held], y[held])
    if scalar is None:
        raise ValueError("fit_linear_probe_stream got no batches")
    return _linear_fit(train, test, l2, scalar)


# -- logistic probes ------------------------------------------------------------------------

def _logistic_loss(probe: LogisticProbe, x: jax.Array, y: jax.Array, l2: float,
                   mask: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy (over the examples where `mask` holds) + l2/2 ||W||^2."""
    ce = optax.softmax_cross_entropy_with_integer_labels(probe.logits(x), y)
    ce = ce.mean() if mask is None else (ce * mask).sum() / jnp.maximum(mask.sum(), 1)
    return ce + 0.5 * l2 * jnp.sum(probe.weight ** 2)


def _accuracy(probe: LogisticProbe, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(probe.predict(jnp.asarray(x, jnp.float32))) == y))


def _n_classes(y: np.ndarray, n_classes: int | None) -> int:
    k = int(y.max()) + 1 if n_classes is None else n_classes
    if k < 2 or y.max() >= k:
        raise ValueError(f"labels go up to {int(y.max())} but n_classes={k}; need n_classes "
                         "> every label and >= 2")
    return k


def _init_logistic(d: int, k: int) -> LogisticProbe:
    return LogisticProbe(weight=jnp.zeros((d, k), jnp.float32), bias=jnp.zeros((k,), jnp.float32))


def fit_logistic_probe(x: Any, y: Any, *, n_classes: int | None = None, l2: float = 1e-3,
                       test_fraction: float = 0.2, seed: int = 0, steps: int = 500) -> ProbeFit:
    """Multinomial logistic probe of `x [n, d]` for class labels `y [n]`, full-batch L-BFGS;
    scores are accuracies on the train and held-out parts."""
    x, y = _check_xy(x, y, classes=True)
    k = _n_classes(y, n_classes)
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    tr, te = train_test_split(len(x), test_fraction, seed)
    xt, yt = jnp.asarray(x[tr], jnp.float32), jnp.asarray(y[tr], jnp.int32)
    opt = optax.lbfgs()

    def loss(p):
        return _logistic_loss(p, xt, yt, l2)

    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def solve(probe):
        def body(_, carry):
            p, state = carry
            value, grad = value_and_grad(p, state=state)
            updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
            return optax.apply_updates(p, updates), state

        return jax.lax.fori_loop(0, steps, body, (probe, opt.init(probe)))[0]

    probe = solve(_init_logistic(x.shape[1], k))
    return ProbeFit(probe, _accuracy(probe, x[tr], y[tr]), _accuracy(probe, x[te], y[te]),
                    len(tr), len(te))


def fit_logistic_probe_stream(
    batches: Iterable[tuple[Any, Any]] | Callable[[], Iterable[tuple[Any, Any]]], *,
    n_classes: int, l2: float = 1e-3, test_fraction: float = 0.2, seed: int = 0,
    epochs: int = 5, learning_rate: float = 1e-2,
) -> ProbeFit:
    """Logistic probe trained with Adam, one step per `(x [b, d], y [b])` training batch, for
    `epochs` passes; a final pass scores it. `batches` must be re-iterable (a list, or a
    callable returning a fresh iterator); activations are never all held in memory."""
    _check_fraction(test_fraction)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    new_pass = _passes(batches)
    opt = optax.adam(learning_rate)

    @jax.jit
    def step(probe, state, x, y, mask):  # mask: the batch's training examples
        grads = jax.grad(_logistic_loss)(probe, x, y, l2, mask)
        updates, state = opt.update(grads, state, probe)
        return optax.apply_updates(probe, updates), state

    def split_pass() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(seed)
        for i, (x, y) in enumerate(new_pass()):
            try:
                x, y = _check_xy(x, y, classes=True)
            except ValueError as e:
                raise ValueError(f"batch {i}: {e}") from None
            if y.size and y.max() >= n_classes:
                raise ValueError(f"batch {i}: label {int(y.max())} >= n_classes={n_classes}")
            yield x, y, rng.random(len(x)) < test_fraction

    probe = state = None
    for _ in range(epochs):
        for x, y, held in split_pass():
            if probe is None:
                probe = _init_logistic(x.shape[1], n_classes)
                state = opt.init(probe)
            if (~held).any():
                probe, state = step(probe, state, jnp.asarray(x, jnp.float32),
                                    jnp.asarray(y, jnp.int32), jnp.asarray(~held, jnp.float32))
    if probe is None:
        raise ValueError("fit_logistic_probe_stream got no batches")
    counts = np.zeros((2, 2), np.int64)  # [train/test, correct/total]
    for x, y, held in split_pass():
        right = np.asarray(probe.predict(jnp.asarray(x, jnp.float32))) == y
        for j, m in enumerate((~held, held)):
            counts[j] += (right[m].sum(), m.sum())
    if counts[1, 1] == 0 or counts[0, 1] == 0:
        raise ValueError(f"empty split: {counts[0, 1]} train and {counts[1, 1]} test examples")
    return ProbeFit(probe, counts[0, 0] / counts[0, 1], counts[1, 0] / counts[1, 1],
                    int(counts[0, 1]), int(counts[1, 1]))


# -- activations from a model ---------------------------------------------------------------

def site_batches(model: nn.Module, variables: Any, batches: Iterable[tuple[Any, Any]],
                 site: str, *, pos: int | None = -1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streams `(x [n, d], y [n])` for a probe from `(tokens [batch, pos], labels)` batches.

    `labels [batch, pos]`: every position is an example (x is the site flattened over batch and
    position). `labels [batch]`: one example per sequence, at position `pos`. The site must be
    `[batch, pos, d]` (e.g. `blocks.1.hook_resid_post`).
    """
    capture = jax.jit(lambda v, t: run(model, v, t, capture=[site])[1][site])
    for i, (tokens, labels) in enumerate(batches):
        tokens, labels = jnp.asarray(tokens), np.asarray(labels)
        acts = capture(variables, tokens)
        if acts.ndim != 3:
            raise ValueError(f"site {site!r} has shape {acts.shape}; probes need [batch, pos, d]")
        if labels.shape == tuple(tokens.shape):
            yield np.asarray(acts).reshape(-1, acts.shape[-1]), labels.reshape(-1)
        elif labels.shape == tokens.shape[:1] and pos is not None:
            yield np.asarray(acts[:, pos]), labels
        else:
            raise ValueError(f"batch {i}: labels have shape {labels.shape}; with tokens "
                             f"{tuple(tokens.shape)} they must be [batch, pos] or [batch] "
                             "(with pos set)")


__all__ = [
    "LinearProbe",
    "LogisticProbe",
    "ProbeFit",
    "fit_linear_probe",
    "fit_linear_probe_stream",
    "fit_logistic_probe",
    "fit_logistic_probe_stream",
    "site_batches",
    "train_test_split",
]
