"""Scores held compactly while a model is loaded: 8 bytes a label and one byte a prompt an example."""

from __future__ import annotations

from array import array
from typing import Mapping

from .labels import Label


class ScoreSheet:
    """The scores of `n` examples by their place in a run's list, filled in any order.

    A dict of scores per example costs ~300 bytes; kept like this until the model is released and
    predictions are built, a run of 10x the examples holds ~25 bytes an example more, not ~300.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.labels: tuple[Label, ...] = ()
        self._values = array("d")
        self._truncated = array("b", bytes(n))
        self._filled = array("b", bytes(n))
        self._odd: dict[int, dict[Label, float]] = {}  # scores over other labels than the first example's

    def put(self, i: int, scores: Mapping[Label, float], truncated: bool) -> None:
        if not self.labels:
            self.labels = tuple(scores)
            self._values = array("d", bytes(8 * len(self.labels) * self.n))
        if tuple(scores) == self.labels:
            width = len(self.labels)
            for j, label in enumerate(self.labels):
                self._values[i * width + j] = scores[label]
        else:
            self._odd[i] = dict(scores)
        self._truncated[i] = truncated
        self._filled[i] = 1

    def get(self, i: int) -> tuple[dict[Label, float], bool] | None:
        """(scores, truncated) of place `i`, or None when it was never filled."""
        if not self._filled[i]:
            return None
        if i in self._odd:
            return dict(self._odd[i]), bool(self._truncated[i])
        width = len(self.labels)
        return dict(zip(self.labels, self._values[i * width:(i + 1) * width])), bool(self._truncated[i])

    def __len__(self) -> int:
        return sum(self._filled)
