"""The pytest plugin end to end, with pytester and a tiny random model, offline.

Runs share one --nli-output-dir, so after the first evaluation the others read their scores from the
resumable cache; the launcher tests use their own folder so the subprocess really scores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@dataclass(frozen=True)
class Env:
    model: Path
    data: Path
    out: Path


@pytest.fixture(scope="module")
def env(tiny_llama, anli_hub, tmp_path_factory) -> Env:
    return Env(tiny_llama, anli_hub, tmp_path_factory.mktemp("nli-out"))


@pytest.fixture(autouse=True)
def model_repo(pytester, monkeypatch):
    # Each inner session is a model repository of its own (its rootdir), sees the plugin through its
    # entry point, and none of the caller's settings.
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\naddopts = "-ra"\n')
    for name in ("NLI_EVAL_MODEL", "GITHUB_STEP_SUMMARY", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)


def spec(env: Env, gates: str, model: bool = True) -> str:
    head = "[defaults]\n" + (f'model = "{env.model}"\n' if model else "")
    return head + f'split = "dev"\ndata_dir = "{env.data}"\n\n' + gates


FLOOR = '[[gate]]\nname = "r1_floor"\ntask = "anli_r1"\nmin_accuracy = {floor}\n\n'
REGRESSION = '[[gate]]\nname = "{task}_no_regression"\ntask = "{task}"\nbaseline = "nli_baselines/{task}.json"\n' \
             'max_drop = 0.01\n\n'


def run(pytester: pytest.Pytester, env: Env, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--nli-output-dir={env.out}", *args)


def flip_to_right(baseline: Path, count: int) -> list[str]:
    """Mark `count` wrong items right in a baseline: an older model that was better on exactly them."""
    data = json.loads(baseline.read_text())
    wrong = [k for k, v in data["per_example"].items() if not v][:count]
    assert len(wrong) == count
    for key in wrong:
        data["per_example"][key] = True
    baseline.write_text(json.dumps(data, indent=2))
    return wrong


def record_baselines(pytester: pytest.Pytester, env: Env, failed: int = 0) -> None:
    result = run(pytester, env, "--nli-update-baselines")
    gates = (pytester.path / "nli_ci.toml").read_text().count("[[gate]]")
    result.assert_outcomes(passed=gates - failed, failed=failed)
    result.stdout.fnmatch_lines(["*baseline written: nli_baselines/*.json (commit it)*"])


def lit(text: str) -> str:
    """A literal for fnmatch_lines: '[' opens a character class there."""
    return text.replace("[", "[[]")


# -- gates ---------------------------------------------------------------------------------------------


def test_passing_spec_shares_evaluations_and_records_baselines(pytester, env):
    pytester.makefile(".toml", nli_ci=spec(env, FLOOR.format(floor=0.3) + REGRESSION.format(task="anli_r1")
                                          + '[[gate]]\nname = "r3_floor"\ntask = "anli_r3"\nmin_accuracy = 0.2\n'))
    record_baselines(pytester, env)
    baseline = json.loads((pytester.path / "nli_baselines" / "anli_r1.json").read_text())
    assert baseline["n"] == 30 and len(baseline["per_example"]) == 30
    assert sum(baseline["per_example"].values()) == baseline["correct"] == 10
    assert (baseline["task"], baseline["split"], baseline["shots"], baseline["seed"]) == ("anli_r1", "dev", 0, 1234)

    result = run(pytester, env)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        f"nli-eval: model {env.model}, seed 1234: 3 gates, 2 evaluations, 1 regression gate",
        "*nli-eval gates*",
        lit(f"PASSED  nli_ci.toml::r1_floor: {env.model.name} anli_r1 0-shot n=30 accuracy 33.3% [19.2%, 51.2%]"),
        "PASSED  nli_ci.toml::anli_r1_no_regression: * baseline 33.3%, change +0.0 points, McNemar p 1 (Holm 1)",
    ])


def test_failing_floor_reports_accuracy_interval_and_how_to_accept(pytester, env):
    pytester.makefile(".toml", nli_ci=spec(env, FLOOR.format(floor=0.45)))
    result = run(pytester, env)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "nli-eval gate r1_floor FAILED: accuracy 33.3% (10/30) is below the floor 45.0%",
        "  spec       nli_ci.toml:6",
        f"  model      {env.model}",
        "  task       anli_r1, split dev, 0-shot, template harness, seed 1234",
        "  n          30",
        "  accuracy   33.3% (95% CI 19.2% to 51.2%); chance 33.3% uniform, 33.3% majority",
        "  floor      45.0%",
        f"  examples   */samples/{env.model.name}/anli_r1_0shot.jsonl",
        "  accept     if the lower accuracy is intended, lower min_accuracy of gate r1_floor in nli_ci.toml",
        "FAILED nli_ci.toml::r1_floor - nli-eval gate r1_floor FAILED: accuracy*",
    ])


def test_regression_caught_by_mcnemar_then_accepted(pytester, env):
    pytester.makefile(".toml", nli_ci=spec(env, REGRESSION.format(task="anli_r3")))
    record_baselines(pytester, env)
    baseline = pytester.path / "nli_baselines" / "anli_r3.json"
    flip_to_right(baseline, 20)

    result = run(pytester, env)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "nli-eval gate anli_r3_no_regression FAILED: accuracy fell 66.7 points on the same 30 items, more than the "
        "allowed 1.0, and McNemar says the drop is not noise (Holm-adjusted p 1.91e-06 < alpha 0.05)",
        "  n          30",
        "  accuracy   33.3% (95% CI 19.2% to 51.2%)*",
        f"  baseline   100.0% on the same 30 items (nli_baselines/anli_r3.json; model {env.model.name}, recorded *)",
        "  change     -66.7 points (100.0% -> 33.3%); allowed drop 1.0 points",
        "  McNemar    20 items right in the baseline and wrong now, 0 wrong in the baseline and right now; "
        "exact p = 1.91e-06, Holm-adjusted p = 1.91e-06 over 1 regression gate (alpha 0.05)",
        f"  examples   */samples/{env.model.name}/anli_r3_0shot.jsonl",
        "  accept     if the change is intended, record the new baseline with "
        "`pytest --nli-update-baselines 'nli_ci.toml::anli_r3_no_regression'` and commit nli_baselines/anli_r3.json",
    ])
    samples = [line for line in result.outlines if line.startswith("  examples")][0].split()[-1]
    assert len((pytester.path / samples).read_text().splitlines()) == 30

    # Accepting the change as the message says makes the gate pass again.
    run(pytester, env, "--nli-update-baselines", "nli_ci.toml::anli_r3_no_regression").assert_outcomes(passed=1)
    run(pytester, env).assert_outcomes(passed=1)


def test_drop_within_noise_passes(pytester, env):
    pytester.makefile(".toml", nli_ci=spec(env, REGRESSION.format(task="anli_r3")))
    record_baselines(pytester, env)
    flip_to_right(pytester.path / "nli_baselines" / "anli_r3.json", 2)
    result = run(pytester, env, "--junitxml", "junit.xml")
    result.assert_outcomes(passed=1)    # a 6.7-point drop, above max_drop, but McNemar p = 0.5
    props = junit_properties(pytester.path / "junit.xml")["anli_r3_no_regression"]
    assert props["nli_delta"] == "-0.0667" and props["nli_p"] == "0.5" and props["nli_mcnemar_b"] == "2"


def test_holm_across_the_sessions_regression_gates(pytester, env):
    pytester.makefile(".toml", nli_ci=spec(env, REGRESSION.format(task="anli_r1") + REGRESSION.format(task="anli_r3")))
    record_baselines(pytester, env)
    for task in ("anli_r1", "anli_r3"):
        flip_to_right(pytester.path / "nli_baselines" / f"{task}.json", 6)   # McNemar p = 0.03125 each
    alone = run(pytester, env, "-k", "anli_r1")
    alone.assert_outcomes(failed=1, deselected=1)
    alone.stdout.fnmatch_lines(["*exact p = 0.0313, Holm-adjusted p = 0.0313 over 1 regression gate (alpha 0.05)"])
    both = run(pytester, env, "--junitxml", "junit.xml")
    both.assert_outcomes(passed=2)      # Holm over two gates: 0.0625 each
    props = junit_properties(pytester.path / "junit.xml")
    assert {p["nli_p_holm"] for p in props.values()} == {"0.0625"}


def test_setup_problems_are_errors_never_passes(pytester, env):
    broken = pytester.mkdir("broken")
    (broken / "config.json").write_text('{"model_type": "llama"}')
    pytester.makefile(".toml", nli_ci=spec(env, REGRESSION.format(task="anli_r3")
                                          + FLOOR.format(floor=0.1).replace("r1_floor", "broken_model")
                                          .replace("min_accuracy", 'model = "broken"\nmin_accuracy')))
    pytester.makefile(".toml", nli_nomodel=spec(env, FLOOR.format(floor=0.1), model=False))
    result = run(pytester, env)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines_random([
        "nli-eval could not evaluate gate anli_r3_no_regression: no baseline at */nli_baselines/anli_r3.json; "
        "record it with `pytest --nli-update-baselines` and commit the file",
        "nli-eval could not evaluate gate broken_model: evaluating broken on anli_r1, 0-shot, split dev: model "
        "folder */broken has config.json but no weight files*",
        lit("nli-eval could not evaluate gate r1_floor: no model to evaluate for anli_r1, 0-shot, split dev: set "
            "model in the spec's [defaults], pass --nli-model MODEL, or set NLI_EVAL_MODEL or the nli_model ini key"),
    ])


def test_unmapped_classifier_labels_are_an_error_until_the_spec_maps_them(pytester, env, tmp_path_factory):
    from helpers import build_classifier

    model = build_classifier(tmp_path_factory.mktemp("clf"), {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    gate = FLOOR.format(floor=0.0).replace("min_accuracy", f'model = "{model}"\nmin_accuracy')
    pytester.makefile(".toml", nli_ci=spec(env, gate))
    result = run(pytester, env)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*has label names (LABEL_0, LABEL_1, LABEL_2) that are not NLI labels*"])
    mapped = gate.replace("min_accuracy", 'label_map = { LABEL_0 = "entailment", LABEL_1 = "neutral", '
                                          'LABEL_2 = "contradiction" }\nmin_accuracy')
    pytester.makefile(".toml", nli_ci=spec(env, mapped))
    run(pytester, env).assert_outcomes(passed=1)


def test_spec_mistakes_are_collection_errors(pytester, env):
    pytester.makefile(".toml", nli_ci=spec(env, '[[gate]]\nname = "g"\ntask = "anli_r1"\nmin_acc = 0.5\n'))
    result = run(pytester, env)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([lit("nli-eval spec error: *nli_ci.toml: [[gate]] g: unknown key 'min_acc' "
                                     "(did you mean 'min_accuracy'?)*")])


def test_regression_gate_against_other_items_is_an_error(pytester, env):
    pytester.makefile(".toml", nli_ci=spec(env, REGRESSION.format(task="anli_r3")))
    record_baselines(pytester, env)
    path = pytester.path / "nli_baselines" / "anli_r3.json"
    data = json.loads(path.read_text())
    data["per_example"] = {f"other-{k}": v for k, v in data["per_example"].items()}
    path.write_text(json.dumps(data))
    result = run(pytester, env)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*shares no item with the evaluation*the data changed*"])


# -- reporting -------------------------------------------------------------------------------------------


def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    root = ET.parse(path).getroot()
    return {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
            for case in root.iter("testcase")}


def test_junit_properties_and_github_step_summary(pytester, env, monkeypatch):
    pytester.makefile(".toml", nli_ci=spec(env, FLOOR.format(floor=0.45) + REGRESSION.format(task="anli_r1")))
    record_baselines(pytester, env, failed=1)
    summary = pytester.path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = run(pytester, env, "--junitxml", "junit.xml")
    result.assert_outcomes(passed=1, failed=1)

    props = junit_properties(pytester.path / "junit.xml")
    floor, regression = props["r1_floor"], props["anli_r1_no_regression"]
    assert floor["nli_accuracy"] == "0.3333" and floor["nli_interval"] == "[0.1923, 0.5122]"
    assert floor["nli_n"] == "30" and floor["nli_task"] == "anli_r1" and "nli_delta" not in floor
    assert regression["nli_delta"] == "0.0000" and regression["nli_p"] == "1" and regression["nli_p_holm"] == "1"

    text = summary.read_text()
    assert text.startswith("# earlier step\n### nli-eval gates")
    assert f"| `nli_ci.toml::r1_floor` | ❌ failed | {env.model.name} | anli_r1 (0-shot) | 30 | 33.3% (19.2%-51.2%) |" in text
    assert "| `nli_ci.toml::anli_r1_no_regression` | ✅ passed |" in text
    assert "- `nli_ci.toml::r1_floor`: accuracy 33.3% (10/30) is below the floor 45.0%" in text


def test_header_names_model_and_seed(pytester, env):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest(f"--nli-model={env.model}", "--nli-seed=7")
    result.stdout.fnmatch_lines([f"nli-eval: model {env.model} (from --nli-model), seed 7, alpha 0.05, "
                                 "launcher inprocess"])


def test_inert_without_specs_or_options(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    pytester.makefile(".toml", tasks="[x]\n", other_nli="[x]\n")   # not nli_*.toml
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    # Only pytest's own plugin list names it: no header, no collection line, no summary.
    assert [line for line in result.outlines if "nli" in line] == [
        line for line in result.outlines if line.startswith("plugins:")]


def test_plugin_imports_nothing_heavy(pytester, env):
    heavy = ("torch", "transformers", "datasets", "accelerate", "matplotlib")
    probe = (f"import sys, nli_eval.pytest_plugin; print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # A whole session that loads the plugin through its entry point and collects a spec.
    pytester.makeconftest(
        "import sys\n"
        "def pytest_terminal_summary(terminalreporter):\n"
        f"    heavy = sorted(m for m in {heavy!r} if m in sys.modules)\n"
        "    terminalreporter.write_line(f'heavy modules: {heavy}')\n"
        "    plugin = terminalreporter.config.pluginmanager.get_plugin('nli_eval')\n"
        "    terminalreporter.write_line(f'plugin: {plugin.__name__}')\n")
    pytester.makefile(".toml", nli_ci=spec(env, FLOOR.format(floor=0.3)))
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(["nli_ci.toml::r1_floor", lit("heavy modules: []"), "plugin: nli_eval.pytest_plugin"])


# -- fixtures --------------------------------------------------------------------------------------------


def test_fixtures_evaluate_and_assert(pytester, env):
    pytester.makepyfile(test_model=f"""
import pytest
from nli_eval.gates import GateFailure

DATA = {str(env.data)!r}


def test_evaluate(nli_evaluate, nli):
    result = nli_evaluate("anli_r1", split="dev", data_dir=DATA)
    assert result.n == 30 and result.correct == 10 and result.task == "anli_r1"
    assert result.interval[0] < result.accuracy < result.interval[1]
    assert result.chance == pytest.approx(1 / 3) and result.chance_majority == pytest.approx(1 / 3)
    assert len(result.per_example) == 30 and sum(result.per_example.values()) == result.correct
    assert nli.assert_min_accuracy(result, 0.3).passed
    with pytest.raises(GateFailure, match=r"below the floor 90.0%"):
        nli.assert_min_accuracy(result, 0.9)
    with pytest.raises(GateFailure, match="does not clear uniform chance"):
        nli.assert_above_chance(result)
    nli.assert_no_regression(result, "baselines/r1.json")


@pytest.mark.nli("anli_r3", split="dev", data_dir=DATA)
def test_marked(nli_result):
    assert nli_result.task == "anli_r3" and nli_result.n == 30


@pytest.mark.nli("anli_r9", split="dev", data_dir=DATA)
def test_unknown_task(nli_result):
    pass
""")
    args = (f"--nli-model={env.model}",)
    first = run(pytester, env, *args, "--nli-update-baselines")
    first.assert_outcomes(passed=2, errors=1)
    first.stdout.fnmatch_lines([f"*GateError: evaluating {env.model.name} on anli_r9, 0-shot, split dev: unknown task 'anli_r9'*"])
    assert json.loads((pytester.path / "baselines" / "r1.json").read_text())["n"] == 30
    run(pytester, env, *args, "-k", "not unknown").assert_outcomes(passed=2)


# -- the accelerate launcher -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_accelerate_launcher_runs_in_a_subprocess(pytester, env, processes, tmp_path):
    pytester.makefile(".toml", nli_ci=spec(env, FLOOR.format(floor=0.45) + REGRESSION.format(task="anli_r3")))
    record_baselines(pytester, env, failed=1)   # in process, so the launched run below shares no cache
    flip_to_right(pytester.path / "nli_baselines" / "anli_r3.json", 20)
    out = tmp_path / "out"
    result = pytester.runpytest(f"--nli-output-dir={out}", "--nli-launcher=accelerate",
                                f"--nli-num-processes={processes}")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines_random(["*FAILED: accuracy 33.3% (10/30) is below the floor 45.0%",
                                        "*20 items right in the baseline and wrong now, 0 wrong*"])
    (group,) = [p for p in out.iterdir() if p.is_dir()]
    log = (group / "launcher.log").read_text()
    assert ("accelerate.commands.launch --num_processes 2" in log) == (processes == 2)
    assert json.loads((group / "results.json").read_text())["config"]["processes"] == processes
    ranks = {p.name.rsplit(".", 2)[-2] for p in (group / "cache").glob("*.jsonl")}
    assert ranks == {f"rank{i}" for i in range(processes)}


def test_failed_launch_is_an_error_naming_the_log(pytester, env, tmp_path):
    pytester.makefile(".toml", nli_ci=spec(env, FLOOR.format(floor=0.3).replace("anli_r1", "anli_r9")))
    result = pytester.runpytest(f"--nli-output-dir={tmp_path}", "--nli-launcher=accelerate")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*the accelerate run of {env.model.name} on anli_r9 exited with code 2 and wrote no "
                                 "*results.json; last error: nli-eval: error: unknown task 'anli_r9'*; see */launcher.log"])


def test_a_ctrl_c_dropped_during_an_in_process_evaluation_still_stops_it(monkeypatch, tmp_path):
    import importlib
    import signal

    from nli_eval.fsutil import directory_lock
    from nli_eval.gates import EvalSettings
    from nli_eval.pytest_plugin import NliState

    class Dropped:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # raised, and dropped, inside the finalizer

    def run(self):
        Dropped()
        return "scored to the end"

    # The module as the plugin imports it: in-process pytester runs leave stale ones behind as attributes.
    monkeypatch.setattr(importlib.import_module("nli_eval.runner").Runner, "run", run)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            NliState(None, None)._run_inprocess(EvalSettings(model="m", task=""), ("anli_r1",), tmp_path / "out")
    finally:
        signal.signal(signal.SIGINT, handler)
    with directory_lock(tmp_path / "out"):  # the lock went with the stopped run
        pass
