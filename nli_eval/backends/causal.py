"""Causal LM scoring: one context pass per prompt scores every label word.

The context runs once; single-token label words are read from its last position, and
multi-token ones continue from the context's cached keys and values, so each label's
log-probability is exact (summed over its tokens). Only scored positions are projected
to the vocabulary. Tokenization follows lm-evaluation-harness: trailing spaces of the
context move into the continuation, and context+continuation is encoded together.
"""

from __future__ import annotations

import contextlib
import math
from array import array
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import ModelError
from ..labels import Label
from ..types import Prompt
from .base import (BackendInfo, BatchCallback, Workspace, is_out_of_memory, release_memory, return_freed_memory,
                   without_word_cache)
from .packing import (HALVING_STEP, LOGIT_ROWS, PART_STEP, Unit, capacity, common_start, packed, packing_works,
                      pass_width, plan, round_up, units)
from .prefix_cache import batch_cache


@dataclass(frozen=True)
class Encoded:
    # Token ids as 4-byte machine ints: a tuple of Python ints costs ~36 bytes a token, and a chunk
    # of prompts keeps its ids from `fits` until scored (5-shot ANLI: ~700 tokens a prompt).
    context: array
    options: Mapping[Label, tuple[int, ...]]

    @property
    def length(self) -> int:
        return len(self.context) + max(len(o) for o in self.options.values())


# A prefix is run once and reused only when this many prompts share it; a few chance
# coincidences of per-example shots are cheaper inside a full plain batch.
MIN_SHARED = 4


def cache_argument(model: Any) -> str:
    """The name under which the model's forward takes and returns its key/value cache: `cache` in
    newer transformers (which deprecate `past_key_values`), `past_key_values` before and in remote code."""
    import inspect

    forward = inspect.unwrap(type(model).forward)
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters and "past_key_values" not in parameters else "past_key_values"


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace into the continuation (lm-eval's convention)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        return context[:-n_spaces], context[-n_spaces:] + continuation
    return context, continuation


class CausalLMBackend:
    def __init__(self, model: Any, tokenizer: Any, *, name: str, batch_size: int | str = "auto",
                 max_length: int | None = None, add_bos: bool | None = None, dtype: str = "",
                 params: tuple[int, int] | None = None, reuse_prefix: bool = True,
                 cpu_kernels: bool = True, pack_prompts: bool = True, pass_workers: bool = True,
                 transformers_model: Callable[[], Any] | None = None) -> None:
        import torch

        self.torch = torch
        self.tokenizer = without_word_cache(tokenizer)
        config = model.config
        self.max_length = max_length or _context_length(config, tokenizer)
        model_type = str(getattr(config, "model_type", ""))
        # lm-eval prepends BOS for Gemma models, which are unusable without it; nothing otherwise.
        self.bos = tokenizer.bos_token_id if (add_bos if add_bos is not None else model_type.startswith("gemma")) else None
        if add_bos and self.bos is None:
            raise ModelError(f"model {name}: --add-bos given but its tokenizer has no BOS token")
        self.batch_size = batch_size
        self.reuse_prefix = reuse_prefix
        self._cpu_kernels, self._pack_prompts = cpu_kernels, pack_prompts
        self._pass_workers = pass_workers  # a stream's packed passes two at a time (see workers.py)
        # For a model run by the native forward (native.py): the same weights through transformers,
        # loaded when a group of prompts needs a key/value cache, which that forward lacks.
        self._transformers_model = transformers_model
        self.on_new_info: Callable[[BackendInfo], None] | None = None  # told when `info` changes
        self._auto_batch: int | None = None
        self.tokens_run = 0  # tokens the model has run for scoring, padding excluded (throughput, FLOPs)
        self._encoded: dict[tuple[str, str, tuple[str, ...]], Encoded] = {}
        self._options: dict[tuple, Mapping[Label, tuple[int, ...]]] = {}  # label word ids, shared by prompts
        self._pass_tokens: int | None = None  # a pass's tokens, once running out of memory has lowered it
        # Within `stream()`: the first window's pass size and the last shared few-shot prefix's keys
        # and values, for the windows after it; the prompts held for a later pass; the pass workers.
        self._stream: dict[str, Any] | None = None
        extra = {"add_bos": str(self.bos is not None), **self._adopt(model)}
        total, non_emb = params or (None, None)
        self.info = BackendInfo(
            kind="causal", model=name, dtype=dtype or str(next(model.parameters()).dtype).replace("torch.", ""),
            device=str(self.device), max_length=self.max_length, params_total=total,
            params_non_embedding=non_emb, extra=extra)

    def _adopt(self, model: Any) -> dict[str, str]:
        """Make `model` the one that scores, with the CPU kernels and packed passes where they apply;
        returns what it runs with, for the backend's details."""
        self.model = model
        self.device = next(model.parameters()).device
        self._mlp: Any = None  # the last layer's MLP, found on first use (after packing replaced it)
        # A packed pass's log-probabilities, one size every pass (see base.Workspace).
        self._scratch = Workspace()
        # The pass workers' buffers (see `_start_workers`), kept from stream to stream; the first is
        # the native forward's own, which its passes without workers use as well.
        self._spaces: list[Workspace] = []
        self._cache_arg = cache_argument(model)
        native = getattr(model, "native", False)
        extra = {"forward": "native" if native else "transformers"}
        attention = getattr(model.config, "_attn_implementation", None)
        if attention:
            extra["attention"] = str(attention)
        if self._cpu_kernels and self.device.type == "cpu":
            from .cpu_linear import chunk_gated_mlps, fuse_rms_norms, fuse_rotary, onednn_pays, pack_linear_layers

            if onednn_pays():
                packed = pack_linear_layers(model)
                if packed:
                    extra["packed_linear_layers"] = str(packed)
            else:
                chunked = chunk_gated_mlps(model)
                if chunked:
                    extra["chunked_gated_mlps"] = str(chunked)
            norms = fuse_rms_norms(model)
            if norms:
                extra["fused_rms_norms"] = str(norms)
            rotary = fuse_rotary(model)
            if rotary:
                extra["fused_rotary_layers"] = str(rotary)
        # On a CPU, prompts are packed end to end into passes of one shape (see packing.py), where a
        # probe shows the model scores a packed prompt as it does the prompt alone (the native forward
        # does by construction, and its tests show it).
        self.packing = self._pack_prompts and self.device.type == "cpu" and (native or packing_works(model))
        if self.packing:
            extra["packed_prompts"] = "true"
        return extra

    def _use_transformers_model(self) -> None:
        """Swap the native forward for the same weights loaded through transformers, which keeps a
        key/value cache (a shared few-shot prefix, label words of several tokens)."""
        from ..modeling import collector_paused
        if self._transformers_model is None:
            raise ModelError(f"model {self.info.model}: these prompts need a key/value cache, which the native "
                             "forward lacks; load the model through transformers")
        load, self._transformers_model = self._transformers_model, None
        self.model = None
        release_memory(self.device)
        with collector_paused():
            extra = self._adopt(load())
        # What the new model says, and what still holds: add_bos, and workers for the run's earlier passes.
        kept = {k: self.info.extra[k] for k in ("add_bos", "pass_workers") if k in self.info.extra}
        self._note_info({**kept, **extra})

    # -- tokenization ---------------------------------------------------------------------
    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def encode(self, prompts: Sequence[Prompt]) -> list[Encoded]:
        out: list[Encoded | None] = [None] * len(prompts)
        todo: list[int] = []
        for i, p in enumerate(prompts):
            key = (p.prefix, p.query, tuple(p.options.values()))  # the prompt's own strings, not a joined copy
            hit = self._encoded.get(key)
            if hit is not None:
                out[i] = hit
            else:
                todo.append(i)
        if todo:
            texts: list[str] = []
            for i in todo:
                p = prompts[i]
                ctx, _ = split_context(p.context, "")
                texts.append(ctx)
                for cont in p.options.values():
                    c, k = split_context(p.context, cont)
                    texts.append(c + k)
            ids = self._encode_many(texts)
            pos = 0
            for i in todo:
                p = prompts[i]
                ctx_ids = ids[pos]
                pos += 1
                opts = {}
                for label in p.options:
                    whole = ids[pos]
                    pos += 1
                    cont_ids = tuple(whole[len(ctx_ids):])
                    if not cont_ids:
                        raise ModelError(f"label word {p.options[label]!r} encodes to no tokens after the prompt")
                    opts[label] = cont_ids
                ctx = array("i", [self.bos] if self.bos is not None else [])
                ctx.extend(ctx_ids)
                # Label words mostly encode alike after every prompt: equal ones share one mapping.
                enc = Encoded(ctx, self._options.setdefault(tuple(opts.items()), opts))
                if len(self._encoded) < 100_000:
                    self._encoded[(p.prefix, p.query, tuple(p.options.values()))] = enc
                out[i] = enc
        return out  # type: ignore[return-value]

    def fits(self, prompt: Prompt) -> bool:
        return self.encode([prompt])[0].length <= self.max_length

    # -- scoring --------------------------------------------------------------------------
    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Calls of `score` inside are windows of one stream of alike prompts (a task at k shots): the
        first window's pass size holds for all of them, so the buffers a long stream needs are those of
        a short one, and a few-shot prefix shared across windows runs once. A window's last packed pass,
        mostly part full, waits to be packed with the next window's prompts (the last one's runs as the
        stream ends): its prompts' scores reach `on_batch` then, and `score` returns None for them.
        On a CPU with two threads or more, the native forward's packed passes run two at a time (see
        workers.py): their scores too reach `on_batch` later, in this thread, and `score` returns None."""
        self._stream = {}
        try:
            yield
            if self._stream.get("held") or self._stream.get("retry"):
                self._stream["ending"] = True  # the prompts held back from the last window's passes
                self.score([], self._stream["on_batch"])
            self._stop_workers(final=True)
            if self._stream.get("retry"):  # handed back by a worker's pass that ran out of memory
                self.score([], self._stream["on_batch"])
        finally:
            self._stop_workers(drain=False)
            self._stream = None
            return_freed_memory()

    def _start_workers(self, on_batch: BatchCallback | None) -> Any:
        """The stream's pass workers, started on its first packed pass where they apply, else None."""
        stream = self._stream
        if stream is None or on_batch is None:
            return None
        if "workers" not in stream:
            from .workers import WORKERS, PassWorkers
            native_cpu = getattr(self.model, "native", False) and self.device.type == "cpu"
            use = self._pass_workers and native_cpu and self.torch.get_num_threads() >= 2
            if use and len(self._spaces) < WORKERS:
                self._spaces = [self.model.workspace] + [Workspace() for _ in range(WORKERS - 1)]
            stream["workers"] = PassWorkers(self.torch, self._spaces) if use else None
            if use and "pass_workers" not in self.info.extra:
                self._note_info({**self.info.extra, "pass_workers": str(WORKERS)})  # results.json says so
        return stream["workers"]

    def _note_info(self, extra: dict[str, str]) -> None:
        """The backend's info with these details, handed to `on_new_info` (the run records it)."""
        self.info = replace(self.info, extra=extra)
        if self.on_new_info is not None:
            self.on_new_info(self.info)

    def _stop_workers(self, drain: bool = True, final: bool = False) -> None:
        """Deliver (with `drain`) and stop the stream's pass workers: what runs next has every thread
        (and with `final`, what runs for the rest of the stream)."""
        workers = self._stream.pop("workers", None) if self._stream is not None else None
        if final and self._stream is not None:
            self._stream["workers"] = None
        if workers is not None:
            try:
                if drain:
                    workers.drain()
            finally:
                workers.close()

    def score(self, prompts: Sequence[Prompt], on_batch: BatchCallback | None = None) -> list[dict[Label, float]]:
        encoded = self.encode(prompts)
        results: list[dict[Label, float] | None] = [None] * len(prompts)
        held = self._stream.pop("held", []) + self._stream.pop("retry", []) if self._stream is not None else []
        if self._stream is not None:
            self._stream["on_batch"] = on_batch
        if held:  # scored with these; their results go to `on_batch` alone
            prompts = [p for p, _ in held] + list(prompts)
            encoded = [e for _, e in held] + encoded
            results = [None] * len(held) + results
        # Prompts sharing a few-shot prefix (--fewshot-sampling fixed) run that prefix once.
        # Prompts with a prefix of their own (per-example shots) are batched together as plain prompts.
        shared_by = Counter(p.prefix for p in prompts) if self.reuse_prefix else Counter()
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p.prefix if shared_by[p.prefix] >= MIN_SHARED else "", []).append(i)
        for prefix, idx in groups.items():
            shared = self._shared_length([encoded[i] for i in idx]) if prefix and len(idx) > 1 else 0
            single = all(len(t) == 1 for i in idx for t in encoded[i].options.values())
            if self.packing and not shared and single:
                self._score_packed(prompts, encoded, idx, results, on_batch)
            else:
                self._stop_workers()  # padded batches run on every thread
                if getattr(self.model, "native", False) and (shared or not single):
                    self._use_transformers_model()
                self._score_group(prompts, encoded, idx, shared, results, on_batch)
        # Encodings are kept from `fits` to here; once scored they are not needed again, and the
        # runner's next window of prompts brings its own (held prompts keep theirs).
        self._encoded.clear()
        self._options.clear()
        return results[len(held):]  # type: ignore[return-value]

    def _shared_length(self, group: list[Encoded]) -> int:
        """Tokens every context of the group starts with (at least one token of each is left to run)."""
        first = group[0].context
        n = min(len(e.context) for e in group) - 1
        for e in group[1:]:
            n = common_start(first, e.context, n)
        return n if n >= 8 else 0

    def _score_group(self, prompts: Sequence[Prompt], encoded: list[Encoded], idx: list[int], shared: int,
                     results: list, on_batch: BatchCallback | None) -> None:
        # Longest first: the first batch shows at once whether the batch size fits in memory.
        order = sorted(idx, key=lambda i: -encoded[i].length)
        prefix_cache = self._prefix(encoded[order[0]].context[:shared]) if shared else None
        size = self._resolve_batch_size([encoded[i] for i in order[:1]])
        lengths = [encoded[i].length - shared for i in order]
        # A pass holds at most `size` prompts of the typical (90th-percentile) length in tokens, so the
        # few longest prompts of a large sample run in smaller passes and memory does not grow with it.
        typical = lengths[len(lengths) // 10]
        start = 0
        while start < len(order):
            count = max(1, min(size, size * typical // max(1, lengths[start])))
            batch_idx = order[start:start + count]
            try:
                scores = self._score_batch([encoded[i] for i in batch_idx], shared, prefix_cache)
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                if size == 1:
                    raise ModelError(f"model {self.info.model} runs out of memory on one prompt of "
                                     f"{encoded[batch_idx[0]].length} tokens even at batch size 1; finished "
                                     f"examples are cached; try --dtype bfloat16, a smaller --max-length, "
                                     f"--device-map auto, or a device with more memory") from None
                size = max(1, size // 2)  # halve and go on: a smaller batch gives the same scores
                self._auto_batch = size
                self._empty_cache()
                continue
            for i, s in zip(batch_idx, scores):
                results[i] = s
                e = encoded[i]
                self.tokens_run += len(e.context) - shared + sum(len(t) - 1 for t in e.options.values())
            if on_batch is not None:
                on_batch([prompts[i] for i in batch_idx], scores)
            if self.device.type == "cpu":
                return_freed_memory()
            start += len(batch_idx)

    def _score_packed(self, prompts: Sequence[Prompt], encoded: list[Encoded], idx: list[int], results: list,
                      on_batch: BatchCallback | None) -> None:
        """Prompts whose label words are one token each, packed end to end into passes of one size."""
        torch = self.torch
        lengths = {i: len(encoded[i].context) for i in idx}
        longest = max(lengths.values())
        size = self.batch_size if isinstance(self.batch_size, int) else None
        planned = self._stream.get("tokens") if self._stream is not None else None
        if planned is None:
            planned = capacity(size, list(lengths.values()))
            if self._stream is not None:
                self._stream["tokens"] = planned
        tokens = max(self._pass_tokens or planned, round_up(longest, HALVING_STEP))
        workers = self._start_workers(on_batch)
        todo = list(idx)
        while todo:
            # The token buffers are made once a plan and refilled: a pass allocates what the model does.
            # (A worker keeps its own.)
            if workers is None:
                ids = torch.zeros((1, tokens), dtype=torch.long)
                positions = torch.zeros((1, tokens), dtype=torch.long)
            # Prompts starting alike run their shared start once (see packing.units).
            grouped = [Unit(tuple(todo[m] for m in u.members), u.shared, u.length)
                       for u in units([encoded[i].context for i in todo], tokens)]
            # Within a stream a pass holds no more prompts than the first window's passes needed rows
            # for (in blocks of LOGIT_ROWS): its logits keep one size whatever the later windows hold.
            rows = self._stream.get("rows") if self._stream is not None else None
            ending = self._stream is None or self._stream.get("ending")
            width = tokens
            if workers is not None and ending:
                # The stream's last prompts: passes of one width, as many as the workers (or a multiple),
                # so that the workers end together.
                total, count, k = sum(u.length for u in grouped), sum(len(u.members) for u in grouped), workers.workers
                n = k * max(-(-total // (k * tokens)), -(-count // (k * rows)) if rows else 1)
                width = round_up(max(-(-total // n), max(u.length for u in grouped)), PART_STEP)
            passes = plan([u.length for u in grouped], width, [len(u.members) for u in grouped], rows)
            if self._stream is not None and rows is None:
                self._stream["rows"] = round_up(max(sum(len(grouped[m].members) for m in p) for p in passes),
                                                LOGIT_ROWS)
            # The plan's last pass waits for the next window's prompts (see `stream`); with workers, the
            # one before it too when that keeps the passes they run an even number, so that the last two
            # they run end together.
            run = len(passes) if ending else len(passes) - 1
            if workers is not None and not ending and run % 2:
                run -= 1
            for n, members in enumerate(passes):
                batch = [grouped[m] for m in members]
                batch_idx = [i for u in batch for i in u.members]
                used = sum(u.length for u in batch)
                if n == run:
                    self._stream["held"] = [(prompts[i], encoded[i]) for p in passes[run:] for u in p
                                            for i in grouped[u].members]
                    todo = []
                    break
                cut = pass_width(used, tokens) if width == tokens else min(tokens, round_up(used, PART_STEP))
                laid_out = [(u.shared, [encoded[i] for i in u.members]) for u in batch]
                if workers is not None:
                    self._submit_pass(workers, laid_out, [(prompts[i], encoded[i]) for i in batch_idx], used, tokens,
                                      cut, on_batch)
                    continue
                try:
                    own = self._spaces[0] if self._spaces else None  # the workers' first, as they left it
                    scores = self._score_pass(laid_out, ids[:, :cut], positions[:, :cut], own)
                except (RuntimeError, MemoryError) as exc:
                    if not is_out_of_memory(exc):
                        raise
                    # Replan what is left: smaller passes, same scores.
                    tokens = self._pass_tokens = self._halved_pass(tokens, longest)
                    break
                for i, s in zip(batch_idx, scores):
                    results[i] = s
                self.tokens_run += used
                done = set(batch_idx)
                todo = [i for i in todo if i not in done]
                if on_batch is not None:
                    on_batch([prompts[i] for i in batch_idx], scores)
            if workers is not None:
                todo = []  # every pass is submitted; their scores arrive through on_batch
        # Not after every pass, nor every window of a stream: passes of one width reuse the blocks the
        # first ones left in the heap, so its high-water mark is set in the first few passes and a long
        # run peaks no higher than a short one. Returned after every pass, each pass lays its blocks
        # out afresh and a run's peak is the worst of as many layouts as it has passes (1,000 examples
        # peaked 0.3% over 100).
        if self._stream is None:
            return_freed_memory()

    def _submit_pass(self, workers: Any, batch: list[tuple[int, list[Encoded]]], pairs: list[tuple[Prompt, Encoded]],
                     used: int, tokens: int, cut: int, on_batch: BatchCallback) -> None:
        """`_score_pass` on a worker, in its own buffers; the scores reach `on_batch` here, later. A pass
        that runs out of memory hands its prompts back to run again in passes half the size."""
        torch = self.torch

        def run() -> Any:
            local = workers.local()
            if local.get("tokens") != tokens:
                local["tokens"] = tokens
                local["ids"] = torch.zeros((1, tokens), dtype=torch.long)
                local["positions"] = torch.zeros((1, tokens), dtype=torch.long)
            try:
                return self._score_pass(batch, local["ids"][:, :cut], local["positions"][:, :cut], local["work"])
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                return exc

        def deliver(scores: Any) -> None:
            if isinstance(scores, BaseException):
                smaller = self._halved_pass(tokens, max(len(e.context) for _, e in pairs))
                self._pass_tokens = min(self._pass_tokens or tokens, smaller)
                self._stream.setdefault("retry", []).extend(pairs)  # the stream's next call runs them
                return
            self.tokens_run += used
            on_batch([p for p, _ in pairs], scores)

        workers.submit(run, deliver)

    def _halved_pass(self, tokens: int, longest: int) -> int:
        """The pass size after a pass of `tokens` ran out of memory: half, or a ModelError when half
        would not hold the longest prompt left (`longest` tokens)."""
        smaller = round_up(tokens // 2, HALVING_STEP)
        if smaller < longest or smaller >= tokens:
            raise ModelError(f"model {self.info.model} runs out of memory on a pass of {tokens} tokens "
                             f"holding a prompt of {longest}; finished examples are cached; try a "
                             f"smaller --max-length or a device with more memory") from None
        return smaller

    def _score_pass(self, batch: list[tuple[int, list[Encoded]]], ids: Any, positions: Any,
                    work: Workspace | None = None) -> list[dict[Label, float]]:
        """One packed pass: each unit of `batch` (the tokens its prompts share, and the prompts) laid
        out in the row `ids` as its shared start, then each prompt's rest (positions going on from the
        shared start; a unit of one prompt shares nothing and starts at 0), and padding after them.
        Returns the prompts' scores in order. `work`: the buffers of a worker thread (see workers.py),
        for the log-probabilities and the native forward's activations."""
        torch = self.torch
        flat_ids, flat_positions = array("i"), array("i")
        segments: list[tuple[int, int, int, int]] = []
        ends: list[int] = []
        for shared, members in batch:
            base = len(flat_ids)
            if shared:
                flat_ids.extend(members[0].context[:shared])
                flat_positions.extend(range(shared))
                segments.append((base, base + shared, 0, 0))
            for e in members:
                start = len(flat_ids)
                flat_ids.extend(e.context[shared:])
                flat_positions.extend(range(shared, len(e.context)))
                segments.append((start, len(flat_ids), base, base + shared))
                ends.append(len(flat_ids) - 1)
        used = len(flat_ids)
        ids[0, :used] = torch.frombuffer(flat_ids, dtype=torch.int32)
        positions[0, :used] = torch.frombuffer(flat_positions, dtype=torch.int32)
        ids[0, used:] = 0
        positions[0, used:] = 0
        keep = torch.tensor([ends + ends[:1] * (round_up(len(ends), LOGIT_ROWS) - len(ends))])
        prompts = [e for _, members in batch for e in members]
        first = torch.tensor([[toks[0] for toks in e.options.values()] for e in prompts])
        own = {} if work is None else {"workspace": work}  # only the native forward runs on workers
        with torch.inference_mode(), packed(self.model, segments):
            out = self._forward(ids, keep, position_ids=positions, use_cache=False, **own)
            logits = out.logits[0].float()
            logp = torch.log_softmax(logits, dim=-1, out=(work or self._scratch)("log_probs", *logits.shape))
            picked = logp[: len(prompts)].gather(1, first).tolist()
        return [dict(zip(e.options, row)) for e, row in zip(prompts, picked)]

    def _prefix(self, tokens: Sequence[int]) -> Any:
        """The keys and values of a shared prefix: run once a stream when its windows share it."""
        key = tuple(tokens)
        if self._stream is not None and self._stream.get("prefix", ((), None))[0] == key:
            return self._stream["prefix"][1]
        cache = self._run_prefix(tokens)
        self.tokens_run += len(tokens)
        if self._stream is not None:
            self._stream["prefix"] = (key, cache)
        return cache

    def _run_prefix(self, tokens: Sequence[int]) -> Any:
        torch = self.torch
        ids = torch.tensor([tokens], device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return getattr(out, self._cache_arg)

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def _resolve_batch_size(self, longest: list[Encoded]) -> int:
        if isinstance(self.batch_size, int):
            return self.batch_size
        if self._auto_batch is not None:
            return self._auto_batch
        if self.device.type != "cuda" or not longest:
            # On a CPU throughput is flat past a few thousand tokens a batch; memory is not the limit.
            length = longest[0].length if longest else 512
            self._auto_batch = max(1, min(64, 4096 // max(1, length)))
            return self._auto_batch
        # Find the largest batch that fits by doubling on the longest prompt until memory runs out.
        size, best = 1, 1
        while size <= 512:
            try:
                self._score_batch(longest * size)  # the plain path needs the most memory
                best = size
                size *= 2
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                self._empty_cache()
                break
        self._auto_batch = best
        return best

    def _score_batch(self, batch: list[Encoded], shared: int = 0, prefix_cache: Any = None) -> list[dict[Label, float]]:
        torch = self.torch
        n = len(batch)
        lengths = [len(e.context) - shared for e in batch]
        width = max(lengths)
        # Right padding: every row starts at the first column (or right after the cached prefix), so
        # under the model's own causal mask no real token can see the padding that follows it. No
        # padding mask is needed, and attention skips the masked-out half of every pass.
        ids = torch.zeros((n, width), dtype=torch.long)
        for r, e in enumerate(batch):
            ids[r, : lengths[r]] = torch.tensor(e.context[shared:])
        ids = ids.to(self.device)
        last = torch.tensor(lengths, device=self.device).unsqueeze(1) - 1
        multi = [(r, label, toks) for r, e in enumerate(batch) for label, toks in e.options.items() if len(toks) > 1]
        # The rows' own keys and values are kept only when a multi-token label word continues from them.
        cache = None if prefix_cache is None else batch_cache(prefix_cache, n, keep=bool(multi))
        with torch.inference_mode():
            out = self._forward(ids, last, use_cache=bool(multi) or cache is not None, **{self._cache_arg: cache})
            first = torch.log_softmax(out.logits[:, 0, :].float(), dim=-1)
            scores: list[dict[Label, float]] = []
            for r, e in enumerate(batch):
                scores.append({label: float(first[r, toks[0]]) for label, toks in e.options.items()})
            if multi:
                self._score_rest(batch, getattr(out, self._cache_arg), shared, lengths, multi, scores)
        return scores

    def _forward(self, ids: Any, keep: Any, **kwargs: Any) -> Any:
        """Run the model, projecting only the positions `keep` ([rows, k]) to the vocabulary."""
        torch = self.torch
        if getattr(self.model, "native", False):  # it takes the positions itself (native.py)
            return self.model(input_ids=ids, keep=keep, **kwargs)
        rows = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1)

        def kept_positions(seen: list[int]) -> Any:
            """A pre-hook that hands a module only the kept positions of its [rows, width, hidden] input."""
            def hook(_module: Any, args: tuple) -> tuple | None:
                hidden = args[0]
                if seen or hidden.dim() != 3 or hidden.shape[:2] != ids.shape:
                    return None
                seen.append(hidden.shape[1])
                return (hidden[rows, keep],) + tuple(args[1:])
            return hook

        gathered: list[int] = []
        head = self.model.get_output_embeddings()
        handles = [head.register_forward_pre_hook(kept_positions(gathered))] if head is not None else []
        mlp = self._last_mlp()
        if mlp is not None and handles:
            # Only the kept positions of the last layer's output are read, and an MLP works position
            # by position: the last layer's MLP (the bulk of its work) runs on those positions alone.
            width: list[int] = []

            def widen(_module: Any, _args: tuple, output: Any) -> Any:
                if len(width) != 1 or not isinstance(output, torch.Tensor):
                    return None
                width.append(0)
                full = output.new_zeros((output.shape[0], width[0], output.shape[2]))
                full[rows, keep] = output
                return full

            handles += [mlp.register_forward_pre_hook(kept_positions(width)), mlp.register_forward_hook(widen)]
        try:
            out = self.model(input_ids=ids, logits_to_keep=0, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        if not gathered:
            out.logits = out.logits[rows, keep]  # the model projected every position itself
        return out

    def _last_mlp(self) -> Any:
        """The last decoder layer's gated MLP (gate, up and down projections), if the model has one."""
        if self._mlp is None:
            self._mlp = False
            decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else None
            layers = getattr(decoder, "layers", None)
            mlp = getattr(layers[-1], "mlp", None) if isinstance(layers, self.torch.nn.ModuleList) and len(layers) else None
            if mlp is not None and (type(mlp).__name__ == "PackedGatedMLP"
                                    or all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj"))):
                self._mlp = mlp
        return self._mlp or None

    def _score_rest(self, batch: list[Encoded], cache: Any, shared: int, lengths: list[int], multi: list,
                    scores: list[dict[Label, float]]) -> None:
        """Tokens after the first of multi-token label words, continuing from the cached context."""
        torch = self.torch
        tail = max(len(t) - 1 for _, _, t in multi)
        window = getattr(self.model.config, "sliding_window", None)
        gap = max(lengths) - min(lengths[r] for r, _, _ in multi)
        if gap and isinstance(window, int) and window > 0 and shared + max(lengths) + tail > window:
            # A sliding window counts columns, and the padding after a short context would shift it.
            self._score_rest_plain(batch, multi, scores)
            return
        rows = torch.tensor([r for r, _, _ in multi], device=self.device)
        cache.batch_select_indices(rows)
        n = len(multi)
        width = max(lengths)
        ids = torch.zeros((n, tail), dtype=torch.long)
        mask = torch.zeros((n, shared + width + tail), dtype=torch.long)
        for k, (r, _, toks) in enumerate(multi):
            ids[k, : len(toks) - 1] = torch.tensor(toks[:-1])
            mask[k, : shared + lengths[r]] = 1  # the context, not the padding after it
            mask[k, shared + width: shared + width + len(toks) - 1] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        start = torch.tensor([shared + lengths[r] for r, _, _ in multi], device=self.device).unsqueeze(1)
        positions = start + torch.arange(tail, device=self.device).unsqueeze(0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, **{self._cache_arg: cache})
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        for k, (r, label, toks) in enumerate(multi):
            target = torch.tensor(toks[1:], device=self.device)
            gathered = logp[k, : len(toks) - 1].gather(-1, target.unsqueeze(-1)).sum()
            scores[r][label] += float(gathered)

    def _score_rest_plain(self, batch: list[Encoded], multi: list, scores: list[dict[Label, float]]) -> None:
        """The same tokens, each context and label word run again as one right-padded sequence."""
        torch = self.torch
        seqs = [list(batch[r].context) + list(toks[:-1]) for r, _, toks in multi]
        tail = max(len(t) - 1 for _, _, t in multi)
        ids = torch.zeros((len(seqs), max(len(s) for s in seqs)), dtype=torch.long)
        for k, seq in enumerate(seqs):
            ids[k, : len(seq)] = torch.tensor(seq)
        # Row k predicts its label's tokens 2.. from the positions after its context's first label token.
        keep = torch.tensor([[min(len(batch[r].context) + j, len(seqs[k]) - 1) for j in range(tail)]
                             for k, (r, _, _) in enumerate(multi)], device=self.device)
        out = self._forward(ids.to(self.device), keep, use_cache=False)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        for k, (r, label, toks) in enumerate(multi):
            scores[r][label] += sum(float(logp[k, j, toks[j + 1]]) for j in range(len(toks) - 1))

    def close(self) -> None:
        self._stop_workers(drain=False)
        self.model = None
        self._encoded.clear()
        self._options.clear()
        release_memory(self.device)


def _context_length(config: Any, tokenizer: Any) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if value is None and hasattr(config, "get_text_config"):
            value = getattr(config.get_text_config(), attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000:
        return value
    return 2048


def check_finite(scores: Sequence[Mapping[Label, float]], model: str) -> None:
    for s in scores:
        if any(math.isnan(v) for v in s.values()):
            raise ModelError(f"model {model} produced NaN scores; try --dtype float32")
