"""Read rows from local files (jsonl, json, csv, tsv, parquet) with errors that name file and row."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import DataError

FORMATS = ("jsonl", "json", "parquet", "csv", "tsv")
Row = dict[str, Any]


def detect_format(path: Path) -> str:
    suffixes = [s.lower().lstrip(".") for s in path.suffixes]
    for s in reversed(suffixes):
        if s in FORMATS:
            return s
        if s in ("ndjson",):
            return "jsonl"
        if s == "txt":
            return "tsv"
    raise DataError(f"{path}: unknown file type; use one of .{', .'.join(FORMATS)}")


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); convert the file to UTF-8") from None


def read_jsonl(path: Path) -> Iterator[Row]:
    text = _decode(path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{path}: line {lineno}: JSON nested too deeply to be a data row") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield row


def read_json(path: Path) -> Iterator[Row]:
    text = _decode(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if "Extra data" in exc.msg:  # a .json file that is really JSON lines
            yield from read_jsonl(path)
            return
        raise DataError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a data file") from None
    if isinstance(data, dict):
        # {"data": [...]} or {"train": [...], "dev": [...]} or a columnar {"col": [...]} table.
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if "data" in lists:
            data = lists["data"]
        elif lists and len(lists) == len(data) and all(not v or not isinstance(v[0], dict) for v in lists.values()):
            lengths = {len(v) for v in lists.values()}
            if len(lengths) != 1:
                raise DataError(f"{path}: columns of different lengths")
            n = lengths.pop()
            data = [{k: v[i] for k, v in lists.items()} for i in range(n)]
        elif len(lists) == 1:
            data = next(iter(lists.values()))
        else:
            raise DataError(f"{path}: expected a list of rows; found an object with keys {sorted(data)[:5]}")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of rows, got {type(data).__name__}")
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i}: expected an object, got {type(row).__name__}")
        yield row


def read_json_table(path: Path, key: str) -> Iterator[Row]:
    """Rows of one table in a JSON object that holds several, e.g. AdvGLUE's {"mnli": [...], "rte": [...]}."""
    text = _decode(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a data file") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of tables, got {type(data).__name__}")
    if key not in data:
        raise DataError(f"{path}: no table {key!r} (tables: {', '.join(sorted(map(str, data))[:8])})")
    table = data[key]
    if not isinstance(table, list):
        raise DataError(f"{path}: table {key!r} is {type(table).__name__}, expected a list of rows")
    for i, row in enumerate(table, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: table {key!r} row {i}: expected an object, got {type(row).__name__}")
        yield row


def read_delimited(path: Path, delimiter: str) -> Iterator[Row]:
    text = _decode(path)
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    try:
        csv.field_size_limit(1 << 24)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        for lineno, values in enumerate(reader, start=2):
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataError(
                    f"{path}: row {lineno}: {len(values)} columns where the header has {len(header)}")
            yield dict(zip(header, values))
    except csv.Error as exc:
        raise DataError(f"{path}: malformed {'CSV' if delimiter == ',' else 'TSV'} ({exc})") from None


def read_parquet(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with datasets
        raise DataError("reading parquet needs pyarrow; pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
    yield from table.to_pylist()


READERS: dict[str, Callable[[Path], Iterator[Row]]] = {
    "jsonl": read_jsonl,
    "json": read_json,
    "csv": lambda p: read_delimited(p, ","),
    "tsv": lambda p: read_delimited(p, "\t"),
    "parquet": read_parquet,
}


def read_rows(path: Path, fmt: str | None = None, key: str | None = None) -> list[Row]:
    """All rows of a file; `key` names the table to read in a JSON file that holds several."""
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise DataError(f"{path}: unknown format {fmt!r}; use one of {', '.join(READERS)}")
    if key is not None:
        if fmt != "json":
            raise DataError(f"{path}: a table key ({key!r}) applies to JSON files only, not {fmt}")
        return list(read_json_table(path, key))
    return list(READERS[fmt](path))
