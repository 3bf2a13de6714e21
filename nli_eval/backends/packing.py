"""Prompts laid end to end in passes of one fixed token count, for causal LMs on a CPU.

Padded batches give every pass another shape: each new shape compiles new kernels, and its
activations have new sizes that the heap's holes from earlier passes do not fit, so a long run's
memory creeps up with its number of passes. A packed pass holds several prompts in one row of
`capacity` tokens, so every full pass of a run has the same shapes and the same allocations, and runs
padding only after the prompts that do not fill a pass. A pass they fill less than that (the last of
each call, so one in every 2,048 examples or more) runs only as wide as its prompts, rounded up to
PART_STEP tokens: its activations are smaller than a full pass's and fit the heap's holes.

Each prompt restarts its positions at 0, and attention runs prompt by prompt (causal within a
prompt, nothing across prompts), so every prompt scores as it would alone. Prompts that start with
the same tokens (a premise with several hypotheses, as in SNLI and ANLI; the same first shots) are
laid out as that shared start once, then the rest of each: a rest's positions go on from the shared
start's, and it attends to the shared start as well as to itself, so it still scores as its whole
prompt alone, without running the shared tokens again. A model takes packed passes only where a
probe at load shows exactly that (see `packing_works`); anything else, such as attention that does
not go through transformers' attention interface, keeps padded batches.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

# The attention function's name in transformers' registry. It has no mask function of its own, so a
# model builds no attention mask for a packed pass (the segments below take its place).
ATTENTION = "nli_eval_packed"
# A pass holds a whole number of 1,024-token blocks: the packed gated MLP's chunk
# (cpu_linear.MLP_CHUNK), half the BLAS one, so every chunk of a full pass has one shape.
ROUND = 1024
# A part-filled pass runs on a multiple of this many tokens.
PART_STEP = 64
# Running out of memory halves a pass's tokens, to a multiple of this.
HALVING_STEP = 128
# Tokens a pass holds when the batch size is "auto": past a couple of thousand tokens a pass a CPU
# multiplies no faster, and memory grows with the pass.
AUTO_TOKENS = 2048
# Positions projected to the vocabulary come in blocks of this many rows (padded with copies of
# the first), so the logits of every pass have one of a few sizes.
LOGIT_ROWS = 32

# Prompts share their first tokens only from this many on: a shorter shared start saves less than
# the masked attention of its prompts costs.
MIN_SHARED_TOKENS = 8

# The running pass's segments, in order: (start, end, shared start, shared end), where the last two
# bound the tokens the segment continues from (equal when it is a whole prompt or a shared start).
# Kept per thread: two threads may each run a pass of the native forward (see workers.py).
_running = threading.local()


def running_segments() -> list[tuple[int, int, int, int]] | None:
    """The segments of the pass this thread runs inside `packed`, or None outside one."""
    return getattr(_running, "segments", None)


@dataclass(frozen=True)
class Unit:
    """Prompts laid out together in a pass: the first `shared` tokens they all start with, once, then
    the rest of each. A unit of one prompt shares nothing."""
    members: tuple[int, ...]  # indices of the prompts
    shared: int
    length: int  # the tokens it takes in a pass


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def capacity(batch_size: int | None, lengths: Sequence[int]) -> int:
    """Tokens a full pass holds: `batch_size` prompts of the median length (AUTO_TOKENS when the size
    is automatic), rounded up to ROUND, and never less than the longest prompt."""
    ordered = sorted(lengths)
    wanted = AUTO_TOKENS if batch_size is None else batch_size * ordered[len(ordered) // 2]
    return round_up(max(wanted, ordered[-1], 1), ROUND)


def pass_width(used: int, capacity: int) -> int:
    """Tokens a pass of `used` prompt tokens runs: `capacity` when it is full, or nearly (every full pass
    keeps one shape); a pass that leaves at least a whole ROUND-token block empty (mostly the last) runs
    little more than its prompts (200 ANLI prompts compute 22,976 positions instead of 23,552 on whole
    1,024-token blocks)."""
    return capacity if used > capacity - ROUND else round_up(used, PART_STEP)


def common_start(a: Sequence[int], b: Sequence[int], most: int) -> int:
    """How many tokens `a` and `b` start with alike, up to `most`."""
    n = 0
    while n < most and a[n] == b[n]:
        n += 1
    return n


def units(contexts: Sequence[Sequence[int]], capacity: int) -> list[Unit]:
    """The prompts `contexts` (token ids) grouped into units by the tokens they start with.

    Sorted, prompts with a common start sit next to each other. A prompt joins the unit before it when
    they share at least MIN_SHARED_TOKENS and the unit saves no fewer tokens for it (its shared start
    may shorten to what the newcomer has in common); every member keeps at least one token of its
    own, where its score is read. A unit that would not fit in a pass is split into several.
    """
    order = sorted(range(len(contexts)), key=lambda i: contexts[i])
    groups: list[tuple[list[int], int]] = []
    for i in order:
        ctx = contexts[i]
        if groups:
            members, shared = groups[-1]
            common = common_start(contexts[members[0]], ctx, min(shared, len(ctx) - 1))
            if common >= MIN_SHARED_TOKENS and len(members) * common >= (len(members) - 1) * shared:
                members.append(i)
                groups[-1] = (members, common)
                continue
        groups.append(([i], len(ctx) - 1))
    out: list[Unit] = []
    for members, shared in groups:
        chunk: list[int] = []
        length = shared
        for i in members + [-1]:
            if i < 0 or (chunk and length + len(contexts[i]) - shared > capacity):
                if len(chunk) == 1:
                    out.append(Unit((chunk[0],), 0, len(contexts[chunk[0]])))
                elif chunk:
                    out.append(Unit(tuple(chunk), shared, length))
                chunk, length = [], shared
            if i >= 0:
                chunk.append(i)
                length += len(contexts[i]) - shared
    return out


def plan(lengths: Sequence[int], capacity: int, counts: Sequence[int] | None = None,
         most: int | None = None) -> list[list[int]]:
    """Indices of `lengths` grouped into passes of at most `capacity` tokens, longest first.

    First-fit decreasing: each prompt goes into the first pass with room left, so passes are full
    except, mostly, the last. A prompt longer than `capacity` gets a pass of its own. With `counts`
    (prompts in each unit) and `most`, a pass also holds at most `most` prompts (a unit of more alone).
    """
    counts = counts or [1] * len(lengths)
    most = most or sum(counts)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    passes: list[list[int]] = []
    room: list[int] = []
    held: list[int] = []
    for i in order:
        need = lengths[i]
        for p, left in enumerate(room):
            if need <= left and held[p] + counts[i] <= most:
                passes[p].append(i)
                room[p] -= need
                held[p] += counts[i]
                break
        else:
            passes.append([i])
            room.append(capacity - need)
            held.append(counts[i])
    return passes


def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
              dropout: float = 0.0, sliding_window: int | None = None, out: Any = None, scratch: Any = None,
              **kwargs: Any) -> tuple[Any, None]:
    """Causal attention within each segment of a packed row (transformers' attention-function signature).

    query [1, heads, tokens, dim], key and value [1, kv heads, tokens, dim]; returns [1, tokens, heads,
    dim] as the model's own attention functions do, written into `out` when given. Positions past the
    last segment (the padding of a pass the prompts do not fill) attend to nothing and come out as zeros.
    `scratch`, a flat float buffer idle meanwhile, takes the queries, keys and values joined for a
    prompt that shares a start: no new blocks, so a run that shares peaks no higher than one that does not.
    """
    import torch
    import torch.nn.functional as F

    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None or dropout or attention_mask is not None:
        raise NotImplementedError("packed attention runs plain causal attention only")
    if not getattr(module, "is_causal", True) or query.shape[0] != 1:
        raise NotImplementedError("packed attention takes one causal row")
    _, heads, tokens, dim = query.shape
    grouped = heads != key.shape[1]
    if out is None:
        out = query.new_empty((1, tokens, heads, dim))
    segments = running_segments() or []
    for start, end, shared_start, shared_end in segments:
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        shared = shared_end - shared_start
        if shared:
            # A prompt's rest runs as the whole prompt would: the shared start's queries, keys and
            # values joined before its own, plain causal attention, and the rest's rows kept. The same
            # kernel on the same shapes as a prompt alone, and no blocks of other sizes.
            q, k, v = _joined([(whole[:, :, shared_start:shared_end], part)
                               for whole, part in ((query, q), (key, k), (value, v))], scratch)
        if sliding_window and end - start + shared > sliding_window:
            mask = _mask(end - start + shared, sliding_window, query.device)
            done = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=grouped)
        else:
            done = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=grouped)
        out[:, start:end] = done[:, :, shared:].transpose(1, 2)
    last = segments[-1][1] if segments else 0
    if last < tokens:
        out[:, last:].zero_()
    return out, None


def _joined(pairs: list[tuple[Any, Any]], scratch: Any) -> list[Any]:
    """Each pair of tensors joined along the positions, one after another in `scratch` when all fit."""
    import torch

    shapes = [(*a.shape[:2], a.shape[2] + b.shape[2], a.shape[3]) for a, b in pairs]
    sizes = [math.prod(shape) for shape in shapes]
    if scratch is None or scratch.dtype != pairs[0][0].dtype or scratch.numel() < sum(sizes):
        return [torch.cat(pair, dim=2) for pair in pairs]
    out, at = [], 0
    for pair, shape, size in zip(pairs, shapes, sizes):
        out.append(torch.cat(pair, dim=2, out=scratch[at:at + size].view(shape)))
        at += size
    return out


@functools.lru_cache(maxsize=None)  # emptied when the pass ends (see `packed`)
def _mask(length: int, window: int, device: Any) -> Any:
    """Which keys each of `length` queries sees: those at or before it and within the sliding window,
    the window - 1 before it (transformers' window). Made once a pass, for its every layer and every
    prompt of that length."""
    import torch

    gap = torch.arange(length, device=device).unsqueeze(1) - torch.arange(length, device=device).unsqueeze(0)
    return (gap >= 0) & (gap < window)


@contextlib.contextmanager
def packed(model: Any, segments: list[tuple[int, int, int, int]]) -> Iterator[None]:
    """Run the model's attention segment by segment (see `_running`) for the block, in this thread.

    The native forward asks `running_segments` itself, so its config is left alone and another
    thread may run a pass of its own meanwhile; a transformers model is switched to the packed
    attention function through its config for the block.
    """
    native = getattr(model, "native", False)
    config = model.config
    before = config._attn_implementation
    if not native:
        register()
        config._attn_implementation = ATTENTION  # the config's setter passes it on to its sub-configs
    _running.segments = segments
    try:
        yield
    finally:
        if not native:
            config._attn_implementation = before
        _running.segments = None
        _mask.cache_clear()


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, attention)


def packing_works(model: Any) -> bool:
    """Whether a packed row scores each of its prompts as the model does on that prompt alone.

    Two short random prompts run once packed (the first also as its last tokens continuing from its
    first ones) and once each on its own; the last position's logits must agree. A model whose
    attention ignores the registered function, reads positions from a padding mask, or needs what the
    packed attention lacks (soft-capping, attention sinks) fails and keeps padded batches.
    """
    import torch

    try:
        vocab = int(model.get_input_embeddings().weight.shape[0])
        device = next(model.parameters()).device
    except Exception:
        return False
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randint(3, vocab, (1, n), generator=generator).to(device) for n in (7, 5))
    # Two whole prompts, then the first one's last three tokens continuing from its first four.
    ids = torch.cat([first, second, first[:, 4:]], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(5), torch.arange(4, 7)]).unsqueeze(0).to(device)
    segments = [(0, 7, 0, 0), (7, 12, 0, 0), (12, 15, 0, 4)]
    with torch.inference_mode():
        try:
            # Each prompt alone: one right-padded batch, where causal attention keeps the padding
            # out of every real position (the backend's own padded path).
            rows = torch.cat([first, torch.cat([second, first[:, :2]], dim=1)])
            logits = model(input_ids=rows, use_cache=False).logits.float()
            alone = [logits[0, 6], logits[1, 4], logits[0, 6]]
            with packed(model, segments):
                logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0].float()
        except Exception:  # no attention interface, no position_ids, an unsupported attention feature
            return False
    together = [logits[6], logits[11], logits[14]]
    return all(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max().clamp(min=1.0)))
               for a, b in zip(alone, together))
