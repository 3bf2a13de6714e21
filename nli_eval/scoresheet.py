"""Scores kept while a model is loaded: in a temporary file, and 2 bytes an example in memory."""

from __future__ import annotations

import tempfile
from array import array
from typing import Mapping

from .errors import OutputError
from .labels import Label


class ScoreSheet:
    """The scores of `n` examples by their place in a run's list, filled in any order.

    Until the model is released and predictions are built, the scores wait in an unnamed temporary
    file (8 bytes a label) and memory holds only whether each place is filled and was cut: a run of
    10x the examples holds 2 bytes an example more, not the ~300 of a dict of scores.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.labels: tuple[Label, ...] = ()
        self._file = tempfile.TemporaryFile(prefix="nli-eval-scores-")
        self._truncated = array("b", bytes(n))
        self._filled = array("b", bytes(n))
        self._odd: dict[int, dict[Label, float]] = {}  # scores over other labels than the first example's

    def put(self, i: int, scores: Mapping[Label, float], truncated: bool) -> None:
        if not self.labels:
            self.labels = tuple(scores)
        if tuple(scores) == self.labels:
            try:
                self._file.seek(i * 8 * len(self.labels))
                self._file.write(array("d", [scores[label] for label in self.labels]).tobytes())
            except OSError as exc:
                raise OutputError(f"cannot keep scores in a temporary file ({exc.strerror or exc}); "
                                  f"set TMPDIR to a directory with room") from None
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
        self._file.seek(i * 8 * width)
        values = array("d")
        values.frombytes(self._file.read(8 * width))
        return dict(zip(self.labels, values)), bool(self._truncated[i])

    def __len__(self) -> int:
        return sum(self._filled)

    def close(self) -> None:
        self._file.close()
