"""Gate logic without pytest machinery: spec parsing, baselines, McNemar and Holm decisions, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nli_eval import gates
from nli_eval.errors import GateError
from nli_eval.gates import EvalSettings, Evaluation, Gate, GateFailure
from nli_eval.stats import mcnemar_exact, wilson

SPEC = """
[defaults]
model = "."
shots = 0
split = "dev"
data_dir = "data"
limit = 200
dtype = "float32"
batch_size = 4

[[gate]]
name = "anli_r3_above_chance"
task = "anli_r3"
above_chance = true

[[gate]]
name = "anli_r1_floor"
task = "anli_r1"
min_accuracy = 0.45

[[gate]]
name = "anli_r3_no_regression"
task = "anli_r3"
baseline = "nli_baselines/anli_r3.json"
max_drop = 0.01

[[gate]]
name = "anli_r1_5shot"
task = "anli_r1"
shots = 5
split = "test"
model = "org/other-model"
above_chance = "majority"
"""


def parse(text: str, tmp_path: Path, **kw) -> gates.Spec:
    path = tmp_path / "nli_ci.toml"
    path.write_text(text, encoding="utf-8")
    return gates.load_spec(path, **kw)


def evaluation(per_example: dict[str, bool], task: str = "anli_r3", chance_majority: float = 1 / 3,
               **settings) -> Evaluation:
    n, correct = len(per_example), sum(per_example.values())
    ci = wilson(correct, n)
    s = EvalSettings(model=settings.pop("model", "/models/ckpt"), task=task, **settings)
    return Evaluation(settings=s, model_label="ckpt", split="dev", template="harness", n=n, correct=correct,
                      accuracy=correct / n, ci_low=ci.low, ci_high=ci.high, chance_uniform=1 / 3,
                      chance_majority=chance_majority, p_value_vs_chance=1.0, per_example=per_example,
                      samples=(Path("/out/samples/ckpt/anli_r3_0shot.jsonl"),))


def items(n: int, right: int, prefix: str = "ex") -> dict[str, bool]:
    return {f"{prefix}{i:03d}": i < right for i in range(n)}


# -- spec files ----------------------------------------------------------------------------------


def test_spec_defaults_overrides_and_relative_paths(tmp_path):
    spec = parse(SPEC, tmp_path)
    names = [g.name for g in spec.gates]
    assert names == ["anli_r3_above_chance", "anli_r1_floor", "anli_r3_no_regression", "anli_r1_5shot"]
    chance, floor, regression, fewshot = spec.gates
    root = str(tmp_path.resolve())
    assert chance.settings.model == root                      # "." is the spec file's folder
    assert chance.settings.data_dir == str(tmp_path.resolve() / "data")
    assert (chance.settings.split, chance.settings.limit, chance.settings.dtype) == ("dev", 200, "float32")
    assert chance.settings.batch_size == 4 and chance.settings.seed == 1234
    assert chance.above_chance == "uniform" and chance.min_accuracy is None and not chance.is_regression
    assert floor.min_accuracy == 0.45
    assert regression.baseline == tmp_path.resolve() / "nli_baselines" / "anli_r3.json"
    assert regression.max_drop == 0.01 and regression.is_regression
    assert fewshot.settings.model == "org/other-model"        # a Hub id stays a Hub id
    assert (fewshot.settings.shots, fewshot.settings.split, fewshot.above_chance) == (5, "test", "majority")
    # Gates with equal settings share one evaluation; a group is one model load.
    assert chance.settings == regression.settings
    assert chance.settings.group() == floor.settings.group() != fewshot.settings.group()
    assert [g.line for g in spec.gates] == [11, 16, 21, 27]
    assert all(g.source == tmp_path / "nli_ci.toml" for g in spec.gates)


def test_model_precedence_gate_then_override_then_defaults_then_fallback(tmp_path):
    text = '[defaults]\nmodel = "org/a"\n[[gate]]\nname = "g"\ntask = "anli_r1"\nmin_accuracy = 0.1\n' \
           '[[gate]]\nname = "own"\ntask = "anli_r1"\nmodel = "org/own"\nmin_accuracy = 0.1\n'
    spec = parse(text, tmp_path)
    assert [g.settings.model for g in spec.gates] == ["org/a", "org/own"]
    spec = parse(text, tmp_path, model_override="/ckpt/new", fallback_model="org/ini")
    assert [g.settings.model for g in spec.gates] == ["/ckpt/new", "org/own"]
    bare = '[[gate]]\nname = "g"\ntask = "anli_r1"\nmin_accuracy = 0.1\n'
    assert parse(bare, tmp_path, fallback_model="org/ini").gates[0].settings.model == "org/ini"
    assert parse(bare, tmp_path).gates[0].settings.model == ""    # an error at the gate's setup, not here
    assert parse(bare, tmp_path, seed_override=7).gates[0].settings.seed == 7


def test_resolve_model_prefers_existing_folders(tmp_path):
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert gates.resolve_model("org/model", tmp_path) == str((tmp_path / "org" / "model").resolve())
    assert gates.resolve_model("EleutherAI/pythia-160m", tmp_path) == "EleutherAI/pythia-160m"
    assert gates.resolve_model("./ckpt", tmp_path) == str((tmp_path / "ckpt").resolve())


SPEC_MISTAKES = [
    ('[[gate]]\nname = "g"\ntask = "anli_r1"\nmin_acc = 0.5\n', "unknown key 'min_acc' (did you mean 'min_accuracy'?)"),
    ('[[gates]]\nname = "g"\ntask = "anli_r1"\nmin_accuracy = 0.5\n', "unknown key 'gates' (did you mean 'gate'?)"),
    ('[defaults]\nmodle = "x"\n[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 0.5\n', "[defaults]: unknown key 'modle'"),
    ('[defaults]\nmodel = "x"\n', "declares no [[gate]]"),
    ('[[gate]]\nname = "g"\ntask = "anli_r1"\n', "[[gate]] g: declares no check"),
    ('[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 0.5\n[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 0.5\n',
     "two gates are named 'g'"),
    ('[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 45\n', "write 0.45 for 45%"),
    ('[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 0.4\nmax_drop = 0.01\n', "max_drop needs a baseline"),
    ('[[gate]]\nname = "g"\ntask = "t"\nabove_chance = "yes"\n', "above_chance must be true, false"),
    ('[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 0.4\nfewshot_sampling = "random"\n', "fewshot_sampling must be one of"),
    ('[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 0.4\nshots = -1\n', "shots must be a whole number"),
    ('[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 0.4\nlabel_map = { LABEL_0 = "yes" }\n', "unknown label name 'yes'"),
    ('[[gate]]\nname = "has space"\ntask = "t"\nmin_accuracy = 0.4\n', "needs a name of letters"),
    ('[[gate]]\nname = "g"\nmin_accuracy = 0.4\n', "task must be a non-empty string"),
    ('[[gate]\n', "invalid TOML"),
    ('[[gate]]\nname = "a"\ntask = "anli_r1"\nbaseline = "b.json"\n[[gate]]\nname = "b"\ntask = "anli_r3"\nbaseline = "b.json"\n',
     "baseline b.json is also used by gate a"),
]


@pytest.mark.parametrize("text, message", SPEC_MISTAKES, ids=[m for _, m in SPEC_MISTAKES])
def test_spec_mistakes_are_gate_errors_naming_the_fix(tmp_path, text, message):
    with pytest.raises(GateError) as info:
        parse(text, tmp_path)
    assert message in str(info.value)
    assert str(tmp_path / "nli_ci.toml") in str(info.value)


def test_label_map_and_task_files(tmp_path):
    spec = parse('[defaults]\nlabel_map = { LABEL_0 = "contradiction", LABEL_2 = "Entailment", LABEL_1 = "neutral" }\n'
                 'task_files = ["tasks/mine.toml"]\n[[gate]]\nname = "g"\ntask = "t"\nmin_accuracy = 0.4\n', tmp_path)
    s = spec.gates[0].settings
    assert s.label_map == (("LABEL_0", "contradiction"), ("LABEL_1", "neutral"), ("LABEL_2", "entailment"))
    assert s.task_files == (str(tmp_path.resolve() / "tasks" / "mine.toml"),)


# -- baselines and comparisons ---------------------------------------------------------------------


def test_baseline_round_trip_keeps_per_example_correctness(tmp_path):
    ev = evaluation(items(30, 10))
    path = gates.write_baseline(tmp_path / "b" / "anli_r3.json", ev)
    data = json.loads(path.read_text())
    assert data["schema"] == "nli-eval/baseline" and data["n"] == 30 and data["correct"] == 10
    assert list(data["per_example"]) == sorted(data["per_example"])
    base = gates.read_baseline(path)
    assert dict(base.per_example) == items(30, 10)
    assert (base.task, base.split, base.shots, base.template, base.seed) == ("anli_r3", "dev", 0, "harness", 1234)
    assert base.accuracy == pytest.approx(1 / 3) and base.model == "/models/ckpt"


@pytest.mark.parametrize("content, message", [
    (None, "no baseline at"),
    ("{", "not valid JSON"),
    ('{"schema": "other"}', "not an nli-eval baseline"),
    ('{"schema": "nli-eval/baseline", "schema_version": 9}', "schema version 9"),
    ('{"schema": "nli-eval/baseline", "schema_version": 1, "per_example": {"a": true}, "n": 2}', "malformed"),
    ('{"schema": "nli-eval/baseline", "schema_version": 1, "per_example": {"a": 1}, "n": 1}', "malformed"),
])
def test_bad_baselines_are_setup_errors(tmp_path, content, message):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(GateError) as info:
        gates.read_baseline(path)
    assert message in str(info.value) and "--nli-update-baselines" in str(info.value)


def baseline_of(per_example: dict[str, bool], tmp_path: Path, **settings) -> gates.Baseline:
    return gates.read_baseline(gates.write_baseline(tmp_path / "b.json", evaluation(per_example, **settings)))


def test_compare_counts_discordant_pairs_on_shared_items(tmp_path):
    old = {f"ex{i:03d}": i < 20 for i in range(30)}
    new = {f"ex{i:03d}": (i < 8 or 25 <= i) for i in range(2, 32)}   # 2 dropped, 2 new items
    c = gates.compare(baseline_of(old, tmp_path), evaluation(new))
    assert c.n == 28 and (c.missing, c.new) == (2, 2)
    # shared ids 2..29: baseline right on 2..19, current right on 2..7 and 25..29
    assert (c.both_right, c.baseline_only, c.current_only, c.both_wrong) == (6, 12, 5, 5)
    assert c.p_value == pytest.approx(mcnemar_exact(12, 5))
    assert c.drop == pytest.approx((12 - 5) / 28)
    assert c.baseline_accuracy == pytest.approx(18 / 28) and c.current_accuracy == pytest.approx(11 / 28)


def test_compare_refuses_other_items_or_settings(tmp_path):
    base = baseline_of(items(30, 10), tmp_path)
    with pytest.raises(GateError, match="shares no item"):
        gates.compare(base, evaluation(items(30, 10, prefix="other")))
    with pytest.raises(GateError, match="task 'anli_r3' in the baseline, 'anli_r1' now"):
        gates.compare(base, evaluation(items(30, 10), task="anli_r1"))
    with pytest.raises(GateError, match="shots 0 in the baseline, 5 now"):
        gates.compare(base, evaluation(items(30, 10), shots=5))
    # The seed only matters when it picks shots or a sample.
    assert gates.compare(base, evaluation(items(30, 10), seed=99)).n == 30
    few = baseline_of(items(30, 10), tmp_path, shots=1)
    with pytest.raises(GateError, match="seed 1234 in the baseline, 99 now"):
        gates.compare(few, evaluation(items(30, 10), shots=1, seed=99))


# -- decisions ---------------------------------------------------------------------------------------


def regression_gate(max_drop: float = 0.01) -> Gate:
    ev = evaluation(items(30, 10))
    return Gate(name="r3_no_regression", settings=ev.settings, baseline=Path("/repo/nli_baselines/anli_r3.json"),
                max_drop=max_drop, source=Path("/repo/nli_ci.toml"), line=21)


def decide_against(old: dict[str, bool], new: dict[str, bool], tmp_path: Path, gate: Gate | None = None,
                   p_adjusted: float | None = None, family: int = 1) -> gates.Verdict:
    base = baseline_of(old, tmp_path)
    ev = evaluation(new)
    return gates.decide(gate or regression_gate(), ev, baseline=base, comparison=gates.compare(base, ev),
                        p_adjusted=p_adjusted, family=family)


def test_regression_needs_a_drop_and_a_significant_mcnemar_test(tmp_path):
    now = items(30, 10)
    big = {k: v or i < 30 for i, (k, v) in enumerate(now.items())}                     # 20 items lost
    noise = {k: v or k in ("ex010", "ex011") for k, v in now.items()}                   # 2 items lost
    lost = decide_against(big, now, tmp_path)
    assert not lost.passed and lost.failures[0].check == "regression"
    assert lost.comparison.baseline_only == 20 and lost.comparison.p_value < 1e-5
    within = decide_against(noise, now, tmp_path)
    assert within.passed, "a 6.7-point drop on 2 items is noise (McNemar p = 0.5)"
    assert within.comparison.drop > 0.01 and within.comparison.p_value == pytest.approx(0.5)
    tolerated = decide_against(big, now, tmp_path, gate=regression_gate(max_drop=0.7))
    assert tolerated.passed, "a significant drop within max_drop passes"
    better = decide_against(now, big, tmp_path)
    assert better.passed and better.comparison.drop < 0


def test_holm_correction_spares_two_borderline_regressions(tmp_path):
    now = items(30, 10)
    six = {k: v or k in {f"ex{i:03d}" for i in range(10, 16)} for k, v in now.items()}
    raw = mcnemar_exact(6, 0)
    assert raw == pytest.approx(0.03125)
    alone = decide_against(six, now, tmp_path)
    assert not alone.passed                          # one gate: p 0.031 < 0.05
    adjusted = gates.holm_adjust({"r1": raw, "r3": raw})
    assert adjusted == {"r1": pytest.approx(0.0625), "r3": pytest.approx(0.0625)}
    shared = decide_against(six, now, tmp_path, p_adjusted=adjusted["r3"], family=2)
    assert shared.passed                             # two gates: Holm p 0.0625 >= 0.05
    assert "Holm-adjusted p = 0.0625 over 2 regression gates" in shared.report()


def test_floor_and_chance_checks():
    ev = evaluation(items(30, 10), chance_majority=0.2)
    floor = Gate(name="f", settings=ev.settings, min_accuracy=0.45)
    assert gates.decide(floor, ev).failures[0].message == "accuracy 33.3% (10/30) is below the floor 45.0%"
    assert gates.decide(Gate(name="f", settings=ev.settings, min_accuracy=1 / 3), ev).passed
    strong = evaluation(items(30, 20), chance_majority=0.2)
    assert gates.decide(Gate(name="c", settings=ev.settings, above_chance="uniform"), strong).passed
    assert not gates.decide(Gate(name="c", settings=ev.settings, above_chance="uniform"), ev).passed
    # Against a lower majority-class chance, a weak model's lower bound (19.2%) still falls short of 20%.
    verdict = gates.decide(Gate(name="c", settings=ev.settings, above_chance="majority"), ev)
    assert verdict.failures[0].message == "the 95% interval's lower bound 19.2% does not clear majority chance 20.0%"


def test_failure_report_says_what_why_where_and_how_to_accept(tmp_path):
    now = items(30, 10)
    verdict = decide_against({k: True for k in now}, now, tmp_path, p_adjusted=3.8e-6, family=2)
    text = verdict.report(node_id="nli_ci.toml::r3_no_regression")
    first = text.splitlines()[0]
    assert first.startswith("nli-eval gate r3_no_regression FAILED: accuracy fell 66.7 points on the same 30 items")
    for part in ["spec       /repo/nli_ci.toml:21", "model      /models/ckpt",
                 "task       anli_r3, split dev, 0-shot, template harness, seed 1234", "n          30",
                 "accuracy   33.3% (95% CI 19.2% to 51.2%); chance 33.3% uniform",
                 "baseline   100.0% on the same 30 items",
                 "change     -66.7 points (100.0% -> 33.3%); allowed drop 1.0 points",
                 "McNemar    20 items right in the baseline and wrong now, 0 wrong in the baseline and right now; "
                 "exact p = 1.91e-06, Holm-adjusted p = 3.8e-06 over 2 regression gates (alpha 0.05)",
                 "examples   /out/samples/ckpt/anli_r3_0shot.jsonl",
                 "`pytest --nli-update-baselines 'nli_ci.toml::r3_no_regression'` and commit "
                 "/repo/nli_baselines/anli_r3.json"]:
        assert part in text, part
    props = dict(verdict.properties())
    assert props["nli_accuracy"] == "0.3333" and props["nli_interval"] == "[0.1923, 0.5122]"
    assert props["nli_delta"] == "-0.6667" and props["nli_p"] == "1.907e-06" and props["nli_p_holm"] == "3.8e-06"


def test_assertion_helpers_raise_readable_assertion_errors(tmp_path):
    ev = evaluation(items(30, 10))
    assert gates.assert_min_accuracy(ev, 0.3).passed
    with pytest.raises(AssertionError, match=r"assert_min_accuracy FAILED: accuracy 33.3% \(10/30\) is below"):
        gates.assert_min_accuracy(ev, 0.5)
    with pytest.raises(GateFailure, match="does not clear uniform chance 33.3%"):
        gates.assert_above_chance(ev)
    base = gates.write_baseline(tmp_path / "b.json", evaluation(items(30, 30)))
    with pytest.raises(GateFailure, match="McNemar says the drop is not noise"):
        gates.assert_no_regression(ev, base, max_drop=0.05)
    assert gates.assert_no_regression(ev, base, max_drop=0.7).passed
    with pytest.raises(GateError, match="no baseline at"):
        gates.assert_no_regression(ev, tmp_path / "missing.json")


def test_per_example_files_and_markdown_summary(tmp_path):
    samples = tmp_path / "anli_r1_0shot.jsonl"
    samples.write_text('{"id": "a", "correct": true}\n{"id": "b", "correct": false}\n')
    assert gates.read_samples(samples) == {"a": True, "b": False}
    assert gates.read_samples(samples, prefix="anli_r1/") == {"anli_r1/a": True, "anli_r1/b": False}
    samples.write_text('{"id": "a"}\n')
    with pytest.raises(GateError, match="not a per-example prediction line"):
        gates.read_samples(samples)
    ev = evaluation(items(30, 10))
    floor = gates.decide(Gate(name="f", settings=ev.settings, min_accuracy=0.45), ev)
    table = gates.markdown_table([("failed", "nli_ci.toml::f", floor, ""),
                                  ("error", "nli_ci.toml::r", None, "no baseline at b.json")])
    assert "| `nli_ci.toml::f` | ❌ failed | ckpt | anli_r3 (0-shot) | 30 | 33.3% (19.2%-51.2%) |" in table
    assert "| `nli_ci.toml::r` | ⚠️ error |" in table
    assert "- `nli_ci.toml::f`: accuracy 33.3% (10/30) is below the floor 45.0%" in table
    assert "- `nli_ci.toml::r`: no baseline at b.json" in table
