"""Prompts packed end to end into passes of one shape score as each prompt does alone."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest

from nli_eval.backends import packing
from nli_eval.backends.causal import CausalLMBackend
from nli_eval.errors import ModelError
from nli_eval.labels import LabelSpace
from nli_eval.prompts import PromptBuilder

from test_fastpaths import SINGLE, examples, naive


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def zero_shot(n=14):
    builder = PromptBuilder(SINGLE, LabelSpace.THREE_WAY)  # label words of one token each
    return [builder.render(e, ()) for e in examples(n)]


def recorded_passes(model):
    """Install a recorder of every forward pass's input shape; returns the list it fills."""
    shapes = []
    forward = model.forward

    def recording(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    model.forward = recording
    return shapes


@pytest.mark.parametrize("seed", range(20))
def test_the_plan_places_every_prompt_once_within_the_capacity(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 200))]
    cap = rng.choice([256, 512, 1024])
    passes = packing.plan(lengths, cap)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    for p in passes:
        assert sum(lengths[i] for i in p) <= cap or len(p) == 1
    # First-fit decreasing: no prompt of a later pass would have fitted into an earlier one.
    for a, earlier in enumerate(passes):
        room = cap - sum(lengths[i] for i in earlier)
        for later in passes[a + 1:]:
            assert all(lengths[i] > room for i in later[:1])


def test_a_prompt_longer_than_the_capacity_gets_a_pass_of_its_own():
    assert packing.plan([50, 900, 40], 100) == [[1], [0, 2]]


def test_the_capacity_is_batch_size_median_prompts_in_whole_chunks():
    assert packing.capacity(16, [100, 110, 120, 500]) == 2048    # 16 x 120 -> 2048
    assert packing.capacity(4, [100, 110, 120]) == 1024           # 4 x 110 -> 1024
    assert packing.capacity(1, [100, 3000]) == 3072               # never less than the longest
    assert packing.capacity(None, [10] * 50) == packing.AUTO_TOKENS


@pytest.mark.parametrize("shape", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("batch_size", [1, 4, 16, "auto"])
def test_packed_passes_score_as_each_prompt_alone(shape, batch_size, request):
    """Gemma's 16-token sliding window is shorter than the prompts: the packed attention applies it."""
    model, tok = load(request.getfixturevalue(shape))
    prompts = zero_shot()
    reference = [naive(model, CausalLMBackend(model, tok, name="t", cpu_kernels=False), p) for p in prompts]
    backend = CausalLMBackend(model, tok, name="t", batch_size=batch_size)
    assert backend.info.extra.get("packed_prompts") == "true"
    shapes = recorded_passes(model)
    seen = []
    scores = backend.score(prompts, on_batch=lambda batch, s: seen.extend(p.example.id for p in batch))
    assert all(rows == 1 for rows, _ in shapes)  # one row a pass, holding several prompts
    assert sorted(seen) == sorted(p.example.id for p in prompts)  # every prompt reported once
    for got, want in zip(scores, reference):
        assert got.keys() == want.keys()
        for label in want:
            assert got[label] == pytest.approx(want[label], abs=2e-4)
    contexts = [e.context for e in backend.encode(prompts)]
    assert backend.tokens_run == sum(u.length for u in packing.units(contexts, 10**6))


def premise_sharing(n_premises=5, per_premise=4):
    """Prompts of several hypotheses for each premise (as in SNLI and ANLI), shuffled."""
    from nli_eval.types import NLIExample

    rows = examples(n_premises * per_premise)
    shared = [NLIExample(e.id, rows[i // per_premise].premise, e.hypothesis, e.label) for i, e in enumerate(rows)]
    random.Random(1).shuffle(shared)
    builder = PromptBuilder(SINGLE, LabelSpace.THREE_WAY)
    return [builder.render(e, ()) for e in shared]


@pytest.mark.parametrize("seed", range(20))
def test_units_share_only_what_their_prompts_start_with(seed):
    rng = random.Random(seed)
    heads = [[rng.randint(0, 9) for _ in range(rng.randint(0, 40))] for _ in range(rng.randint(1, 8))]
    contexts = [rng.choice(heads) + [rng.randint(0, 9) for _ in range(rng.randint(1, 30))]
                for _ in range(rng.randint(1, 60))]
    cap = rng.choice([32, 64, 256])
    found = packing.units(contexts, cap)
    assert sorted(i for u in found for i in u.members) == list(range(len(contexts)))
    for u in found:
        assert u.length == u.shared + sum(len(contexts[i]) - u.shared for i in u.members)
        assert u.length <= cap or len(u.members) == 1
        if len(u.members) == 1:
            assert u.shared == 0
            continue
        assert u.shared >= packing.MIN_SHARED_TOKENS
        head = contexts[u.members[0]][:u.shared]
        # every member starts with the shared tokens and keeps at least one of its own to score
        assert all(contexts[i][:u.shared] == head and len(contexts[i]) > u.shared for i in u.members)
    assert sum(u.length for u in found) <= sum(map(len, contexts))


def test_prompts_alike_share_a_unit_and_unlike_ones_do_not():
    premise = list(range(100, 140))
    contexts = [premise + [1, 2], premise + [3], [5] * 30, premise + [4, 4, 4], premise[:5] + [9] * 20]
    found = sorted(packing.units(contexts, 1024), key=lambda u: u.members)
    assert [(sorted(u.members), u.shared) for u in found] == [([0, 1, 3], 40), ([2], 0), ([4], 0)]
    assert found[0].length == 40 + 2 + 1 + 3
    # Too big for one pass: split, each part with the shared start again.
    parts = packing.units([premise + [k] * 10 for k in range(6)], 65)
    assert sorted(len(u.members) for u in parts) == [2, 2, 2] and all(u.shared == 40 for u in parts)


@pytest.mark.parametrize("shape", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_prompts_sharing_a_premise_run_it_once_and_score_as_alone(shape, batch_size, request):
    """Gemma's 16-token sliding window is shorter than the prompts: it applies across the shared start."""
    model, tok = load(request.getfixturevalue(shape))
    prompts = premise_sharing()
    reference = [naive(model, CausalLMBackend(model, tok, name="t", cpu_kernels=False), p) for p in prompts]
    backend = CausalLMBackend(model, tok, name="t", batch_size=batch_size)
    contexts = [e.context for e in backend.encode(prompts)]
    scores = backend.score(prompts)
    for got, want in zip(scores, reference):
        assert got.keys() == want.keys()
        assert all(got[label] == pytest.approx(want[label], abs=2e-4) for label in want)
    # Each premise ran about once: far fewer tokens than the prompts hold.
    assert backend.tokens_run < 0.7 * sum(map(len, contexts))


def test_every_pass_has_one_shape(tiny_llama):
    model, tok = load(tiny_llama)
    prompts = zero_shot(60)
    backend = CausalLMBackend(model, tok, name="t", batch_size=2, cpu_kernels=False)
    lengths = [len(e.context) for e in backend.encode(prompts)]
    shapes = recorded_passes(model)
    backend.score(prompts)
    full = packing.capacity(2, lengths)
    assert len(shapes) > 3 and set(shapes) == {(1, full)}
    assert sum(lengths) <= len(shapes) * full < sum(lengths) + 2 * full  # at most one pass's worth of padding, about


def test_packed_passes_return_freed_memory_once_a_group_and_padded_batches_after_each(tiny_llama, monkeypatch):
    """Passes of one width reuse the heap blocks the first ones left, so memory goes back to the system
    when the group is scored; padded batches of other widths cannot, so each returns its own."""
    from nli_eval.backends import causal
    from test_fastpaths import MULTI

    model, tok = load(tiny_llama)
    events = []
    monkeypatch.setattr(causal, "return_freed_memory", lambda: events.append("freed"))
    backend = CausalLMBackend(model, tok, name="t", batch_size=2, cpu_kernels=False)
    backend.score(zero_shot(60), on_batch=lambda batch, scores: events.append("pass"))
    passes = events.count("pass")
    assert passes > 3 and events == ["pass"] * passes + ["freed"]

    events.clear()
    builder = PromptBuilder(MULTI, LabelSpace.THREE_WAY)
    backend.score([builder.render(e, ()) for e in examples(6)], on_batch=lambda batch, scores: events.append("batch"))
    assert events == ["batch", "freed"] * 3  # batches of two, each returning its memory


def test_a_pass_the_prompts_fill_less_runs_little_wider_than_them_with_the_same_scores(tiny_llama):
    """Full passes share one width; a part-filled last pass is cut to its prompts' tokens, rounded up
    to PART_STEP."""
    model, tok = load(tiny_llama)
    prompts = zero_shot(260)
    backend = CausalLMBackend(model, tok, name="t", batch_size=64, cpu_kernels=False)
    contexts = [e.context for e in backend.encode(prompts)]
    full = packing.capacity(64, [len(c) for c in contexts])

    def last_pass(n):  # the tokens of the plan's last pass over the first n prompts
        found = packing.units(contexts[:n], full)
        return sum(found[m].length for m in packing.plan([u.length for u in found], full)[-1])

    # The most prompts whose last pass leaves at least one whole block of the full width empty.
    n = next(n for n in range(len(prompts), 0, -1) if last_pass(n) <= full - packing.ROUND)
    prompts, last = prompts[:n], last_pass(n)
    shapes = recorded_passes(model)
    got = backend.score(prompts)
    assert full >= 2 * packing.ROUND and len(shapes) > 1
    assert set(shapes[:-1]) == {(1, full)} and shapes[-1] == (1, packing.round_up(last, packing.PART_STEP))
    want = CausalLMBackend(model, tok, name="t", batch_size=64, pack_prompts=False, cpu_kernels=False).score(prompts)
    for g, w in zip(got, want):
        assert all(g[label] == pytest.approx(w[label], abs=2e-4) for label in w)


def test_prompts_with_several_token_label_words_keep_padded_batches(tiny_llama):
    from test_fastpaths import MULTI

    model, tok = load(tiny_llama)
    builder = PromptBuilder(MULTI, LabelSpace.THREE_WAY)
    prompts = [builder.render(e, ()) for e in examples(6)]
    backend = CausalLMBackend(model, tok, name="t", batch_size=6, cpu_kernels=False)
    shapes = recorded_passes(model)
    backend.score(prompts)
    assert shapes[0][0] == 6  # six padded rows, then the label words' further tokens


def out_of_memory_above(limit, real, widths):
    """A backend's `_score_pass` that runs out of memory on passes wider than `limit` tokens, recording
    the width of every pass tried in `widths`."""
    def bounded(batch, ids, positions, work=None):
        widths.append(ids.shape[1])
        if ids.shape[1] > limit:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes")
        return real(batch, ids, positions, work)
    return bounded


def test_running_out_of_memory_replans_smaller_passes_with_the_same_scores(tiny_llama, monkeypatch):
    model, tok = load(tiny_llama)
    prompts = zero_shot(30)
    want = CausalLMBackend(model, tok, name="t", batch_size=16, pack_prompts=False).score(prompts)
    backend = CausalLMBackend(model, tok, name="t", batch_size=16)
    longest = max(len(e.context) for e in backend.encode(prompts))
    limit = packing.round_up(longest, packing.HALVING_STEP) * 2
    widths = []
    monkeypatch.setattr(backend, "_score_pass", out_of_memory_above(limit, backend._score_pass, widths))
    got = backend.score(prompts)
    # Each failed pass halves the pass (2048 -> 1024 -> ...) until it fits; then every pass fits.
    failed = [w for w in widths if w > limit]
    assert failed and failed == widths[: len(failed)] == sorted(failed, reverse=True)
    assert all(w <= limit for w in widths[len(failed):]) and backend._pass_tokens <= limit
    for g, w in zip(got, want):
        assert all(g[label] == pytest.approx(w[label], abs=2e-4) for label in w)

    def never(batch, ids, positions, work=None):
        raise MemoryError()

    monkeypatch.setattr(backend, "_score_pass", never)
    backend._pass_tokens = None
    with pytest.raises(ModelError, match="runs out of memory on a pass of"):
        backend.score(prompts)


def test_the_probe_turns_packing_off_when_prompts_would_see_each_other(tiny_llama, monkeypatch):
    """An attention function that lets a prompt attend to the one before it (or fails) fails the probe."""
    import torch.nn.functional as F

    model, tok = load(tiny_llama)
    assert packing.packing_works(model)
    original = packing.attention

    def across(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                             enable_gqa=query.shape[1] != key.shape[1])
        return out.transpose(1, 2), None

    monkeypatch.setattr(packing, "attention", across)
    assert not packing.packing_works(model)
    assert "packed_prompts" not in CausalLMBackend(model, tok, name="t").info.extra

    def failing(*args, **kwargs):
        raise NotImplementedError

    monkeypatch.setattr(packing, "attention", failing)
    assert not packing.packing_works(model)

    def without_shared_start(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        segments = packing.running_segments()
        packing._running.segments = [(start, end, 0, 0) for start, end, _, _ in segments]
        try:
            return original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        finally:
            packing._running.segments = segments

    monkeypatch.setattr(packing, "attention", without_shared_start)
    assert not packing.packing_works(model)
    assert model.config._attn_implementation != packing.ATTENTION  # put back after a failed pass


def test_prompts_pack_only_on_a_cpu(tiny_llama, monkeypatch):
    model, tok = load(tiny_llama)
    assert CausalLMBackend(model, tok, name="t", pack_prompts=False).packing is False
    backend = CausalLMBackend(model, tok, name="t")
    assert backend.packing is True and backend.device.type == "cpu"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_steady_heap_keeps_large_blocks_in_the_heap():
    """After steady_heap, a 16 MB block comes from the heap (reused by the next pass) instead of a
    mapping of its own; by default glibc maps it."""
    script = textwrap.dedent("""
        import ctypes, sys
        from nli_eval.backends.base import steady_heap

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

        libc = ctypes.CDLL(None)
        if not hasattr(libc, "mallinfo2"):
            print("skip"); sys.exit()
        libc.mallinfo2.restype = Info
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        if sys.argv[1] == "steady":
            assert steady_heap()
        before = libc.mallinfo2().hblkhd
        block = libc.malloc(16 << 20)
        mapped = libc.mallinfo2().hblkhd - before
        libc.free(block)
        print(mapped >= 16 << 20)
    """)
    out = {mode: subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
           .stdout.strip() for mode in ("default", "steady")}
    if "skip" in out.values():
        pytest.skip("this C library has no mallinfo2")
    assert out == {"default": "True", "steady": "False"}


def test_the_command_line_steadies_the_heap_and_a_library_run_does_not(tiny_llama, anli_hub, tmp_path, monkeypatch):
    from nli_eval.backends import base
    from nli_eval.backends.loader import BackendOptions
    from nli_eval.runner import RunConfig, Runner

    import gc

    calls, touched = [], []
    monkeypatch.setattr(base, "steady_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(base, "touch_small_object_pools", lambda: touched.append(1) or 0)
    monkeypatch.setattr(gc, "freeze", lambda: None)  # the command line's collector policy: not for this process
    for owns in (False, True):
        cfg = RunConfig(models=(str(tiny_llama),), tasks=("anli_r1",), split="dev", data_dir=str(anli_hub), limit=3,
                        output_dir=str(tmp_path / str(owns)), progress=False, backend=BackendOptions(batch_size=4))
        Runner(cfg, owns_process=owns).run()
        assert len(calls) == int(owns)
        assert len(touched) == int(owns)  # once a task, with the model loaded


@pytest.mark.skipif(sys.implementation.name != "cpython" or not sys.platform.startswith("linux"),
                    reason="CPython's small-object allocator, statistics printed through the C library")
def test_touching_the_small_object_pools_fills_every_arena_and_gives_the_filler_back():
    script = textwrap.dedent("""
        import sys
        from nli_eval.backends.base import POOL_FILL_LIMIT, small_object_arenas, touch_small_object_pools

        before = small_object_arenas()
        made = touch_small_object_pools()
        after = small_object_arenas()
        # Filled until a new arena was taken; freed, at most that one (empty) is kept.
        assert isinstance(before, int) and before >= 1, before
        assert 0 < made < POOL_FILL_LIMIT and after in (before, before + 1), (made, before, after)
        # The pools it touched are free again: small objects made now take no new arena.
        held = [bytes(400) for _ in range(made // 2 // 433)]
        assert small_object_arenas() == after
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
    # Where Python's objects come from malloc, nothing is known and nothing is made.
    plain = subprocess.run([sys.executable, "-c", "from nli_eval.backends.base import small_object_arenas as a, "
                            "touch_small_object_pools as t; print(a(), t())"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONMALLOC": "malloc"})
    assert plain.stdout.strip() == "None 0", plain.stderr[-2000:]


def test_a_streams_windows_pack_across_their_ends(tiny_llama):
    """In a stream a window's last pass waits for the next window's prompts: fewer passes than
    windows, every prompt scored once (through on_batch), the scores of one call over all."""
    model, tok = load(tiny_llama)
    prompts = zero_shot(40)
    backend = CausalLMBackend(model, tok, name="t", batch_size=8, cpu_kernels=False)
    want = backend.score(prompts)
    shapes = recorded_passes(model)
    got: dict[int, dict] = {}
    with backend.stream():
        for first in range(0, 40, 6):
            returned = backend.score(prompts[first:first + 6],
                                     on_batch=lambda batch, scores: got.update(zip(map(id, batch), scores)))
            assert len(returned) == len(prompts[first:first + 6])
    assert len(got) == 40 and len(shapes) < 7
    for p, w in zip(prompts, want):
        assert all(got[id(p)][label] == pytest.approx(w[label], abs=2e-4) for label in w)
