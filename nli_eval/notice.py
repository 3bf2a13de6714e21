"""Warnings a run collects (truncated prompts, dropped rows, duplicate ids); `--strict` makes them errors."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Iterator

from .errors import NliEvalError


class StrictModeError(NliEvalError):
    """A warning raised as an error because --strict is on."""


_strict: contextvars.ContextVar[bool] = contextvars.ContextVar("nli_eval_strict", default=False)
_collected: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("nli_eval_notices", default=None)
_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("nli_eval_quiet", default=False)


def warn(message: str) -> None:
    message = " ".join(message.split())
    if _strict.get():
        raise StrictModeError(f"{message} (an error because --strict is on)")
    bucket = _collected.get()
    if bucket is not None:
        bucket.append(message)
    if not _quiet.get():
        print(f"nli-eval: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def policy(strict: bool = False, quiet: bool = False) -> Iterator[list[str]]:
    """Collect the warnings raised inside the block (or raise them, when strict)."""
    bucket: list[str] = []
    tokens = (_strict.set(strict), _collected.set(bucket), _quiet.set(quiet))
    try:
        yield bucket
    finally:
        _strict.reset(tokens[0])
        _collected.reset(tokens[1])
        _quiet.reset(tokens[2])
