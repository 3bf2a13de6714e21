"""Predictions -> TaskResult: accuracy with Wilson interval, per label, confusion, chance, breakdowns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .labels import Label, LabelSpace
from .stats import binomial_test, wilson
from .types import Prediction


@dataclass(frozen=True)
class Cell:
    """Accuracy of a group of examples (a label, a breakdown value) with its interval."""

    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float


def cell(correct: int, n: int) -> Cell:
    ci = wilson(correct, n)
    return Cell(n, correct, correct / n if n else 0.0, ci.low, ci.high)


@dataclass(frozen=True)
class TaskResult:
    task: str
    split: str
    shots: int
    template: str
    label_space: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    macro_f1: float
    chance_uniform: float
    chance_majority: float
    majority_label: str
    p_value_vs_chance: float          # exact two-sided binomial test against uniform chance
    per_label: Mapping[str, Cell]
    confusion: Mapping[str, Mapping[str, int]]   # gold -> predicted -> count
    predicted_distribution: Mapping[str, int]
    breakdowns: Mapping[str, Mapping[str, Cell]] = field(default_factory=dict)
    truncated: int = 0
    members: tuple[str, ...] = ()     # for aggregates: the tasks pooled
    source: str = ""
    seconds: float = 0.0
    scoring_seconds: float = 0.0      # building and scoring prompts in this run (0 when all were cached)
    tokens: int = 0                   # tokens the model ran for them (prompt tokens, no padding)


def compute(predictions: Sequence[Prediction], *, task: str, split: str, shots: int, template: str,
            space: LabelSpace, breakdown: Sequence[str] = (), source: str = "", seconds: float = 0.0,
            scoring_seconds: float = 0.0, tokens: int = 0) -> TaskResult:
    labels = space.labels
    n = len(predictions)
    correct = sum(p.correct for p in predictions)
    gold_counts = Counter(p.gold for p in predictions)
    pred_counts = Counter(p.predicted for p in predictions)
    confusion = {g.value: {q.value: 0 for q in labels} for g in labels}
    for p in predictions:
        confusion[p.gold.value][p.predicted.value] += 1
    per_label = {
        lab.value: cell(confusion[lab.value][lab.value], gold_counts.get(lab, 0)) for lab in labels
    }
    majority = max(labels, key=lambda l: (gold_counts.get(l, 0), -labels.index(l)))
    ci = wilson(correct, n)
    breakdowns: dict[str, dict[str, Cell]] = {}
    for fld in breakdown:
        groups: dict[str, list[bool]] = {}
        for p in predictions:
            if fld in p.meta:
                groups.setdefault(p.meta[fld], []).append(p.correct)
        if groups:
            breakdowns[fld] = {v: cell(sum(c), len(c)) for v, c in sorted(groups.items())}
    return TaskResult(
        task=task, split=split, shots=shots, template=template, label_space=space.value,
        n=n, correct=correct, accuracy=correct / n if n else 0.0, ci_low=ci.low, ci_high=ci.high,
        macro_f1=macro_f1(confusion, labels), chance_uniform=space.chance,
        chance_majority=gold_counts.get(majority, 0) / n if n else 0.0, majority_label=majority.value,
        p_value_vs_chance=binomial_test(correct, n, space.chance),
        per_label=per_label, confusion=confusion,
        predicted_distribution={lab.value: pred_counts.get(lab, 0) for lab in labels},
        breakdowns=breakdowns, truncated=sum(p.truncated for p in predictions), source=source, seconds=seconds,
        scoring_seconds=scoring_seconds, tokens=tokens,
    )


def macro_f1(confusion: Mapping[str, Mapping[str, int]], labels: Sequence[Label]) -> float:
    scores = []
    for lab in labels:
        tp = confusion[lab.value][lab.value]
        fp = sum(confusion[g.value][lab.value] for g in labels if g is not lab)
        fn = sum(confusion[lab.value][q.value] for q in labels if q is not lab)
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def aggregate(name: str, parts: Sequence[TaskResult]) -> TaskResult:
    """Size-weighted (pooled) score of several tasks: correct over n, with a pooled Wilson interval."""
    n = sum(r.n for r in parts)
    correct = sum(r.correct for r in parts)
    ci = wilson(correct, n)
    first = parts[0]
    space = LabelSpace(first.label_space)
    labels = [l.value for l in space.labels]
    confusion = {g: {q: sum(r.confusion[g][q] for r in parts) for q in labels} for g in labels}
    gold = {g: sum(confusion[g].values()) for g in labels}
    per_label = {g: cell(confusion[g][g], gold[g]) for g in labels}
    majority = max(labels, key=lambda l: (gold[l], -labels.index(l)))
    return TaskResult(
        task=name, split=first.split, shots=first.shots, template=first.template, label_space=first.label_space,
        n=n, correct=correct, accuracy=correct / n if n else 0.0, ci_low=ci.low, ci_high=ci.high,
        macro_f1=macro_f1(confusion, space.labels), chance_uniform=space.chance,
        chance_majority=gold[majority] / n if n else 0.0, majority_label=majority,
        p_value_vs_chance=binomial_test(correct, n, space.chance), per_label=per_label, confusion=confusion,
        predicted_distribution={q: sum(confusion[g][q] for g in labels) for q in labels},
        truncated=sum(r.truncated for r in parts), members=tuple(r.task for r in parts),
        seconds=sum(r.seconds for r in parts), scoring_seconds=sum(r.scoring_seconds for r in parts),
        tokens=sum(r.tokens for r in parts),
    )
