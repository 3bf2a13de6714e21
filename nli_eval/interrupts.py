"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. If that is
a finalizer (an object's `__del__`, a weakref callback, a garbage-collector pass) Python prints
"Exception ignored in ..." with a traceback, drops the exception, and the run goes on as if the key
had never been pressed; some libraries' blanket `except` clauses drop it too, and the half-done
import they were in then fails later with an unrelated error. While `latched()` is active a SIGINT is
also remembered, and such a dropped interrupt prints nothing and is raised again: by `check()` at the
runner's safe points, at the end of the block, or in place of whatever error the block ends with.
Inside `held()` (the frameworks' imports) a Ctrl-C is not raised at all until the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator

_pending = False
_holding = False


def _on_sigint(_signum: int, _frame: Any) -> None:
    global _pending
    _pending = True
    if not _holding:
        raise KeyboardInterrupt


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, under `latched()`: for importing the frameworks, which an
    interrupt can leave half done (numpy, then every later use of it fails) or abort outright (torch's
    start-up, where the exception reaches C++)."""
    global _holding
    _holding = True
    try:
        yield
    finally:
        _holding = False
    check()


@contextlib.contextmanager
def latched() -> Iterator[None]:
    """Remember Ctrl-C for the block, when this is the main thread and Ctrl-C has Python's default
    handler (an ignored SIGINT, as in a background job, or a caller's own handler is left alone)."""
    global _pending
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not KeyboardInterrupt:  # a dropped Ctrl-C is raised again by check()
            previous_hook(unraisable)

    _pending = False
    signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = hook
    try:
        yield
        check()
    except Exception:
        check()  # an error that follows a dropped Ctrl-C is the interrupt's doing: report the interrupt
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = previous_hook
        _pending = False


def check() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived and something dropped it (once per Ctrl-C)."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt
