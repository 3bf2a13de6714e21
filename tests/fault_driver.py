"""`nli-eval` with a signal sent to itself at a chosen point, for the interruption tests.

    NLI_FAULT=journal:N[:DELAY_MS]  once N lines are in the score journal (then DELAY_MS later, so the
                                    signal lands wherever the run is by then)
    NLI_FAULT=replace:NAME          while a finished temporary file is renamed over NAME (results.json or
                                    a samples file): the moment an atomic write is most exposed
    NLI_FAULT=finalizer:N           once N lines are in the score journal, from inside an object's
                                    finalizer, where Python drops the KeyboardInterrupt it raises
    NLI_FAULT_SIGNAL=INT|KILL       Ctrl-C or a hard kill

Everything else is the ordinary command line: python tests/fault_driver.py run MODEL ...
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def main() -> int:
    # A shell starts background jobs with SIGINT ignored, and Python keeps that: restore Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    kind, _, arg = os.environ.get("NLI_FAULT", "").partition(":")
    sig = getattr(signal, "SIG" + os.environ.get("NLI_FAULT_SIGNAL", "INT"))

    def fire() -> None:
        os.kill(os.getpid(), sig)

    class Dropped:
        def __del__(self) -> None:
            fire()
            for _ in range(1000):  # Python runs the signal's handler here, inside the finalizer
                pass

    if kind in ("journal", "finalizer"):
        from nli_eval import cache, fsutil

        # A Dropped is made and dropped at once: its finalizer sends the signal.
        trigger = Dropped if kind == "finalizer" else fire
        count, _, delay = arg.partition(":")
        wanted, seconds = int(count), int(delay or 0) / 1000
        appended = [0]
        original = fsutil.append_durable

        def append(path, text):
            original(path, text)
            before = appended[0]
            appended[0] += text.strip("\n").count("\n") + 1
            if before < wanted <= appended[0]:
                if not seconds:
                    trigger()
                    return
                timer = threading.Timer(seconds, trigger)
                timer.daemon = True
                timer.start()

        cache.append_durable = append
    elif kind == "replace":
        real_replace = os.replace
        fired = []

        def replace(src, dst, *args, **kwargs):
            if not fired and os.path.basename(str(dst)) == arg and str(src).endswith(".tmp"):
                fired.append(dst)
                fire()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace

    from nli_eval.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
