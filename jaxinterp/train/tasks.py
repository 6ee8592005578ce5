"""Tasks: how a dataset element becomes model inputs and targets, and the loss on the output.

The loop, sharding, checkpoints and interventions know nothing about which task runs: they
send the task's `features` of each batch to the devices and, inside the jitted step, call

    split = task.split(batch, key)               # inputs, model kwargs, targets, loss mask
    output = model(*split.inputs, **split.kwargs)
    loss, metrics = task.loss(output, split)

`config.task.name` chooses one (`make_task`); its other fields are the task's fields:

  next_token      language modelling: `tokens [L]` -> inputs `[:-1]`, targets `[1:]`; an
                  optional loss mask (`mask_feature`, aligned with tokens) or an answer feature
                  appended as the only scored position (`answer_feature`: modular arithmetic).
  classification  `image [H, W, C]` (or any input feature) -> logits `[num_classes]`; a
                  sequence model's logits `[pos, num_classes]` are read at `position`.
  regression      mean squared error between the output and a float target, at the positions
                  a mask feature allows (in-context regression).
  masked_lm       BERT: `mask_prob` of the non-padding tokens are chosen; 80% become
                  `mask_token_id`, 10% a random token, 10% stay; the loss is on the chosen ones.
                  Padding (`pad_id`) is passed to the model as `attention_mask`.
  interchange     DAS (`jaxinterp.tuning.das`): `base_tokens [L]`, `source_tokens [L]` ->
                  inputs `(base, source)`; cross-entropy of the logits at `position` against
                  the counterfactual `label` (its accuracy is the interchange accuracy).

Each task checks a dataset element before anything compiles (`check`) and the model's output
shape (`check_output`), with errors that name the feature, the shapes and what would fit.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxinterp.train.loss import cross_entropy


@struct.dataclass
class Split:
    """What a task makes of a batch: model `inputs` (positional) and `kwargs`, `targets`, and
    `mask` (1 where the loss counts; None: everywhere)."""

    inputs: tuple[jax.Array, ...]
    kwargs: dict[str, jax.Array]
    targets: jax.Array
    mask: jax.Array | None = None


class Task:
    """Base class: subclasses are frozen dataclasses whose fields come from `config.task`."""

    name = ""

    @property
    def features(self) -> tuple[str, ...]:
        """The dataset features the task reads (only these are sent to the devices)."""
        raise NotImplementedError

    def check(self, element: Mapping[str, Any], dataset: str) -> None:
        """Raises ValueError if a (batched) dataset element does not fit the task."""
        _require(self, element, dataset, self.features)

    def split(self, batch: Mapping[str, jax.Array], key: jax.Array) -> Split:
        raise NotImplementedError

    def check_output(self, output: jax.ShapeDtypeStruct, split: Split, source: Any) -> None:
        """Raises ValueError if the model's output (abstract) does not fit the targets of
        `split` (abstract) or of the dataset `source`."""

    def loss(self, output: jax.Array, split: Split) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class NextToken(Task):
    """Next-token cross-entropy on `feature` (int [batch, L]).

    Attributes:
      feature: the token feature.
      mask_feature: optional 0/1 feature [batch, L] aligned with the tokens: position t of
        the mask says whether predicting token t counts (so the loss mask is `mask[:, 1:]`).
      answer_feature: optional int feature [batch] appended to the tokens; then only the
        answer's prediction counts (modular arithmetic: `a op b =` -> `c`).
      z_loss: weight of PaLM's z-loss, `z_loss * logsumexp(logits)^2`.
    """

    feature: str = "tokens"
    mask_feature: str = ""
    answer_feature: str = ""
    z_loss: float = 0.0
    name = "next_token"

    @property
    def features(self):
        return tuple(f for f in (self.feature, self.mask_feature, self.answer_feature) if f)

    def check(self, element, dataset):
        super().check(element, dataset)
        tokens = _int_feature(self, element, self.feature, dataset, 2,
                              "next-token prediction needs an int sequence [L] (for images "
                              "use task.name='classification')")
        if tokens.shape[1] < (1 if self.answer_feature else 2):
            raise ValueError(f"task next_token: sequences of length {tokens.shape[1]} have "
                             "nothing to predict")
        if self.mask_feature and np.shape(element[self.mask_feature]) != tokens.shape:
            raise ValueError(f"task next_token: mask feature {self.mask_feature!r} has shape "
                             f"{np.shape(element[self.mask_feature])[1:]} per example, the "
                             f"tokens {tokens.shape[1:]}")

    def split(self, batch, key):
        del key
        tokens = batch[self.feature]
        mask = batch[self.mask_feature][:, 1:] if self.mask_feature else None
        if self.answer_feature:
            answer = batch[self.answer_feature].astype(tokens.dtype)
            tokens = jnp.concatenate([tokens, answer[:, None]], axis=1)
            mask = jnp.zeros(tokens[:, 1:].shape, jnp.float32).at[:, -1].set(1.0)
        return Split((tokens[:, :-1],), {}, tokens[:, 1:], mask)

    def check_output(self, output, split, source):
        _check_logits(self, output, split.targets.shape)

    def loss(self, output, split):
        return cross_entropy(output, split.targets, split.mask, self.z_loss)


@dataclasses.dataclass(frozen=True)
class Classification(Task):
    """Softmax cross-entropy of logits `[batch, num_classes]` against an int label.

    Attributes:
      input_feature: the model's input (uint8 images are scaled to [0, 1] float32; use the
        data pipeline's image transforms for normalisation and augmentation).
      label_feature: the int label.
      num_classes: expected number of classes; 0 means the model's output width (checked
        against the labels the dataset declares or contains).
      position: for sequence models with logits `[batch, pos, num_classes]`, the position read.
    """

    input_feature: str = "image"
    label_feature: str = "label"
    num_classes: int = 0
    position: int = -1
    name = "classification"

    @property
    def features(self):
        return (self.input_feature, self.label_feature)

    def check(self, element, dataset):
        super().check(element, dataset)
        _int_feature(self, element, self.label_feature, dataset, 1,
                     "the label must be one int per example")

    def split(self, batch, key):
        del key
        x = batch[self.input_feature]
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 255.0
        return Split((x,), {}, batch[self.label_feature].astype(jnp.int32))

    def check_output(self, output, split, source):
        shape = output.shape
        if len(shape) not in (2, 3):
            raise ValueError(f"task classification: the model's output has shape {shape}; "
                             "expected logits [batch, num_classes] (or [batch, pos, classes])")
        width = shape[-1]
        if self.num_classes and width != self.num_classes:
            raise ValueError(f"task classification: num_classes={self.num_classes}, but the "
                             f"model outputs {width} logits (set the model's num_classes)")
        present = _num_labels(source, self.label_feature)
        if present > width:
            raise ValueError(f"task classification: the dataset has labels up to "
                             f"{present - 1} ({present} classes), but the model outputs only "
                             f"{width} logits: num_classes must be at least {present}")

    def loss(self, output, split):
        logits = output[:, self.position] if output.ndim == 3 else output
        return cross_entropy(logits[:, None], split.targets[:, None])


@dataclasses.dataclass(frozen=True)
class Regression(Task):
    """Mean squared error between the output and `target_feature` where `mask_feature` holds.

    Attributes:
      input_feature: the model's input (float).
      target_feature: float targets; the output is squeezed to their shape if it has a
        trailing axis of size 1 (e.g. `[batch, pos, 1]` against `[batch, pos]`).
      mask_feature: optional 0/1 feature shaped like the targets: where the loss counts.
    """

    input_feature: str = "inputs"
    target_feature: str = "targets"
    mask_feature: str = ""
    name = "regression"

    @property
    def features(self):
        return tuple(f for f in (self.input_feature, self.target_feature, self.mask_feature)
                     if f)

    def split(self, batch, key):
        del key
        mask = batch[self.mask_feature] if self.mask_feature else None
        return Split((batch[self.input_feature],), {},
                     batch[self.target_feature].astype(jnp.float32), mask)

    def check_output(self, output, split, source):
        if not _fits(output.shape, split.targets.shape):
            raise ValueError(f"task regression: the model's output {output.shape} does not "
                             f"match the targets {split.targets.shape} "
                             f"(feature {self.target_feature!r})")

    def loss(self, output, split):
        y = split.targets
        pred = output.astype(jnp.float32).reshape(y.shape)
        mask = jnp.ones(y.shape) if split.mask is None else split.mask.astype(jnp.float32)
        weight = jnp.maximum(mask.sum(), 1.0)
        mse = (jnp.square(pred - y) * mask).sum() / weight
        return mse, {"loss": mse, "mse": mse, "weight": mask.sum()}


@dataclasses.dataclass(frozen=True)
class MaskedLM(Task):
    """BERT's masked-language-model objective (Devlin et al. 2019, section 3.1).

    Attributes:
      feature: the token feature (int [batch, L]).
      mask_token_id: the `[MASK]` token (BERT: 103).
      mask_prob: share of non-padding tokens chosen for prediction (at least one per row).
      pad_id: padding token (-1: none); padding is never chosen and is passed to the model as
        `attention_mask` (1 for real tokens).
      vocab_size: random replacements are drawn from [0, vocab_size); 0 means the model's.
    """

    feature: str = "tokens"
    mask_token_id: int = 103
    mask_prob: float = 0.15
    pad_id: int = -1
    vocab_size: int = 0
    name = "masked_lm"

    def __post_init__(self):
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"task masked_lm: mask_prob={self.mask_prob} must be in (0, 1]")

    @property
    def features(self):
        return (self.feature,)

    def check(self, element, dataset):
        super().check(element, dataset)
        _int_feature(self, element, self.feature, dataset, 2,
                     "the masked-LM objective needs an int sequence [L]")

    def split(self, batch, key):
        tokens = batch[self.feature]
        real = tokens != self.pad_id
        k_choose, k_how, k_random = jax.random.split(key, 3)
        u = jax.random.uniform(k_choose, tokens.shape)
        chosen = real & (u < self.mask_prob)
        # At least one prediction per row: the row's real token with the smallest draw.
        first = jnp.argmin(jnp.where(real, u, 2.0), axis=1)
        chosen = chosen | (jax.nn.one_hot(first, tokens.shape[1], dtype=bool) & real)
        how = jax.random.uniform(k_how, tokens.shape)
        vocab = self.vocab_size or self.mask_token_id + 1
        random_tokens = jax.random.randint(k_random, tokens.shape, 0, vocab, tokens.dtype)
        inputs = jnp.where(chosen & (how < 0.8), self.mask_token_id,
                           jnp.where(chosen & (how >= 0.9), random_tokens, tokens))
        kwargs = {"attention_mask": real.astype(jnp.int32)} if self.pad_id >= 0 else {}
        return Split((inputs,), kwargs, tokens, chosen.astype(jnp.float32))

    def check_output(self, output, split, source):
        _check_logits(self, output, split.targets.shape)
        if self.mask_token_id >= output.shape[-1]:
            raise ValueError(f"task masked_lm: mask_token_id={self.mask_token_id} is not in "
                             f"the model's vocabulary of {output.shape[-1]}")

    def loss(self, output, split):
        return cross_entropy(output, split.targets, split.mask)


@dataclasses.dataclass(frozen=True)
class Interchange(Task):
    """Interchange-intervention training (DAS): the model is called `(base, source)` and its
    logits at `position` are scored against the counterfactual label (what the causal model
    outputs on the base input with the variable set to its value on the source input).

    Attributes:
      base_feature, source_feature: int token features [batch, L], the same L.
      label_feature: the counterfactual label, int [batch].
      position: the position of the logits [batch, pos, vocab] read (or logits [batch, vocab]).
    """

    base_feature: str = "base_tokens"
    source_feature: str = "source_tokens"
    label_feature: str = "label"
    position: int = -1
    name = "interchange"

    @property
    def features(self):
        return (self.base_feature, self.source_feature, self.label_feature)

    def check(self, element, dataset):
        super().check(element, dataset)
        base = _int_feature(self, element, self.base_feature, dataset, 2,
                            "the base input must be an int sequence [L]")
        source = _int_feature(self, element, self.source_feature, dataset, 2,
                              "the source input must be an int sequence [L]")
        if base.shape != source.shape:
            raise ValueError(f"task interchange: base {self.base_feature!r} has shape "
                             f"{base.shape[1:]} per example, source {self.source_feature!r} "
                             f"{source.shape[1:]}; they must be equal")
        _int_feature(self, element, self.label_feature, dataset, 1,
                     "the counterfactual label must be one int per example")

    def split(self, batch, key):
        del key
        return Split((batch[self.base_feature], batch[self.source_feature]), {},
                     batch[self.label_feature].astype(jnp.int32))

    def check_output(self, output, split, source):
        if len(output.shape) not in (2, 3):
            raise ValueError(f"task interchange: the model's output has shape "
                             f"{tuple(output.shape)}; expected logits [batch, pos, vocab] or "
                             "[batch, vocab]")
        if len(output.shape) == 3 and not -output.shape[1] <= self.position < output.shape[1]:
            raise ValueError(f"task interchange: position={self.position} is outside the "
                             f"output's {output.shape[1]} positions")

    def loss(self, output, split):
        logits = output[:, self.position] if output.ndim == 3 else output
        return cross_entropy(logits[:, None], split.targets[:, None])


TASKS: dict[str, type[Task]] = {t.name: t for t in (NextToken, Classification, Regression,
                                                     MaskedLM, Interchange)}


def make_task(cfg: Mapping[str, Any]) -> Task:
    """The task `cfg["name"]` with the other entries as its fields (clear errors for typos)."""
    fields = dict(cfg)
    name = fields.pop("name", "next_token")
    if name not in TASKS:
        close = difflib.get_close_matches(str(name), TASKS, n=2, cutoff=0.4)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown task {name!r}.{hint} Tasks: {', '.join(TASKS)}.")
    cls = TASKS[name]
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ValueError(f"task {name!r} has no field(s) {unknown}; its fields: "
                         f"{sorted(valid)}")
    return cls(**fields)


def _require(task: Task, element: Mapping[str, Any], dataset: str, names) -> None:
    if not isinstance(element, Mapping):
        raise ValueError(f"task {task.name}: dataset {dataset!r} yields {type(element)}, not a "
                         "dict of features")
    missing = [n for n in names if n not in element]
    if missing:
        raise ValueError(f"task {task.name}: dataset {dataset!r} has no feature "
                         f"{missing[0]!r} (features: {sorted(element)}); set the task's "
                         "feature fields or choose another task")


def _int_feature(task: Task, element: Mapping[str, Any], feature: str, dataset: str, ndim: int,
                 expected: str) -> np.ndarray:
    """`element[feature]` (a batch) as an array; ValueError saying `expected` unless it holds
    ints with `ndim` axes, the batch axis included."""
    x = np.asarray(element[feature])
    if x.ndim != ndim or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"task {task.name}: feature {feature!r} of dataset {dataset!r} has "
                         f"shape {x.shape[1:]} and dtype {x.dtype} per example; {expected}")
    return x


def _check_logits(task: Task, output, targets_shape) -> None:
    if tuple(output.shape[:-1]) != tuple(targets_shape):
        raise ValueError(f"task {task.name}: the model's output {tuple(output.shape)} does not "
                         f"fit targets {tuple(targets_shape)}: expected logits "
                         f"{(*targets_shape, 'vocab')}")


def _fits(out_shape, target_shape) -> bool:
    out_shape, target_shape = tuple(out_shape), tuple(target_shape)
    return out_shape == target_shape or out_shape == (*target_shape, 1)


def _num_labels(source: Any, feature: str, scan: int = 100_000) -> int:
    """Classes in `source`: what its TFDS `ClassLabel` declares, else 1 + the largest label
    among its first `scan` examples."""
    try:
        return int(source.dataset_info.features[feature].num_classes)
    except (AttributeError, KeyError, TypeError):
        pass
    n = min(len(source), scan)
    return 1 + max(int(np.max(source[i][feature])) for i in range(n))
