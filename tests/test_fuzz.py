"""Property tests of every loader and parser: any input is either read correctly or refused with a
one-line NliEvalError, never another exception.

Inputs: arbitrary bytes, text in the wrong encoding, deep nesting, huge lines, missing fields and
values of unexpected types, for the data readers, the release layouts of every built-in task, row
mapping, task TOML files, CI gate specs, results and baseline files, the score cache, and the
--data-files/--fields/--labels strings. Each generated input adds to the count printed at the end of
the session ("generated inputs").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
import os
import string
import tempfile
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from helpers import COUNTS, nli_rows

from nli_eval import gates
from nli_eval.cache import CacheKey, ScoreCache
from nli_eval.cli import _pairs
from nli_eval.custom import build_spec, parse_data_files
from nli_eval.data import _candidates, load_split, rows_to_examples
from nli_eval.errors import NliEvalError
from nli_eval.formats import glue_diagnostic, pandas_tsv, taxinli, unquote
from nli_eval.labels import Label
from nli_eval.modeling import resolve
from nli_eval.readers import FORMATS, read_rows
from nli_eval.results import RunRecord, read_results
from nli_eval.taskspec import builtin_catalog, load_task_file
from nli_eval.templates import resolve_template
from nli_eval.types import NLIExample

# NLI_EVAL_FUZZ_SCALE=20 runs twenty times as many inputs (a deeper search than a CI run needs).
SCALE = float(os.environ.get("NLI_EVAL_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


FUZZ = settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
CATALOG = builtin_catalog()
FILE_TASKS = sorted(name for name, t in CATALOG.tasks.items() if not t.generator)


def counted(test: Callable[..., None]) -> Callable[..., None]:
    """Count each generated input (one hypothesis example) for the end-of-session summary."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        COUNTS["generated inputs (hypothesis examples)"] += 1
        test(*args, **kwargs)
    return run


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn's result, or None when it refused the input with a one-line NliEvalError."""
    COUNTS["loader and parser calls on generated input"] += 1
    try:
        return fn(*args, **kwargs)
    except NliEvalError as exc:
        text = str(exc)
        assert text and len(text.splitlines()) == 1, repr(text)
        return None


@contextlib.contextmanager
def scratch():
    with tempfile.TemporaryDirectory(prefix="nli-fuzz-") as folder:
        yield Path(folder)


# -- strategies ----------------------------------------------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                        st.text(max_size=20))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
label_value = st.one_of(st.sampled_from(["0", "1", "2", 0, 1, 2, 1.0, 2.5, True, "-", "-1", -1, "",
                                         "entailment", "Neutral", " contradiction ", "non-entailment",
                                         "e", "n", "c", "maybe"]), json_value)
odd_text = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "\x00", "a\nb", "\r\n", "\u2028",
                                                            "{", "}", "{split}", "{0}", "{x.y}", "{split!z}",
                                                            "{split:d}", "~nosuchuser/x", "../../x", "/",
                                                            "./a\x00b", "x" * 300, "a/" * 3000]))


def deep(depth: int, kind: str) -> bytes:
    """Nesting deeper than a recursive parser can follow, as JSON and as TOML."""
    if kind == "[":
        return ("[" * depth + "]" * depth).encode()
    if kind == "{":
        return ('{"a":' * depth + "1" + "}" * depth).encode()
    if kind == "a = [":
        return ("a = " + "[" * depth + "]" * depth).encode()
    return ("a = " + "{b = " * depth + "1" + "}" * depth).encode()


raw_bytes = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.tuples(st.text(max_size=100), st.sampled_from(["utf-16", "latin-1", "cp1252", "utf-32"])).map(
        lambda te: te[0].encode(te[1], "replace")),
    st.tuples(st.integers(1, 200_000), st.sampled_from(["[", "{", "a = [", "a = {"])).map(lambda dk: deep(*dk)),
    st.tuples(st.sampled_from([b"a", b"{", b"\t", b",", b'"', b"\xff"]), st.integers(10_000, 3_000_000)).map(
        lambda cn: cn[0] * cn[1]),  # one huge line
    st.lists(json_value, max_size=5).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
)


def row_dict(columns: list[str]) -> st.SearchStrategy[dict]:
    keys = st.one_of(st.sampled_from(columns), st.text(max_size=6))
    values = st.one_of(st.text(max_size=40), label_value, json_value)
    return st.dictionaries(keys, values, max_size=len(columns) + 2)


def render(fmt: str, rows: list[dict], json_key: str | None) -> bytes:
    """Rows in a file format, kept as they are where the format allows (junk stays junk)."""
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "json":
        return json.dumps({json_key: rows} if json_key else rows).encode()
    if fmt == "parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        try:
            pq.write_table(pa.Table.from_pylist(rows), buf)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):  # mixed types: columns of text
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist([{k: None if v is None else json.dumps(v) for k, v in r.items()}
                                                 for r in rows]), buf)
        return buf.getvalue()
    sep = "," if fmt == "csv" else "\t"
    header = list(dict.fromkeys(k for r in rows for k in r))
    lines = [sep.join(header)] + [sep.join("" if r.get(h) is None else str(r.get(h)) for h in header) for r in rows]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def check_examples(examples: list[NLIExample], task) -> None:
    assert len({e.id for e in examples}) == len(examples)
    for e in examples:
        assert isinstance(e.premise, str) and isinstance(e.hypothesis, str)
        assert e.label in task.label_space.labels
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in e.meta.items())


# -- data files ---------------------------------------------------------------------------------

@FUZZ
@given(fmt=st.sampled_from(FORMATS), data=raw_bytes)
@counted
def test_readers_take_any_bytes(fmt, data):
    with scratch() as folder:
        path = folder / f"dev_r1.{fmt}"
        path.write_bytes(data)
        rows = outcome(read_rows, path)
        if rows is None:
            return
        assert all(isinstance(r, dict) for r in rows)
        task = CATALOG.get("anli_r1")
        got = outcome(rows_to_examples, rows, task, "dev", str(path))
        if got is not None:
            check_examples(got[0], task)


@FUZZ
@given(task_name=st.sampled_from(FILE_TASKS), pick=st.integers(0, 50), data=st.data())
@counted
def test_release_layouts_of_every_task(task_name, pick, data):
    """A file at each place a built-in task looks for it (Hub layout and original releases)."""
    task = CATALOG.get(task_name)
    key, hub_split = task.split_name(None)
    with scratch() as folder:
        candidates = _candidates(task, key, hub_split, folder)
        path, layout = candidates[pick % len(candidates)]
        fields = layout.fields if layout else task.fields
        columns = [c for c in (fields.premise, fields.hypothesis, fields.label, fields.id) if c]
        columns += list(task.breakdown) + [c for c in (layout.select if layout else {})]
        fmt = (layout.format if layout and layout.format else None) or path.suffix.lstrip(".")
        fmt = fmt if fmt in FORMATS else "tsv"
        if data.draw(st.booleans()):
            content = data.draw(raw_bytes)
        else:
            rows = data.draw(st.lists(row_dict(columns), max_size=6))
            json_key = None
            if layout and layout.json_key:
                json_key = layout.json_key.format(**{**task.vars, "split": key, "task": task.name})
            content = render(fmt, rows, json_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        loaded = outcome(load_split, task, None, folder)
        if loaded is not None:
            assert loaded.examples
            check_examples(list(loaded.examples), task)


@FUZZ
@given(task_name=st.sampled_from(sorted(CATALOG.tasks)), rows=st.lists(row_dict(
    ["premise", "hypothesis", "label", "uid", "idx", "sentence1", "sentence2", "gold_label", "heuristic"]),
    max_size=8), labels=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.sampled_from(list(Label)),
                                                               max_size=4)))
@counted
def test_rows_to_examples_any_rows_and_labels(task_name, rows, labels):
    task = CATALOG.get(task_name)
    got = outcome(rows_to_examples, rows, task, "test", "fuzz", labels=labels, adapter=task.adapter)
    if got is not None:
        check_examples(got[0], task)


@FUZZ
@given(row=st.dictionaries(st.one_of(st.text(max_size=25), st.sampled_from(
    ["Lexical Semantics", "Logic", "knowledge", "negation_logic", "boolean_logic"])), json_value, max_size=6))
@counted
def test_release_adapters_any_row(row):
    for adapt in (pandas_tsv, taxinli, glue_diagnostic):
        out = outcome(adapt, dict(row))
        assert out is None or isinstance(out, dict)
    for value in row.values():
        unquote(value)


# -- task TOML and gate specs -------------------------------------------------------------------

def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return toml_string(str(value))


def toml_doc(doc: dict) -> str:
    return "".join(f"{toml_string(str(k))} = {toml_value(v)}\n" for k, v in doc.items())


toml_scalar = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), odd_text,
                        st.dates(), st.datetimes(timezones=st.none() | st.just(dt.timezone.utc)))
toml_any = st.recursive(toml_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(odd_text, inner, max_size=3)), max_leaves=8)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """The expected shape, or now and then any TOML value in its place."""
    return st.one_of(strategy, strategy, strategy, toml_any)


def exact(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return strategy


label_names = st.sampled_from(["entailment", "neutral", "contradiction", "non_entailment", "e", "bogus"])
names = st.one_of(st.sampled_from(["fz", "fz_a", "anli_r1", "../../etc/x", "a b", ""]), odd_text)
clean_names = st.sampled_from(["fz", "fz_a", "fz_b", "anli_r1", "../../etc/x", "a b", "x" * 300, "é"])


def task_document(m: Callable[[st.SearchStrategy], st.SearchStrategy], name: st.SearchStrategy) -> st.SearchStrategy:
    """A task TOML document; with m=maybe any value may be of a wrong type, with m=exact only the contents vary."""
    field_map = m(st.dictionaries(st.sampled_from(["premise", "hypothesis", "label", "id", "other"]), name,
                                  max_size=4))
    label_map = m(st.dictionaries(st.sampled_from(["0", "1", "2", "e", "x"]), label_names, max_size=4))
    split_map = m(st.dictionaries(st.sampled_from(["test", "dev", "train"]), name, max_size=3))
    template = m(st.fixed_dictionaries(
        {"query": st.sampled_from(["{premise} {hypothesis}?", "{premise}", "x"]),
         "answers": m(st.dictionaries(label_names, odd_text, max_size=3))},
        optional={"target_delimiter": m(odd_text)}))
    layout = m(st.fixed_dictionaries(
        {"path": m(st.sampled_from(["fz/{split}.jsonl", "fz/{hub_split}.csv", "{task}/{split}.tsv",
                                    "fz/{round}/{split}.json", "{", "{0}", "{task.x}", "{split!z}", "{split:d}",
                                    "../x.jsonl", "/abs/{split}.jsonl"]))},
        optional={"fields": field_map, "labels": label_map, "splits": split_map,
                  "format": m(st.sampled_from(FORMATS + ("xml",))),
                  "adapter": m(st.sampled_from(["pandas_tsv", "taxinli", "glue_diagnostic", "nope"])),
                  "json_key": m(st.sampled_from(["{split}", "data", "{nope}", "{task.x}"])),
                  "select": m(st.dictionaries(name, st.sampled_from(["{split}", "x", "{", "{round.x}"]), max_size=2)),
                  "name": m(name)}))
    variant = m(st.fixed_dictionaries({"name": m(name)}, optional={
        "splits": split_map, "sizes": m(st.dictionaries(name, st.integers(0, 9), max_size=2)),
        "references": m(st.dictionaries(name, st.floats(0, 1), max_size=2)),
        "vars": m(st.dictionaries(st.sampled_from(["round", "table"]), name, max_size=2)),
        "data_files": m(st.dictionaries(st.sampled_from(["test", "dev"]), name, max_size=2)),
        "default_split": m(st.sampled_from(["test", "dev", "x"])), "fewshot_split": m(name),
        "fields": field_map, "labels": label_map, "label_space": m(st.sampled_from(["3way", "2way", "4way"])),
        "breakdown": m(st.lists(name, max_size=2)), "template": m(st.sampled_from(["harness", "gpt3_2way"])),
        "hub": m(st.fixed_dictionaries({}, optional={"path": name, "name": name})),
        "description": m(odd_text)}))
    return st.fixed_dictionaries({}, optional={
        "family": m(name), "label_space": m(st.sampled_from(["3way", "2way", "three", "x"])),
        "fields": field_map, "labels": label_map, "drop_labels": m(st.lists(st.sampled_from(["-", "-1"]))),
        "hub": m(st.fixed_dictionaries({"path": m(name)}, optional={"name": m(name)})),
        "layouts": m(st.lists(layout, max_size=2)), "templates": m(st.dictionaries(name, template, max_size=2)),
        "template": m(st.one_of(st.sampled_from(["harness", "mine", "gpt3_2way"]), template)),
        "splits": split_map, "default_split": m(st.sampled_from(["test", "dev"])),
        "fewshot_split": m(st.sampled_from(["train", "", "dev"])), "variants": m(st.lists(variant, max_size=3)),
        "aggregates": m(st.lists(st.fixed_dictionaries({"name": name, "tasks": m(st.lists(name))}), max_size=2)),
        "generator": m(st.sampled_from(["nope", "diagnostic"])), "adapter": m(st.sampled_from(["taxinli", "x"])),
        "breakdown": m(st.lists(name, max_size=2)), "keep": m(st.lists(name, max_size=2)),
        "data_files": m(st.dictionaries(st.sampled_from(["test"]), name, max_size=1)),
        "citation": m(odd_text), "notes": m(odd_text), "references": m(st.dictionaries(name, st.floats()))})


pattern = st.lists(st.sampled_from(["fz", "/", "{split}", "{hub_split}", "{task}", "{round}", "{", "}", "{0}",
                                    "{task.x}", "{split!r}", "{split:>5}", "{nope}", ".jsonl", ".csv", "..",
                                    "x" * 300, "é"]), min_size=1, max_size=6).map("".join)
skeleton_layout = st.fixed_dictionaries({"path": pattern}, optional={
    "format": st.sampled_from(FORMATS), "json_key": pattern, "select": st.dictionaries(clean_names, pattern, max_size=1),
    "adapter": st.sampled_from(["pandas_tsv", "taxinli", "glue_diagnostic"]),
    "splits": st.dictionaries(st.just("test"), pattern, max_size=1),
    "fields": st.dictionaries(st.sampled_from(["premise", "hypothesis", "label", "id"]), odd_text, max_size=2)})
# Valid task files whose strings (paths, patterns, columns, label keys) are odd: parsing succeeds and
# the file lookup and row mapping behind it get exercised.
task_skeleton = st.fixed_dictionaries({
    "family": clean_names, "default_split": st.just("test"),
    "fields": st.dictionaries(st.sampled_from(["premise", "hypothesis", "label", "id"]), odd_text, max_size=4),
    "labels": st.dictionaries(odd_text, label_names.filter(lambda n: n not in ("bogus", "non_entailment")),
                              max_size=3),
    "layouts": st.lists(skeleton_layout, max_size=2),
    "variants": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["fz", "fz_b"]),
                                                "vars": st.dictionaries(st.just("round"), odd_text, max_size=1),
                                                "splits": st.dictionaries(st.just("test"), pattern, min_size=1)}),
                         min_size=1, max_size=2, unique_by=lambda v: v["name"])},
    optional={"drop_labels": st.lists(odd_text, max_size=2), "breakdown": st.lists(odd_text, max_size=2),
              "adapter": st.sampled_from(["pandas_tsv", "taxinli", "glue_diagnostic"])})
task_doc = st.one_of(task_skeleton, task_document(exact, clean_names), task_document(maybe, names))


def use_task_file(path: Path, data_dir: Path) -> None:
    """Everything a run does with a task file before a model loads: parse, template, split, rows."""
    from nli_eval.cli import describe_task
    from nli_eval.taskspec import build_catalog, catalog_with

    variants, _ = load_task_file(path)
    catalog_with([str(path)])
    build_catalog([path])
    for task in variants:
        describe_task(catalog_with([str(path)]), task.name)
        resolve_template(task.template, task.label_space, task.templates)
        key, hub_split = task.split_name(None)
        for candidate, _ in _candidates(task, key, hub_split, data_dir)[len(FORMATS):]:
            # A file where the first layout points, when that is inside the scratch folder and can exist.
            if candidate.resolve().is_relative_to(data_dir.resolve()):
                with contextlib.suppress(OSError):
                    candidate.parent.mkdir(parents=True, exist_ok=True)
                    candidate.write_text("".join(json.dumps(r) + "\n" for r in nli_rows(3)))
                break
        load_split(task, None, data_dir)  # never the Hub: a data dir is always given


@FUZZ
@given(data=raw_bytes)
@counted
def test_task_file_any_bytes(data):
    with scratch() as folder:
        path = folder / "fz.toml"
        path.write_bytes(data)
        outcome(use_task_file, path, folder / "data")


@settings(FUZZ, max_examples=examples(250))
@given(doc=task_doc)
@counted
def test_task_file_any_document(doc):
    with scratch() as folder:
        path = folder / "fz.toml"
        path.write_text(toml_doc(doc), encoding="utf-8", errors="surrogatepass")
        (folder / "data").mkdir()
        outcome(use_task_file, path, folder / "data")


def spec_document(m: Callable[[st.SearchStrategy], st.SearchStrategy], name: st.SearchStrategy) -> st.SearchStrategy:
    """A CI gate spec document, shaped like task_document."""
    evaluation = st.fixed_dictionaries({}, optional={
        "model": m(name), "shots": m(st.integers(-1, 5)), "split": m(name), "data_dir": m(name),
        "template": m(name), "limit": m(st.integers(-1, 50)), "seed": m(st.integers(-1, 99)),
        "fewshot_sampling": m(st.sampled_from(["fixed", "x"])), "dtype": m(st.sampled_from(["float32", "x"])),
        "batch_size": m(st.sampled_from(["auto", 4, 0])), "device": m(name), "backend": m(name),
        "label_map": m(st.dictionaries(name, label_names, max_size=2)), "task_files": m(st.lists(name, max_size=2))})
    gate = st.builds(lambda e, c: {**e, **c}, evaluation, st.fixed_dictionaries({}, optional={
        "name": m(st.sampled_from(["g1", "g2", "bad name"])), "task": m(name),
        "above_chance": m(st.sampled_from([True, False, "majority", "x"])),
        "min_accuracy": m(st.sampled_from([0.5, 1.5, 50, -0.1])), "baseline": m(name),
        "max_drop": m(st.sampled_from([0.01, 2.0]))}))
    return st.fixed_dictionaries({}, optional={"defaults": m(evaluation), "gate": m(st.lists(gate, max_size=3)),
                                               "extra": toml_any})


spec_doc = st.one_of(spec_document(exact, clean_names), spec_document(maybe, names))


@FUZZ
@given(data=raw_bytes)
@counted
def test_gate_spec_any_bytes(data):
    with scratch() as folder:
        path = folder / "nli_fz.toml"
        path.write_bytes(data)
        outcome(gates.load_spec, path)


@settings(FUZZ, max_examples=examples(250))
@given(doc=spec_doc, override=st.one_of(st.none(), names))
@counted
def test_gate_spec_any_document(doc, override):
    with scratch() as folder:
        path = folder / "nli_fz.toml"
        path.write_text(toml_doc(doc), encoding="utf-8", errors="surrogatepass")
        outcome(gates.load_spec, path, fallback_model=override)


# -- results, baselines, samples and the score cache -------------------------------------------

def valid_results() -> dict:
    from nli_eval.labels import LabelSpace
    from nli_eval.metrics import compute
    from nli_eval.results import ModelRecord, now
    from nli_eval.types import Prediction

    preds = [Prediction(f"x{i}", Label.ENTAILMENT, [Label.ENTAILMENT, Label.NEUTRAL][i % 2],
                        {Label.ENTAILMENT: -0.5, Label.NEUTRAL: -1.0, Label.CONTRADICTION: -2.0}, False,
                        {"probe": "p"}) for i in range(6)]
    result = compute(preds, task="anli_r1", split="dev", shots=0, template="harness", space=LabelSpace.THREE_WAY,
                     breakdown=("probe",))
    model = ModelRecord("m", "m", "fp", "causal", "float32", "cpu", 512, 10, 5, "loaded", (result,), (result,))
    record = RunRecord(now(), "0.1.0", {"torch": "2"}, {"seed": 1}, (model,), ("w",))
    return json.loads(record.to_json())


VALID_RESULTS = valid_results()


def locations(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += locations(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += locations(v, path + (i,))
    return out


RESULT_SPOTS = locations(VALID_RESULTS)[1:]


def mutate(doc: Any, spot: tuple, value: Any, delete: bool) -> Any:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for step in spot[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[spot[-1]]
    else:
        parent[spot[-1]] = value
    return doc


@settings(FUZZ, max_examples=examples(250))
@given(spots=st.lists(st.sampled_from(RESULT_SPOTS), min_size=1, max_size=3), value=json_value,
       delete=st.booleans())
@counted
def test_results_with_missing_fields_and_wrong_types(spots, value, delete):
    doc = VALID_RESULTS
    for spot in spots:
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier change removed the spot
            doc = mutate(doc, spot, value, delete)
    with scratch() as folder:
        path = folder / "results.json"
        path.write_text(json.dumps(doc))
        record = outcome(read_results, path)
        if record is not None:
            check_record(record)


def check_record(record: RunRecord) -> None:
    """Every field read back has its declared type, so reports never meet a string where a count belongs."""
    for m in record.models:
        assert isinstance(m.label, str) and (m.params_total is None or isinstance(m.params_total, int))
        for r in m.results + m.aggregates:
            assert isinstance(r.n, int) and isinstance(r.accuracy, float) and isinstance(r.members, tuple)
            assert all(isinstance(c.n, int) and isinstance(c.ci_low, float) for c in r.per_label.values())
            assert all(isinstance(v, int) for row in r.confusion.values() for v in row.values())


@FUZZ
@given(data=raw_bytes)
@counted
def test_results_any_bytes(data):
    with scratch() as folder:
        path = folder / "results.json"
        path.write_bytes(data)
        outcome(read_results, path)
        path.write_bytes(data.replace(b"[", b'{"schema": "nli-eval/results", "schema_version": 1, "x": [', 1))
        outcome(read_results, path)


@FUZZ
@given(data=st.one_of(raw_bytes, st.builds(lambda d: json.dumps(d).encode(), st.fixed_dictionaries(
    {"schema": st.just("nli-eval/baseline"), "schema_version": st.sampled_from([1, 1.0, True, 2])},
    optional={k: json_value for k in ("per_example", "n", "model", "task", "split", "shots", "template",
                                      "seed", "limit", "created")}))))
@counted
def test_baselines_and_samples_any_bytes(data):
    with scratch() as folder:
        path = folder / "baseline.json"
        path.write_bytes(data)
        outcome(gates.read_baseline, path)
        outcome(gates.read_samples, path)


@FUZZ
@given(data=raw_bytes, torn=st.integers(0, 200))
@counted
def test_score_cache_reads_any_journal(data, torn):
    key = CacheKey("fp", "anli_r1", "dev", "t", 0, 1, "-", "auto")
    with scratch() as folder:
        cache = ScoreCache(folder)
        cache.append(key, 0, ["a", "b"], [{Label.ENTAILMENT: -1.0}] * 2, [False, True])
        journal = next(folder.glob("*.jsonl"))
        journal.write_bytes(journal.read_bytes()[:torn] + data)
        found = cache.load(key)  # never raises: a bad line costs only that example's score
        assert all(isinstance(s, dict) for s, _ in found.values())
        cache.append(key, 0, ["c"], [{Label.NEUTRAL: -2.0}], [False])
        assert "c" in cache.load(key)  # whatever was there, a new line is never glued onto a torn one


# -- --data-files, --fields, --labels and model names ---------------------------------------------

@settings(FUZZ, max_examples=examples(150))
@given(fields=st.one_of(st.text(max_size=40), st.lists(st.tuples(
    st.sampled_from(["premise", "hypothesis", "label", "id", "x", ""]),
    st.sampled_from(["sentence1", "sentence2", "gold", "pairID", "nope", "", "="])), max_size=4).map(
    lambda kv: ",".join(f"{k}={v}" for k, v in kv))),
    labels=st.one_of(st.text(max_size=40), st.lists(st.tuples(
        st.sampled_from(["0", "1", "2", "e", "-", "x"]), label_names), max_size=4).map(
        lambda kv: ",".join(f"{k}={v}" for k, v in kv))),
    rows=st.lists(st.fixed_dictionaries({"sentence1": odd_text, "sentence2": odd_text, "gold": label_value,
                                         "pairID": json_value}), min_size=0, max_size=5),
    ext=st.sampled_from(["jsonl", "csv", "tsv", "json"]))
@counted
def test_custom_data_maps(fields, labels, rows, ext):
    with scratch() as folder:
        path = folder / f"pairs.{ext}"
        path.write_bytes(render(ext, rows, None))

        def build():
            return build_spec(str(path), _pairs(fields, "fields"), _pairs(labels, "labels"))

        outcome(build)


@FUZZ
@given(text=st.one_of(odd_text, st.lists(st.tuples(st.sampled_from(["test", "train", "", "a b"]), odd_text),
                                         max_size=3).map(lambda kv: ",".join(f"{k}={v}" for k, v in kv))))
@example(text="~\x00").via("a home-directory path holding a NUL byte")
@example(text="dev=~\x00x").via("the same as one split's file")
@counted
def test_data_files_flag_any_text(text):
    outcome(parse_data_files, text)


@FUZZ
@given(spec=st.one_of(odd_text, st.text(alphabet=string.printable, max_size=40)))
@counted
def test_model_names_any_text(spec):
    assume(spec not in ("smollm2-135m",))
    ref = outcome(resolve, spec)
    assert ref is None or isinstance(ref.label, str)
