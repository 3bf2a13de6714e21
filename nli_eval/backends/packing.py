"""Prompts laid end to end in passes of one fixed token count, for causal LMs on a CPU.

Padded batches give every pass another shape: each new shape compiles new kernels, and its
activations have new sizes that the heap's holes from earlier passes do not fit, so a long run's
memory creeps up with its number of passes. A packed pass holds several prompts in one row of
`capacity` tokens, so every full pass of a run has the same shapes and the same allocations, and runs
padding only after the prompts that do not fill a pass. A pass they fill less than that (mostly the
last) runs on whole ROUND-token blocks, whose MLP chunks have the full passes' shape.

Each prompt restarts its positions at 0, and attention runs prompt by prompt (causal within a
prompt, nothing across prompts), so every prompt scores as it would alone. A model takes packed
passes only where a probe at load shows exactly that (see `packing_works`); anything else, such as
attention that does not go through transformers' attention interface, keeps padded batches.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

# The attention function's name in transformers' registry. It has no mask function of its own, so a
# model builds no attention mask for a packed pass (the segments below take its place).
ATTENTION = "nli_eval_packed"
# A pass holds a whole number of the fused MLP's 1,024-position chunks (cpu_linear.MLP_CHUNK), so
# every chunk of a full pass has one shape.
ROUND = 1024
# Running out of memory halves a pass's tokens, to a multiple of this.
HALVING_STEP = 128
# Tokens a pass holds when the batch size is "auto": past a couple of thousand tokens a pass a CPU
# multiplies no faster, and memory grows with the pass.
AUTO_TOKENS = 2048
# Positions projected to the vocabulary come in blocks of this many rows (padded with copies of
# the first), so the logits of every pass have one of a few sizes.
LOGIT_ROWS = 32

_segments: list[int] = []  # the running pass's segment bounds: [0, end of prompt 1, end of prompt 2, ...]


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def capacity(batch_size: int | None, lengths: Sequence[int]) -> int:
    """Tokens a full pass holds: `batch_size` prompts of the median length (AUTO_TOKENS when the size
    is automatic), rounded up to ROUND, and never less than the longest prompt."""
    ordered = sorted(lengths)
    wanted = AUTO_TOKENS if batch_size is None else batch_size * ordered[len(ordered) // 2]
    return round_up(max(wanted, ordered[-1], 1), ROUND)


def pass_width(used: int, capacity: int) -> int:
    """Tokens a pass of `used` prompt tokens runs: whole ROUND-token blocks, at most `capacity`, so a
    part-filled pass (mostly the last) computes little padding and its MLP chunks keep the full shape."""
    return min(capacity, round_up(used, ROUND))


def plan(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into passes of at most `capacity` tokens, longest first.

    First-fit decreasing: each prompt goes into the first pass with room left, so passes are full
    except, mostly, the last. A prompt longer than `capacity` gets a pass of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    passes: list[list[int]] = []
    room: list[int] = []
    for i in order:
        need = lengths[i]
        for p, left in enumerate(room):
            if need <= left:
                passes[p].append(i)
                room[p] -= need
                break
        else:
            passes.append([i])
            room.append(capacity - need)
    return passes


def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
              dropout: float = 0.0, sliding_window: int | None = None, **kwargs: Any) -> tuple[Any, None]:
    """Causal attention within each segment of a packed row (transformers' attention-function signature).

    query [1, heads, tokens, dim], key and value [1, kv heads, tokens, dim]; returns [1, tokens, heads,
    dim] as the model's own attention functions do. Positions past the last segment (the padding of a
    pass the prompts do not fill) attend to nothing and come out as zeros.
    """
    import torch
    import torch.nn.functional as F

    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None or dropout or attention_mask is not None:
        raise NotImplementedError("packed attention runs plain causal attention only")
    if not getattr(module, "is_causal", True) or query.shape[0] != 1:
        raise NotImplementedError("packed attention takes one causal row")
    bounds = _segments
    _, heads, tokens, dim = query.shape
    grouped = heads != key.shape[1]
    out = query.new_empty((1, tokens, heads, dim))
    for start, end in zip(bounds[:-1], bounds[1:]):
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        if sliding_window and end - start > sliding_window:
            # Each position sees itself and the sliding_window - 1 before it (transformers' window).
            at = torch.arange(end - start, device=query.device)
            gap = at.unsqueeze(1) - at.unsqueeze(0)
            mask = (gap >= 0) & (gap < sliding_window)
            done = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=grouped)
        else:
            done = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=grouped)
        out[:, start:end] = done.transpose(1, 2)
    if bounds[-1] < tokens:
        out[:, bounds[-1]:].zero_()
    return out, None


@contextlib.contextmanager
def packed(model: Any, bounds: list[int]) -> Iterator[None]:
    """Run the model's attention segment by segment over `bounds` for the block."""
    global _segments
    register()
    config = model.config
    before = config._attn_implementation
    _segments = bounds
    config._attn_implementation = ATTENTION  # the config's setter passes it on to its sub-configs
    try:
        yield
    finally:
        config._attn_implementation = before
        _segments = []


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, attention)


def packing_works(model: Any) -> bool:
    """Whether a packed row scores each of its prompts as the model does on that prompt alone.

    Two short random prompts run once packed and once each on its own; the last position's logits
    must agree. A model whose attention ignores the registered function, reads positions from a
    padding mask, or needs what the packed attention lacks (soft-capping, attention sinks) fails and
    keeps padded batches.
    """
    import torch

    try:
        vocab = int(model.get_input_embeddings().weight.shape[0])
        device = next(model.parameters()).device
    except Exception:
        return False
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randint(3, vocab, (1, n), generator=generator).to(device) for n in (7, 5))
    ids = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0).to(device)
    with torch.inference_mode():
        try:
            alone = [model(input_ids=seq, use_cache=False).logits[0, -1].float() for seq in (first, second)]
            with packed(model, [0, 7, 12]):
                logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0].float()
        except Exception:  # no attention interface, no position_ids, an unsupported attention feature
            return False
    together = [logits[6], logits[11]]
    return all(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max().clamp(min=1.0)))
               for a, b in zip(alone, together))
