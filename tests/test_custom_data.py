"""Custom data without code: --data-files with guessed or given columns and labels, and the TOML equivalent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import write_jsonl

from nli_eval.cli import main
from nli_eval.custom import build_spec, custom_task_file, render_toml
from nli_eval.data import load_split
from nli_eval.errors import ConfigError, DataError
from nli_eval.labels import Label, LabelSpace
from nli_eval.taskspec import catalog_with, parse_family

E, N, C, NE = Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION, Label.NON_ENTAILMENT
PAIRS = [("A cat sleeps on the warm roof.", "An animal is resting."),
         ("Three boys kick a ball in the yard.", "The boys are swimming."),
         ("A baker lifts a tray of bread.", "The bread is fresh.")]


def load_custom(data_files: str, fields: dict | None = None, labels: dict | None = None, split: str | None = None):
    path = custom_task_file(data_files, fields or {}, labels or {})
    task = catalog_with([path]).get("custom")
    return task, load_split(task, split)


def write_table(path: Path, header: list[str], rows: list[list], sep: str) -> Path:
    path.write_text("\n".join(sep.join(map(str, r)) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_any(path: Path, header: list[str], rows: list[list]) -> Path:
    """The same table as jsonl, json, csv, tsv or parquet, by the file's extension."""
    records = [dict(zip(header, r)) for r in rows]
    fmt = path.suffix.lstrip(".")
    if fmt == "jsonl":
        return write_jsonl(path, records)
    if fmt == "json":
        path.write_text(json.dumps(records), encoding="utf-8")
        return path
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
        return path
    return write_table(path, header, rows, "," if fmt == "csv" else "\t")


@pytest.mark.parametrize("ext", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_every_format_with_guessed_columns(ext, tmp_path):
    header = ["pairID", "sentence1", "sentence2", "gold_label"]
    rows = [[f"x{i}", p, h, lab] for i, ((p, h), lab) in enumerate(zip(PAIRS, ["entailment", "contradiction",
                                                                                "neutral"]))]
    path = write_any(tmp_path / f"mine.{ext}", header, rows)
    task, loaded = load_custom(str(path))
    assert task.name == "custom" and task.label_space is LabelSpace.THREE_WAY
    assert (task.fields.premise, task.fields.hypothesis, task.fields.label, task.fields.id) == (
        "sentence1", "sentence2", "gold_label", "pairID")
    assert [e.label for e in loaded.examples] == [E, C, N]
    assert [e.id for e in loaded.examples] == ["x0", "x1", "x2"]
    assert loaded.examples[0].premise == PAIRS[0][0] and loaded.source == str(path.resolve())


def test_common_names_are_guessed(tmp_path):
    # ANLI's release spelling: `context` and one-letter labels.
    path = write_jsonl(tmp_path / "r1.jsonl", [{"uid": "a", "context": p, "hypothesis": h, "label": lab}
                                               for (p, h), lab in zip(PAIRS, "enc")])
    task, loaded = load_custom(str(path))
    assert task.fields.premise == "context" and task.fields.id == "uid"
    assert [e.label for e in loaded.examples] == [E, N, C]
    # A mirror with both integer ids and names: the names are read, nothing is guessed about the ids.
    path = write_jsonl(tmp_path / "mirror.jsonl", [{"premise": p, "hypothesis": h, "label": 2, "gold_label": "entailment"}
                                                   for p, h in PAIRS])
    task, loaded = load_custom(str(path))
    assert task.fields.label == "gold_label" and {e.label for e in loaded.examples} == {E}


def test_two_way_labels_make_a_two_way_task(tmp_path):
    path = write_table(tmp_path / "rte.tsv", ["sentence1", "sentence2", "label"],
                       [[p, h, lab] for (p, h), lab in zip(PAIRS, ["entailment", "not_entailment", "entailment"])], "\t")
    task, loaded = load_custom(str(path))
    assert task.label_space is LabelSpace.TWO_WAY and [e.label for e in loaded.examples] == [E, NE, E]


def test_numeric_labels_need_a_map_in_roberta_order(tmp_path):
    # Labels written in roberta-large-mnli's id order: 0 contradiction, 1 neutral, 2 entailment; -1 unlabelled.
    path = write_jsonl(tmp_path / "ids.jsonl", [{"premise": p, "hypothesis": h, "label": lab}
                                                for (p, h), lab in zip(PAIRS * 2, [2, 0, 1, -1, 2, 0])])
    with pytest.raises(DataError, match=r"ids\.jsonl: row 1: labels are numbers \(0, 1, 2\) whose meaning differs"
                                        r".*--labels, e\.g\. 0=entailment,1=neutral,2=contradiction"):
        custom_task_file(str(path), {}, {})
    task, loaded = load_custom(str(path), labels={"0": "contradiction", "1": "neutral", "2": "entailment"})
    assert [e.label for e in loaded.examples] == [E, C, N, E, C]
    assert loaded.dropped == 1 and "-1" in task.drop_labels


def test_explicit_fields_and_splits(tmp_path):
    header = ["q", "a", "verdict", "key"]
    test = write_table(tmp_path / "t.csv", header, [[p, h, lab, i] for i, ((p, h), lab) in
                                                    enumerate(zip(PAIRS, ["yes", "no", "yes"]))], ",")
    train = write_table(tmp_path / "tr.csv", header, [[p, h, "no", f"t{i}"] for i, (p, h) in enumerate(PAIRS)], ",")
    fields = {"premise": "q", "hypothesis": "a", "label": "verdict", "id": "key"}
    labels = {"yes": "entailment", "no": "non_entailment"}
    task, loaded = load_custom(f"test={test},train={train}", fields, labels)
    assert task.fewshot_split == "train" and task.label_space is LabelSpace.TWO_WAY
    assert [e.label for e in loaded.examples] == [E, NE, E] and loaded.examples[2].id == "2"
    shots = load_split(task, "train")
    assert [e.id for e in shots.examples] == ["t0", "t1", "t2"]


def test_the_generated_file_is_an_ordinary_task_file(tmp_path):
    path = write_jsonl(tmp_path / 'we"ird.jsonl', [{"premise": p, "hypothesis": h, "label": "neutral"} for p, h in PAIRS])
    spec = build_spec(str(path), {}, {})
    (variant,), _ = parse_family(__import__("tomllib").loads(render_toml(spec)), "custom.toml")
    assert variant.name == "custom" and variant.data_files == {"test": str(path.resolve())}
    assert variant.drop_labels == ("-", "-1") and variant.labels == {}


def test_same_task_written_by_hand_with_task_file(tmp_path):
    (tmp_path / "data").mkdir()
    write_table(tmp_path / "data" / "pairs.tsv", ["s1", "s2", "y"], [[p, h, lab] for (p, h), lab in zip(PAIRS, ["E", "N", "C"])], "\t")
    toml = tmp_path / "mine.toml"
    toml.write_text("""
family = "mine"
label_space = "3way"
fewshot_split = ""
[fields]
premise = "s1"
hypothesis = "s2"
label = "y"
[labels]
E = "entailment"
N = "neutral"
C = "contradiction"
[[variants]]
name = "mine"
splits = { test = "test" }
data_files = { test = "data/pairs.tsv" }
""", encoding="utf-8")
    task = catalog_with([str(toml)]).get("mine")
    loaded = load_split(task)  # the data file is found next to the task file
    assert [e.label for e in loaded.examples] == [E, N, C]
    (tmp_path / "data" / "pairs.tsv").write_text("s1\ts2\ty\na\tb\tX\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs\.tsv: row 1: unknown label 'X' \(known: C, E, N\)"):
        load_split(task)


BAD = {
    "unknown column": (lambda d: write_jsonl(d / "u.jsonl", [{"premise": "p", "hypothesis": "h", "label": "neutral"}]),
                       {"fields": {"premise": "text"}},
                       r"u\.jsonl: row 1: no column 'text' for the premise \(columns: premise, hypothesis, label\)"),
    "impossible guess": (lambda d: write_table(d / "g.csv", ["a", "b", "c"], [["x", "y", "z"]], ","), {},
                         r"g\.csv: cannot tell which column holds the premise \(columns: a, b, c\); "
                         r"name it with --fields premise=COLUMN"),
    "label outside the map": (lambda d: write_jsonl(d / "m.jsonl", [{"premise": "p", "hypothesis": "h", "label": v}
                                                                      for v in (0, 1, 3)]),
                              {"labels": {"0": "entailment", "1": "neutral", "2": "contradiction"}},
                              r"m\.jsonl: row 3: label 3 is not in --labels \(0, 1, 2\)"),
    "unknown label name": (lambda d: write_jsonl(d / "n.jsonl", [{"premise": "p", "hypothesis": "h", "label": "maybe"}]),
                           {}, r"n\.jsonl: row 1: unknown label 'maybe'; .*--labels VALUE=NAME"),
    "mixed label types": (lambda d: write_jsonl(d / "x.jsonl", [{"premise": "p", "hypothesis": "h", "label": v}
                                                                  for v in (0, "neutral")]),
                          {"labels": {"0": "entailment", "neutral": "neutral"}},
                          r"x\.jsonl: row 2: label 'neutral' is text but row 1 has a number label"),
    "mixed label types in a csv": (lambda d: write_table(d / "x.csv", ["premise", "hypothesis", "label"],
                                                         [["p", "h", "entailment"], ["p", "h", "2"]], ","), {},
                                   r"x\.csv: row 2: label '2' is numeric text but row 1 has a name label"),
    "empty file": (lambda d: write_text(d / "e.jsonl", ""), {},
                   r"e\.jsonl: no rows \(the file is empty or has only a header\)"),
    "header only": (lambda d: write_table(d / "h.csv", ["premise", "hypothesis", "label"], [], ","), {},
                    r"h\.csv: no rows"),
    "ragged tsv": (lambda d: write_table(d / "r.tsv", ["premise", "hypothesis", "label"],
                                         [["p", "h", "neutral"], ["p", "neutral"]], "\t"), {},
                   r"r\.tsv: row 3: 2 columns where the header has 3"),
    "missing label": (lambda d: write_jsonl(d / "l.jsonl", [{"premise": "p", "hypothesis": "h", "label": ""}]), {},
                      r"l\.jsonl: row 1: missing label"),
    "unknown extension": (lambda d: write_text(d / "d.xlsx", "x"), {},
                          r"d\.xlsx: unknown file type"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_with_one_line_naming_file_and_row(case, tmp_path):
    write, kwargs, message = BAD[case]
    path = write(tmp_path)
    with pytest.raises((DataError, ConfigError), match=message) as info:
        custom_task_file(str(path), kwargs.get("fields", {}), kwargs.get("labels", {}))
    assert "\n" not in str(info.value) and str(path.name) in str(info.value)


def test_cli_prints_the_error_as_one_line(tmp_path, capsys):
    path = write_table(tmp_path / "r.tsv", ["premise", "hypothesis", "label"], [["p", "h"]], "\t")
    assert main(["run", "any-model", "--data-files", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("nli-eval: error: ") and "r.tsv: row 2:" in err
    assert main(["run", "any-model", "--data-files", str(path), "--fields", "claim=x"]) == 2
    assert "unknown field 'claim'" in capsys.readouterr().err
    assert main(["run", "any-model", "--data-files", f"{tmp_path}/missing.jsonl"]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err


def test_cli_runs_custom_data(tiny_llama, tmp_path, capsys):
    path = write_table(tmp_path / "mine.csv", ["sentence1", "sentence2", "label"],
                       [[p, h, lab] for (p, h), lab in zip(PAIRS * 2, [2, 0, 1, 1, 0, 2])], ",")
    out = tmp_path / "out"
    rc = main(["run", str(tiny_llama), "--data-files", str(path), "--labels", "0=contradiction,1=neutral,2=entailment",
               "--no-progress", "--batch-size", "4", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((out / "results.json").read_text())
    (result,) = record["models"][0]["results"]
    assert result["task"] == "custom" and result["n"] == 6
    assert result["per_label"]["entailment"]["n"] == 2 and result["per_label"]["contradiction"]["n"] == 2
