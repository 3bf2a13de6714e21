"""The NLI metrics as an `evaluate` module, loaded from its folder with no network."""

from __future__ import annotations

import math
import socket

import pytest

evaluate = pytest.importorskip("evaluate")

from nli_eval.nli_metric import PATH  # noqa: E402


@pytest.fixture(scope="module")
def no_network():
    """Any attempt to open a connection fails the test."""
    mp = pytest.MonkeyPatch()

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def nli(no_network):
    return evaluate.load(PATH, keep_in_memory=True)


def wilson_direct(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_loads_offline_from_its_folder(nli):
    assert isinstance(nli, evaluate.Metric)
    assert "Wilson" in nli.description


def test_integer_labels_in_anli_order(nli):
    # gold: e n c n e c ; predicted: e n c c c c -> 4 right of 6
    r = nli.compute(predictions=[0, 1, 2, 2, 2, 2], references=[0, 1, 2, 1, 0, 2])
    assert (r["n"], r["correct"]) == (6, 4)
    assert r["accuracy"] == pytest.approx(4 / 6)
    low, high = wilson_direct(4, 6)
    assert (r["accuracy_ci_low"], r["accuracy_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert r["per_label_accuracy"] == {"entailment": 0.5, "neutral": 0.5, "contradiction": 1.0}
    assert r["per_label_n"] == {"entailment": 2, "neutral": 2, "contradiction": 2}
    # F1: entailment 2*1/(2+0+1)=2/3, neutral 2/3, contradiction 2*2/(4+2+0)=2/3
    assert r["macro_f1"] == pytest.approx(2 / 3)
    assert r["chance_uniform"] == pytest.approx(1 / 3)
    assert r["chance_majority"] == pytest.approx(1 / 3)
    assert r["label_space"] == "3way"
    # Two-way collapse: gold e n c n e c -> e x x x e x; predicted e x x x x x -> 5 right of 6
    assert r["two_way_accuracy"] == pytest.approx(5 / 6)
    low2, high2 = wilson_direct(5, 6)
    assert r["two_way_ci_low"] == pytest.approx(low2) and r["two_way_ci_high"] == pytest.approx(high2)
    assert r["two_way_chance_majority"] == pytest.approx(4 / 6)


def test_label_names_any_spelling_and_chance_test(nli):
    preds = ["E", "neutral", "contradiction", "entailment"] * 25
    refs = ["entailment", "n", "Contradiction", "neutral"] * 25
    r = nli.compute(predictions=preds, references=refs)
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["majority_label"] == "neutral" and r["chance_majority"] == pytest.approx(0.5)
    assert r["p_value_vs_chance"] < 1e-10  # 75 of 100 against 1/3


def test_cb_integer_order_by_label_names(nli):
    cb = ["entailment", "contradiction", "neutral"]
    r = nli.compute(predictions=[1, 2], references=[1, 1], label_names=cb)
    assert r["per_label_accuracy"]["contradiction"] == 0.5
    assert r["per_label_n"]["contradiction"] == 2 and r["per_label_n"]["neutral"] == 0


def test_two_way_config(no_network):
    two = evaluate.load(PATH, "2way", keep_in_memory=True)
    r = two.compute(predictions=["entailment", "neutral", "contradiction"],
                    references=["entailment", "not_entailment", "entailment"])
    assert r["label_space"] == "2way"
    assert r["accuracy"] == pytest.approx(2 / 3) and r["chance_uniform"] == 0.5
    assert "two_way_accuracy" not in r


def test_two_way_labels_are_inferred(nli):
    r = nli.compute(predictions=["non_entailment", "entailment"], references=["non_entailment", "non_entailment"])
    assert r["label_space"] == "2way" and r["accuracy"] == 0.5


@pytest.mark.parametrize("preds, refs, kwargs, message", [
    (["entailment"], ["maybe"], {}, "unknown label name 'maybe'"),
    ([0], [3], {}, "outside 0..2"),
    ([0], [-1], {}, "drop unlabelled rows"),
    (["entailment"], ["non_entailment"], {"label_space": "3way"}, "pass label_space='2way'"),
    ([0], [0], {"label_space": "4way"}, "label_space must be"),
])
def test_bad_labels_are_clear_errors(nli, preds, refs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        nli.compute(predictions=preds, references=refs, **kwargs)


def test_same_numbers_as_a_run(nli):
    """The module and `nli-eval run` share one implementation: compare with metrics.compute directly."""
    from nli_eval.labels import Label, LabelSpace
    from nli_eval.metrics import compute
    from nli_eval.types import Prediction

    labels = [Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION]
    golds = [labels[i % 3] for i in range(30)]
    preds = [labels[(i * 7) % 3] for i in range(30)]
    expected = compute([Prediction(str(i), g, p, {}) for i, (g, p) in enumerate(zip(golds, preds))],
                       task="t", split="s", shots=0, template="", space=LabelSpace.THREE_WAY)
    r = nli.compute(predictions=[p.value for p in preds], references=[g.value for g in golds])
    assert r["accuracy"] == expected.accuracy and r["macro_f1"] == pytest.approx(expected.macro_f1)
    assert r["p_value_vs_chance"] == pytest.approx(expected.p_value_vs_chance)
