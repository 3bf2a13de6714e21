"""The backend protocol: score whole prompts (every label of a prompt at once)."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..labels import Label
from ..types import Prompt

# Called after each scored batch with the prompts it held and their scores, so callers can
# save work as it finishes (the resumable cache) and show progress.
BatchCallback = Callable[[Sequence[Prompt], Sequence[Mapping[Label, float]]], None]


@dataclass(frozen=True)
class BackendInfo:
    kind: str                  # causal | classifier | seq2seq
    model: str
    dtype: str
    device: str
    max_length: int | None
    params_total: int | None = None
    params_non_embedding: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


class Backend(Protocol):
    info: BackendInfo

    def fits(self, prompt: Prompt) -> bool:
        """Whether the prompt and its longest continuation fit the model's context."""

    def score(self, prompts: Sequence[Prompt], on_batch: BatchCallback | None = None) -> list[dict[Label, float]]:
        """Per-label scores (log-probabilities or logits) for each prompt, in input order."""

    def close(self) -> None:
        """Release the model's memory before the next model of a sweep loads."""


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA or CPU allocation failure, whatever type the framework raised it as."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "cannot allocate memory" in text or "not enough memory" in text


def release_memory(device: object) -> None:
    """Free a dropped model's memory before the next model of a sweep loads."""
    import gc

    gc.collect()
    if getattr(device, "type", "") == "cuda":
        import torch
        torch.cuda.empty_cache()


def without_word_cache(tokenizer: Any) -> Any:
    """Turn off a fast tokenizer's word cache; returns the tokenizer.

    BPE and Unigram models keep up to 10,000 words with their tokens, so a run's memory grows with the
    distinct words of its data (8 MB over 1,000 ANLI prompts). Without the cache, tokenizing 1,000
    prompts and their label words takes about 0.1 s more on a 2-core CPU, against minutes of scoring.
    """
    model = getattr(getattr(tokenizer, "_tokenizer", None), "model", None)
    resize = getattr(model, "_resize_cache", None)
    if callable(resize):  # tokenizers 0.21 and later
        resize(0)
    return tokenizer


def return_freed_memory() -> None:
    """Give the heap pages freed by finished batches back to the system (glibc only).

    Padded batches each have other tensor shapes, so glibc's heap keeps holes the next batch cannot
    reuse; left resident they make a long run's memory creep up batch by batch. Packed passes share
    one width and reuse them, so they return memory once their group is scored.
    """
    trim = getattr(libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


class Workspace:
    """Named float32 CPU buffers that pass after pass writes its wide tensors into, made on first use.

    A pass that allocates its activations and frees them layer by layer leaves glibc's heap laid out a
    little differently every time, as other, smaller blocks (each prompt's attention) land in the
    holes: now and then a pass finds no hole for a block and the heap grows, so a run's peak memory
    steps up with its number of passes. With every wide tensor in a buffer kept from pass to pass the
    heap sees only small blocks during a pass. Each buffer grows to the largest request it has served;
    a smaller one gets a contiguous view of its first elements.

    Buffers of a megabyte or more live in mappings of their own, outside the heap. In glibc a thread's
    heap arena is made of 64 MB heaps: once a pass worker's buffers filled its first one, a block it
    needed later (the matrix library's 6 MB scratch) found no room, and glibc put it in the main heap
    instead, where whether a hole was free depended on what the main thread held at that moment: one
    run of the same 100 examples peaked 5 MB above another.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}

    def __call__(self, name: str, *shape: int) -> Any:
        import math

        import torch

        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            self._buffers.pop(name, None)
            buffer = None  # the smaller one is freed before the larger is made
            wide = size * 4 >= MAPPED_BUFFER_BYTES
            buffer = self._buffers[name] = _mapped(torch, size) if wide else torch.empty(size)
        return buffer[:size].view(shape)

    def existing(self, name: str) -> Any:
        """The whole buffer `name` as made so far (flat), or None before its first use."""
        return self._buffers.get(name)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


# A workspace buffer this size or larger is mapped on its own (see `Workspace`).
MAPPED_BUFFER_BYTES = 1 << 20


def _mapped(torch: Any, size: int) -> Any:
    """A float32 tensor of `size` elements in a private anonymous mapping of its own, unmapped when freed."""
    import mmap

    private = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}  # else shared memory on Linux
    skew = next(_SKEWS)
    return torch.frombuffer(mmap.mmap(-1, size * 4 + skew, **private), dtype=torch.float32, offset=skew)


# Where each mapped buffer starts within its first page, in turn. With every buffer starting a page
# (buffers read together then map to the same cache sets), passes ran 3% slower: 15.8 s of scoring
# for 100 ANLI examples against 15.4 s, and 15.3-15.5 s once the starts were spread over the page.
_SKEWS = itertools.cycle(range(0, 4096, 5 * 64))


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# The largest mmap threshold glibc takes on a 64-bit system; anything this size or more is still mapped
# on its own and returned the moment it is freed.
HEAP_BLOCK_LIMIT = 32 << 20


def steady_heap() -> bool:
    """Keep a scoring pass's activations in the heap, where the next pass reuses them (glibc only);
    returns whether the settings took.

    By default glibc maps every block above a threshold afresh and unmaps it on free, raising the
    threshold to the size of each mapped block freed, and gives the top of the heap back whenever a
    free leaves enough of it unused. A pass frees its activations layer by layer, so the next layer
    and the next pass fault in new zeroed pages for the same sizes: 11% of a 135M model's CPU scoring
    time. With a fixed 32 MB threshold and no automatic trimming the heap keeps them; its free pages
    still go back to the system after each padded CPU batch and each group of packed passes
    (`return_freed_memory`). For a process the caller owns (the command line): it changes that
    process's allocator.
    """
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


# Filler objects of the largest small-object size class (512 bytes with the header): 32 fill a pool.
POOL_FILLER_BYTES = 470
# A bound on the filler made, should the allocator never be seen to take a new arena.
POOL_FILL_LIMIT = 64 << 20


def small_object_arenas() -> int | None:
    """Arenas CPython's small-object allocator holds now; None where that is not known (another
    Python, PYTHONMALLOC=malloc, no C library to print its statistics into)."""
    import ctypes
    import os
    import re
    import sys

    c = libc()
    cpython = sys.implementation.name == "cpython"
    stats = getattr(ctypes.pythonapi, "_PyObject_DebugMallocStats", None) if cpython else None
    if c is None or stats is None:
        return None
    c.tmpfile.restype = ctypes.c_void_p
    stats.argtypes = [ctypes.c_void_p]
    handle = c.tmpfile()
    if not handle:
        return None
    fp = ctypes.c_void_p(handle)
    try:
        if not stats(fp):  # 0: this interpreter does not use its small-object allocator
            return None
        c.fflush(fp)
        fd, text = c.fileno(fp), b""
        while chunk := os.pread(fd, 1 << 16, len(text)):
            text += chunk
    finally:
        c.fclose(fp)
    found = re.search(rb"# arenas allocated current\s*=\s*([\d,]+)", text)
    return int(found.group(1).replace(b",", b"")) if found else None


def touch_small_object_pools() -> int:
    """Touch every pool of CPython's small-object arenas; returns the bytes of filler it made (0 where
    the arenas are not known).

    The allocator takes a pool from its fullest arena, carving one it never touched there before it
    reuses a freed one from another arena, so a long run's memory crept up window by window as it
    touched them (144 kB more for 1,000 ANLI examples than for 100, toward the ~1 MB they hold).
    Filled until the allocator takes a new arena, then freed, they are resident before the first
    window: a long run peaks no higher than a short one. For a process the caller owns.
    """
    start = small_object_arenas()
    if start is None:
        return 0
    held: list[bytes] = []
    made = 0
    while made < POOL_FILL_LIMIT:
        held.extend(bytes(POOL_FILLER_BYTES) for _ in range(32))
        made += 32 * POOL_FILLER_BYTES
        now = small_object_arenas()
        if now is None or now > start:
            break
    del held
    return made


@functools.lru_cache(maxsize=None)
def libc() -> Any:
    """The C library of this Linux process (memory calls torch does not expose), or None elsewhere."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None
