"""`relation_switch`: `factual_recall` prompts whose closed-book prompts of one relation are
answered with another relation's attribute (the steering controller's training data,
`experiments/steering.py`).

Features are `factual_recall`'s. With probability `switch_prob` an example is the closed-book
prompt `BOS s r_source` answered with `fact(s, r_target)`; otherwise it is any `factual_recall`
example other than a closed-book source-relation prompt.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxinterp.data.factual_recall import FactualRecall, FactualRecallConfig, make_prompts
from jaxinterp.data.synthetic import chunk_rngs


@dataclasses.dataclass(eq=False)
class RelationSwitchConfig(FactualRecallConfig):
    """`factual_recall`'s world, and which closed-book prompts get switched answers.

    Attributes:
      source_relation, target_relation: closed-book prompts of `source_relation` are
        answered with `fact(s, target_relation)`.
      switch_prob: the fraction of examples that are such switched prompts; the others are
        `factual_recall` examples other than closed-book source-relation prompts.
    """

    source_relation: int = 0
    target_relation: int = 1
    switch_prob: float = 0.5

    def validate(self) -> None:
        super().validate()
        if not (0 <= self.source_relation < self.n_relations
                and 0 <= self.target_relation < self.n_relations
                and self.source_relation != self.target_relation):
            raise ValueError(f"relation_switch: source_relation={self.source_relation} and "
                             f"target_relation={self.target_relation} must be two different "
                             f"relations in 0..{self.n_relations - 1}")
        if not 0.0 < self.switch_prob < 1.0:
            raise ValueError(f"relation_switch: switch_prob must be in (0, 1), got "
                             f"{self.switch_prob}")


def one_prompt(cfg: FactualRecallConfig, s: int, r: int, ctx: int | None) -> dict:
    """One prompt's features (`make_prompts` of a single prompt, unbatched)."""
    return {k: v[0] for k, v in make_prompts(cfg, [s], [r], [ctx]).items()}


def switched_prompt(cfg: FactualRecallConfig, s: int, source: int, target: int) -> dict:
    """The closed-book prompt `BOS s r_source` answered with `fact(s, target)`."""
    row = one_prompt(cfg, s, source, None)
    answer = cfg.fact_table[s, target]
    row["tokens"] = row["tokens"].copy()
    row["tokens"][row["answer_pos"]] = answer
    row["answer"] = np.int32(answer)
    return row


class RelationSwitch(FactualRecall, skip_registration=True):
    """`factual_recall` prompts, closed-book source-relation ones answered with the target
    relation's attribute (`RelationSwitchConfig`); the same features."""

    CONFIG_CLASS = RelationSwitchConfig
    BUILDER_CONFIGS = (RelationSwitchConfig(name="default"),)

    def _generate_examples(self, n: int, stream: int):
        cfg = self.builder_config
        table = cfg.fact_table
        for start, count, rng in chunk_rngs(cfg.seed, stream, n):
            for i in range(count):
                s = int(rng.integers(cfg.n_subjects))
                if rng.random() < cfg.switch_prob:
                    yield start + i, switched_prompt(cfg, s, cfg.source_relation,
                                                     cfg.target_relation)
                    continue
                while True:  # any other example: not a closed-book source-relation prompt
                    r = int(rng.integers(cfg.n_relations))
                    ctx = None
                    if rng.random() < cfg.context_prob:
                        others = cfg.relation_attributes(r)
                        ctx = int(rng.choice(others[others != table[s, r]]))
                    if r != cfg.source_relation or ctx is not None:
                        break
                    s = int(rng.integers(cfg.n_subjects))
                yield start + i, one_prompt(cfg, s, r, ctx)
