"""Frozen records passed between stages: example -> prompt -> prediction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .labels import Label


@dataclass(frozen=True)
class NLIExample:
    id: str
    premise: str
    hypothesis: str
    label: Label
    # Breakdown fields and anything else a task keeps (strings, for stable JSON).
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """What a backend scores: a shared few-shot part, the query, and one continuation per label."""

    example: NLIExample
    prefix: str
    query: str
    options: Mapping[Label, str]
    n_shots: int = 0
    truncated: bool = False  # shots dropped or premise cut to fit the model's context

    @property
    def context(self) -> str:
        return self.prefix + self.query


@dataclass(frozen=True)
class Prediction:
    id: str
    gold: Label
    predicted: Label
    # Log-probability (or logit) per label, in the task's label space.
    scores: Mapping[Label, float]
    truncated: bool = False
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.gold is self.predicted
