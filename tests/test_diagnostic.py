"""The offline diagnostic set: deterministic, written from the project's vocabulary, labelled by construction.

The label checks re-derive each gold label from the sentences themselves (word overlap, subsequence,
numbers, antonym pairs), so a template that wrote the wrong label would fail here.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from nli_eval import diagnostic as diag
from nli_eval.data import load_split
from nli_eval.errors import MissingSplitError
from nli_eval.labels import Label
from nli_eval.taskspec import builtin_catalog

TEST = diag.generate("test")
TRAIN = diag.generate("train")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def contiguous(part: list[str], whole: list[str]) -> bool:
    return any(whole[i:i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def test_deterministic_sizes_and_disjoint_splits():
    assert diag.generate("test") == TEST and diag.generate("train") == TRAIN
    assert len(TEST) == 360 and len(TRAIN) == 144
    assert len({r["id"] for r in TEST + TRAIN}) == len(TEST) + len(TRAIN)
    pairs = lambda rows: {(r["premise"], r["hypothesis"]) for r in rows}  # noqa: E731
    assert len(pairs(TEST)) == len(TEST) and not pairs(TEST) & pairs(TRAIN)
    assert set(Counter(r["case"] for r in TEST).values()) == {20}
    assert {r["probe"] for r in TEST} == {"lexical_overlap", "subsequence", "constituent", "negation", "antonym",
                                          "number"}


def test_every_probe_has_more_than_one_gold_label():
    by_probe: dict[str, set[str]] = {}
    for r in TEST:
        by_probe.setdefault(r["probe"], set()).add(r["label"])
    # A model that answers one label per probe (following the heuristic) cannot score well.
    assert all(len(labels) >= 2 for labels in by_probe.values()), by_probe
    for probe in diag.HANS_HEURISTICS:
        assert {"entailment", "neutral"} <= by_probe[probe]


def test_only_the_projects_own_vocabulary():
    vocab = set(diag.NOUNS) | set(diag.NUMBERS) | set(diag.ANIMALS) | {w.lower() for w in diag.HEDGES + diag.FACTIVE}
    vocab |= {f for v in diag.TRANSITIVE + diag.INTRANSITIVE for f in (v.base, v.past, v.participle)}
    vocab |= {a for pair in diag.ANTONYMS for a in pair}
    vocab |= {"the", "was", "by", "near", "behind", "beside", "who", "and", "if", "although", "did", "not", "is",
              "saw", "exactly", "more", "fewer", "than"}
    for r in TEST + TRAIN:
        assert set(words(r["premise"]) + words(r["hypothesis"])) <= vocab, r


def rows_of(*probes: str) -> list[dict]:
    return [r for r in TEST + TRAIN if r["probe"] in probes]


def check_heuristic(row: dict) -> None:
    p, h = words(row["premise"]), words(row["hypothesis"])
    assert set(h) <= set(p)  # full lexical overlap, the weakest of the three heuristics
    if row["probe"] in ("subsequence", "constituent"):
        assert contiguous(h, p)
    if row["case"] in ("lexical_overlap_swap", "lexical_overlap_passive_swap"):
        assert p != h and sorted(set(p) - {"was", "by"}) == sorted(set(h))
        assert row["label"] == "neutral"  # who did what to whom changed
    if row["case"] in ("subsequence_pp_on_subject", "subsequence_relative_clause"):
        # The hypothesis's subject is the object of a modifier, not the premise's subject.
        assert p[1] != h[1] and row["label"] == "neutral"
    if row["case"] == "subsequence_conjunction":
        assert "and" in p and row["label"] == "entailment"
    if row["case"] in ("constituent_conditional", "constituent_hedge"):
        assert p[0] in ("if", "perhaps", "maybe", "possibly") and row["label"] == "neutral"
    if row["case"] == "constituent_factive":
        assert p[0] in ("although", "clearly", "certainly", "obviously") and row["label"] == "entailment"


def test_hans_probes_satisfy_their_heuristic():
    """Every pair is one the heuristic would call entailed; only some are."""
    for row in rows_of(*diag.HANS_HEURISTICS):
        try:
            check_heuristic(row)
        except AssertionError:
            pytest.fail(f"{row['id']}: {row['premise']} / {row['hypothesis']} / {row['label']}")


def _count(text: str) -> tuple[str, int]:
    ws = words(text)
    for kind in ("exactly", "more", "fewer"):
        if kind in ws:
            return kind, diag.NUMBERS.index(ws[ws.index(kind) + (1 if kind == "exactly" else 2)]) + 2
    raise AssertionError(text)


def test_number_labels_follow_arithmetic():
    for row in rows_of("number"):
        kind, n = _count(row["premise"])
        rel, m = _count(row["hypothesis"])
        holds = {"exactly": n == m, "more": n > m, "fewer": n < m}[rel]
        assert kind == "exactly" and row["label"] == ("entailment" if holds else "contradiction"), row


def test_antonym_labels():
    antonym = {a: b for x, y in diag.ANTONYMS for a, b in ((x, y), (y, x))}
    expected = {("", ""): "contradiction", ("not", ""): "neutral", ("", "not"): "entailment"}
    for row in rows_of("antonym"):
        p, h = words(row["premise"]), words(row["hypothesis"])
        assert antonym[p[-1]] == h[-1] and p[1] == h[1], row
        key = ("not" if "not" in p else "", "not" if "not" in h else "")
        assert row["label"] == expected[key], row


def test_negation_labels():
    # One side negates, the other does not: the same event contradicts, a different one is neutral.
    lemma = {f: v.base for v in diag.TRANSITIVE + diag.INTRANSITIVE for f in (v.base, v.past, v.participle)}
    for row in rows_of("negation"):
        p, h = words(row["premise"]), words(row["hypothesis"])
        assert ("not" in p) != ("not" in h), row
        event = [[lemma.get(w, w) for w in ws if w not in ("did", "not")] for ws in (p, h)]
        assert row["label"] == ("contradiction" if event[0] == event[1] else "neutral"), row


def test_loaded_through_the_catalog_with_breakdowns():
    catalog = builtin_catalog()
    three = load_split(catalog.get("diagnostic"))
    assert three.source == "generated:diagnostic:test" and len(three.examples) == 360
    assert Counter(e.label for e in three.examples) == {Label.NEUTRAL: 160, Label.ENTAILMENT: 100,
                                                        Label.CONTRADICTION: 100}
    assert set(three.examples[0].meta) == {"probe", "case", "heuristic"}
    train = load_split(catalog.get("diagnostic"), "train")
    assert len(train.examples) == 144
    two = load_split(catalog.get("diagnostic_2way"))
    assert {e.label for e in two.examples} == {Label.ENTAILMENT, Label.NON_ENTAILMENT}
    # A hypothesis that is a subsequence of the premise but not entailed is non-entailment.
    sub = next(e for e in two.examples if e.meta["case"] == "subsequence_pp_on_subject")
    assert sub.hypothesis.rstrip(".").lower() in sub.premise.lower() and sub.label is Label.NON_ENTAILMENT
    neg = next(e for e in two.examples if e.meta["case"] == "negation_inserted")
    assert neg.label is Label.NON_ENTAILMENT


def test_unknown_split():
    with pytest.raises(MissingSplitError, match="no split 'dev'; choose one of: test, train"):
        diag.generate("dev")


def test_offline_default_runs_with_shots(tiny_gpt2):
    """The README's offline default: the diagnostic task, few-shot from its own train split."""
    from nli_eval.backends.loader import BackendOptions
    from nli_eval.runner import RunConfig, Runner

    cfg = RunConfig(models=(str(tiny_gpt2),), tasks=("diagnostic",), shots=(0, 2), limit=36,
                    backend=BackendOptions(batch_size=8), progress=False)
    results = Runner(cfg).run().models[0].results
    assert [(r.task, r.shots, r.n) for r in results] == [("diagnostic", 0, 36), ("diagnostic", 2, 36)]
    probes = results[0].breakdowns["probe"]
    assert set(probes) == {"lexical_overlap", "subsequence", "constituent", "negation", "antonym", "number"}
    assert sum(c.n for c in probes.values()) == 36
    cases = results[0].breakdowns["case"]
    assert set(cases) <= {c.name for c in diag.CASES} and sum(c.n for c in cases.values()) == 36
