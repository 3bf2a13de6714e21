"""NLI metrics as a Hugging Face `evaluate` module: accuracy with a Wilson interval, per-label accuracy,
macro-F1, chance levels, an exact binomial test against chance, and the two-way collapse.

    import evaluate, nli_eval.nli_metric
    nli = evaluate.load(nli_eval.nli_metric.PATH)          # a local folder: works offline
    nli.compute(predictions=["entailment", "neutral"], references=["entailment", "contradiction"])
    nli.compute(predictions=[0, 1, 2], references=[0, 2, 2])  # ints in ANLI/MNLI/SNLI order by default
    nli.compute(predictions=[0, 1], references=[0, 2], label_names=["entailment", "contradiction", "neutral"])  # CB

The numbers are the ones `nli-eval run` reports (the same code computes them).
"""

from __future__ import annotations

import datasets
import evaluate

from nli_eval.errors import NliEvalError
from nli_eval.labels import Label, LabelSpace, collapse, label_from_name
from nli_eval.metrics import compute as compute_result
from nli_eval.types import Prediction

DEFAULT_LABEL_NAMES = ("entailment", "neutral", "contradiction")  # ANLI, MNLI and SNLI integer order

_DESCRIPTION = """\
Scores natural language inference predictions: accuracy with a Wilson 95% interval, accuracy on the
examples of each gold label, macro-F1, uniform and majority-class chance, an exact two-sided binomial test
of accuracy against uniform chance, and the same scores after collapsing neutral and contradiction into
non-entailment (the two-way view used by RTE, HANS and QNLI). Labels are matched by name, never by position.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels, as names (`entailment`, `neutral`, `contradiction`, `non_entailment` and
        common spellings such as `e`, `not_entailment`) or as integers.
    references: gold labels, in the same form as the predictions.
    label_names: for integer labels, the label name of each integer (default: entailment, neutral,
        contradiction, the ANLI/MNLI/SNLI order; SuperGLUE CB is entailment, contradiction, neutral).
    label_space: "3way" or "2way" (default: the config name when it is one of these, else "2way" when a
        `non_entailment` label appears, else "3way"). In "2way" three-way labels are collapsed first.
Returns:
    accuracy, accuracy_ci_low, accuracy_ci_high (Wilson 95%), n, correct, per_label_accuracy
    {label: accuracy}, per_label_n {label: count}, macro_f1, chance_uniform, chance_majority,
    majority_label, p_value_vs_chance (exact two-sided binomial against uniform chance), label_space, and
    for three-way inputs two_way_accuracy, two_way_ci_low, two_way_ci_high, two_way_macro_f1,
    two_way_chance_majority (neutral and contradiction collapsed into non_entailment).
Examples:
    >>> nli = evaluate.load("path/to/nli_eval/nli_metric")
    >>> r = nli.compute(predictions=[0, 1, 2, 2], references=[0, 1, 2, 1])
    >>> r["accuracy"], r["two_way_accuracy"]
    (0.75, 1.0)
"""

_CITATION = """\
@inproceedings{nie-etal-2020-adversarial,
  title = {Adversarial {NLI}: A New Benchmark for Natural Language Understanding},
  author = {Nie, Yixin and Williams, Adina and Dinan, Emily and Bansal, Mohit and Weston, Jason and Kiela, Douwe},
  booktitle = {Proceedings of ACL},
  year = {2020}
}
"""


def _to_label(value, label_names, what: str, index: int) -> Label:
    if isinstance(value, bool):
        raise ValueError(f"{what}[{index}] is {value!r}; pass label names or integers")
    if isinstance(value, int):
        if not 0 <= value < len(label_names):
            raise ValueError(f"{what}[{index}] is {value}, outside 0..{len(label_names) - 1} for label_names "
                             f"{list(label_names)}; drop unlabelled rows (label -1) before scoring")
        value = label_names[value]
    try:
        return label_from_name(str(value))
    except NliEvalError as exc:
        raise ValueError(f"{what}[{index}]: {exc}") from None


def _space(label_space, config_name: str, labels) -> LabelSpace:
    choice = label_space or (config_name if config_name in ("2way", "3way") else None)
    if choice is None:
        return LabelSpace.TWO_WAY if Label.NON_ENTAILMENT in labels else LabelSpace.THREE_WAY
    try:
        return LabelSpace(str(choice).lower().replace("-", "").replace("_", ""))
    except ValueError:
        raise ValueError(f"label_space must be '3way' or '2way', got {choice!r}") from None


def nli_scores(predictions, references, label_names=None, label_space=None, config_name: str = "default") -> dict:
    """The metric without `evaluate`: the same dictionary `NLIMetric.compute` returns."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("no predictions to score")
    names = tuple(label_names) if label_names is not None else DEFAULT_LABEL_NAMES
    preds = [_to_label(p, names, "predictions", i) for i, p in enumerate(predictions)]
    golds = [_to_label(r, names, "references", i) for i, r in enumerate(references)]
    space = _space(label_space, config_name, set(preds) | set(golds))
    try:
        rows = [Prediction(str(i), collapse(g, space), collapse(p, space), {})
                for i, (p, g) in enumerate(zip(preds, golds))]
    except NliEvalError as exc:
        raise ValueError(f"{exc}; pass label_space='2way' to score two-way labels") from None
    result = compute_result(rows, task="predictions", split="", shots=0, template="", space=space)
    out = {
        "accuracy": result.accuracy, "accuracy_ci_low": result.ci_low, "accuracy_ci_high": result.ci_high,
        "n": result.n, "correct": result.correct,
        "per_label_accuracy": {k: c.accuracy for k, c in result.per_label.items()},
        "per_label_n": {k: c.n for k, c in result.per_label.items()},
        "macro_f1": result.macro_f1, "chance_uniform": result.chance_uniform,
        "chance_majority": result.chance_majority, "majority_label": result.majority_label,
        "p_value_vs_chance": result.p_value_vs_chance, "label_space": space.value,
    }
    if space is LabelSpace.THREE_WAY:
        two = LabelSpace.TWO_WAY
        rows2 = [Prediction(r.id, collapse(r.gold, two), collapse(r.predicted, two), {}) for r in rows]
        r2 = compute_result(rows2, task="predictions", split="", shots=0, template="", space=two)
        out.update({"two_way_accuracy": r2.accuracy, "two_way_ci_low": r2.ci_low, "two_way_ci_high": r2.ci_high,
                    "two_way_macro_f1": r2.macro_f1, "two_way_chance_majority": r2.chance_majority})
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NLIMetric(evaluate.Metric):
    """Accuracy with an interval, per-label accuracy, macro-F1, chance and the two-way collapse for NLI."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            homepage="https://github.com/facebookresearch/anli",
        )

    def _compute(self, predictions, references, label_names=None, label_space=None) -> dict:
        return nli_scores(predictions, references, label_names, label_space, self.config_name)
