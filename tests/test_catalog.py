"""The built-in task catalog: every task loads offline from fixtures written here in its real layout(s)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import write_anli_release, write_jsonl

from nli_eval.cli import main
from nli_eval.data import load_split
from nli_eval.errors import DataError
from nli_eval.labels import Label, LabelSpace
from nli_eval.taskspec import builtin_catalog, parse_family

E, N, C, NE = Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION, Label.NON_ENTAILMENT
CATALOG = builtin_catalog()

# Sentence pairs written for these tests (no third-party text).
PAIRS = [
    ("A woman is riding a red bicycle down the hill.", "A person is on a bicycle."),
    ("Two children are building a sand castle.", "The children are at school."),
    ("A man plays the guitar on a small stage.", "A musician is performing."),
    ("The dog sleeps under the kitchen table.", "The dog is running outside."),
    ("An old farmer feeds the goats at dawn.", "The farmer owns many goats."),
    ("A chef chops onions in a busy kitchen.", "Someone is cooking."),
]


def put(root: Path, rel: str, content: Any) -> Path:
    """Write a fixture file: a list of rows as JSON lines, a dict as JSON, (header, rows) as a TSV."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, list):
        write_jsonl(path, content)
    elif isinstance(content, dict):
        path.write_text(json.dumps(content), encoding="utf-8")
    else:
        header, rows = content
        lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def snli_style(labels: list[str], prefix: str = "p") -> list[dict]:
    """Rows in SNLI / MultiNLI's jsonl layout."""
    return [{"annotator_labels": [lab], "genre": "fiction", "gold_label": lab, "pairID": f"{prefix}{i}",
             "promptID": str(i), "sentence1": p, "sentence2": h, "sentence1_parse": "(ROOT)",
             "sentence2_parse": "(ROOT)"} for i, (lab, (p, h)) in enumerate(zip(labels, PAIRS))]


@dataclass(frozen=True)
class Fixture:
    task: str
    split: str | None
    files: Callable[[Path], None]
    labels: list[Label]
    source: str          # how the loaded file's path ends
    dropped: int = 0


HANS_HEADER = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
               "sentence2_parse", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template"]
HANS_ROWS = [
    ["non-entailment", "( ( The doctor ) ( saw ( the lawyer ) ) )", "( x )", "(ROOT)", "(ROOT)",
     "The doctor saw the lawyer .", "The lawyer saw the doctor .", "ex0", "lexical_overlap",
     "ln_subject/object_swap", "temp1"],
    ["entailment", "( x )", "( x )", "(ROOT)", "(ROOT)", "The doctor and the lawyer ran .", "The lawyer ran .",
     "ex1", "subsequence", "se_conjunction", "temp2"],
    ["non-entailment", "( x )", "( x )", "(ROOT)", "(ROOT)", "If the artist slept , the doctor ran .",
     "The artist slept .", "ex2", "constituent", "cn_embedded_under_if", "temp3"],
    ["entailment", "( x )", "( x )", "(ROOT)", "(ROOT)", "The artist was helped by the doctor .",
     "The doctor helped the artist .", "ex3", "lexical_overlap", "le_passive", "temp4"],
]


def hans_release(root: Path) -> None:
    put(root, "hans/heuristics_evaluation_set.txt", (HANS_HEADER, HANS_ROWS))


def hans_hub(root: Path) -> None:
    put(root, "hans/validation.jsonl", [
        {"premise": r[5], "hypothesis": r[6], "label": 0 if r[0] == "entailment" else 1, "heuristic": r[8],
         "subcase": r[9], "template": r[10], "parse_premise": r[3]} for r in HANS_ROWS])


def adv_glue_release(root: Path) -> None:
    put(root, "dev/dev.json", {
        "sst2": [{"sentence": "a fine film", "label": 1, "idx": 0}],
        "mnli": [{"premise": p, "hypothesis": h, "label": lab, "idx": i}
                 for i, ((p, h), lab) in enumerate(zip(PAIRS, [2, 0, 1]))],
        "mnli-mm": [{"premise": p, "hypothesis": h, "label": lab, "idx": i}
                    for i, ((p, h), lab) in enumerate(zip(PAIRS, [1, 1, 0, 2]))],
        "qnli": [{"question": "Who is riding?", "sentence": PAIRS[0][0], "label": 0, "idx": 0},
                 {"question": "Where is the dog?", "sentence": PAIRS[2][0], "label": 1, "idx": 1}],
        "rte": [{"sentence1": p, "sentence2": h, "label": lab, "idx": i}
                for i, ((p, h), lab) in enumerate(zip(PAIRS, [1, 0, 0]))],
    })


def adv_rte_hub(root: Path) -> None:
    # Hub-layout files of AdvGLUE configs live in their own folder: every config's split is `validation`.
    put(root, "adv_glue/adv_rte/validation.jsonl",
        [{"sentence1": p, "sentence2": h, "label": lab, "idx": i} for i, ((p, h), lab) in enumerate(zip(PAIRS, [0, 1]))])


def stress(dirname: str, stem: str, labels: list[str]) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        put(root, f"Stress Tests/{dirname}/multinli_0.9_{stem}.jsonl", snli_style(labels, stem))
    return write


def cad(subset: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        put(root, f"NLI/{subset}/test.tsv", (["sentence1", "sentence2", "gold_label"], [
            ['"A sign reads ""Open"" above the door."', "The shop is closed.", "contradiction"],
            [PAIRS[0][0], PAIRS[0][1], "entailment"],
            [PAIRS[1][0], PAIRS[1][1], "neutral"],
        ]))
    return write


SICK_HEADER = ["pair_ID", "sentence_A", "sentence_B", "entailment_label", "relatedness_score", "entailment_AB",
               "entailment_BA", "sentence_A_original", "sentence_B_original", "sentence_A_dataset",
               "sentence_B_dataset", "SemEval_set"]


def sick_release(root: Path) -> None:
    rows = []
    for i, (lab, part) in enumerate([("NEUTRAL", "TRAIN"), ("ENTAILMENT", "TEST"), ("CONTRADICTION", "TRIAL"),
                                     ("CONTRADICTION", "TEST"), ("NEUTRAL", "TEST")]):
        p, h = PAIRS[i]
        rows.append([i + 1, p, h, lab, "3.5", "A_neutral_B", "B_neutral_A", p, h, "FLICKR", "FLICKR", part])
    put(root, "SICK/SICK.txt", (SICK_HEADER, rows))


TAXI_CATEGORIES = ["lexical_linguistic", "syntactic_linguistic", "factivity_linguistic", "negation_logic",
                   "boolean_logic", "quantifier_logic", "conditional_logic", "comparative_logic",
                   "relational_reasoning", "spatial_reasoning", "temporal_reasoning", "causal_reasoning",
                   "coreference_reasoning", "world_knowledge", "taxonomic_knowledge"]


def taxinli_release(root: Path) -> None:
    header = ["", "Unnamed: 0", "prem", "hyp", "label", *TAXI_CATEGORIES, "pairID", "genre", "s1", "s2",
              "bag_of_words", "some/model", "esim"]
    rows = []
    for i, (lab, cats) in enumerate([("contradiction", {"negation_logic"}), ("entailment", {"lexical_linguistic",
                                     "world_knowledge"}), ("neutral", set())]):
        p, h = PAIRS[i]
        if i == 0:
            p = '"She said ""hello"" twice."'  # pandas quotes a field holding a double quote
        rows.append([i, i, p, h, lab, *(1 if c in cats else 0 for c in TAXI_CATEGORIES), f"{i}c", "travel", p, h,
                     "neutral", "entailment", "neutral"])
    put(root, "TaxiNLI/taxinli10k_MNLIDev.tsv", (header, rows))


GLUE_DIAG_HEADER = ["Lexical Semantics", "Predicate-Argument Structure", "Logic", "Knowledge", "Domain", "Premise",
                    "Hypothesis", "Label"]


def glue_diag_release(root: Path) -> None:
    put(root, "diagnostic-full.tsv", (GLUE_DIAG_HEADER, [
        ["Lexical entailment", "", "Negation", "", "Artificial", PAIRS[0][0], PAIRS[0][1], "entailment"],
        ["", "Coordination scope", "", "", "News", PAIRS[1][0], PAIRS[1][1], "neutral"],
        ["", "", "Double negation;Negation", "Common sense", "Reddit", PAIRS[2][0], PAIRS[2][1], "contradiction"],
    ]))


FIXTURES = [
    Fixture("anli_r1", "dev", lambda r: write_anli_release(r, n=6, rounds=(1,)), [E, N, C, E, N, C],
            "anli-v1.0/R1/dev.jsonl"),
    *(Fixture(f"anli_r{r}", "dev", lambda root, r=r: write_anli_release(root, n=3, rounds=(r,)), [E, N, C],
              f"anli-v1.0/R{r}/dev.jsonl") for r in (2, 3)),
    Fixture("hans", None, hans_release, [NE, E, NE, E], "hans/heuristics_evaluation_set.txt"),
    Fixture("hans", None, hans_hub, [NE, E, NE, E], "hans/validation.jsonl"),
    Fixture("wanli", None, lambda r: put(r, "wanli/test.jsonl", [
        {"id": i, "pairID": f"w{i}", "premise": p, "hypothesis": h, "gold": g, "genre": "generated"}
        for i, ((p, h), g) in enumerate(zip(PAIRS, ["neutral", "contradiction", "entailment"]))]),
        [N, C, E], "wanli/test.jsonl"),
    Fixture("adv_mnli", None, adv_glue_release, [C, E, N], "dev/dev.json [mnli]"),
    Fixture("adv_mnli_mismatched", None, adv_glue_release, [N, N, E, C], "dev/dev.json [mnli-mm]"),
    Fixture("adv_qnli", None, adv_glue_release, [E, NE], "dev/dev.json [qnli]"),
    Fixture("adv_rte", None, adv_glue_release, [NE, E, E], "dev/dev.json [rte]"),
    Fixture("adv_rte", None, adv_rte_hub, [E, NE], "adv_glue/adv_rte/validation.jsonl"),
    Fixture("breaking_nli", None, lambda r: put(r, "breaking_nli/dataset.jsonl", [
        {"annotator_labels": [g] * 3, "category": cat, "gold_label": g, "pairID": i, "sentence1": p, "sentence2": h}
        for i, ((p, h), g, cat) in enumerate(zip(PAIRS, ["contradiction", "entailment", "contradiction"],
                                                 ["antonyms", "synonyms", "colors"]))]),
        [C, E, C], "breaking_nli/dataset.jsonl"),
    Fixture("snli", None, lambda r: put(r, "snli_1.0/snli_1.0_test.jsonl",
                                        snli_style(["neutral", "-", "contradiction", "entailment"])),
            [N, C, E], "snli_1.0/snli_1.0_test.jsonl", dropped=1),
    Fixture("snli", "dev", lambda r: put(r, "snli/validation.jsonl", [
        {"premise": p, "hypothesis": h, "label": lab} for (p, h), lab in zip(PAIRS, [2, -1, -1, 0])]),
        [C, E], "snli/validation.jsonl", dropped=2),
    Fixture("snli_hard", None, lambda r: put(r, "snli_1.0/snli_1.0_test_hard.jsonl",
                                             snli_style(["entailment", "contradiction"])),
            [E, C], "snli_1.0/snli_1.0_test_hard.jsonl"),
    Fixture("mnli_matched", None, lambda r: (
        put(r, "multinli_1.0/multinli_1.0_dev_matched.jsonl", snli_style(["entailment", "-", "neutral"], "m")),
        put(r, "multinli_1.0/multinli_1.0_dev_mismatched.jsonl", snli_style(["contradiction"], "mm"))),
        [E, N], "multinli_1.0/multinli_1.0_dev_matched.jsonl", dropped=1),
    Fixture("mnli_mismatched", None, lambda r: (
        put(r, "multinli_1.0/multinli_1.0_dev_matched.jsonl", snli_style(["entailment", "neutral"], "m")),
        put(r, "multinli_1.0/multinli_1.0_dev_mismatched.jsonl", snli_style(["contradiction"], "mm"))),
        [C], "multinli_1.0/multinli_1.0_dev_mismatched.jsonl"),
    Fixture("mnli_mismatched", None, lambda r: put(r, "MNLI/dev_mismatched.tsv", (
        ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"],
        [[i, i, f"g{i}", "travel", p, h, g, g] for i, ((p, h), g) in
         enumerate(zip(PAIRS, ["neutral", "entailment"]))])), [N, E], "MNLI/dev_mismatched.tsv"),
    Fixture("stress_antonym", None, stress("Antonym", "antonym_matched", ["contradiction", "entailment"]),
            [C, E], "Stress Tests/Antonym/multinli_0.9_antonym_matched.jsonl"),
    Fixture("stress_antonym", "mismatched", stress("Antonym", "antonym_mismatched", ["neutral"]), [N],
            "multinli_0.9_antonym_mismatched.jsonl"),
    Fixture("stress_length_mismatch", None, stress("Length_Mismatch", "length_mismatch_matched", ["neutral", "-"]),
            [N], "multinli_0.9_length_mismatch_matched.jsonl", dropped=1),
    Fixture("stress_negation", None, stress("Negation", "negation_matched", ["entailment", "contradiction"]),
            [E, C], "Negation/multinli_0.9_negation_matched.jsonl"),
    Fixture("stress_numerical_reasoning", None, stress("Numerical_Reasoning", "quant_hard", ["contradiction"]),
            [C], "Numerical_Reasoning/multinli_0.9_quant_hard.jsonl"),
    Fixture("stress_spelling_error", None, stress("Spelling_Error", "dev_gram_swap_matched", ["neutral"]),
            [N], "multinli_0.9_dev_gram_swap_matched.jsonl"),
    Fixture("stress_spelling_error", "keyboard_mismatched",
            stress("Spelling_Error", "dev_gram_keyboard_mismatched", ["entailment"]),
            [E], "multinli_0.9_dev_gram_keyboard_mismatched.jsonl"),
    Fixture("stress_word_overlap", None, stress("Word_Overlap", "taut2_matched", ["contradiction", "neutral"]),
            [C, N], "Word_Overlap/multinli_0.9_taut2_matched.jsonl"),
    Fixture("control", "dev", lambda r: put(r, "ConTRoL-dataset/data/dev.jsonl", [
        {"uid": f"id_{i}", "premise": p, "hypothesis": h, "label": lab}
        for i, ((p, h), lab) in enumerate(zip(PAIRS, ["n", "c", "e"]))]), [N, C, E], "ConTRoL-dataset/data/dev.jsonl"),
    *(Fixture(f"cad_nli_{s}", None, cad(s), [C, E, N], f"NLI/{s}/test.tsv")
      for s in ("original", "revised_premise", "revised_hypothesis", "revised_combined", "all_combined")),
    Fixture("conjnli", None, lambda r: put(r, "ConjNLI/data/NLI/conj_dev.tsv", (
        ["Premise", "Hypothesis", "Label"],
        [['He wrote the book "Birds and Bees".', 'He wrote the book "Birds".', "neutral"],
         ["She plays piano and violin.", "She plays piano.", "entailment"]])), [N, E],
        "ConjNLI/data/NLI/conj_dev.tsv"),
    Fixture("sick", None, sick_release, [E, C, N], "SICK/SICK.txt"),
    Fixture("sick", "dev", sick_release, [C], "SICK/SICK.txt"),
    Fixture("sick", "train", sick_release, [N], "SICK/SICK.txt"),
    Fixture("rte", None, lambda r: put(r, "RTE/dev.tsv", (["index", "sentence1", "sentence2", "label"], [
        [0, PAIRS[0][0], PAIRS[0][1], "entailment"], [1, PAIRS[1][0], PAIRS[1][1], "not_entailment"]])),
        [E, NE], "RTE/dev.tsv"),
    Fixture("rte", None, lambda r: put(r, "RTE/val.jsonl", [
        {"premise": p, "hypothesis": h, "label": lab, "idx": i}
        for i, ((p, h), lab) in enumerate(zip(PAIRS, ["not_entailment", "entailment"]))]), [NE, E], "RTE/val.jsonl"),
    Fixture("cb", None, lambda r: put(r, "CB/val.jsonl", [
        {"premise": p, "hypothesis": h, "label": lab, "idx": i}
        for i, ((p, h), lab) in enumerate(zip(PAIRS, ["contradiction", "neutral", "entailment"]))]),
        [C, N, E], "CB/val.jsonl"),
    # SuperGLUE's integer order: 0 entailment, 1 contradiction, 2 neutral (not MNLI's).
    Fixture("cb", None, lambda r: put(r, "cb/validation.jsonl", [
        {"premise": p, "hypothesis": h, "label": lab, "idx": i} for i, ((p, h), lab) in enumerate(zip(PAIRS, [1, 2, 0]))]),
        [C, N, E], "cb/validation.jsonl"),
    Fixture("glue_diagnostics", None, glue_diag_release, [E, N, C], "diagnostic-full.tsv"),
    Fixture("taxinli", None, taxinli_release, [C, E, N], "TaxiNLI/taxinli10k_MNLIDev.tsv"),
]


def fixture_id(f: Fixture) -> str:
    return f"{f.task}-{f.split or 'default'}-{f.source.split('/')[-1]}"


@pytest.mark.parametrize("fx", FIXTURES, ids=[fixture_id(f) for f in FIXTURES])
def test_task_loads_its_layout_offline(fx: Fixture, tmp_path):
    fx.files(tmp_path)
    task = CATALOG.get(fx.task)
    loaded = load_split(task, fx.split, tmp_path)
    assert [ex.label for ex in loaded.examples] == fx.labels
    assert loaded.source.endswith(fx.source)
    assert loaded.dropped == fx.dropped
    space = task.label_space.labels
    assert all(ex.label in space for ex in loaded.examples)


def test_every_task_has_a_fixture_or_generator():
    covered = {f.task for f in FIXTURES}
    generated = {name for name, t in CATALOG.tasks.items() if t.generator}
    assert generated == {"diagnostic", "diagnostic_2way"}
    assert set(CATALOG.tasks) == covered | generated


def test_every_task_is_documented():
    for name, task in CATALOG.tasks.items():
        assert task.citation.startswith("@"), name
        assert task.license and task.description and task.notes, name
        assert task.layouts or task.generator or task.family == "wanli", name  # WANLI's release is the Hub layout
        assert task.label_space.chance == 1 / len(task.label_space.labels)


@pytest.mark.parametrize("name", sorted(CATALOG.tasks))
def test_tasks_details_prints_source_citation_and_license(name, capsys):
    assert main(["tasks", "--details", name]) == 0
    out = capsys.readouterr().out
    task = CATALOG.get(name)
    assert out.startswith(f"{name} ({task.family}, {task.label_space.value})")
    assert "citation:\n@" in out and f"license: {task.license}" in out


def test_two_way_tasks():
    two_way = {n for n, t in CATALOG.tasks.items() if t.label_space is LabelSpace.TWO_WAY}
    assert two_way == {"hans", "rte", "adv_qnli", "adv_rte", "diagnostic_2way"}
    assert CATALOG.get("hans").label_space.chance == 0.5


def test_hans_breakdown_crosses_heuristic_with_gold_label(tmp_path):
    hans_release(tmp_path)
    examples = load_split(CATALOG.get("hans"), None, tmp_path).examples
    assert [ex.meta["heuristic*label"] for ex in examples] == [
        "lexical_overlap/non_entailment", "subsequence/entailment", "constituent/non_entailment",
        "lexical_overlap/entailment"]
    assert examples[0].meta["subcase"] == "ln_subject/object_swap" and examples[0].id == "ex0"
    hub = tmp_path / "hub"
    hans_hub(hub)
    from_hub = load_split(CATALOG.get("hans"), "test", hub).examples
    assert [ex.meta for ex in from_hub] == [ex.meta for ex in examples]


def test_cb_label_order_trap(tmp_path):
    """The same rows read by name (release) and by SuperGLUE's integer order (Hub) get the same labels."""
    names = ["contradiction", "neutral", "entailment"]
    ids = {"entailment": 0, "contradiction": 1, "neutral": 2}
    put(tmp_path / "release", "CB/val.jsonl",
        [{"premise": p, "hypothesis": h, "label": n, "idx": i} for i, ((p, h), n) in enumerate(zip(PAIRS, names))])
    put(tmp_path / "hub", "cb/validation.jsonl",
        [{"premise": p, "hypothesis": h, "label": ids[n], "idx": i} for i, ((p, h), n) in enumerate(zip(PAIRS, names))])
    cb = CATALOG.get("cb")
    a = load_split(cb, None, tmp_path / "release").examples
    b = load_split(cb, None, tmp_path / "hub").examples
    assert [e.label for e in a] == [e.label for e in b] == [C, N, E]
    assert [e.id for e in a] == [e.id for e in b] == ["0", "1", "2"]


def test_breakdown_meta_of_release_files(tmp_path):
    taxinli_release(tmp_path)
    ex = load_split(CATALOG.get("taxinli"), None, tmp_path).examples
    assert ex[0].premise == 'She said "hello" twice.'
    assert ex[0].meta == {"negation_logic": "yes", "genre": "travel"}
    assert ex[1].meta == {"lexical_linguistic": "yes", "world_knowledge": "yes", "genre": "travel"}
    glue_diag_release(tmp_path)
    ex = load_split(CATALOG.get("glue_diagnostics"), None, tmp_path).examples
    assert ex[0].meta == {"lexical_semantics": "Lexical entailment", "logic": "Negation"}
    assert ex[1].meta == {"predicate_argument_structure": "Coordination scope"}
    assert ex[2].meta == {"logic": "Double negation;Negation", "knowledge": "Common sense"}
    put(tmp_path, "breaking_nli/dataset.jsonl", [{"sentence1": "a", "sentence2": "b", "gold_label": "neutral",
                                                   "category": "planets", "pairID": 7}])
    (only,) = load_split(CATALOG.get("breaking_nli"), None, tmp_path).examples
    assert only.meta == {"category": "planets"} and only.id == "7"


def test_pandas_quoting_is_undone(tmp_path):
    cad("revised_premise")(tmp_path)
    first = load_split(CATALOG.get("cad_nli_revised_premise"), None, tmp_path).examples[0]
    assert first.premise == 'A sign reads "Open" above the door.'


def test_conjnli_keeps_literal_quotes(tmp_path):
    FIXTURES[[f.task for f in FIXTURES].index("conjnli")].files(tmp_path)
    first = load_split(CATALOG.get("conjnli"), None, tmp_path).examples[0]
    assert first.premise == 'He wrote the book "Birds and Bees".'


def test_release_layout_errors_name_file_and_row(tmp_path):
    put(tmp_path, "SICK.txt", (["pair_ID", "sentence_A", "sentence_B", "entailment_label"],
                               [[1, "a", "b", "NEUTRAL"]]))
    with pytest.raises(DataError, match=r"SICK\.txt: row 1: no column 'SemEval_set'"):
        load_split(CATALOG.get("sick"), None, tmp_path)
    put(tmp_path, "dev/dev.json", {"mnli": [], "rte": []})
    with pytest.raises(DataError, match=r"dev\.json: no table 'qnli' \(tables: mnli, rte\)"):
        load_split(CATALOG.get("adv_qnli"), None, tmp_path)
    put(tmp_path, "hans/heuristics_evaluation_set.txt", (HANS_HEADER, HANS_ROWS + [HANS_ROWS[0][:5]]))
    with pytest.raises(DataError, match=r"heuristics_evaluation_set\.txt: row 6: 5 columns where the header has 11"):
        load_split(CATALOG.get("hans"), None, tmp_path)
    put(tmp_path, "ConTRoL-dataset/data/test.jsonl", [{"uid": "u", "premise": "p", "hypothesis": "h", "label": "x"}])
    with pytest.raises(DataError, match=r"test\.jsonl: row 1: unknown label 'x'"):
        load_split(CATALOG.get("control"), None, tmp_path)


def test_files_only_task_without_data_dir_says_what_to_do():
    with pytest.raises(DataError, match="no Hub source; pass --data-dir"):
        load_split(CATALOG.get("stress_negation"))


def test_layout_placeholders_and_new_keys_parse():
    variants, _ = parse_family({
        "family": "demo", "fields": {"premise": "p", "hypothesis": "h", "label": "l"},
        "layouts": [{"path": "x/{split}.json", "json_key": "{t}", "select": {"part": "{split}"},
                     "splits": {"test": "T{t}"}}],
        "variants": [{"name": "one", "vars": {"t": "a"}},
                     {"name": "two", "vars": {"t": "b"}, "fields": {"premise": "q"}}],
    }, "demo.toml")
    one, two = variants
    assert one.layouts[0].json_key == "{t}" and one.layouts[0].select == {"part": "{split}"}
    # A layout without its own field map reads the columns of the variant it serves.
    assert one.layouts[0].fields.premise == "p" and two.layouts[0].fields.premise == "q"


def test_hans_runs_two_way_with_breakdowns(tiny_llama, tmp_path):
    from nli_eval.backends.loader import BackendOptions
    from nli_eval.console import results_table
    from nli_eval.runner import RunConfig, Runner

    hans_release(tmp_path)
    cfg = RunConfig(models=(str(tiny_llama),), tasks=("hans",), data_dir=str(tmp_path),
                    backend=BackendOptions(batch_size=4), progress=False)
    record = Runner(cfg).run()
    (result,) = record.models[0].results
    assert result.label_space == "2way" and result.chance_uniform == 0.5 and result.n == 4
    assert set(result.predicted_distribution) == {"entailment", "non_entailment"}
    cells = result.breakdowns["heuristic*label"]
    assert set(cells) == {"lexical_overlap/non_entailment", "lexical_overlap/entailment",
                          "subsequence/entailment", "constituent/non_entailment"}
    assert sum(c.n for c in cells.values()) == 4
    assert all(c.ci_low <= c.accuracy <= c.ci_high for c in cells.values())
    assert set(result.breakdowns) == {"heuristic", "subcase", "heuristic*label"}
    assert "heuristic*label=constituent/non_entailment" in results_table(record)


HUB_CALLS = {
    "hans": ("jhu-cogsci/hans", None, "validation", "refs/convert/parquet"),
    "cb": ("aps/super_glue", "cb", "validation", "refs/convert/parquet"),
    "sick": ("RobZamp/sick", None, "test", "refs/convert/parquet"),
    "adv_mnli_mismatched": ("AI-Secure/adv_glue", "adv_mnli_mismatched", "validation", None),
    "adv_qnli": ("AI-Secure/adv_glue", "adv_qnli", "validation", None),
    "mnli_mismatched": ("nyu-mll/glue", "mnli", "validation_mismatched", None),
    "rte": ("nyu-mll/glue", "rte", "validation", None),
    "snli": ("stanfordnlp/snli", None, "test", None),
    "wanli": ("alisawuffles/WANLI", None, "test", None),
    "breaking_nli": ("pietrolesci/breaking_nli", None, "full", None),
    "glue_diagnostics": ("pietrolesci/glue_diagnostics", None, "test", None),
    "control": ("tasksource/ConTRoL-nli", None, "test", None),
}


@pytest.mark.parametrize("name", sorted(HUB_CALLS))
def test_hub_source_is_requested_as_declared(name, monkeypatch):
    """Without --data-dir the task asks `datasets` for its id, config, split and parquet revision."""
    import sys
    import types

    task = CATALOG.get(name)
    calls = []
    first = next(iter(task.labels))

    def load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        label = int(first) if first.isdigit() else first
        return [{task.fields.premise: PAIRS[0][0], task.fields.hypothesis: PAIRS[0][1], task.fields.label: label}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    loaded = load_split(task)
    assert calls == [HUB_CALLS[name]]
    assert [e.label for e in loaded.examples] == [task.labels[first]]
    assert loaded.source.startswith(f"hf://datasets/{HUB_CALLS[name][0]}")


def test_task_listing_wraps_long_split_lists_on_a_terminal_and_keeps_rows_whole_when_piped():
    from nli_eval.console import table

    splits = ", ".join(f"part{i}=file_for_part_{i} ({i}00)" for i in range(6))
    rows = [["short", "3way", "hub/a", "dev=validation (12)"], ["long", "3way", "(local files)", splits]]
    headers = ["task", "labels", "source", "splits (size)"]
    wrapped = table(headers, rows, width=70).splitlines()
    assert max(map(len, wrapped)) <= 70
    indent = wrapped[0].index("splits")
    continued = wrapped[3:]
    assert len(continued) > 1 and all(line[:indent].strip() == "" for line in continued[1:])
    # Items break only between each other, never inside "name=file (size)".
    pieces = " ".join(line[indent:].strip() for line in continued)
    assert pieces == splits
    assert all(line.rstrip().endswith(",") for line in continued[:-1])

    piped = table(headers, rows).splitlines()
    assert len(piped) == 4 and piped[3].endswith(splits)
    assert len(piped[1]) < len(piped[3])  # the rule does not run out to the longest cell


def test_a_cell_word_longer_than_a_narrow_terminal_runs_over_instead_of_failing():
    from nli_eval.console import table

    word = "contentword_matched=dev_gram_contentword_swap_perturbed_matched,"
    lines = table(["task", "splits"], [["t", f"{word} other=x (1)"]], width=30).splitlines()
    assert lines[2].endswith(word) and lines[3].strip() == "other=x (1)"
