"""Run an evaluation: models x tasks x shot settings -> RunRecord, resumable and data-parallel."""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import sys
import time
from array import array
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import __version__, interrupts, notice
from .backends.loader import BackendOptions, detect_kind, load_backend, native_spec_for
from .cache import CacheKey, ScoreCache
from .data import LoadedSplit, load_split, stratified_sample
from .dist import Ranks, detect
from .errors import ConfigError, MissingSplitError, NliEvalError
from .labels import Label, LabelSpace, collapse
from .metrics import TaskResult, aggregate, compute
from .modeling import (LoadOptions, collector_paused, count_from_headers, fingerprint, import_frameworks, load_config,
                       gguf_of, loading_bars_off, resolve, resolve_device, torch_dtype)
from .prompts import PromptBuilder, ShotSampler
from .results import ModelRecord, RunRecord, now, package_versions, write_results, write_samples
from .scoresheet import ScoreSheet
from .spill import SpilledExamples
from .taskspec import Catalog, TaskVariant, catalog_with
from .templates import Template, resolve_template
from .types import NLIExample, Prediction, Prompt


# Examples are read back, prompted, encoded and scored this many at a time: whatever a run's length,
# it holds one window's prompts and token ids (about 6 KB an example at 5 shots) besides the model.
# Packed passes are planned per window; a window's last pass runs only the tokens it holds.
STREAM_WINDOW = 64


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...]
    tasks: tuple[str, ...] = ("anli",)
    shots: tuple[int, ...] = (0,)
    split: str | None = None
    data_dir: str | None = None
    template: str | None = None
    sampling: str = "per-example"
    seed: int = 1234
    limit: int | None = None
    output_dir: str | None = None
    cache_dir: str | None = None          # default: OUTPUT_DIR/cache
    task_files: tuple[str, ...] = ()
    load: LoadOptions = field(default_factory=LoadOptions)
    backend: BackendOptions = field(default_factory=BackendOptions)
    strict: bool = False
    progress: bool | None = None          # None: a bar on a terminal only


@dataclass(frozen=True)
class PreparedTask:
    task: TaskVariant
    split: str
    source: str
    examples: SpilledExamples  # in a temporary file: a run does not hold its examples while it scores
    order: array  # places in `examples` in the order they are scored (`scoring_order`)
    template: Template
    pool: tuple[NLIExample, ...]
    same_split: bool


@dataclass(frozen=True)
class ScoredTask:
    """One task and shot count scored by a model: what is needed to build its result once the model
    is released."""
    prep: PreparedTask
    k: int
    done: dict[str, tuple[dict[Label, float], bool]]  # read from the cache
    mine: Sequence[int]  # places in prep.examples this process scored
    sheet: ScoreSheet  # their scores, by place in `mine`
    seconds: float
    scoring_seconds: float
    tokens: int


def scoring_order(examples: Sequence[NLIExample]) -> array:
    """Places of `examples` in the order they are scored: those with a premise of their own as they
    come, then those sharing one, grouped by it, so that packed prompts run their common start once."""
    count = Counter(ex.premise for ex in examples)

    def place(i: int) -> tuple[bool, str, int]:
        premise = examples[i].premise
        return (True, premise, i) if count[premise] > 1 else (False, "", i)

    return array("q", sorted(range(len(examples)), key=place))


def predict(scores: Mapping[Label, float], space: LabelSpace) -> Label:
    """Argmax over the template's label words, then into the task's label space (ties: first label)."""
    best = max(scores, key=lambda lab: scores[lab])
    return collapse(best, space)


class Progress:
    def __init__(self, enabled: bool | None, total: int, desc: str) -> None:
        self.bar = None
        if enabled is False or total == 0:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover
            return
        self.bar = tqdm(total=total, desc=desc, unit="ex", disable=None if enabled is None else not enabled,
                        leave=False, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Runner:
    def __init__(self, config: RunConfig, catalog: Catalog | None = None, ranks: Ranks | None = None,
                 log: Callable[[str], None] | None = None, owns_process: bool = False) -> None:
        if not config.models:
            raise ConfigError("no model given; pass a Hub id or a checkpoint folder")
        if any(k < 0 for k in config.shots):
            raise ConfigError("--shots values must be 0 or more")
        self.config = config
        self.catalog = catalog or catalog_with(list(config.task_files))
        self.ranks = ranks or detect()
        self.log = log or (lambda message: None)
        self.owns_process = owns_process  # the command line: process-wide settings are its to make
        out = Path(config.output_dir) if config.output_dir else None
        self.out_dir = out
        cache_root = Path(config.cache_dir) if config.cache_dir else (out / "cache" if out else None)
        self.cache = ScoreCache(cache_root)
        self.scored = 0  # examples scored by a model in this process (not read from the cache)
        self.scored_all = 0  # the same over every process of the run

    # -- data -----------------------------------------------------------------------------
    def prepare(self, name: str) -> PreparedTask:
        cfg = self.config
        task = self.catalog.get(name)
        data = load_split(task, cfg.split, cfg.data_dir)
        examples = data.examples
        if cfg.limit is not None:
            if cfg.limit <= 0:
                raise ConfigError("--limit must be a positive number of examples")
            examples = stratified_sample(examples, cfg.limit, cfg.seed, task.name)
        template = resolve_template(cfg.template or task.template, task.label_space, task.templates)
        pool: tuple[NLIExample, ...] = ()
        same_split = False
        if any(k > 0 for k in cfg.shots):
            pool, same_split = self._shot_pool(task, data)
        return PreparedTask(task, data.split, data.source, SpilledExamples(examples), scoring_order(examples),
                            template, pool, same_split)

    def _shot_pool(self, task: TaskVariant, data: LoadedSplit) -> tuple[tuple[NLIExample, ...], bool]:
        cfg = self.config
        key = task.fewshot_split
        if key and key != data.split and key in task.splits:
            try:
                with notice.policy(strict=cfg.strict, quiet=True):
                    return load_split(task, key, cfg.data_dir).examples, False
            except MissingSplitError:
                pass
        notice.warn(f"task {task.name}: no {key or 'few-shot'} split available; shots come from the "
                    f"evaluated {data.split} split (an example is never its own shot)")
        return data.examples, True

    # -- one model ------------------------------------------------------------------------
    def run(self) -> RunRecord:
        from .backends.base import return_freed_memory, steady_heap
        from .backends.cpu_linear import bound_kernel_caches

        bound_kernel_caches()  # before any model loads; a no-op if this process has run oneDNN already
        if self.owns_process:
            steady_heap()
        cfg = self.config
        started = time.perf_counter()
        with notice.policy(strict=cfg.strict, quiet=not self.ranks.is_main) as warnings:
            prepared = []
            try:
                for name in self.catalog.expand(list(cfg.tasks)):
                    prepared.append(self.prepare(name))
                    return_freed_memory()  # the split as read is gone: its pages go back, not to the model
                last = len(cfg.models) - 1
                records = [self.run_model(spec, prepared, last=i == last) for i, spec in enumerate(cfg.models)]
            finally:
                for prep in prepared:
                    prep.examples.close()
        interrupts.check()  # results.json is written only for a run nobody stopped
        record = RunRecord(
            created=now(), nli_eval_version=__version__, versions=package_versions(),
            config=self._config_dict(time.perf_counter() - started), models=tuple(records),
            warnings=tuple(dict.fromkeys(warnings)))
        if self.out_dir is not None and self.ranks.is_main:
            write_results(self.out_dir, record)
        return record

    def _config_dict(self, seconds: float) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["backend"]["label_map"] = {k: v.value for k, v in (self.config.backend.label_map or {}).items()}
        cfg["processes"] = self.ranks.world
        cfg["seconds"] = round(seconds, 3)
        return cfg

    def run_model(self, spec: str, prepared: Sequence[PreparedTask], last: bool = True) -> ModelRecord:
        cfg = self.config
        ref = resolve(spec, cfg.load.gguf_file)
        fp = fingerprint(ref, cfg.load)
        # The kind comes from the config alone, so a fully cached run never loads weights.
        with collector_paused(), interrupts.held():  # a Ctrl-C here stops the run once the imports are done
            # A checkpoint that nli-eval's own forward runs needs no transformers at all (native.py).
            import_frameworks(freeze=self.owns_process, transformers=False)
            native = native_spec_for(ref, cfg.load, cfg.backend, self._device_name(cfg.load.device))
            if native is None:
                import_frameworks(freeze=self.owns_process)
            config = native if native is not None else load_config(ref, cfg.load)  # imports transformers' configs
        # Scores cached for the same weights under another dtype, context length, BOS rule or label map
        # are not reused: the cache goes by both.
        cached_as = f"{fp}-{self._scoring_digest}"
        kind = detect_kind(config) if cfg.backend.kind == "auto" else cfg.backend.kind
        if kind == "classifier" and any(cfg.shots):
            raise ConfigError(f"model {ref.label} is an NLI classifier head: it takes no shots; use --shots 0")
        started = time.perf_counter()
        scored_before = self.scored_all
        holder: dict[str, Any] = {}

        def backend() -> Any:
            if "backend" not in holder:
                self.log(f"loading {ref.label}")
                # The command line leaves the model's objects out of the collector's passes while it
                # scores (see `collector_paused`), and thaws them before dropping it for the next model.
                # The frameworks' own bars follow the run's: none with --no-progress or off a terminal.
                shown = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
                # The native forward loads without transformers, and so without its bars.
                bars_off = not shown and native is None
                quiet = loading_bars_off(gguf_of(ref, cfg.load) is not None) if bars_off else nullcontext()
                with collector_paused(freeze=self.owns_process), quiet:
                    holder["backend"], holder["params"] = load_backend(ref, cfg.load, cfg.backend, self.ranks.device,
                                                                    config=config, kind=kind, quiet=not shown)

                def record(info: Any) -> None:
                    holder["ran"] = {"device": info.device, "dtype": info.dtype, "max_length": info.max_length,
                                     "details": dict(info.extra)}
                    if self.ranks.is_main:  # at once: a run stopped later still finds it
                        self.cache.save_model_info(cached_as, holder["ran"])

                record(holder["backend"].info)
                if hasattr(holder["backend"], "on_new_info"):  # a native forward that gives way later
                    holder["backend"].on_new_info = record
                interrupts.check()
            return holder["backend"]

        scored: list[ScoredTask] = []
        try:
            for prep in prepared:
                for k in cfg.shots:
                    scored.append(self.score_task(ref.label, cached_as, prep, k, backend))
        finally:
            if "backend" in holder:
                if self.owns_process and not last:
                    gc.unfreeze()
                holder["backend"].close()
        # Predictions are built once the model is released: a long run's per-example records never
        # sit beside the weights and activations, where they would raise the process's peak.
        results = [self.finish_task(ref.label, s) for s in scored]
        params = holder.get("params") or count_from_headers(ref)
        ran = holder.get("ran") or self.cache.model_info(cached_as)  # a model never loaded ran in an earlier run
        details = ran.get("details")
        examples = sum(r.n for r in results)
        scored = self.scored_all - scored_before
        return ModelRecord(
            model=spec, label=ref.label, fingerprint=fp, backend=kind,
            dtype=str(ran.get("dtype") or cfg.load.dtype), device=str(ran.get("device") or ""),
            max_length=ran["max_length"] if isinstance(ran.get("max_length"), int) else None,
            params_total=params.total if params else None,
            params_non_embedding=params.non_embedding if params else None,
            params_source=params.source if params else "unknown",
            results=tuple(results), aggregates=tuple(self._aggregates(results)),
            seconds=round(time.perf_counter() - started, 3), examples_scored=scored,
            examples_cached=examples - scored,
            backend_details={str(k): str(v) for k, v in details.items()} if isinstance(details, dict) else {})

    def _aggregates(self, results: Sequence[TaskResult]) -> list[TaskResult]:
        out = []
        requested = set(self.config.tasks)
        for agg in self.catalog.aggregates.values():
            if agg.name not in requested:
                continue
            for k in self.config.shots:
                parts = [r for r in results if r.task in agg.tasks and r.shots == k]
                if len(parts) == len(agg.tasks):
                    out.append(aggregate(agg.name, parts))
        return out

    def _device_name(self, asked: str) -> str:
        """The device a model loads on: this process's rank's, else the one asked for ("auto" resolved)."""
        return self.ranks.device or (asked if asked != "auto" else resolve_device(asked))

    @functools.cached_property  # the same for every model of a run; torch is imported by the first
    def _scoring_digest(self) -> str:
        """What besides the weights, the prompts and the backend changes a model's scores: the dtype it
        runs in (as resolved for the device), a context-length override, BOS handling, a label map."""
        cfg = self.config
        try:
            dtype = str(torch_dtype(cfg.load.dtype, self.ranks.device or resolve_device(cfg.load.device)))
        except NliEvalError:  # no such device here: a fully cached run still goes by the name asked for
            dtype = cfg.load.dtype
        label_map = sorted((name, label.value) for name, label in (cfg.backend.label_map or {}).items())
        raw = json.dumps([dtype.removeprefix("torch."), cfg.backend.max_length, cfg.backend.add_bos, label_map])
        return hashlib.sha256(raw.encode()).hexdigest()[:8]

    def cache_key(self, fp: str, prep: PreparedTask, k: int) -> CacheKey:
        t = prep.template
        template_id = repr((t.instruction, t.query, sorted((l.value, w) for l, w in t.answers.items()),
                            t.target_delimiter, t.fewshot_delimiter))
        return CacheKey(fp, prep.task.name, prep.split + ":" + prep.source, template_id, k,
                        self.config.seed, self.config.sampling if k else "-", self.config.backend.kind)

    def score_task(self, label: str, fp: str, prep: PreparedTask, k: int, backend: Callable[[], Any]) -> ScoredTask:
        """Score what the cache lacks of one task at k shots, a window of examples at a time."""
        cfg = self.config
        started = time.perf_counter()
        key = self.cache_key(fp, prep, k)
        cached = self.cache.load(key)
        # Every process must shard the same list of examples left to score: none starts writing this
        # key's journal until all have read it (a fast rank's first batches made a slow rank's list
        # shorter, and examples between the two shardings were scored by no one).
        self.ranks.barrier()
        done: dict[str, tuple[dict[Label, float], bool]] = {}
        todo = prep.order
        if cached:
            is_done = bytearray(len(prep.examples))
            for i, ex in enumerate(prep.examples):
                if ex.id in cached:
                    done[ex.id] = cached[ex.id]
                    is_done[i] = 1
            todo = array("q", (i for i in prep.order if not is_done[i]))
        del cached
        start, stop = self.ranks.shard(len(todo))
        mine = todo if (start, stop) == (0, len(todo)) else todo[start:stop]  # one process: no copy
        sheet = ScoreSheet(len(mine))
        scoring_seconds, tokens = 0.0, 0
        if mine:
            sampler = ShotSampler(prep.pool, prep.task.name, cfg.seed, cfg.sampling, prep.same_split)
            if k:
                sampler.check(k)
            model = backend()
            if self.owns_process:  # the allocator's pools a long run would touch one by one: now, at once
                from .backends.base import touch_small_object_pools
                touch_small_object_pools()
            # The scoring phase starts once the model is loaded: prompts are built and scored.
            scoring_started, tokens_before = time.perf_counter(), getattr(model, "tokens_run", 0)
            builder = PromptBuilder(prep.template, prep.task.label_space)
            progress = Progress(cfg.progress, len(mine), f"{label} {prep.task.name} {k}-shot")

            place: dict[int, int] = {}  # id of a prompt handed to the model and not yet scored -> its place

            def on_batch(batch: Sequence[Prompt], scores: Sequence[Mapping[Label, float]]) -> None:
                self.cache.append(key, self.ranks.rank, [p.example.id for p in batch], scores,
                                  [p.truncated for p in batch])
                for p, s in zip(batch, scores):
                    sheet.put(place.pop(id(p)), s, p.truncated)
                self.scored += len(batch)
                progress.update(len(batch))
                interrupts.check()  # after the batch is journaled: stopping here loses nothing

            # The windows are one stream of alike prompts: planned alike, a shared prefix run once.
            streaming = model.stream() if hasattr(model, "stream") else nullcontext()
            try:
                with streaming:
                    for first in range(0, len(mine), STREAM_WINDOW):
                        window = prep.examples.take(mine[first:first + STREAM_WINDOW])
                        prompts = [builder.fit(ex, sampler.draw(ex, k), model.fits) for ex in window]
                        place.update((id(p), first + j) for j, p in enumerate(prompts))
                        # Scores reach the sheet through on_batch, some of a window's in a later call.
                        for p, s in zip(prompts, model.score(prompts, on_batch=on_batch)):
                            if s is not None and id(p) in place:  # a backend that reports no batches
                                sheet.put(place.pop(id(p)), s, p.truncated)
                        del window, prompts  # before the next window's are built, not after
            finally:
                progress.close()
            scoring_seconds = time.perf_counter() - scoring_started
            tokens = getattr(model, "tokens_run", 0) - tokens_before
        return ScoredTask(prep, k, done, mine, sheet, time.perf_counter() - started, scoring_seconds, tokens)

    def finish_task(self, label: str, scored: ScoredTask) -> TaskResult:
        """Predictions, metrics and the samples file of a scored task (the model is released by now)."""
        started = time.perf_counter()
        prep, k = scored.prep, scored.k
        fresh: dict[str, tuple[dict[Label, float], bool]] = {}
        for j, ex in enumerate(prep.examples.take(scored.mine)):
            got = scored.sheet.get(j)
            if got is not None:
                fresh[ex.id] = got
        scored.sheet.close()
        for part in self.ranks.gather(fresh):
            fresh.update(part)
        self.scored_all += len(fresh)
        predictions = []
        for ex in prep.examples:
            scores, truncated = fresh[ex.id] if ex.id in fresh else scored.done[ex.id]
            predictions.append(Prediction(ex.id, ex.label, predict(scores, prep.task.label_space), scores,
                                          truncated, ex.meta))
        n_cut = sum(p.truncated for p in predictions)
        if n_cut:
            notice.warn(f"{label} {prep.task.name} {k}-shot: {n_cut} prompts were cut to fit the model's context")
        seconds = scored.seconds + time.perf_counter() - started
        result = compute(predictions, task=prep.task.name, split=prep.split, shots=k,
                         template=prep.template.name, space=prep.task.label_space, breakdown=prep.task.breakdown,
                         source=prep.source, seconds=round(seconds, 3),
                         scoring_seconds=round(scored.scoring_seconds, 3), tokens=scored.tokens)
        if self.out_dir is not None and self.ranks.is_main:
            write_samples(self.out_dir, label, prep.task.name, k, predictions)
        return result
