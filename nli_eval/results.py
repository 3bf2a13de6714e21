"""The run record: results.json (schema below) and per-example sample files.

results.json, schema_version 1:
  {"schema": "nli-eval/results", "schema_version": 1, "created": ISO time,
   "nli_eval_version", "versions": {package: version}, "config": {flags of the run},
   "warnings": [text],
   "models": [{"model", "label", "fingerprint", "backend", "dtype", "device", "max_length",
               "params_total", "params_non_embedding", "params_source", "seconds",
               "examples_scored", "examples_cached",
               "results": [TaskResult...], "aggregates": [TaskResult...]}]}
  TaskResult: task, split, shots, template, label_space, n, correct, accuracy, ci_low, ci_high
  (Wilson 95%), macro_f1, chance_uniform, chance_majority, majority_label, p_value_vs_chance
  (exact binomial, two-sided, against uniform chance), per_label {label: Cell}, confusion
  {gold: {predicted: count}}, predicted_distribution {label: count}, breakdowns {field: {value:
  Cell}}, truncated, members (aggregates), source, seconds. Cell: n, correct, accuracy, ci_low, ci_high.
samples/<model>/<task>_<k>shot.jsonl: one line per example: id, gold, predicted, correct, scores
  {label: log-probability}, truncated, meta.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
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


def _cells(raw: Mapping[str, Any]) -> dict[str, Cell]:
    return {k: Cell(**v) for k, v in raw.items()}


def task_result_from(raw: Mapping[str, Any]) -> TaskResult:
    data = dict(raw)
    data["per_label"] = _cells(data.get("per_label", {}))
    data["breakdowns"] = {f: _cells(v) for f, v in data.get("breakdowns", {}).items()}
    data["members"] = tuple(data.get("members", ()))
    return TaskResult(**data)


def model_record_from(raw: Mapping[str, Any]) -> ModelRecord:
    data = dict(raw)
    data["results"] = tuple(task_result_from(r) for r in data.get("results", ()))
    data["aggregates"] = tuple(task_result_from(r) for r in data.get("aggregates", ()))
    return ModelRecord(**data)


def read_results(path: str | Path) -> RunRecord:
    """Read a results.json; wrong schema, version or shape is a ResultsError naming the file."""
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
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not an nli-eval results file (no \"schema\": \"{SCHEMA}\")")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: results schema version {version}, this nli-eval reads version {SCHEMA_VERSION}; "
            "rerun the evaluation with this version")
    try:
        return RunRecord(
            created=data["created"], nli_eval_version=data["nli_eval_version"], versions=data["versions"],
            config=data["config"], models=tuple(model_record_from(m) for m in data["models"]),
            warnings=tuple(data.get("warnings", ())), schema_version=version)
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsError(f"{path}: malformed results ({type(exc).__name__}: {exc})") from None


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
