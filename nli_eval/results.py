"""The run record: results.json (schema below) and per-example sample files.

results.json, schema_version 1:
  {"schema": "nli-eval/results", "schema_version": 1, "created": ISO time,
   "nli_eval_version", "versions": {package: version}, "config": {flags of the run},
   "warnings": [text],
   "models": [{"model", "label", "fingerprint", "backend", "dtype", "device", "max_length",
               "params_total", "params_non_embedding", "params_source", "seconds",
               "examples_scored", "examples_cached", "backend_details" {name: text},
               "results": [TaskResult...], "aggregates": [TaskResult...]}]}
  TaskResult: task, split, shots, template, label_space, n, correct, accuracy, ci_low, ci_high
  (Wilson 95%), macro_f1, chance_uniform, chance_majority, majority_label, p_value_vs_chance
  (exact binomial, two-sided, against uniform chance), per_label {label: Cell}, confusion
  {gold: {predicted: count}}, predicted_distribution {label: count}, breakdowns {field: {value:
  Cell}}, truncated, members (aggregates), source, seconds, scoring_seconds
  (prompt building and scoring of uncached examples), tokens (model tokens run for them). Cell: n, correct, accuracy, ci_low, ci_high.
samples/<model>/<task>_<k>shot.jsonl: one line per example: id, gold, predicted, correct, scores
  {label: log-probability}, truncated, meta.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as _dt
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ResultsError
from .fsutil import atomic_write, inside, safe_name
from .metrics import Cell, TaskResult
from .types import Prediction

SCHEMA = "nli-eval/results"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelRecord:
    model: str
    label: str
    fingerprint: str
    backend: str
    dtype: str
    device: str
    max_length: int | None
    params_total: int | None
    params_non_embedding: int | None
    params_source: str
    results: tuple[TaskResult, ...]
    aggregates: tuple[TaskResult, ...] = ()
    seconds: float = 0.0
    examples_scored: int = 0   # scored by the model in this run (this process)
    examples_cached: int = 0   # read back from the resumable cache
    backend_details: Mapping[str, str] = field(default_factory=dict)  # what ran, e.g. packed CPU layers


@dataclass(frozen=True)
class RunRecord:
    created: str
    nli_eval_version: str
    versions: Mapping[str, str]
    config: Mapping[str, Any]
    models: tuple[ModelRecord, ...]
    warnings: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        data = {"schema": SCHEMA, **dataclasses.asdict(self)}
        return json.dumps(data, indent=2, sort_keys=False) + "\n"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _typed(tp: Any, value: Any, where: str) -> Any:
    """A JSON value as the annotated type (dataclasses, tuples, mappings, numbers), or a ResultsError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        last: ResultsError | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _typed(arg, value, where)
            except ResultsError as exc:
                last = exc
        raise last or ResultsError(f"{where}: unexpected null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ResultsError(f"{where}: expected an object, got {_kind(value)}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _typed(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ResultsError(f"{where}: missing {f.name!r}")
        return tp(**kwargs)  # keys a newer writer added are ignored
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ResultsError(f"{where}: expected a list, got {_kind(value)}")
        item = typing.get_args(tp)[0]
        return tuple(_typed(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise ResultsError(f"{where}: expected an object, got {_kind(value)}")
        _, item = typing.get_args(tp)
        return {str(k): _typed(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ResultsError(f"{where}: expected a number, got {_kind(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ResultsError(f"{where}: expected a whole number, got {_kind(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ResultsError(f"{where}: expected {'text' if tp is str else 'true or false'}, got {_kind(value)}")
        return value
    raise TypeError(f"no JSON reading for {tp!r}")  # pragma: no cover - a field type this module lacks


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def task_result_from(raw: Mapping[str, Any], where: str = "result") -> TaskResult:
    return _typed(TaskResult, raw, where)


def model_record_from(raw: Mapping[str, Any], where: str = "model") -> ModelRecord:
    return _typed(ModelRecord, raw, where)


def read_results(path: str | Path) -> RunRecord:
    """Read a results.json; wrong schema, version, shape or types is a ResultsError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read ({exc})") from None
    if not text.strip():
        raise ResultsError(f"{path}: empty file; rerun `nli-eval run` to produce results")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ResultsError(f"{path}: JSON nested too deeply to be a results file") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not an nli-eval results file (no \"schema\": \"{SCHEMA}\")")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ResultsError(
            f"{path}: results schema version {version}, this nli-eval reads version {SCHEMA_VERSION}; "
            "rerun the evaluation with this version")
    try:
        return _typed(RunRecord, data, "results")
    except ResultsError as exc:
        raise ResultsError(f"{path}: malformed results ({exc})") from None


def write_results(out_dir: Path, record: RunRecord) -> Path:
    path = inside(out_dir, "results.json")
    atomic_write(path, record.to_json())
    return path


def samples_path(out_dir: Path, model_label: str, task: str, shots: int) -> Path:
    return inside(out_dir, "samples", safe_name(model_label), f"{safe_name(task)}_{shots}shot.jsonl")


def write_samples(out_dir: Path, model_label: str, task: str, shots: int, predictions: Sequence[Prediction]) -> Path:
    path = samples_path(out_dir, model_label, task, shots)
    lines = []
    for p in predictions:
        lines.append(json.dumps({
            "id": p.id, "gold": p.gold.value, "predicted": p.predicted.value, "correct": p.correct,
            "scores": {k.value: round(v, 6) for k, v in p.scores.items()},
            "truncated": p.truncated, "meta": dict(p.meta),
        }, ensure_ascii=False))
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def package_versions() -> dict[str, str]:
    from importlib import metadata
    out = {}
    for name in ("nli-eval", "torch", "transformers", "datasets", "accelerate", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
