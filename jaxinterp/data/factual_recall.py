"""`factual_recall`: a synthetic world of facts, prompts with and without a counterfactual.

The data of the factual-recall experiments (causal tracing, Meng et al. 2022, "Locating and
Editing Factual Associations in GPT"; the memorised-vs-in-context competition of
"Characterizing Mechanisms for Factual Recall in Language Models", Yu, Merullo & Pavlick 2023).
A world of `n_subjects` subjects, `n_relations` relations and `n_attributes` attributes with a
fixed random fact table `(subject, relation) -> attribute` drawn from `world_seed` (the same in
every split and every example: facts are memorised, not read). Token layout:

    0                        BOS
    1                        SEP (ends an in-context statement)
    2                        PAD (after the answer)
    3 .. 3 + T - 1           subject pieces (T = n_subject_tokens)
    next n_relations         relations (relation r is token `relation_tokens[r]`)
    next n_attributes        attributes

A subject is 1 or 2 subject pieces (a fraction `two_token_prob` of the subjects have two; the
first piece of a two-piece subject is never a one-piece subject, so every prefix is
unambiguous), so causal tracing sees first / last subject positions. With `typed_attributes`
the attributes are split into `n_relations` equal groups and relation r's facts (and
counterfactuals) take values in group r only (a relation has its own kind of answer, as
"capital of" answers with cities).

An example is a closed-book prompt, the memorised answer appended,

    BOS s_1 [s_2] r a                                     a = fact(s, r)

or, with probability `context_prob`, a counterfactual statement of the same fact first,

    BOS s_1 [s_2] r a' SEP s_1 [s_2] r a'                 a' != fact(s, r), same group

whose answer is the in-context a' (the model must let the context override its memory).
Subjects and relations are uniform; a' is uniform among the other attributes of the group.
Sequences are padded with PAD to `seq_len` = 10 (the longest: 2 two-piece subjects).
Training with `task.name='next_token', task.mask_feature='loss_mask'` scores the answer only.

Features (L = seq_len; positions index `tokens`):

    tokens          int32 [L]   the sequence, answer included, PAD after it
    loss_mask       bool  [L]   True at the answer token only (predicting token t counts)
    answer_pos      int32       the answer's position (the model predicts it at answer_pos - 1)
    answer          int32       the answer token: in_context if has_context else memorised
    memorised       int32       the fact table's attribute token, fact(s, r)
    in_context      int32       the counterfactual attribute token a', -1 without a context
    subject         int32       the subject id (0 .. n_subjects - 1)
    relation        int32       the relation id (0 .. n_relations - 1)
    subject_mask    bool  [L]   True at the queried subject's pieces (the last occurrence)
    context_mask    bool  [L]   True at the context statement's subject pieces (none without)
    has_context     bool        whether the counterfactual statement precedes the query

The `train` and `test` splits are independent draws of prompts of the same world (every fact
occurs in both: this is memorisation, there is no held-out fact). `FactualRecallConfig`'s
properties give the world (`fact_table`, `subject_tokens`, ...), and `make_prompts(cfg, ...)`
builds the same features for chosen (subject, relation, counterfactual) triples, the way the
experiments build their analysis prompts:

    builder = FactualRecall(data_dir=..., n_subjects=32, num_train=4096, num_test=256)
    builder.download_and_prepare()
    source = builder.as_data_source("train")     # source[i]["tokens"]: int32 [10]
    cfg = builder.builder_config
    cfg.fact_table                               # int32 [n_subjects, n_relations]: tokens
    batch = make_prompts(cfg, subjects=[0, 1], relations=[2, 2], counterfactual=[None, 7])
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check, chunk_rngs, tensor

BOS, SEP, PAD = 0, 1, 2
SEQ_LEN = 10  # BOS s1 s2 r a' SEP s1 s2 r a


@dataclasses.dataclass(eq=False)
class FactualRecallConfig(tfds.core.BuilderConfig):
    """Parameters of the `factual_recall` dataset (see the module docstring).

    Attributes:
      n_subjects: subjects in the world.
      n_subject_tokens: subject pieces (subjects are 1 or 2 of them).
      two_token_prob: fraction of the subjects with two pieces (rounded to a count).
      n_relations: relations.
      n_attributes: attributes (with `typed_attributes`, a multiple of n_relations, each
        group >= 2).
      typed_attributes: split the attributes into one group per relation.
      context_prob: probability of the in-context counterfactual statement.
      num_train, num_test: examples in the `train` and `test` splits.
      world_seed: seed of the world (subjects' pieces, the fact table).
      seed: seed of the prompts (train and test use different streams of it).
    """

    n_subjects: int = 32
    n_subject_tokens: int = 24
    two_token_prob: float = 0.5
    n_relations: int = 4
    n_attributes: int = 32
    typed_attributes: bool = True
    context_prob: float = 0.5
    num_train: int = 8192
    num_test: int = 512
    world_seed: int = 0
    seed: int = 0

    @property
    def seq_len(self) -> int:
        return SEQ_LEN

    @property
    def vocab_size(self) -> int:
        return 3 + self.n_subject_tokens + self.n_relations + self.n_attributes

    @property
    def relation_tokens(self) -> np.ndarray:
        """int32 [n_relations]: relation id -> token."""
        start = 3 + self.n_subject_tokens
        return np.arange(start, start + self.n_relations, dtype=np.int32)

    @property
    def attribute_tokens(self) -> np.ndarray:
        """int32 [n_attributes]: the attribute tokens, in group order."""
        start = 3 + self.n_subject_tokens + self.n_relations
        return np.arange(start, start + self.n_attributes, dtype=np.int32)

    def relation_attributes(self, relation: int) -> np.ndarray:
        """int32 [k]: the attribute tokens relation `relation` can answer with."""
        if not self.typed_attributes:
            return self.attribute_tokens
        k = self.n_attributes // self.n_relations
        return self.attribute_tokens[relation * k:(relation + 1) * k]

    @property
    def subject_tokens(self) -> tuple[tuple[int, ...], ...]:
        """Subject id -> its 1 or 2 piece tokens (fixed by `world_seed`)."""
        return _world(self)[0]

    @property
    def fact_table(self) -> np.ndarray:
        """int32 [n_subjects, n_relations]: (subject, relation) -> attribute token."""
        return _world(self)[1].copy()

    @property
    def n_two_token(self) -> int:
        return round(self.two_token_prob * self.n_subjects)

    def validate(self) -> None:
        check(self.n_subjects >= 1, f"factual_recall: n_subjects must be >= 1, got "
                                    f"{self.n_subjects}")
        check(self.n_relations >= 1, f"factual_recall: n_relations must be >= 1, got "
                                     f"{self.n_relations}")
        check(0.0 <= self.two_token_prob <= 1.0 and 0.0 <= self.context_prob <= 1.0,
              f"factual_recall: two_token_prob and context_prob must be in [0, 1], got "
              f"{self.two_token_prob}, {self.context_prob}")
        group = self.n_attributes // self.n_relations if self.typed_attributes else \
            self.n_attributes
        check((not self.typed_attributes or self.n_attributes % self.n_relations == 0)
              and group >= 2,
              f"factual_recall: n_attributes={self.n_attributes} must give each relation >= 2 "
              f"attributes (with typed_attributes, a multiple of n_relations="
              f"{self.n_relations})")
        n2 = self.n_two_token
        n1 = self.n_subjects - n2
        free = self.n_subject_tokens - n1  # pieces that may start a two-piece subject
        check(n1 <= self.n_subject_tokens and (n2 == 0 or (free >= 1
                                                           and free * self.n_subject_tokens >= n2)),
              f"factual_recall: n_subject_tokens={self.n_subject_tokens} is too few for "
              f"{n1} one-piece and {n2} two-piece subjects (needs >= {n1} pieces, and the "
              f"remaining first pieces x all pieces >= {n2})")


def _world(cfg: FactualRecallConfig) -> tuple[tuple[tuple[int, ...], ...], np.ndarray]:
    return _world_cached(cfg.n_subjects, cfg.n_subject_tokens, cfg.n_two_token,
                         cfg.n_relations, cfg.n_attributes, cfg.typed_attributes,
                         cfg.world_seed)


@functools.lru_cache(maxsize=32)
def _world_cached(n_subjects, n_pieces, n_two, n_relations, n_attributes, typed, world_seed):
    """Subjects' pieces and the fact table, from `world_seed` only."""
    rng = np.random.default_rng([world_seed, 7])
    pieces = 3 + rng.permutation(n_pieces)
    n_one = n_subjects - n_two
    singles = [(int(p),) for p in pieces[:n_one]]
    firsts = pieces[n_one:]
    pairs = [(int(a), int(b)) for a in firsts for b in 3 + np.arange(n_pieces)]
    chosen = rng.choice(len(pairs), n_two, replace=False) if n_two else []
    subjects = singles + [pairs[i] for i in chosen]
    order = rng.permutation(n_subjects)  # interleave one- and two-piece subjects
    subjects = tuple(subjects[i] for i in order)
    first = 3 + n_pieces + n_relations  # the first attribute token
    k = n_attributes // n_relations if typed else n_attributes
    table = np.stack([first + (r * k if typed else 0) + rng.integers(k, size=n_subjects)
                      for r in range(n_relations)], axis=1).astype(np.int32)
    return subjects, table


def make_prompts(cfg: FactualRecallConfig, subjects: Sequence[int], relations: Sequence[int],
                 counterfactual: Sequence[int | None] | None = None) -> dict[str, np.ndarray]:
    """The dataset's features (batched, [B] / [B, seq_len]) for chosen prompts.

    Args:
      cfg: the world.
      subjects, relations: ids, one of each per prompt.
      counterfactual: per prompt None (closed-book) or the in-context attribute TOKEN a' (any
        attribute token, normally one of `cfg.relation_attributes(r)` other than the fact);
        None: all closed-book.

    Returns:
      {feature: array} as in the module docstring, with a leading batch axis.
    """
    subjects, relations = list(subjects), list(relations)
    if len(subjects) != len(relations):
        raise ValueError(f"make_prompts: {len(subjects)} subjects but {len(relations)} "
                         "relations; give one of each per prompt")
    counterfactual = [None] * len(subjects) if counterfactual is None else list(counterfactual)
    if len(counterfactual) != len(subjects):
        raise ValueError(f"make_prompts: {len(counterfactual)} counterfactuals for "
                         f"{len(subjects)} prompts")
    rows = [_prompt(cfg, s, r, c) for s, r, c in zip(subjects, relations, counterfactual,
                                                      strict=True)]
    return {k: np.stack([row[k] for row in rows]) for k in rows[0]}


def _prompt(cfg: FactualRecallConfig, s: int, r: int, ctx: int | None) -> dict[str, np.ndarray]:
    if not (0 <= s < cfg.n_subjects and 0 <= r < cfg.n_relations):
        raise ValueError(f"make_prompts: subject {s} / relation {r} out of range (n_subjects="
                         f"{cfg.n_subjects}, n_relations={cfg.n_relations})")
    subj = list(cfg.subject_tokens[s])
    rel = int(cfg.relation_tokens[r])
    fact = int(_world(cfg)[1][s, r])
    tokens, subject_mask, context_mask = [BOS], [False], [False]
    if ctx is not None:
        ctx = int(ctx)
        if ctx not in set(cfg.attribute_tokens.tolist()):
            raise ValueError(f"make_prompts: counterfactual {ctx} is not an attribute token "
                             f"(valid: {cfg.attribute_tokens[0]}..{cfg.attribute_tokens[-1]})")
        tokens += [*subj, rel, ctx, SEP]
        context_mask += [True] * len(subj) + [False] * 3
        subject_mask += [False] * (len(subj) + 3)
    tokens += [*subj, rel]
    subject_mask += [True] * len(subj) + [False]
    context_mask += [False] * (len(subj) + 1)
    answer = fact if ctx is None else ctx
    answer_pos = len(tokens)
    tokens.append(answer)
    n_pad = SEQ_LEN - len(tokens)
    loss_mask = np.zeros(SEQ_LEN, bool)
    loss_mask[answer_pos] = True
    return {"tokens": np.asarray(tokens + [PAD] * n_pad, np.int32),
            "loss_mask": loss_mask,
            "answer_pos": np.int32(answer_pos),
            "answer": np.int32(answer),
            "memorised": np.int32(fact),
            "in_context": np.int32(-1 if ctx is None else ctx),
            "subject": np.int32(s),
            "relation": np.int32(r),
            "subject_mask": np.asarray(subject_mask + [False] * (n_pad + 1)),
            "context_mask": np.asarray(context_mask + [False] * (n_pad + 1)),
            "has_context": np.bool_(ctx is not None)}


class FactualRecall(SyntheticBuilder, skip_registration=True):
    """Prompts `BOS subject relation -> attribute` of a fixed fact table, some after an
    in-context counterfactual. Features `tokens` int32 [10], `loss_mask` bool [10] and the
    analysis features of the module docstring."""

    CONFIG_CLASS = FactualRecallConfig

    def _features(self, cfg):
        n = cfg.seq_len
        scalar = tensor((), np.int32)
        return {"tokens": tensor((n,), np.int32), "loss_mask": tensor((n,), np.bool_),
                "answer_pos": scalar, "answer": scalar, "memorised": scalar,
                "in_context": scalar, "subject": scalar, "relation": scalar,
                "subject_mask": tensor((n,), np.bool_), "context_mask": tensor((n,), np.bool_),
                "has_context": tensor((), np.bool_)}

    def _generate_examples(self, n: int, stream: int):
        cfg = self.builder_config
        table = _world(cfg)[1]
        for start, count, rng in chunk_rngs(cfg.seed, stream, n):
            for i in range(count):
                s = int(rng.integers(cfg.n_subjects))
                r = int(rng.integers(cfg.n_relations))
                ctx = None
                if rng.random() < cfg.context_prob:
                    others = cfg.relation_attributes(r)
                    others = others[others != table[s, r]]
                    ctx = int(rng.choice(others))
                yield start + i, _prompt(cfg, s, r, ctx)
