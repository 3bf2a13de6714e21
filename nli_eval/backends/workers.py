"""Packed passes run two at a time on a CPU, each on its share of torch's threads.

One pass on all of a CPU's threads makes them meet at the end of every operation, and a pass has
thousands of small ones (each prompt's attention in every layer, the norms, the rotary embedding),
where one thread mostly waits for the other. Two passes side by side, each on half the threads, keep
every core busy: on a 2-core host a 135M model's 2,048-token pass takes 2,787 ms on both threads and
2,629 ms a pass with two running on one thread each (5,093 ms alone on one), with the same bits.

The passes run on worker threads; their results are handed back in the thread that submitted them
(the caller journals, counts and reports there), oldest first, as it submits more or drains. Passes
go to the workers in turn, so each worker's passes, and with them the blocks its thread allocates (its
own heap arena under glibc), are the same from run to run: a run's peak memory does not depend on
which thread happened to be free first.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from .base import Workspace

# Passes running at once. Two is what a pass's small operations need to keep the cores busy; more
# would hold more activations without more speed.
WORKERS = 2
# The room a worker's heap arena starts with (see `PassWorkers._begin`).
ARENA_START_BYTES = 12 << 20


class PassWorkers:
    """Worker threads that run passes, each with its own buffers (`local`), and hand their results
    back in the submitting thread. Created, torch runs each operation on `threads // workers` threads
    until `close`. `spaces`: a `Workspace` for each worker, kept by the caller from stream to stream
    (the first may be the one its passes use without workers: no new buffers when they stop)."""

    def __init__(self, torch: Any, spaces: list[Workspace]) -> None:
        self.torch = torch
        self.workers = len(spaces)
        self._threads = torch.get_num_threads()
        # Read by each new thread on its first operation (torch's per-thread lazy setup): the workers
        # start after this, so they run on their share.
        torch.set_num_threads(max(1, self._threads // self.workers))
        self._local = threading.local()
        self._pools = [ThreadPoolExecutor(1, thread_name_prefix=f"nli-eval-pass-{i}", initializer=self._begin,
                                          initargs=(space,)) for i, space in enumerate(spaces)]
        self._turn = 0
        self._pending: deque[tuple[Future, Callable[[Any], None]]] = deque()

    def _begin(self, space: Workspace) -> None:
        self._local.state = {"work": space}
        # A worker's heap arena starts with room to spare (touched, then freed: the command line's
        # allocator keeps it, see base.steady_heap). The arena holds a pass's small blocks (its wide
        # ones are the Workspace's own mappings): the matrix library's 6 MB scratch and each prompt's
        # attention blocks, 7.6 MB for 100 ANLI examples. Started bare, it grew whenever a pass met a
        # longer prompt than any before (8.8 MB for 1,000 examples); 12 MB holds both, and the
        # attention of a prompt as long as a whole 2,048-token pass.
        self.torch.ones(ARENA_START_BYTES // 4)  # made and freed at once

    def local(self) -> dict[str, Any]:
        """This worker thread's own state: its `Workspace` under "work", and room for its buffers."""
        return self._local.state

    def submit(self, run: Callable[[], Any], deliver: Callable[[Any], None]) -> None:
        """Run `run()` on the next worker in turn; `deliver(result)` is called here later. While every
        worker is busy this waits for the oldest pass (the next worker's) and delivers it first, so at
        most `workers` passes are held."""
        while len(self._pending) >= self.workers:
            self._deliver_oldest()
        pool = self._pools[self._turn]
        self._turn = (self._turn + 1) % self.workers
        self._pending.append((pool.submit(run), deliver))

    def drain(self) -> None:
        """Wait for every submitted pass and deliver each, oldest first."""
        while self._pending:
            self._deliver_oldest()

    def _deliver_oldest(self) -> None:
        future, deliver = self._pending.popleft()
        deliver(future.result())  # a worker's exception is raised here, in the submitting thread

    def close(self) -> None:
        """Stop: passes not started are dropped, running ones finish, torch gets its threads back."""
        for future, _ in self._pending:
            future.cancel()
        self._pending.clear()
        for pool in self._pools:
            pool.shutdown(wait=True)
        self.torch.set_num_threads(self._threads)
