"""Results files -> ReportData: one Point per model, task, shot setting and template, grouped in Panels.

Accuracy intervals are recomputed here (Wilson 95%) from correct and n, so every table and plot shows the
same numbers whatever wrote the file. Per-example correctness is read lazily from the samples/ folder
next to each results.json (for McNemar between models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import ResultsError
from ..metrics import TaskResult
from ..results import RunRecord, read_results, samples_path
from ..stats import wilson

# A majority-class rate this far from uniform chance gets its own line and becomes the test baseline.
MAJORITY_MARGIN = 0.005


@dataclass(frozen=True)
class Source:
    path: str
    created: str
    nli_eval_version: str
    split: str | None
    limit: int | None
    seed: int | None


@dataclass(frozen=True)
class ModelInfo:
    label: str
    model: str
    params: int | None
    params_source: str
    fingerprint: str
    source: str          # the results.json it came from


@dataclass(frozen=True)
class Point:
    """One model's score on one task at one shot setting and template."""

    model: ModelInfo
    task: str
    split: str
    shots: int
    template: str
    label_space: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    macro_f1: float
    chance_uniform: float
    chance_majority: float
    majority_label: str
    per_label: tuple[tuple[str, float], ...]   # label -> accuracy on examples of that gold label
    # (task, samples file) per member task: one for a task, several for an aggregate.
    samples: tuple[tuple[str, str], ...] = ()

    @property
    def params(self) -> int | None:
        return self.model.params

    @property
    def series(self) -> tuple[int, str]:
        return (self.shots, self.template)


@dataclass(frozen=True)
class Panel:
    """Every point of one task (or aggregate), with its chance levels and reference lines."""

    task: str
    is_aggregate: bool
    members: tuple[str, ...]
    label_space: str
    chance_uniform: float
    chance_majority: float            # the panel's majority-class rate (max over points when they differ)
    majority_varies: bool
    references: tuple[tuple[str, float], ...]
    points: tuple[Point, ...]

    @property
    def shows_majority(self) -> bool:
        return self.chance_majority - self.chance_uniform > MAJORITY_MARGIN

    @property
    def templates(self) -> tuple[str, ...]:
        return tuple(sorted({p.template for p in self.points}))


@dataclass(frozen=True)
class ReportData:
    sources: tuple[Source, ...]
    models: tuple[ModelInfo, ...]
    panels: tuple[Panel, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def read_all(paths: Sequence[str | Path]) -> list[tuple[Path, RunRecord]]:
    """Read every results file; schema versions must agree and every file must hold results."""
    if not paths:
        raise ResultsError("no results file given; pass one or more results.json files")
    versions = {}
    for path in paths:
        versions[str(path)] = _peek_version(Path(path))
    if len({v for v in versions.values() if v is not None}) > 1:
        listed = ", ".join(f"{p} (version {v})" for p, v in versions.items())
        raise ResultsError(f"results files from different schema versions: {listed}; "
                           "rerun the older evaluations with this nli-eval version")
    records = []
    for path in paths:
        record = read_results(path)
        if not record.models:
            raise ResultsError(f"{path}: holds no models; rerun `nli-eval run` with at least one model")
        if not any(m.results or m.aggregates for m in record.models):
            raise ResultsError(f"{path}: its models have no task results; rerun `nli-eval run`")
        records.append((Path(path), record))
    return records


def _peek_version(path: Path) -> object:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # read_results explains what is wrong with it
    return data.get("schema_version") if isinstance(data, dict) else None


def _point(model: ModelInfo, r: TaskResult, samples: tuple[tuple[str, str], ...]) -> Point:
    ci = wilson(r.correct, r.n)
    return Point(
        model=model, task=r.task, split=r.split, shots=r.shots, template=r.template, label_space=r.label_space,
        n=r.n, correct=r.correct, accuracy=r.correct / r.n if r.n else 0.0, ci_low=ci.low, ci_high=ci.high,
        macro_f1=r.macro_f1, chance_uniform=r.chance_uniform, chance_majority=r.chance_majority,
        majority_label=r.majority_label, per_label=tuple((k, c.accuracy) for k, c in r.per_label.items()),
        samples=samples,
    )


def _references(task: str, is_aggregate: bool) -> tuple[tuple[str, float], ...]:
    """Reference accuracies (e.g. fine-tuned state of the art) from the task file, when the task is known."""
    if is_aggregate:
        return ()
    try:
        from ..taskspec import builtin_catalog
        variant = builtin_catalog().tasks.get(task)
    except Exception:  # a broken task folder must not stop a report  # noqa: BLE001
        return ()
    if variant is None:
        return ()
    return tuple(sorted(variant.references.items(), key=lambda kv: (-kv[1], kv[0])))


def build_data(records: Sequence[tuple[Path, RunRecord]]) -> ReportData:
    sources, models, notes = [], [], []
    points: dict[tuple[str, str, int, str], Point] = {}
    aggregate_members: dict[str, tuple[str, ...]] = {}
    order: list[str] = []
    seen_models: dict[str, ModelInfo] = {}
    for path, record in records:
        cfg = record.config or {}
        sources.append(Source(str(path), record.created, record.nli_eval_version, cfg.get("split"),
                              cfg.get("limit"), cfg.get("seed")))
        out_dir = path.parent
        for m in record.models:
            info = ModelInfo(m.label, m.model, m.params_total, m.params_source, m.fingerprint, str(path))
            prior = seen_models.get(m.label)
            if prior is None:
                seen_models[m.label] = info
                models.append(info)
            elif prior.fingerprint != info.fingerprint or prior.params != info.params:
                raise ResultsError(f"model label {m.label!r} names different models in {prior.source} and {path}; "
                                   "evaluate them under different labels or report them separately")
            else:
                info = prior
            for r, is_agg in [*((r, False) for r in m.results), *((r, True) for r in m.aggregates)]:
                members = r.members if is_agg else (r.task,)
                if is_agg:
                    aggregate_members[r.task] = r.members
                files = tuple((t, str(samples_path(out_dir, m.label, t, r.shots))) for t in members)
                key = (m.label, r.task, r.shots, r.template)
                new = _point(info, r, files)
                old = points.get(key)
                if old is not None and (old.n, old.correct) != (new.n, new.correct):
                    raise ResultsError(f"{m.label} on {r.task} {r.shots}-shot ({r.template}) appears twice with "
                                       f"different scores ({old.model.source} and {path}); pass only one of them")
                points.setdefault(key, new)
                if r.task not in order:
                    order.append(r.task)
    # Tasks in the order they were evaluated, each aggregate after its members.
    tasks = [t for t in order if t not in aggregate_members] + [t for t in order if t in aggregate_members]
    panels = []
    for task in tasks:
        pts = sorted((p for p in points.values() if p.task == task),
                     key=lambda p: (p.shots, p.template, p.params is None, p.params or 0, p.model.label))
        is_agg = task in aggregate_members
        spaces = {p.label_space for p in pts}
        if len(spaces) > 1:
            raise ResultsError(f"task {task} is scored both {' and '.join(sorted(spaces))} in these results; "
                               "report the label spaces separately")
        uniform = pts[0].chance_uniform
        majorities = [p.chance_majority for p in pts]
        varies = max(majorities) - min(majorities) > MAJORITY_MARGIN
        if varies:
            notes.append(f"{task}: the majority-class rate differs between evaluations "
                         f"({100 * min(majorities):.1f}-{100 * max(majorities):.1f}%, different example sets); "
                         "the highest is drawn")
        panels.append(Panel(task=task, is_aggregate=is_agg, members=aggregate_members.get(task, ()),
                            label_space=pts[0].label_space, chance_uniform=uniform,
                            chance_majority=max(majorities), majority_varies=varies,
                            references=_references(task, is_agg), points=tuple(pts)))
    unsized = [m.label for m in models if m.params is None]
    if unsized:
        notes.append(f"no parameter count for {', '.join(unsized)}: shown beside each plot, left out of trends "
                     "and of size comparisons")
    return ReportData(tuple(sources), tuple(models), tuple(panels), tuple(notes))


def load(paths: Sequence[str | Path]) -> ReportData:
    return build_data(read_all(paths))


@dataclass(frozen=True)
class Outcomes:
    """Per-example correctness of one point, keyed '<task>:<example id>'; reason says why it is missing."""

    correct: Mapping[str, bool]
    reason: str = ""


def read_outcomes(point: Point) -> Outcomes:
    correct: dict[str, bool] = {}
    for task, file in point.samples:
        path = Path(file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return Outcomes({}, f"no per-example samples at {path}")
        except (OSError, UnicodeDecodeError) as exc:
            return Outcomes({}, f"cannot read {path} ({exc})")
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                correct[f"{task}:{row['id']}"] = bool(row["correct"])
            except (ValueError, KeyError, TypeError, RecursionError):
                return Outcomes({}, f"{path} line {i} is not a sample record")
    if len(correct) != point.n or sum(correct.values()) != point.correct:
        return Outcomes({}, f"samples for {point.model.label} {point.task} {point.shots}-shot do not match its "
                            f"results ({sum(correct.values())}/{len(correct)} vs {point.correct}/{point.n}); "
                            "were they overwritten by another run?")
    return Outcomes(correct)


def paired_counts(a: Outcomes, b: Outcomes) -> tuple[int, int, int]:
    """(only a right, only b right, shared examples) over the example ids both evaluated."""
    shared = a.correct.keys() & b.correct.keys()
    only_a = sum(1 for k in shared if a.correct[k] and not b.correct[k])
    only_b = sum(1 for k in shared if b.correct[k] and not a.correct[k])
    return only_a, only_b, len(shared)


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
