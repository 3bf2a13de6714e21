"""Load a task's split as NLIExamples: from --data-dir files, explicit files, or the Hugging Face Hub."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import notice
from .adapters import get_adapter, get_generator
from .errors import DataError, MissingSplitError
from .fsutil import is_dir, is_file
from .labels import Label, collapse, parse_label_name
from .readers import FORMATS, read_rows
from .taskspec import FieldMap, Layout, TaskVariant
from .types import NLIExample

HUB_HINT = "pass --data-dir DIR with local files (see `nli-eval tasks --details NAME`), or set HF_HUB_OFFLINE=1 with the dataset already cached"


@dataclass(frozen=True)
class LoadedSplit:
    task: str
    split: str          # the split key (test, dev, train, ...)
    source: str         # where the rows came from, for the record
    examples: tuple[NLIExample, ...]
    dropped: int = 0    # unlabelled rows skipped (e.g. SNLI's -1)


def _label_key(value: Any) -> str:
    """A raw label value as the string used in label maps (1, 1.0 and "1" are the same key)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def rows_to_examples(
    rows: Iterable[Mapping[str, Any]],
    task: TaskVariant,
    split: str,
    where: str,
    fields: FieldMap | None = None,
    labels: Mapping[str, Label] | None = None,
    adapter: str | None = None,
    select: Mapping[str, str] | None = None,
) -> tuple[list[NLIExample], int]:
    """Map raw rows to examples by the task's field and label maps; bad rows fail with file and row.

    `select` keeps only rows whose columns hold the given values (a file with every split in it).
    A breakdown field `a*label` groups by column `a` crossed with the gold label's name.
    """
    fields = fields or task.fields
    labels = task.labels if labels is None else labels
    adapt = get_adapter(adapter) if adapter else None
    drop = set(task.drop_labels)
    keep_fields = tuple(dict.fromkeys(task.breakdown + task.keep))
    examples: list[NLIExample] = []
    dropped = 0
    seen: Counter[str] = Counter()
    duplicates = 0
    for index, raw in enumerate(rows):
        rowno = index + 1
        row = adapt(dict(raw)) if adapt else raw
        if row is None:
            continue
        if select and not _selected(row, select, where, rowno):
            continue
        for name in (fields.premise, fields.hypothesis, fields.label):
            if name not in row:
                cols = ", ".join(sorted(map(str, row))[:8])
                raise DataError(f"{where}: row {rowno}: no column {name!r} (columns: {cols}); map it with --fields")
        raw_label = row[fields.label]
        key = _label_key(raw_label) if raw_label is not None else ""
        if key in drop:
            dropped += 1
            continue
        if raw_label is None or key == "":
            raise DataError(f"{where}: row {rowno}: missing label in column {fields.label!r}")
        label = labels.get(key) if labels else parse_label_name(key)
        if label is None:
            known = ", ".join(sorted(labels)) if labels else "entailment, neutral, contradiction"
            raise DataError(f"{where}: row {rowno}: unknown label {raw_label!r} (known: {known}); map it with --labels")
        try:
            label = collapse(label, task.label_space)
        except Exception:
            raise DataError(f"{where}: row {rowno}: label {raw_label!r} is two-way but task {task.name} is three-way") from None
        premise, hypothesis = row[fields.premise], row[fields.hypothesis]
        for col, value in ((fields.premise, premise), (fields.hypothesis, hypothesis)):
            if not isinstance(value, str):
                raise DataError(f"{where}: row {rowno}: column {col!r} holds {type(value).__name__}, expected text")
        if fields.id and fields.id in row and row[fields.id] not in (None, ""):
            ex_id = str(row[fields.id])
        else:
            ex_id = f"{split}-{index}"
        seen[ex_id] += 1
        if seen[ex_id] > 1:
            duplicates += 1
            ex_id = f"{ex_id}#{seen[ex_id]}"
        meta = _meta(row, keep_fields, label)
        examples.append(NLIExample(ex_id, premise, hypothesis, label, meta))
    if duplicates:
        notice.warn(f"{where}: {duplicates} duplicate example ids, made unique with a #N suffix")
    if dropped:
        notice.warn(f"{where}: dropped {dropped} unlabelled rows")
    return examples, dropped


def _selected(row: Mapping[str, Any], select: Mapping[str, str], where: str, rowno: int) -> bool:
    for column, value in select.items():
        if column not in row:
            raise DataError(f"{where}: row {rowno}: no column {column!r} to tell the splits apart")
        if _label_key(row[column]) != value:
            return False
    return True


def _meta(row: Mapping[str, Any], keep: tuple[str, ...], label: Label) -> dict[str, str]:
    meta: dict[str, str] = {}
    for name in keep:
        if name in row:
            if row[name] is not None:
                meta[name] = str(row[name])
        elif "*" in name:  # a crossed breakdown such as heuristic*label
            parts = []
            for part in name.split("*"):
                value = label.value if part == "label" else row.get(part)
                if value is None:
                    break
                parts.append(str(value))
            else:
                meta[name] = "/".join(parts)
    return meta


def _fill(text: str, task: TaskVariant, where: str, **values: str) -> str:
    """A layout's pattern with {split}, {hub_split}, {task} and the variant's {vars} filled in."""
    try:
        return text.format(task=task.name, **{**task.vars, **values})
    except (KeyError, IndexError) as exc:
        raise DataError(f"{task.source}: {where} uses undefined placeholder {exc}") from None
    except (ValueError, AttributeError, TypeError) as exc:  # "{", "{task.x}", "{split:d}"
        raise DataError(f"{task.source}: {where} has a malformed placeholder in {text!r} ({exc}); "
                        "write {{ and }} for literal braces") from None


def _layout_split(task: TaskVariant, layout: Layout, split_key: str) -> str:
    return _fill(layout.splits.get(split_key, split_key), task, f"layout {layout.name} splits")


def _candidates(task: TaskVariant, split_key: str, hub_split: str, data_dir: Path) -> list[tuple[Path, Layout | None]]:
    out: list[tuple[Path, Layout | None]] = []
    folder = data_dir / task.family
    if task.hub and task.hub.name and task.hub.name != task.family:
        folder = folder / task.hub.name  # configs of one Hub dataset share split names (AdvGLUE)
    for ext in FORMATS:
        out.append((folder / f"{hub_split}.{ext}", None))
    for layout in task.layouts:
        name = _layout_split(task, layout, split_key)
        rel = _fill(layout.path, task, f"layout {layout.name}", split=name, hub_split=hub_split)
        out.append((data_dir / rel, layout))
    return out


def find_local(task: TaskVariant, split_key: str, hub_split: str, data_dir: Path) -> tuple[Path, Layout | None] | None:
    for path, layout in _candidates(task, split_key, hub_split, data_dir):
        if is_file(path):
            return path, layout
    return None


def load_split(task: TaskVariant, split: str | None = None, data_dir: str | Path | None = None) -> LoadedSplit:
    """Load one split; `data_dir` files take precedence over the Hub, and never fall back to it silently."""
    key, hub_split = task.split_name(split)
    if task.generator:
        rows = get_generator(task.generator)(hub_split)
        where = f"generated:{task.generator}:{hub_split}"
        examples, dropped = rows_to_examples(rows, task, key, where, adapter=task.adapter)
        return _finish(task, key, where, examples, dropped)
    if key in task.data_files:
        path = Path(task.data_files[key])
        if not path.is_absolute() and task.source and not is_file(path):
            path = Path(task.source).parent / path
        rows = read_rows(path)
        examples, dropped = rows_to_examples(rows, task, key, str(path), adapter=task.adapter)
        return _finish(task, key, str(path), examples, dropped)
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not is_dir(data_dir):
            raise DataError(f"--data-dir {data_dir}: not a directory")
        found = find_local(task, key, hub_split, data_dir)
        if found is None:
            tried = [_shown(p, data_dir) for p, _ in _candidates(task, key, hub_split, data_dir)]
            shown = ", ".join(tried[:2] + tried[len(FORMATS):len(FORMATS) + 2])
            raise MissingSplitError(f"task {task.name} split {key}: no file in {data_dir} (looked for {shown}, ...)")
        path, layout = found
        if layout is None:
            rows = read_rows(path)
            examples, dropped = rows_to_examples(rows, task, key, str(path), adapter=task.adapter)
            return _finish(task, key, str(path), examples, dropped)
        name = _layout_split(task, layout, key)
        json_key = _fill(layout.json_key, task, f"layout {layout.name} json_key", split=name) if layout.json_key else None
        select = {col: _fill(value, task, f"layout {layout.name} select", split=name)
                  for col, value in layout.select.items()}
        rows = read_rows(path, layout.format, json_key)
        where = f"{path}" + (f" [{json_key}]" if json_key else "")
        examples, dropped = rows_to_examples(rows, task, key, where, layout.fields, layout.labels,
                                             layout.adapter or task.adapter, select)
        if not examples and select:
            wanted = ", ".join(f"{c} = {v!r}" for c, v in select.items())
            raise DataError(f"{where}: no rows with {wanted} for task {task.name} split {key}")
        return _finish(task, key, where, examples, dropped)
    return _finish(task, key, *_load_hub(task, key, hub_split))


def _shown(path: Path, data_dir: Path) -> str:
    """A path as the user would write it under --data-dir (a layout may also name an absolute path)."""
    try:
        return str(path.relative_to(data_dir))
    except ValueError:
        return str(path)


def _finish(task: TaskVariant, key: str, source: str, examples: list[NLIExample], dropped: int) -> LoadedSplit:
    if not examples:
        raise DataError(f"task {task.name} split {key} ({source}) has no labelled examples")
    return LoadedSplit(task.name, key, source, tuple(examples), dropped)


def _load_hub(task: TaskVariant, key: str, hub_split: str) -> tuple[str, list[NLIExample], int]:
    if task.hub is None or not task.hub.path:
        raise DataError(f"task {task.name} has no Hub source; {HUB_HINT}")
    try:
        import datasets
    except ImportError:  # pragma: no cover
        raise DataError("loading from the Hub needs the `datasets` package; pip install datasets") from None
    from . import hub as hf_hub

    hub = task.hub
    where = f"{hub.path}{'/' + hub.name if hub.name else ''} split {hub_split}"
    reason = hf_hub.unavailable(datasets=True)  # an unreachable Hub turns offline mode on: the cache answers
    try:
        ds = datasets.load_dataset(hub.path, hub.name, split=hub_split, revision=hub.revision)
    except Exception as exc:  # datasets and huggingface_hub raise many types for one cause
        if reason is not None:
            fix = "load it once with offline mode off" if reason.startswith(hf_hub.OFFLINE_MODE) else (
                "load it once online (a cached dataset then runs offline, HF_HUB_OFFLINE=1)")
            raise DataError(f"task {task.name}: {where} is not in the datasets cache and {reason}; pass --data-dir "
                            f"DIR with local files (see `nli-eval tasks --details {task.name}`), or {fix}") from None
        raise DataError(f"cannot load {where} from the Hub ({_short(exc)}); {HUB_HINT}") from None
    examples, dropped = rows_to_examples(ds, task, key, where, adapter=task.adapter)
    return f"hf://datasets/{hub.path}" + (f"/{hub.name}" if hub.name else "") + f":{hub_split}", examples, dropped


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{name}: {text}" if text else name


def stratified_sample(examples: tuple[NLIExample, ...], n: int, seed: int, task: str) -> tuple[NLIExample, ...]:
    """A seeded sample of n examples with each label's share kept (largest remainder), in file order."""
    if n >= len(examples):
        return examples
    groups: dict[Label, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.label].append(i)
    total = len(examples)
    quotas = {lab: n * len(ix) / total for lab, ix in groups.items()}
    counts = {lab: int(q) for lab, q in quotas.items()}
    left = n - sum(counts.values())
    for lab in sorted(quotas, key=lambda l: (-(quotas[l] - counts[l]), l.value))[:left]:
        counts[lab] += 1
    chosen: list[int] = []
    for lab in sorted(groups, key=lambda l: l.value):
        rng = random.Random(f"{seed}:{task}:limit:{lab.value}")
        chosen.extend(rng.sample(groups[lab], counts[lab]))
    return tuple(examples[i] for i in sorted(chosen))
