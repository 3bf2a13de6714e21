"""A run's examples kept in a temporary file and read back a window at a time.

While a model scores, the examples of its tasks are not held in memory: a split of a million examples
costs the process 8 bytes an example (where each one starts in the file), not the ~800 bytes of an
ANLI example as read, so a long run peaks no higher than a short one.
"""

from __future__ import annotations

import pickle
import tempfile
from array import array
from typing import Iterable, Iterator, Sequence, overload

from .errors import OutputError
from .types import NLIExample

READ_BLOCK = 256  # examples read back with one call when iterating


class SpilledExamples(Sequence[NLIExample]):
    """Examples written once, in order, to an unnamed temporary file (gone when closed or collected)."""

    def __init__(self, examples: Iterable[NLIExample]) -> None:
        self._file = tempfile.TemporaryFile(prefix="nli-eval-examples-")
        self._starts = array("q", [0])
        try:
            for ex in examples:
                # A plain tuple pickles smaller and faster than the dataclass.
                blob = pickle.dumps((ex.id, ex.premise, ex.hypothesis, ex.label, dict(ex.meta)),
                                    protocol=pickle.HIGHEST_PROTOCOL)
                self._file.write(blob)
                self._starts.append(self._starts[-1] + len(blob))
            self._file.flush()
        except OSError as exc:
            self._file.close()
            raise OutputError(f"cannot keep the examples in a temporary file ({exc.strerror or exc}); "
                              f"set TMPDIR to a directory with room") from None

    def __len__(self) -> int:
        return len(self._starts) - 1

    @overload
    def __getitem__(self, i: int) -> NLIExample: ...
    @overload
    def __getitem__(self, i: slice) -> list[NLIExample]: ...

    def __getitem__(self, i: int | slice) -> NLIExample | list[NLIExample]:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(lo, hi, step)]
            return self._read(lo, hi) if lo < hi else []
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("example index out of range")
        return self._read(i, i + 1)[0]

    def __iter__(self) -> Iterator[NLIExample]:
        for lo in range(0, len(self), READ_BLOCK):
            yield from self._read(lo, min(lo + READ_BLOCK, len(self)))

    def take(self, indices: Sequence[int]) -> list[NLIExample]:
        """The examples at `indices` (ascending runs are read with one call each)."""
        out: list[NLIExample] = []
        run_start = 0
        for j in range(1, len(indices) + 1):
            if j == len(indices) or indices[j] != indices[j - 1] + 1:
                out += self._read(indices[run_start], indices[j - 1] + 1)
                run_start = j
        return out

    def _read(self, lo: int, hi: int) -> list[NLIExample]:
        start = self._starts[lo]
        self._file.seek(start)
        data = memoryview(self._file.read(self._starts[hi] - start))
        out = []
        for j in range(lo, hi):
            out.append(NLIExample(*pickle.loads(data[self._starts[j] - start:self._starts[j + 1] - start])))
        return out

    def close(self) -> None:
        self._file.close()
