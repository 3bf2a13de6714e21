"""A stream's packed passes run two at a time on worker threads (backends/workers.py), scoring as one
pass at a time does."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch

from nli_eval.backends.base import Workspace
from nli_eval.backends.causal import CausalLMBackend
from nli_eval.backends.native import load_native
from nli_eval.backends.workers import PassWorkers
from nli_eval.errors import ModelError

from test_native import spec_of
from test_packing import out_of_memory_above, zero_shot


@pytest.fixture
def two_threads():
    """torch on two threads for the test (a one-core machine runs it as well), as it was after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def native(path, **kw):
    model, tok = load_native(spec_of(path))
    return CausalLMBackend(model, tok, name="t", **kw)


def streamed(backend, prompts, window=6):
    """Scores of `prompts` scored in windows of one stream: {id(prompt): scores}, and what each call returned."""
    got: dict[int, dict] = {}
    returned = []

    def on_batch(batch, scores):
        assert threading.current_thread() is threading.main_thread()  # delivered where submitted
        for p, s in zip(batch, scores):
            assert id(p) not in got
            got[id(p)] = s

    with backend.stream():
        for first in range(0, len(prompts), window):
            returned += backend.score(prompts[first:first + window], on_batch=on_batch)
    return got, returned


def record_passes(backend):
    """Wrap the backend's pass: returns the list of (thread name, width, prompts) it fills."""
    passes = []
    real = backend._score_pass

    def recording(batch, ids, positions, work=None):
        passes.append((threading.current_thread().name, ids.shape[1], sum(len(m) for _, m in batch)))
        return real(batch, ids, positions, work)

    backend._score_pass = recording
    return passes


def test_workers_hand_results_back_oldest_first_and_give_torch_its_threads_back(two_threads):
    spaces = [Workspace(), Workspace()]
    workers = PassWorkers(torch, spaces)
    delivered, seen_threads, held = [], [], []

    def run(i):
        def go():
            seen_threads.append(torch.get_num_threads())
            time.sleep(0.02 * (3 - i % 3))  # later passes may end first
            return i, id(workers.local()["work"])
        return go

    for i in range(6):
        workers.submit(run(i), delivered.append)
        held.append(len(workers._pending))
    workers.drain()
    workers.close()
    assert [i for i, _ in delivered] == list(range(6))
    assert max(held) <= 2 and set(seen_threads) == {1}
    assert {space for _, space in delivered} <= {id(s) for s in spaces}  # each worker on one of the caller's
    assert torch.get_num_threads() == 2

    failing = PassWorkers(torch, [Workspace(), Workspace()])
    failing.submit(lambda: 1 / 0, delivered.append)
    with pytest.raises(ZeroDivisionError):  # raised where the results are handed back
        failing.drain()
    failing.close()
    assert torch.get_num_threads() == 2


def mapping_of(address):
    """(start, end, permissions, name) of the mapping of this process holding `address` (/proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms, *rest = line.split()
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return start, end, perms, rest[3] if len(rest) > 3 else ""
    raise AssertionError("address in no mapping")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_workspace_keeps_wide_buffers_in_private_mappings_of_their_own():
    # A pass worker's heap then holds small blocks alone, the same ones every run (see base.Workspace).
    # (The kernel may merge a mapping with a neighbour: each buffer is checked to lie in private
    # anonymous memory, not in the heap.)
    work = Workspace()
    for rows in (512, 256, 1024):  # 2 MB, a smaller request, a larger one (the buffer grows)
        buffer = work("gate", rows, 1024)
        start, end, perms, name = mapping_of(buffer.data_ptr())
        assert buffer.data_ptr() % 64 == 0 and buffer.data_ptr() + buffer.numel() * 4 <= end
        assert perms == "rw-p" and name == ""
        assert buffer.is_contiguous() and buffer.shape == (rows, 1024)
    assert work.existing("gate").data_ptr() == buffer.data_ptr() and work.nbytes() == 4 << 20
    other = work("up", 512, 1024)  # starts elsewhere in its page than the one before it: other cache sets
    assert other.data_ptr() % 4096 != buffer.data_ptr() % 4096
    part = work("gate", 8, 1024)  # the first elements of the same buffer, values kept
    buffer.fill_(1.5)
    assert part.data_ptr() == buffer.data_ptr() and float(part.sum()) == 1.5 * 8 * 1024


@pytest.mark.parametrize("batch_size", [3, 8, 16])
def test_a_stream_on_workers_scores_as_one_pass_at_a_time(tiny_llama, two_threads, batch_size):
    prompts = zero_shot(60)
    want, _ = streamed(native(tiny_llama, batch_size=batch_size, pass_workers=False), prompts)
    backend = native(tiny_llama, batch_size=batch_size)
    told = []
    backend.on_new_info = told.append
    passes = record_passes(backend)
    assert "pass_workers" not in backend.info.extra
    got, returned = streamed(backend, prompts)
    assert len({name for name, _, _ in passes}) == 2  # two workers
    assert backend.info.extra["pass_workers"] == "2" and told == [backend.info]  # for results.json, once
    assert backend.info.extra["forward"] == "native"
    assert all(name.startswith("nli-eval-pass") for name, _, _ in passes)  # none beside them on this thread
    assert sum(n for _, _, n in passes) == len(prompts) == len(got)
    assert all(s is None for s in returned)  # every score came through on_batch
    for p in prompts:
        w, g = want[id(p)], got[id(p)]
        assert all(g[label] == pytest.approx(w[label], abs=1e-5) for label in w)
    assert torch.get_num_threads() == 2


def test_the_last_passes_of_a_stream_share_its_rest_evenly(tiny_llama, two_threads):
    backend = native(tiny_llama, batch_size=4)
    passes = record_passes(backend)
    streamed(backend, zero_shot(45), window=9)
    *_, (_, a, _), (_, b, _) = passes
    full = passes[0][1]
    assert a < full and b < full and abs(a - b) <= 64


def test_without_two_threads_or_on_batch_passes_run_one_at_a_time(tiny_llama):
    prompts = zero_shot(30)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = native(tiny_llama, batch_size=4)
        passes = record_passes(backend)
        streamed(backend, prompts)
    finally:
        torch.set_num_threads(before)
    assert passes and all(name == threading.main_thread().name for name, _, _ in passes)
    assert "pass_workers" not in backend.info.extra
    backend = native(tiny_llama, batch_size=4)
    passes = record_passes(backend)
    with backend.stream():
        backend.score(prompts)  # no on_batch to hand scores to later
    assert passes and all(name == threading.main_thread().name for name, _, _ in passes)


def test_a_worker_pass_out_of_memory_runs_again_in_smaller_passes(tiny_llama, two_threads):
    prompts = zero_shot(40)
    want, _ = streamed(native(tiny_llama, batch_size=16, pass_workers=False), prompts)
    backend = native(tiny_llama, batch_size=16)
    longest = max(len(e.context) for e in backend.encode(prompts))
    limit = max(256, -(-longest // 128) * 128)
    widths = []
    backend._score_pass = out_of_memory_above(limit, backend._score_pass, widths)
    got, _ = streamed(backend, prompts)
    assert max(widths) > limit and backend._pass_tokens <= limit
    assert len(got) == len(prompts)
    for p in prompts:
        assert all(got[id(p)][label] == pytest.approx(want[id(p)][label], abs=1e-5) for label in want[id(p)])

    def never(batch, ids, positions, work=None):
        raise MemoryError()

    backend._score_pass = never
    backend._pass_tokens = None
    with pytest.raises(ModelError, match="runs out of memory on a pass of"):
        streamed(backend, prompts)
    assert torch.get_num_threads() == 2


def test_a_run_that_gives_way_to_transformers_still_says_its_passes_ran_on_workers(tiny_llama):
    from transformers import AutoModelForCausalLM

    model, tok = load_native(spec_of(tiny_llama))
    backend = CausalLMBackend(model, tok, name="t",
                              transformers_model=lambda: AutoModelForCausalLM.from_pretrained(tiny_llama).eval())
    told = []
    backend.on_new_info = told.append
    backend._note_info({**backend.info.extra, "pass_workers": "2"})  # as a stream's first pass on workers does
    add_bos = backend.info.extra["add_bos"]
    backend._use_transformers_model()  # as prompts that need a key/value cache do
    extra = backend.info.extra
    assert extra["forward"] == "transformers" and extra["pass_workers"] == "2" and extra["add_bos"] == add_bos
    assert told[-1] is backend.info and len(told) == 2
