"""Your own NLI data without code: `--data-files PATH [--fields ...] [--labels ...]` becomes a task file.

The columns are guessed from common names (`sentence1`, `context`, `gold_label`, ...) unless
`--fields` names them; label names (entailment, neutral, contradiction, non_entailment and their
usual spellings) are read by name. Numeric labels mean different things in different datasets
(SuperGLUE CB's 1 is contradiction, MNLI's is neutral, `roberta-large-mnli` predicts 0 for
contradiction), so they are never guessed: `--labels 0=entailment,1=neutral,2=contradiction` says
what they mean. Everything is checked against the file before a model loads, with one-line errors
naming the file and row. The result is an ordinary task TOML file for a task named `custom`, the
same one a user could write and pass with `--task-file`.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError, DataError
from .fsutil import exists, is_file, user_path
from .labels import Label, label_from_name, parse_label_name
from .readers import detect_format, read_rows

TASK_NAME = "custom"
FIELDS = ("premise", "hypothesis", "label", "id")
# Column names seen in NLI releases and on the Hub, most specific first; matched case-insensitively.
GUESSES: Mapping[str, tuple[str, ...]] = {
    "premise": ("premise", "sentence1", "sentence_a", "sentence_1", "context", "text_a", "prem", "s1", "text"),
    "hypothesis": ("hypothesis", "sentence2", "sentence_b", "sentence_2", "text_b", "hyp", "s2", "claim",
                   "statement"),
    "label": ("label", "gold_label", "gold", "labels", "entailment_label", "label_text", "class", "target"),
    "id": ("id", "uid", "pairid", "pair_id", "idx", "guid", "example_id"),
}
# Rows whose label says "no gold label" (SNLI and MultiNLI's '-', GLUE's -1) are dropped, unless mapped.
UNLABELLED = ("-", "-1")
_NUMBER = re.compile(r"^-?\d+(\.0+)?$")


@dataclass(frozen=True)
class CustomSpec:
    """What a custom task file says: the files by split, the column map and the label map."""

    files: Mapping[str, Path]
    fields: Mapping[str, str]
    labels: Mapping[str, Label]
    drop_labels: tuple[str, ...]
    two_way: bool


def custom_task_file(data_files: str, fields: dict[str, str], labels: dict[str, str]) -> str:
    """Check the user's files and maps and write a task TOML for the task `custom`; return its path."""
    spec = build_spec(data_files, fields, labels)
    folder = Path(tempfile.mkdtemp(prefix="nli-eval-custom-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "custom.toml"
    path.write_text(render_toml(spec), encoding="utf-8")
    return str(path)


def parse_data_files(text: str) -> dict[str, Path]:
    """`PATH` (the test split) or `SPLIT=PATH,SPLIT=PATH` (e.g. test=a.csv,train=b.csv for shots)."""
    files: dict[str, Path] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        split, sep, path = part.partition("=")
        if not sep:
            split, path = "test", part
        split, path = split.strip(), path.strip()
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", split) or not path:
            raise ConfigError(f"--data-files: expected PATH or SPLIT=PATH, got {part!r}")
        if split in files:
            raise ConfigError(f"--data-files: two files for split {split!r}; give each split one file, "
                              "e.g. test=a.jsonl,train=b.jsonl")
        files[split] = user_path(path)
    if not files:
        raise ConfigError("--data-files: no file given")
    for path in files.values():
        if not is_file(path):
            raise DataError(f"{path}: file not found" if not exists(path) else f"{path}: not a file")
        detect_format(path)  # an unknown extension fails here, naming the file
    return files


def build_spec(data_files: str, fields: Mapping[str, str], labels: Mapping[str, str]) -> CustomSpec:
    files = parse_data_files(data_files)
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ConfigError(f"--fields: unknown field {unknown[0]!r}; use premise, hypothesis, label or id")
    label_map: dict[str, Label] = {}
    for value, name in labels.items():
        try:
            label_map[value] = label_from_name(name)
        except ConfigError as exc:
            raise ConfigError(f"--labels {value}={name}: {exc}") from None
    columns: dict[str, str] | None = None
    seen_labels: list[tuple[Path, int, Any]] = []
    for path in files.values():
        rows = read_rows(path)
        if not rows:
            raise DataError(f"{path}: no rows (the file is empty or has only a header)")
        mapped = _columns(path, rows[0], fields)
        if columns is not None and mapped != columns:
            raise DataError(f"{path}: columns differ from the other files ({_describe(mapped)} vs "
                            f"{_describe(columns)}); map them with --fields")
        columns = mapped
        for rowno, row in enumerate(rows, start=1):
            for role in ("premise", "hypothesis", "label"):
                if columns[role] not in row:
                    raise DataError(f"{path}: row {rowno}: no column {columns[role]!r} (the {role})")
            seen_labels.append((path, rowno, row[columns["label"]]))
    assert columns is not None
    drop = tuple(v for v in UNLABELLED if v not in label_map)
    _check_labels(seen_labels, label_map, drop)
    names = set(label_map.values()) if label_map else {
        parse_label_name(_key(v)) for _, _, v in seen_labels if _key(v) not in drop}
    return CustomSpec(files=files, fields=columns, labels=label_map, drop_labels=drop,
                      two_way=Label.NON_ENTAILMENT in names)


def _describe(columns: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in columns.items())


def _columns(path: Path, first: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, str]:
    """The column of each role: the user's, else the first common name the file has."""
    available = [str(c) for c in first]
    shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
    by_lower: dict[str, str] = {}
    for col in available:
        by_lower.setdefault(col.strip().lower(), col)
    out: dict[str, str] = {}
    for role in FIELDS:
        if role in fields:
            if fields[role] not in first:
                raise DataError(f"{path}: row 1: no column {fields[role]!r} for the {role} "
                                f"(columns: {shown}); fix --fields")
            out[role] = fields[role]
            continue
        present = [by_lower[name] for name in GUESSES[role] if name in by_lower]
        if role == "label":  # a mirror with both `label` (ids) and `gold_label` (names): read the names
            named = [c for c in present if isinstance(first[c], str) and parse_label_name(first[c])]
            present = named + [c for c in present if c not in named]
        guess = present[0] if present else None
        if guess is None:
            if role == "id":
                continue  # ids default to the row number
            raise DataError(f"{path}: cannot tell which column holds the {role} (columns: {shown}); "
                            f"name it with --fields {role}=COLUMN")
        out[role] = guess
    taken = [out[r] for r in ("premise", "hypothesis", "label")]
    if len(set(taken)) < 3:
        raise DataError(f"{path}: premise, hypothesis and label must be different columns, got "
                        f"{_describe({r: out[r] for r in ('premise', 'hypothesis', 'label')})}; fix --fields")
    return out


def _key(value: Any) -> str:
    """A label value as the key label maps use (1, 1.0 and "1" are the same label)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "numeric text" if _NUMBER.match(value.strip()) else "text"
    return f"a {type(value).__name__}"


def _check_labels(seen: Sequence[tuple[Path, int, Any]], label_map: Mapping[str, Label],
                  drop: tuple[str, ...]) -> None:
    """Fail on the first label that is missing, of another kind than the rest, or outside the map."""
    first: tuple[str, Path, int] | None = None  # kind of the first labelled row, and where it is
    numbers: list[str] = []
    for path, rowno, value in seen:
        key = _key(value)
        if key in drop:
            continue
        if key == "":
            raise DataError(f"{path}: row {rowno}: missing label")
        if not isinstance(value, (str, int, float)):
            raise DataError(f"{path}: row {rowno}: label {value!r} is {_kind(value)}; a label is a name or a number")
        kind = "name" if _kind(value) == "text" else "number"
        if first is None:
            first = (kind, path, rowno)
        elif kind != first[0]:
            where = f"row {first[2]}" + ("" if first[1] == path else f" of {first[1]}")
            raise DataError(f"{path}: row {rowno}: label {value!r} is {_kind(value)} but {where} has a "
                            f"{first[0]} label; use one kind of label throughout")
        if label_map:
            if key not in label_map:
                known = ", ".join(sorted(label_map))
                raise DataError(f"{path}: row {rowno}: label {value!r} is not in --labels ({known})")
        elif kind == "number":
            if key not in numbers:
                numbers.append(key)
        elif parse_label_name(key) is None:
            raise DataError(f"{path}: row {rowno}: unknown label {value!r}; use entailment, neutral, "
                            "contradiction or non_entailment, or map it with --labels VALUE=NAME")
    if first is None:
        path = seen[0][0]
        raise DataError(f"{path}: every row is unlabelled ({' or '.join(drop)}); nothing to evaluate")
    if numbers:
        values = sorted(numbers, key=float)
        example = ",".join(f"{n}={name}" for n, name in zip(values, ("entailment", "neutral", "contradiction")))
        raise DataError(f"{first[1]}: row {first[2]}: labels are numbers ({', '.join(values)}) whose meaning "
                        f"differs between datasets; say what they mean with --labels, e.g. {example}")


def _toml(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def render_toml(spec: CustomSpec) -> str:
    """The task file for a spec, in the same format as the built-in `tasks/*.toml`."""
    test = "test" if "test" in spec.files else next(iter(spec.files))
    lines = [
        "# Written by nli-eval for --data-files; pass an edited copy with --task-file to reuse it.",
        f"family = {_toml(TASK_NAME)}",
        f"description = {_toml('Your data: ' + ', '.join(str(p) for p in spec.files.values()))}",
        f"label_space = {_toml('2way' if spec.two_way else '3way')}",
        f"default_split = {_toml(test)}",
        f"fewshot_split = {_toml('train' if 'train' in spec.files else '')}",
        "license = \"your data's own\"",
        f"drop_labels = [{', '.join(_toml(v) for v in spec.drop_labels)}]",
        "",
        "[fields]",
        *(f"{role} = {_toml(col)}" for role, col in spec.fields.items()),
        "",
        "[labels]",
        *(f"{_toml(value)} = {_toml(label.value)}" for value, label in spec.labels.items()),
        "",
        "[[variants]]",
        f"name = {_toml(TASK_NAME)}",
        "splits = { " + ", ".join(f"{_toml(s)} = {_toml(s)}" for s in spec.files) + " }",
        "data_files = { " + ", ".join(f"{_toml(s)} = {_toml(str(p.resolve()))}" for s, p in spec.files.items())
        + " }",
        "",
    ]
    return "\n".join(lines)
