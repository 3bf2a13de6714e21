"""pytest plugin: NLI robustness gates in a model's CI (entry point ``pytest11: nli_eval``).

The entry point loads this module in every pytest session of the environment, so it imports only the
standard library, pytest and light nli_eval modules, and stays inert unless a session collects an
``nli_*.toml`` spec, passes an ``--nli-`` option or uses one of the fixtures. torch and transformers
load when the first evaluation runs.

Each ``[[gate]]`` of a spec file is a test item. The evaluation runs in the item's setup, so a setup
problem (no baseline, a model that does not load, a bad label map) is an ERROR, never a pass; the
decision runs in the call, so a gate that ran and failed is a FAILURE with a full report.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from . import gates
from .errors import GateError, ModelError, NliEvalError
from .fsutil import safe_name, user_path
from .gates import (Baseline, Comparison, EvalSettings, Evaluation, Gate, GateFailure, Verdict,
                    assert_above_chance, assert_min_accuracy, assert_no_regression)

ENV_MODEL = "NLI_EVAL_MODEL"
LAUNCHERS = ("inprocess", "accelerate")


# ---------------------------------------------------------------------------------------------
# Options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nli-eval", "NLI robustness gates (nli-eval)")
    group.addoption("--nli-model", metavar="MODEL",
                    help=f"model the gates evaluate (Hub id or folder); overrides [defaults] model of the spec "
                         f"files, not a gate's own model. Also ${ENV_MODEL} or the nli_model ini key.")
    group.addoption("--nli-seed", type=int, metavar="N",
                    help="seed for few-shot draws and --limit samples; overrides [defaults] seed (default 1234)")
    group.addoption("--nli-update-baselines", action="store_true", default=False,
                    help="write the baseline files of the regression gates (with per-example correctness) "
                         "instead of comparing against them")
    group.addoption("--nli-alpha", type=float, metavar="P",
                    help="significance level of the regression tests after Holm correction (default 0.05)")
    group.addoption("--nli-output-dir", metavar="DIR",
                    help="where evaluations write results, per-example files and their score cache "
                         "(default: .pytest_cache/d/nli-eval)")
    group.addoption("--nli-launcher", choices=LAUNCHERS,
                    help="inprocess (default) or accelerate: run each evaluation under `accelerate launch` "
                         "in a subprocess and read its results file")
    group.addoption("--nli-num-processes", type=int, metavar="N",
                    help="processes for --nli-launcher accelerate (default 1)")
    parser.addini("nli_model", "model the gates evaluate when a spec file names none", default="")
    parser.addini("nli_seed", "default seed of the gates' evaluations", default="")
    parser.addini("nli_alpha", "significance level of the regression gates (default 0.05)", default="")
    parser.addini("nli_output_dir", "where the gates' evaluations write their outputs", default="")
    parser.addini("nli_launcher", "inprocess or accelerate", default="")
    parser.addini("nli_num_processes", "processes for the accelerate launcher", default="")


@dataclass(frozen=True)
class Options:
    model_override: str | None     # --nli-model or $NLI_EVAL_MODEL, resolved: beats a spec's [defaults]
    model_fallback: str | None     # the nli_model ini key, resolved: used when a spec names no model
    model_source: str
    seed: int | None
    alpha: float
    update_baselines: bool
    output_dir: Path | None
    launcher: str
    num_processes: int
    explicit: bool                 # something nli-specific was set: the report header shows it


def _ini(config: pytest.Config, name: str) -> str:
    value = config.getini(name)
    return str(value).strip() if value else ""


def _number(text: str, what: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise pytest.UsageError(f"{what} expects a {kind.__name__}, got {text!r}") from None


def read_options(config: pytest.Config) -> Options:
    here = Path(config.invocation_params.dir)
    ini_dir = Path(config.inipath).parent if config.inipath else Path(config.rootpath)
    opt = config.getoption
    model_override, source = None, ""
    if opt("nli_model"):
        model_override, source = gates.resolve_model(opt("nli_model"), here), "--nli-model"
    elif os.environ.get(ENV_MODEL, "").strip():
        model_override, source = gates.resolve_model(os.environ[ENV_MODEL], here), ENV_MODEL
    fallback = gates.resolve_model(_ini(config, "nli_model"), ini_dir) or None
    if model_override is None and fallback:
        source = "nli_model"
    seed = opt("nli_seed")
    if seed is None and _ini(config, "nli_seed"):
        seed = _number(_ini(config, "nli_seed"), "nli_seed", int)
    alpha = opt("nli_alpha")
    if alpha is None:
        alpha = _number(_ini(config, "nli_alpha"), "nli_alpha", float) if _ini(config, "nli_alpha") else gates.DEFAULT_ALPHA
    if not 0.0 < alpha < 1.0:
        raise pytest.UsageError(f"--nli-alpha must be between 0 and 1, got {alpha}")
    output: Path | None = None
    if opt("nli_output_dir"):
        output = (here / opt("nli_output_dir")).resolve()
    elif _ini(config, "nli_output_dir"):
        output = (ini_dir / _ini(config, "nli_output_dir")).resolve()
    launcher = opt("nli_launcher") or _ini(config, "nli_launcher") or "inprocess"
    if launcher not in LAUNCHERS:
        raise pytest.UsageError(f"nli_launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    processes = opt("nli_num_processes")
    if processes is None:
        processes = _number(_ini(config, "nli_num_processes"), "nli_num_processes", int) \
            if _ini(config, "nli_num_processes") else 1
    if processes < 1:
        raise pytest.UsageError(f"--nli-num-processes must be at least 1, got {processes}")
    explicit = bool(model_override or fallback or seed is not None or opt("nli_update_baselines")
                    or opt("nli_alpha") is not None or opt("nli_launcher") or opt("nli_output_dir"))
    return Options(model_override, fallback, source, seed, alpha, bool(opt("nli_update_baselines")), output,
                   launcher, processes, explicit)


# ---------------------------------------------------------------------------------------------
# Session state: evaluations shared by gates, the Holm family, outcomes for the summaries


Row = tuple[str, str, "Verdict | None", str]   # status, node id, verdict, error text


class NliState:
    def __init__(self, config: pytest.Config, options: Options) -> None:
        self.config = config
        self.options = options
        self.selected: list[Gate] = []
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.written: dict[Path, EvalSettings] = {}
        self._evaluations: dict[EvalSettings, Evaluation | BaseException] = {}
        self._family: dict[Gate, tuple[Baseline, Comparison] | BaseException] | None = None
        self._adjusted: dict[Gate, float] = {}
        self._out: Path | None = None

    # -- evaluations ------------------------------------------------------------------------
    def output_root(self) -> Path:
        if self._out is None:
            root = self.options.output_dir
            if root is None:
                cache = getattr(self.config, "cache", None)  # None under -p no:cacheprovider
                root = Path(cache.mkdir("nli-eval")) if cache is not None else Path(tempfile.mkdtemp(prefix="nli-eval-"))
            root.mkdir(parents=True, exist_ok=True)
            self._out = root
        return self._out

    def evaluate(self, settings: EvalSettings) -> Evaluation:
        """The evaluation for these settings, run once a session; its setup error is raised every time."""
        if not settings.model:
            raise GateError(f"no model to evaluate for {settings.describe()}: set model in the spec's [defaults], "
                            f"pass --nli-model MODEL, or set {ENV_MODEL} or the nli_model ini key")
        if settings not in self._evaluations:
            # Run every selected evaluation of the same model and settings together: one model load.
            group = settings.group()
            batch = [s for s in dict.fromkeys(g.settings for g in self.selected)
                     if s.group() == group and s not in self._evaluations and s.model]
            if settings not in batch:
                batch.append(settings)
            self._run(batch)
        outcome = self._evaluations[settings]
        if isinstance(outcome, BaseException):
            raise outcome.with_traceback(None)
        return outcome

    def _run(self, batch: list[EvalSettings]) -> None:
        try:
            self._evaluations.update(self._launch(batch))
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, ModelError):
                for settings in batch:  # one bad task must not take the other gates of its group down
                    self._run([settings])
                return
            error: BaseException = exc
            if isinstance(exc, NliEvalError) and not isinstance(exc, GateError):
                error = GateError(f"evaluating {batch[0].model_label} on {batch[0].describe()}: {exc}")
            for settings in batch:
                self._evaluations[settings] = error

    def _launch(self, batch: list[EvalSettings]) -> dict[EvalSettings, Evaluation]:
        group = batch[0].group()
        out = self.output_root() / f"{safe_name(group.model_label, 40)}-{group.shots}shot-{group.digest()}"
        tasks = tuple(dict.fromkeys(s.task for s in batch))
        if self.options.launcher == "accelerate":
            record = self._run_subprocess(group, tasks, out)
        else:
            record = self._run_inprocess(group, tasks, out)
        return self._collect(record, batch, out)

    def _run_inprocess(self, group: EvalSettings, tasks: tuple[str, ...], out: Path) -> Any:
        from . import interrupts
        from .backends.loader import BackendOptions
        from .fsutil import directory_lock
        from .labels import Label
        from .modeling import LoadOptions
        from .runner import RunConfig, Runner

        config = RunConfig(
            models=(group.model,), tasks=tasks, shots=(group.shots,), split=group.split, data_dir=group.data_dir,
            template=group.template, sampling=group.sampling, seed=group.seed, limit=group.limit,
            output_dir=str(out), task_files=group.task_files,
            load=LoadOptions(dtype=group.dtype, device=group.device),
            backend=BackendOptions(kind=group.backend, batch_size=group.batch_size,
                                   label_map={k: Label(v) for k, v in group.label_map} or None),
            progress=False)
        with directory_lock(out), interrupts.latched():  # Ctrl-C stops the session even if a finalizer drops it
            return Runner(config).run()

    def launch_command(self, group: EvalSettings, tasks: tuple[str, ...], out: Path) -> list[str]:
        """`nli-eval run` for these settings, under `accelerate launch` when more than one process."""
        args = ["run", group.model, "--tasks", ",".join(tasks), "--shots", str(group.shots), "--seed", str(group.seed),
                "--fewshot-sampling", group.sampling, "--dtype", group.dtype, "--device", group.device,
                "--batch-size", str(group.batch_size), "--backend", group.backend, "--output-dir", str(out),
                "--no-progress", "--no-report"]
        for flag, value in (("--split", group.split), ("--data-dir", group.data_dir),
                            ("--template", group.template), ("--limit", group.limit)):
            if value is not None:
                args += [flag, str(value)]
        if group.label_map:
            args += ["--label-map", ",".join(f"{k}={v}" for k, v in group.label_map)]
        for path in group.task_files:
            args += ["--task-file", path]
        n = self.options.num_processes
        if n == 1:
            return [sys.executable, "-m", "nli_eval", *args]
        # --multi_gpu starts N processes on GPUs, or on the CPU (gloo) where there is no GPU.
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), "--num_machines", "1",
                "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "nli_eval", *args]

    def _run_subprocess(self, group: EvalSettings, tasks: tuple[str, ...], out: Path) -> Any:
        from .results import read_results

        out.mkdir(parents=True, exist_ok=True)
        results = out / "results.json"
        log = out / "launcher.log"
        # The exit code of accelerate is not trusted either way: a complete, fresh results file is the outcome.
        results.unlink(missing_ok=True)
        command = self.launch_command(group, tasks, out)
        with log.open("w", encoding="utf-8") as fh:
            fh.write(" ".join(command) + "\n\n")
            fh.flush()
            code = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=str(self.config.invocation_params.dir), check=False).returncode
        if not results.is_file():
            raise GateError(f"the {self.options.launcher} run of {group.model_label} on {', '.join(tasks)} exited with "
                            f"code {code} and wrote no {results}; {_last_error(log)}see {log}")
        record = read_results(results)
        if not record.models or record.models[0].model != group.model:
            raise GateError(f"{results} holds results for another model; see {log}")
        if code != 0:
            self.notes.append(f"{self.options.launcher} exited with code {code} after writing complete results "
                              f"({results}); they are used (see {log})")
        return record

    def _collect(self, record: Any, batch: list[EvalSettings], out: Path) -> dict[EvalSettings, Evaluation]:
        from .results import samples_path

        model = record.models[0]
        shots = batch[0].shots
        results = {r.task: r for r in model.results if r.shots == shots}
        aggregates = {a.task: a for a in model.aggregates if a.shots == shots}
        found: dict[EvalSettings, Evaluation] = {}
        for settings in batch:
            if settings.task in results:
                result, members, prefix = results[settings.task], (settings.task,), False
            elif settings.task in aggregates:
                # An aggregate (anli = r1 + r2 + r3): ids are kept apart by task, as rounds may share ids.
                result, members, prefix = aggregates[settings.task], aggregates[settings.task].members, True
            else:
                raise GateError(f"the run of {model.label} produced no {settings.task} {shots}-shot result")
            paths = [samples_path(out, model.label, member, shots) for member in members]
            per_example: dict[str, bool] = {}
            for member, path in zip(members, paths):
                per_example.update(gates.read_samples(path, prefix=f"{member}/" if prefix else ""))
            found[settings] = gates.evaluation_from(settings, result, per_example, paths, model.label,
                                                    model.fingerprint)
        return found

    # -- gates --------------------------------------------------------------------------------
    def verdict(self, gate: Gate) -> Verdict:
        """Evaluate a gate (raising GateError on a setup problem) and decide it."""
        evaluation = self.evaluate(gate.settings)
        if gate.baseline is None:
            return gates.decide(gate, evaluation, alpha=self.options.alpha)
        if self.options.update_baselines:
            path = self.write_baseline(gate.baseline, evaluation)
            return gates.decide(gate, evaluation, alpha=self.options.alpha, baseline_written=path)
        outcome = self._regression(gate)
        if isinstance(outcome, BaseException):
            raise outcome.with_traceback(None)
        baseline, comparison = outcome
        return gates.decide(gate, evaluation, alpha=self.options.alpha, baseline=baseline, comparison=comparison,
                            p_adjusted=self._adjusted[gate], family=len(self._adjusted))

    def _regression(self, gate: Gate) -> tuple[Baseline, Comparison] | BaseException:
        """Compare every regression gate of the session at once: Holm needs all their p-values."""
        if self._family is None or gate not in self._family:
            members = list(dict.fromkeys([g for g in self.selected if g.is_regression] + [gate]))
            family: dict[Gate, tuple[Baseline, Comparison] | BaseException] = {}
            for g in members:
                try:
                    evaluation = self.evaluate(g.settings)
                    baseline = gates.read_baseline(g.baseline)  # type: ignore[arg-type]
                    family[g] = (baseline, gates.compare(baseline, evaluation))
                except Exception as exc:  # reported at that gate's setup, as an error
                    family[g] = exc
            self._family = family
            self._adjusted = gates.holm_adjust({g: v[1].p_value for g, v in family.items()
                                                if not isinstance(v, BaseException)})
        return self._family[gate]

    def write_baseline(self, path: Path, evaluation: Evaluation) -> Path:
        previous = self.written.get(path)
        if previous is not None and previous != evaluation.settings:
            raise GateError(f"two evaluations with different settings write baseline {path}; give each its own file")
        if previous is None:
            gates.write_baseline(path, evaluation)
            self.written[path] = evaluation.settings
        return path


def _last_error(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if "error" in line.lower()]
    last = (errors or lines[-1:] or [""])[-1]
    return f"last error: {last[:300]}; " if last else ""


STATE = pytest.StashKey[NliState]()


def _state(config: pytest.Config) -> NliState:
    return config.stash[STATE]


# ---------------------------------------------------------------------------------------------
# Collection: nli_*.toml -> one item per gate


class GateItem(pytest.Item):
    def __init__(self, *, gate: Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.verdict: Verdict | None = None
        self.add_marker("nli")

    def setup(self) -> None:
        self.verdict = _state(self.config).verdict(self.gate)

    def runtest(self) -> None:
        if self.verdict is None:  # pragma: no cover - setup always sets it or raises
            raise GateError(f"gate {self.gate.name} was not evaluated")
        self.user_properties.extend(self.verdict.properties())
        if not self.verdict.passed:
            raise GateFailure(self.verdict.report(node_id=self.nodeid))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, GateFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        line = self.gate.line - 1 if self.gate.line else None
        return self.path, line, f"nli gate {self.gate.name} ({self.gate.settings.describe()})"


class SpecFile(pytest.File):
    def collect(self) -> Any:
        options = _state(self.config).options
        spec = gates.load_spec(self.path, model_override=options.model_override, seed_override=options.seed,
                               fallback_model=options.model_fallback)
        for gate in spec.gates:
            yield GateItem.from_parent(self, name=gate.name, gate=gate)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, GateError):
            return f"nli-eval spec error: {excinfo.value}"
        return super().repr_failure(excinfo)


# ---------------------------------------------------------------------------------------------
# Hooks


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "nli(task, **settings): an NLI evaluation for the nli_result fixture; "
                                       "every nli-eval gate carries it too")
    config.stash[STATE] = NliState(config, read_options(config))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and fnmatch.fnmatch(file_path.name, gates.SPEC_PATTERN):
        return SpecFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    _state(session.config).selected = [item.gate for item in session.items if isinstance(item, GateItem)]


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(STATE, None)
    if state is None:
        return None
    named_spec = any(fnmatch.fnmatch(Path(str(a).split("::")[0]).name, gates.SPEC_PATTERN) for a in config.args)
    o = state.options
    if not (o.explicit or named_spec):
        return None
    model = o.model_override or o.model_fallback
    parts = [f"model {model} (from {o.model_source})" if model else "model from the spec files",
             f"seed {o.seed}" if o.seed is not None else f"seed from the spec files (default {gates.DEFAULT_SEED})",
             f"alpha {o.alpha:g}", f"launcher {o.launcher}"
             + (f" x{o.num_processes}" if o.launcher == "accelerate" else "")]
    if o.update_baselines:
        parts.append("updating baselines")
    return ["nli-eval: " + ", ".join(parts)]


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str] | None:
    selected = [item.gate for item in items if isinstance(item, GateItem)]
    if not selected:
        return None
    lines = []
    by_model: dict[tuple[str, int], list[Gate]] = {}
    for gate in selected:
        by_model.setdefault((gate.settings.model or "(no model)", gate.settings.seed), []).append(gate)
    for (model, seed), group in by_model.items():
        evaluations = len({g.settings for g in group})
        regressions = sum(g.is_regression for g in group)
        lines.append(f"nli-eval: model {model}, seed {seed}: {len(group)} gate{'s' * (len(group) != 1)}, "
                     f"{evaluations} evaluation{'s' * (evaluations != 1)}, {regressions} regression "
                     f"gate{'s' * (regressions != 1)}")
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if isinstance(item, GateItem):
        state = _state(item.config)
        if call.when == "setup" and report.failed and call.excinfo is not None:
            error = call.excinfo.value
            message = str(error) if isinstance(error, NliEvalError) else f"{type(error).__name__}: {error}"
            if isinstance(error, NliEvalError):  # a one-line cause and fix reads better than a traceback
                report.longrepr = f"nli-eval could not evaluate gate {item.gate.name}: {message}"
            item.user_properties.append(("nli_error", message))
            state.rows.append(("error", item.nodeid, None, message))
        elif call.when == "call" and item.verdict is not None:
            state.rows.append(("passed" if report.passed else "failed", item.nodeid, item.verdict, ""))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = config.stash.get(STATE, None)
    target = os.environ.get("GITHUB_STEP_SUMMARY", "").strip()
    if state is None or not state.rows or not target or hasattr(config, "workerinput"):
        return
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(gates.markdown_table(state.rows))
    except OSError as exc:
        state.notes.append(f"cannot append to $GITHUB_STEP_SUMMARY ({target}): {exc.strerror or exc}")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or not (state.rows or state.notes or state.written):
        return
    tr = terminalreporter
    tr.write_sep("-", "nli-eval gates")
    for status, node_id, verdict, error in state.rows:
        tr.write_line(f"{status.upper():7} {node_id}: {verdict.summary() if verdict else error}")
    for path in state.written:
        tr.write_line(f"baseline written: {gates.shown(path)} (commit it)")
    for note in state.notes:
        tr.write_line(f"note: {note}")


# ---------------------------------------------------------------------------------------------
# Fixtures for Python tests


class NliFixture:
    """Evaluate NLI tasks in Python tests and assert on the results (the `nli` fixture).

    Relative paths (data_dir, task_files, baselines) are taken against the test file's folder. An
    evaluation is shared with every gate and test of the session that uses the same settings.
    """

    def __init__(self, state: NliState, base: Path) -> None:
        self._state = state
        self.base = base

    def settings(self, task: str, **settings: Any) -> EvalSettings:
        options = self._state.options
        return gates.build_settings(settings, task=task, base=self.base, where=f"nli.evaluate({task!r})",
                                    model_override=options.model_override, seed_override=options.seed,
                                    fallback_model=options.model_fallback)

    def evaluate(self, task: str, **settings: Any) -> Evaluation:
        """Evaluate a task: keywords as in a spec's [defaults] (model, shots, split, data_dir, limit, ...)."""
        return self._state.evaluate(self.settings(task, **settings))

    def assert_min_accuracy(self, result: Evaluation, floor: float) -> Verdict:
        return assert_min_accuracy(result, floor)

    def assert_above_chance(self, result: Evaluation, chance: str = "uniform") -> Verdict:
        return assert_above_chance(result, chance)

    def assert_no_regression(self, result: Evaluation, baseline: str | Path, max_drop: float = 0.0) -> Verdict:
        """Compare with a baseline file (exact McNemar at the session's alpha); writes it under --nli-update-baselines."""
        path = (self.base / user_path(str(baseline))).resolve()
        if self._state.options.update_baselines:
            written = self._state.write_baseline(path, result)
            gate = Gate(name="assert_no_regression", settings=result.settings, baseline=path, max_drop=max_drop)
            return gates.decide(gate, result, alpha=self._state.options.alpha, baseline_written=written)
        return assert_no_regression(result, path, max_drop=max_drop, alpha=self._state.options.alpha)


@pytest.fixture
def nli(request: pytest.FixtureRequest) -> NliFixture:
    """Evaluate tasks and assert on them: nli.evaluate("anli_r1", split="dev"), nli.assert_above_chance(r)."""
    return NliFixture(_state(request.config), Path(request.path).parent)


@pytest.fixture
def nli_evaluate(nli: NliFixture) -> Callable[..., Evaluation]:
    """nli_evaluate(task, **settings) -> Evaluation (accuracy, interval, chance, per_example)."""
    return nli.evaluate


@pytest.fixture
def nli_result(request: pytest.FixtureRequest, nli: NliFixture) -> Evaluation:
    """The evaluation named by @pytest.mark.nli("TASK", **settings), run at setup (problems are errors)."""
    marker = request.node.get_closest_marker("nli")
    if marker is None or not marker.args:
        raise GateError("the nli_result fixture needs @pytest.mark.nli(\"TASK\", ...) on the test, "
                        "e.g. @pytest.mark.nli(\"anli_r1\", split=\"dev\")")
    return nli.evaluate(*marker.args, **marker.kwargs)


__all__ = [
    "Evaluation", "GateFailure", "NliFixture", "Verdict",
    "assert_above_chance", "assert_min_accuracy", "assert_no_regression",
]
