"""NLI labels as an enum, always mapped by name, never by position."""

from __future__ import annotations

import enum
from typing import Mapping

from .errors import ConfigError


class Label(str, enum.Enum):
    ENTAILMENT = "entailment"
    NEUTRAL = "neutral"
    CONTRADICTION = "contradiction"
    NON_ENTAILMENT = "non_entailment"

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.value


class LabelSpace(str, enum.Enum):
    THREE_WAY = "3way"
    TWO_WAY = "2way"

    @property
    def labels(self) -> tuple[Label, ...]:
        if self is LabelSpace.THREE_WAY:
            return (Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION)
        return (Label.ENTAILMENT, Label.NON_ENTAILMENT)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.labels)


# Spellings seen in datasets and model configs, normalised to a Label.
_ALIASES: Mapping[str, Label] = {
    "entailment": Label.ENTAILMENT,
    "entailed": Label.ENTAILMENT,
    "entails": Label.ENTAILMENT,
    "e": Label.ENTAILMENT,
    "neutral": Label.NEUTRAL,
    "n": Label.NEUTRAL,
    "contradiction": Label.CONTRADICTION,
    "contradictory": Label.CONTRADICTION,
    "c": Label.CONTRADICTION,
    "non_entailment": Label.NON_ENTAILMENT,
    "non-entailment": Label.NON_ENTAILMENT,
    "nonentailment": Label.NON_ENTAILMENT,
    "not_entailment": Label.NON_ENTAILMENT,
    "not-entailment": Label.NON_ENTAILMENT,
    "not_entailed": Label.NON_ENTAILMENT,
}


def parse_label_name(name: str) -> Label | None:
    """A label from any common spelling of its name, or None when the name is not a label."""
    key = str(name).strip().lower().replace(" ", "_")
    return _ALIASES.get(key)


def label_from_name(name: str) -> Label:
    label = parse_label_name(name)
    if label is None:
        known = ", ".join(l.value for l in Label)
        raise ConfigError(f"unknown label name {name!r}; use one of: {known}")
    return label


def collapse(label: Label, space: LabelSpace) -> Label:
    """Map a label into a label space (neutral and contradiction become non-entailment in 2-way)."""
    if space is LabelSpace.TWO_WAY and label in (Label.NEUTRAL, Label.CONTRADICTION):
        return Label.NON_ENTAILMENT
    if space is LabelSpace.THREE_WAY and label is Label.NON_ENTAILMENT:
        raise ConfigError("a two-way label (non_entailment) cannot be scored in a three-way label space")
    return label
