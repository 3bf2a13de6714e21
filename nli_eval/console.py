"""Plain-text tables for the terminal."""

from __future__ import annotations

import re
import textwrap
from typing import Sequence

from .metrics import TaskResult
from .results import RunRecord


# The last column's rule is at most this long; its cells may run on (a one-line row stays greppable).
_LAST_RULE = 40


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = (),
          width: int | None = None) -> str:
    """Rows under their headers, each column as wide as its widest cell. With `width` (a terminal's
    columns), a last column that does not fit wraps at spaces onto lines of its own, indented to it."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    indent = sum(widths[:-1]) + 2 * (len(widths) - 1)
    room = max(20, width - indent) if width else None

    def join(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    def fmt(cells: Sequence[str]) -> str:
        if room is None or len(str(cells[-1])) <= room or len(widths) - 1 in right:
            return join(cells)
        head, *rest = _wrap(str(cells[-1]), room)
        return "\n".join([join([*cells[:-1], head]), *(" " * indent + part for part in rest)])

    rule = [*widths[:-1], min(widths[-1], max(len(str(headers[-1])), room or _LAST_RULE))]
    line = "  ".join("-" * w for w in rule)
    return "\n".join([fmt(headers), line, *(fmt(r) for r in rows)])


def _wrap(text: str, room: int) -> list[str]:
    """Lines of at most `room` characters, broken between the items of a list ("a, b" or "a + b"), and
    at spaces within an item too long for a line of its own; a longer word runs over."""
    lines: list[str] = []
    line = ""
    for item in re.split(r"(?<=, )|(?= \+ )", text):
        if line and len(line) + len(item.rstrip()) > room:
            lines.append(line.rstrip())
            line = item.lstrip()
        else:
            line += item
    lines.append(line.rstrip())
    too_long = {"break_long_words": False, "break_on_hyphens": False}
    return [part for line in lines for part in (textwrap.wrap(line, room, **too_long) if len(line) > room else [line])]


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def p_text(p: float) -> str:
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def result_row(model: str, r: TaskResult) -> list[str]:
    chance = pct(r.chance_uniform)
    if abs(r.chance_majority - r.chance_uniform) > 0.005:
        chance += f" / {pct(r.chance_majority)}"
    return [model, r.task, str(r.shots), str(r.n), pct(r.accuracy), f"[{pct(r.ci_low)}, {pct(r.ci_high)}]",
            chance, p_text(r.p_value_vs_chance), str(r.truncated)]


def results_table(record: RunRecord) -> str:
    headers = ["model", "task", "shots", "n", "acc %", "95% CI", "chance % (uniform / majority)", "p vs chance", "cut"]
    rows = []
    for m in record.models:
        for r in m.results:
            rows.append(result_row(m.label, r))
        for r in m.aggregates:
            rows.append(result_row(m.label, r))
    text = table(headers, rows, right=(2, 3, 4, 7, 8))
    extra = breakdown_tables(record)
    return text + ("\n\n" + extra if extra else "")


def breakdown_tables(record: RunRecord) -> str:
    rows = []
    for m in record.models:
        for r in m.results:
            for fld, cells in r.breakdowns.items():
                for value, c in cells.items():
                    rows.append([m.label, r.task, str(r.shots), f"{fld}={value}", str(c.n), pct(c.accuracy),
                                 f"[{pct(c.ci_low)}, {pct(c.ci_high)}]"])
    if not rows:
        return ""
    return table(["model", "task", "shots", "breakdown", "n", "acc %", "95% CI"], rows, right=(2, 4, 5))
