"""CI gates on NLI robustness: spec files, baselines and decisions, independent of any test runner.

A spec file (``nli_*.toml``) declares gates. A gate evaluates one model on one task and checks any of:
an accuracy floor (``min_accuracy``), that the 95% interval clears chance (``above_chance``), and that
the model did not regress against a recorded baseline (``baseline`` + ``max_drop``). A regression fails
only when the drop on the shared items exceeds ``max_drop`` AND an exact McNemar test on those items,
Holm-corrected across the session's regression gates, says the drop is not noise.

Setup problems (a bad spec, a missing or mismatched baseline) raise GateError; a gate that ran and
failed is a Verdict with failures (GateFailure when raised). This module imports nothing heavy.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import __version__
from .errors import ConfigError, GateError
from .fsutil import atomic_write, exists, user_path
from .labels import label_from_name
from .stats import holm, mcnemar_exact

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SPEC_PATTERN = "nli_*.toml"
BASELINE_SCHEMA = "nli-eval/baseline"
BASELINE_SCHEMA_VERSION = 1
DEFAULT_SEED = 1234
DEFAULT_ALPHA = 0.05

SAMPLINGS = ("per-example", "fixed", "balanced")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BACKENDS = ("auto", "causal", "classifier", "seq2seq")
CHANCE_KINDS = ("uniform", "majority")

# Keys that choose what is evaluated; allowed in [defaults] and in each [[gate]].
EVAL_KEYS = ("model", "shots", "split", "data_dir", "template", "limit", "seed", "fewshot_sampling", "dtype",
             "batch_size", "device", "backend", "label_map", "task_files")
CHECK_KEYS = ("name", "task", "above_chance", "min_accuracy", "baseline", "max_drop")
_GATE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_EPS = 1e-12  # a drop equal to max_drop is allowed, whatever the float rounding


class GateFailure(AssertionError):
    """A gate that ran and failed; the message is the full, readable report."""


# ---------------------------------------------------------------------------------------------
# What is evaluated


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides an evaluation; gates with equal settings share one run."""

    model: str                  # Hub id or absolute folder; "" when nothing named one
    task: str
    shots: int = 0
    split: str | None = None
    data_dir: str | None = None
    template: str | None = None
    limit: int | None = None
    seed: int = DEFAULT_SEED
    sampling: str = "per-example"
    dtype: str = "auto"
    batch_size: int | str = "auto"
    device: str = "auto"
    backend: str = "auto"
    label_map: tuple[tuple[str, str], ...] = ()   # classifier label name -> Label value
    task_files: tuple[str, ...] = ()

    def group(self) -> "EvalSettings":
        """The settings without the task: evaluations in one group run in one process, one model load."""
        return replace(self, task="")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def model_label(self) -> str:
        """A short model name for messages (the folder name of a local model)."""
        if self.model.startswith("/"):
            return Path(self.model).name or self.model
        return self.model

    def describe(self) -> str:
        parts = [self.task, f"{self.shots}-shot"]
        if self.split:
            parts.append(f"split {self.split}")
        if self.limit is not None:
            parts.append(f"limit {self.limit}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Gate:
    name: str
    settings: EvalSettings
    above_chance: str | None = None    # "uniform" or "majority": the interval's lower bound must clear it
    min_accuracy: float | None = None
    baseline: Path | None = None
    max_drop: float = 0.0
    source: Path | None = None
    line: int | None = None            # 1-based line of the gate's [[gate]] header

    @property
    def is_regression(self) -> bool:
        return self.baseline is not None


@dataclass(frozen=True)
class Spec:
    path: Path
    gates: tuple[Gate, ...]


def resolve_model(value: str, base: Path) -> str:
    """A folder (made absolute against `base`) when the name is a path or exists there, else a Hub id."""
    text = value.strip()
    if not text:
        return ""
    if "\x00" in text:
        raise GateError(f"model {value!r} holds a NUL character; name a Hub id or a folder")
    candidate = base / user_path(text)
    if text.startswith((".", "/", "~")) or exists(candidate):
        return str(candidate.resolve())
    return text




def _int(value: Any, key: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GateError(f"{where}: {key} must be a whole number of at least {minimum}, got {value!r}")
    return value


def _fraction(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        hint = f" (write {value / 100:g} for {value:g}%)" if isinstance(value, (int, float)) and 1 < value <= 100 else ""
        raise GateError(f"{where}: {key} must be a fraction between 0 and 1{hint}, got {value!r}")
    return float(value)


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GateError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value.strip()


def _choice(value: Any, key: str, where: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise GateError(f"{where}: {key} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _path(value: Any, key: str, where: str, base: Path) -> str:
    text = _text(value, key, where)
    if "\x00" in text:
        raise GateError(f"{where}: {key} {text!r} holds a NUL character; name a path")
    return str((base / user_path(text)).resolve())


def _above_chance(value: Any, where: str) -> str | None:
    if value is True:
        return "uniform"
    if value is False:
        return None
    if value in CHANCE_KINDS:
        return str(value)
    raise GateError(f"{where}: above_chance must be true, false, \"uniform\" or \"majority\"; got {value!r}")


def _unknown(raw: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    # A misspelt check (min_acc = 0.5) must not silently pass: unknown keys are errors.
    extra = sorted(set(raw) - set(allowed))
    if extra:
        import difflib

        hints = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise GateError(f"{where}: unknown key {', '.join(hints)}; allowed keys: {', '.join(allowed)}")


def build_settings(raw: Mapping[str, Any], *, task: str, base: Path, where: str,
                   model_override: str | None = None, seed_override: int | None = None,
                   fallback_model: str | None = None, defaults: Mapping[str, Any] | None = None) -> EvalSettings:
    """EvalSettings from a gate's keys over [defaults]; relative paths are taken against `base`.

    Model: the gate's own > `model_override` (--nli-model / NLI_EVAL_MODEL) > [defaults] > fallback.
    Seed: the gate's own > `seed_override` (--nli-seed) > [defaults] > 1234. Overrides come resolved.
    """
    _unknown(raw, EVAL_KEYS, where)
    defaults = defaults or {}
    merged = {**defaults, **raw}
    if "model" in raw:
        model = resolve_model(_text(raw["model"], "model", where), base)
    elif model_override:
        model = model_override
    elif "model" in defaults:
        model = resolve_model(_text(defaults["model"], "model", where), base)
    else:
        model = fallback_model or ""
    if "seed" in raw:
        seed = _int(raw["seed"], "seed", where, 0)
    elif seed_override is not None:
        seed = seed_override
    else:
        seed = _int(merged.get("seed", DEFAULT_SEED), "seed", where, 0)

    batch = merged.get("batch_size", "auto")
    if batch != "auto":
        batch = _int(batch, "batch_size", where, 1)
    label_map: tuple[tuple[str, str], ...] = ()
    if "label_map" in merged:
        table = merged["label_map"]
        if not isinstance(table, Mapping) or not table:
            raise GateError(f"{where}: label_map must be a table such as {{ LABEL_0 = \"entailment\" }}")
        try:
            label_map = tuple(sorted((str(k), label_from_name(str(v)).value) for k, v in table.items()))
        except ConfigError as exc:
            raise GateError(f"{where}: label_map: {exc}") from None
    files = merged.get("task_files", [])
    if not isinstance(files, list):
        raise GateError(f"{where}: task_files must be a list of paths")
    return EvalSettings(
        model=model, task=task,
        shots=_int(merged.get("shots", 0), "shots", where, 0),
        split=_text(merged["split"], "split", where) if "split" in merged else None,
        data_dir=_path(merged["data_dir"], "data_dir", where, base) if "data_dir" in merged else None,
        template=_text(merged["template"], "template", where) if "template" in merged else None,
        limit=_int(merged["limit"], "limit", where, 1) if "limit" in merged else None,
        seed=seed,
        sampling=_choice(merged.get("fewshot_sampling", "per-example"), "fewshot_sampling", where, SAMPLINGS),
        dtype=_choice(merged.get("dtype", "auto"), "dtype", where, DTYPES),
        batch_size=batch,
        device=_text(merged.get("device", "auto"), "device", where),
        backend=_choice(merged.get("backend", "auto"), "backend", where, BACKENDS),
        label_map=label_map,
        task_files=tuple(_path(f, "task_files", where, base) for f in files),
    )


def _gate_lines(text: str) -> list[int]:
    """1-based line numbers of the [[gate]] headers, in order (TOML keeps array-of-table order)."""
    return [i for i, line in enumerate(text.splitlines(), 1) if re.match(r"^\s*\[\[\s*gate\s*\]\]", line)]


def parse_spec(text: str, path: Path, *, model_override: str | None = None, seed_override: int | None = None,
               fallback_model: str | None = None) -> Spec:
    """Parse a spec file's text; every mistake is a GateError naming the file, the gate and the fix."""
    source = str(path)
    base = path.parent.resolve()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GateError(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:
        raise GateError(f"{source}: TOML nested too deeply to be a spec file") from None
    _unknown(data, ("defaults", "gate"), source)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise GateError(f"{source}: [defaults] must be a table")
    _unknown(defaults, EVAL_KEYS, f"{source}: [defaults]")
    raw_gates = data.get("gate", [])
    if not isinstance(raw_gates, list) or not all(isinstance(g, dict) for g in raw_gates):
        raise GateError(f"{source}: gates are declared as [[gate]] tables")
    if not raw_gates:
        raise GateError(f"{source}: declares no [[gate]]; a spec file without gates would pass without checking anything")
    lines = _gate_lines(text)
    gates: list[Gate] = []
    seen: dict[str, int] = {}
    baselines: dict[Path, Gate] = {}
    for index, raw in enumerate(raw_gates):
        name = raw.get("name")
        if not isinstance(name, str) or not _GATE_NAME.match(name):
            raise GateError(f"{source}: gate #{index + 1} needs a name of letters, digits, '_', '-' or '.', "
                            f"got {name!r}")
        if name in seen:
            raise GateError(f"{source}: two gates are named {name!r}; gate names must be unique in a file")
        seen[name] = index
        where = f"{source}: [[gate]] {name}"
        _unknown(raw, CHECK_KEYS + EVAL_KEYS, where)
        task = _text(raw.get("task"), "task", where)
        settings_raw = {k: v for k, v in raw.items() if k in EVAL_KEYS}
        settings = build_settings(settings_raw, task=task, base=base, where=where, model_override=model_override,
                                  seed_override=seed_override, fallback_model=fallback_model, defaults=defaults)
        above = _above_chance(raw.get("above_chance", False), where)
        floor = _fraction(raw["min_accuracy"], "min_accuracy", where) if "min_accuracy" in raw else None
        baseline = Path(_path(raw["baseline"], "baseline", where, base)) if "baseline" in raw else None
        if "max_drop" in raw and baseline is None:
            raise GateError(f"{where}: max_drop needs a baseline = \"path/to/baseline.json\" to compare with")
        max_drop = _fraction(raw.get("max_drop", 0.0), "max_drop", where)
        if above is None and floor is None and baseline is None:
            raise GateError(f"{where}: declares no check; add above_chance = true, min_accuracy = 0.5 "
                            f"or baseline = \"nli_baselines/{name}.json\"")
        if baseline is not None:
            other = baselines.get(baseline)
            if other is not None and other.settings != settings:
                raise GateError(f"{where}: baseline {baseline.name} is also used by gate {other.name} with "
                                "different evaluation settings; give each evaluation its own baseline file")
        gate = Gate(name=name, settings=settings, above_chance=above, min_accuracy=floor, baseline=baseline,
                    max_drop=max_drop, source=path, line=lines[index] if len(lines) == len(raw_gates) else None)
        if baseline is not None:
            baselines.setdefault(baseline, gate)
        gates.append(gate)
    return Spec(path, tuple(gates))


def load_spec(path: Path, **overrides: Any) -> Spec:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GateError(f"{path}: not UTF-8 text; save the spec file as UTF-8") from None
    except OSError as exc:
        raise GateError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_spec(text, path, **overrides)


# ---------------------------------------------------------------------------------------------
# An evaluation's outcome


@dataclass(frozen=True)
class Evaluation:
    """A model's result on one task: accuracy, interval, chance and per-example correctness."""

    settings: EvalSettings
    model_label: str
    split: str
    template: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    chance_uniform: float
    chance_majority: float
    p_value_vs_chance: float
    per_example: Mapping[str, bool]
    samples: tuple[Path, ...] = ()     # the per-example prediction files this result came from
    fingerprint: str = ""

    @property
    def task(self) -> str:
        return self.settings.task

    @property
    def shots(self) -> int:
        return self.settings.shots

    @property
    def interval(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    @property
    def chance(self) -> float:
        """Uniform chance (1 / number of labels)."""
        return self.chance_uniform

    def chance_of(self, kind: str) -> float:
        return self.chance_majority if kind == "majority" else self.chance_uniform


def evaluation_from(settings: EvalSettings, result: Any, per_example: Mapping[str, bool],
                    samples: Sequence[Path] = (), model_label: str = "", fingerprint: str = "") -> Evaluation:
    """An Evaluation from a TaskResult (metrics.TaskResult or anything with the same fields)."""
    if len(per_example) != result.n:
        raise GateError(f"{settings.model_label} {settings.describe()}: the per-example files hold "
                        f"{len(per_example)} items but the result counts {result.n}; rerun the evaluation")
    return Evaluation(
        settings=settings, model_label=model_label or settings.model_label, split=result.split,
        template=result.template, n=result.n, correct=result.correct, accuracy=result.accuracy,
        ci_low=result.ci_low, ci_high=result.ci_high, chance_uniform=result.chance_uniform,
        chance_majority=result.chance_majority, p_value_vs_chance=result.p_value_vs_chance,
        per_example=types.MappingProxyType(dict(per_example)), samples=tuple(samples), fingerprint=fingerprint)


def read_samples(path: Path, prefix: str = "") -> dict[str, bool]:
    """Example id -> correct, from a samples/<model>/<task>_<k>shot.jsonl file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise GateError(f"the evaluation wrote no per-example file {path}; rerun it") from None
    except UnicodeDecodeError:
        raise GateError(f"{path}: not UTF-8 text, not a per-example file; rerun the evaluation") from None
    out: dict[str, bool] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[prefix + str(row["id"])] = bool(row["correct"])
        except (ValueError, KeyError, TypeError, RecursionError):
            raise GateError(f"{path}:{number}: not a per-example prediction line; rerun the evaluation") from None
    return out


# ---------------------------------------------------------------------------------------------
# Baselines


@dataclass(frozen=True)
class Baseline:
    path: Path
    model: str
    model_label: str
    task: str
    split: str
    shots: int
    template: str
    seed: int
    limit: int | None
    n: int
    accuracy: float
    per_example: Mapping[str, bool]
    created: str = ""
    fingerprint: str = ""


def baseline_json(evaluation: Evaluation) -> str:
    s = evaluation.settings
    data = {
        "schema": BASELINE_SCHEMA, "schema_version": BASELINE_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "nli_eval_version": __version__,
        "model": s.model, "model_label": evaluation.model_label, "fingerprint": evaluation.fingerprint,
        "task": s.task, "split": evaluation.split, "shots": s.shots, "template": evaluation.template,
        "seed": s.seed, "limit": s.limit,
        "n": evaluation.n, "correct": evaluation.correct, "accuracy": round(evaluation.accuracy, 6),
        "ci_low": round(evaluation.ci_low, 6), "ci_high": round(evaluation.ci_high, 6),
        # Sorted, one item a line: a diff of the baseline shows which items changed.
        "per_example": {k: evaluation.per_example[k] for k in sorted(evaluation.per_example)},
    }
    return json.dumps(data, indent=2) + "\n"


def write_baseline(path: Path, evaluation: Evaluation) -> Path:
    atomic_write(Path(path), baseline_json(evaluation))
    return Path(path)


def read_baseline(path: Path) -> Baseline:
    path = Path(path)
    hint = "record it with `pytest --nli-update-baselines` and commit the file"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GateError(f"no baseline at {path}; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GateError(f"cannot read baseline {path} ({exc}); {hint}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GateError(f"baseline {path} is not valid JSON ({exc.msg} at line {exc.lineno}); {hint}") from None
    except RecursionError:
        raise GateError(f"baseline {path} is JSON nested too deeply to be a baseline; {hint}") from None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA:
        raise GateError(f"{path} is not an nli-eval baseline (no \"schema\": \"{BASELINE_SCHEMA}\"); {hint}")
    if data.get("schema_version") != BASELINE_SCHEMA_VERSION:
        raise GateError(f"baseline {path} has schema version {data.get('schema_version')}, this nli-eval reads "
                        f"{BASELINE_SCHEMA_VERSION}; {hint}")
    try:
        raw = data["per_example"]
        if not isinstance(raw, dict) or not all(isinstance(v, bool) for v in raw.values()):
            raise TypeError("per_example must map example ids to true/false")
        per_example = {str(k): v for k, v in raw.items()}
        n = int(data["n"])
        if n != len(per_example):
            raise ValueError(f"n is {n} but per_example holds {len(per_example)} items")
        return Baseline(
            path=path, model=str(data["model"]), model_label=str(data.get("model_label", data["model"])),
            task=str(data["task"]), split=str(data["split"]), shots=int(data["shots"]),
            template=str(data["template"]), seed=int(data["seed"]),
            limit=None if data.get("limit") is None else int(data["limit"]), n=n,
            accuracy=sum(per_example.values()) / n if n else 0.0,
            per_example=types.MappingProxyType(per_example), created=str(data.get("created", "")),
            fingerprint=str(data.get("fingerprint", "")))
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise GateError(f"baseline {path} is malformed ({detail}); {hint}") from None


@dataclass(frozen=True)
class Comparison:
    """The same items scored by the baseline and by the current model."""

    n: int                 # items in both
    both_right: int
    baseline_only: int     # right in the baseline, wrong now
    current_only: int      # wrong in the baseline, right now
    both_wrong: int
    p_value: float         # exact McNemar on the discordant pairs
    missing: int = 0       # baseline items not evaluated now
    new: int = 0           # evaluated items the baseline lacks

    @property
    def baseline_accuracy(self) -> float:
        return (self.both_right + self.baseline_only) / self.n

    @property
    def current_accuracy(self) -> float:
        return (self.both_right + self.current_only) / self.n

    @property
    def drop(self) -> float:
        """Accuracy lost on the shared items (negative: an improvement)."""
        return (self.baseline_only - self.current_only) / self.n

    @property
    def change(self) -> float:
        """Accuracy gained on the shared items (negative: a drop)."""
        return (self.current_only - self.baseline_only) / self.n


def compare(baseline: Baseline, evaluation: Evaluation) -> Comparison:
    """Pair the baseline's and the current per-example correctness on the items both scored."""
    s = evaluation.settings
    fix = "if the change is intended, record a new baseline with `pytest --nli-update-baselines`"
    wanted = {"task": (baseline.task, s.task), "split": (baseline.split, evaluation.split),
              "shots": (baseline.shots, s.shots), "template": (baseline.template, evaluation.template)}
    if s.shots > 0 or s.limit is not None or baseline.limit is not None:
        wanted["seed"] = (baseline.seed, s.seed)  # the seed picks the shots and the --limit sample
    differ = [f"{k} {old!r} in the baseline, {new!r} now" for k, (old, new) in wanted.items() if old != new]
    if differ:
        raise GateError(f"baseline {baseline.path} was recorded with other settings ({'; '.join(differ)}); {fix}")
    shared = [i for i in baseline.per_example if i in evaluation.per_example]
    if not shared:
        old = next(iter(baseline.per_example), None)
        new = next(iter(evaluation.per_example), None)
        raise GateError(f"baseline {baseline.path} shares no item with the evaluation (baseline ids like {old!r}, "
                        f"evaluated ids like {new!r}): the data changed; {fix}")
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for i in shared:
        counts[(baseline.per_example[i], evaluation.per_example[i])] += 1
    b, c = counts[(True, False)], counts[(False, True)]
    return Comparison(n=len(shared), both_right=counts[(True, True)], baseline_only=b, current_only=c,
                      both_wrong=counts[(False, False)], p_value=mcnemar_exact(b, c),
                      missing=len(baseline.per_example) - len(shared),
                      new=len(evaluation.per_example) - len(shared))


def holm_adjust(pvalues: Mapping[Any, float]) -> dict[Any, float]:
    """Holm-adjusted p-values keyed like the input (one family: every regression gate of a session)."""
    keys = list(pvalues)
    return dict(zip(keys, holm([pvalues[k] for k in keys])))


# ---------------------------------------------------------------------------------------------
# Decisions and reports


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _points(x: float) -> str:
    return f"{100 * x:+.1f} points"


def _p(x: float) -> str:
    return f"{x:.3g}"


def shown(path: Path | str) -> str:
    """A path relative to the working directory when it lies inside it (shorter CI logs), else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


@dataclass(frozen=True)
class Failure:
    check: str      # "min_accuracy", "above_chance" or "regression"
    message: str


@dataclass(frozen=True)
class Verdict:
    gate: Gate
    evaluation: Evaluation
    failures: tuple[Failure, ...] = ()
    alpha: float = DEFAULT_ALPHA
    baseline: Baseline | None = None
    comparison: Comparison | None = None
    p_adjusted: float | None = None
    family: int = 1                     # regression gates in the Holm family
    baseline_written: Path | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def properties(self) -> list[tuple[str, str]]:
        """JUnit user properties: accuracy, interval, and for regressions delta and p."""
        e = self.evaluation
        props = [("nli_model", e.settings.model), ("nli_task", e.task), ("nli_split", e.split),
                 ("nli_shots", str(e.shots)), ("nli_n", str(e.n)), ("nli_accuracy", f"{e.accuracy:.4f}"),
                 ("nli_interval", f"[{e.ci_low:.4f}, {e.ci_high:.4f}]"), ("nli_chance", f"{e.chance:.4f}")]
        c = self.comparison
        if c is not None:
            props += [("nli_baseline_accuracy", f"{c.baseline_accuracy:.4f}"), ("nli_delta", f"{c.change:.4f}"),
                      ("nli_p", f"{c.p_value:.4g}"), ("nli_p_holm", f"{self.p_adjusted:.4g}"),
                      ("nli_mcnemar_b", str(c.baseline_only)), ("nli_mcnemar_c", str(c.current_only))]
        if self.baseline_written is not None:
            props.append(("nli_baseline_written", str(self.baseline_written)))
        return props

    def summary(self) -> str:
        """One line: accuracy with interval, and the change against the baseline when there is one."""
        e = self.evaluation
        text = (f"{e.model_label} {e.task} {e.shots}-shot n={e.n} accuracy {_pct(e.accuracy)} "
                f"[{_pct(e.ci_low)}, {_pct(e.ci_high)}]")
        c = self.comparison
        if c is not None:
            text += (f", baseline {_pct(c.baseline_accuracy)}, change {_points(c.change)}, "
                     f"McNemar p {_p(c.p_value)} (Holm {_p(self.p_adjusted or c.p_value)})")
        if self.baseline_written is not None:
            text += f", baseline written to {shown(self.baseline_written)}"
        return text

    def report(self, node_id: str | None = None) -> str:
        """The failure message: what was measured, against what, why it failed, how to accept it."""
        g, e, c = self.gate, self.evaluation, self.comparison
        s = e.settings
        # The first line is what pytest's short summary shows: the gate and the first reason.
        head = f"FAILED: {self.failures[0].message}" if self.failures else "passed"
        lines = [f"nli-eval gate {g.name} {head}"]
        if g.source:
            lines.append(f"  spec       {shown(g.source)}" + (f":{g.line}" if g.line else ""))
        lines += [f"  model      {s.model or '(none)'}",
                 f"  task       {e.task}, split {e.split}, {e.shots}-shot, template {e.template}, seed {s.seed}"
                 + (f", limit {s.limit}" if s.limit is not None else ""),
                 f"  n          {e.n}",
                 f"  accuracy   {_pct(e.accuracy)} (95% CI {_pct(e.ci_low)} to {_pct(e.ci_high)}); chance "
                 f"{_pct(e.chance_uniform)} uniform, {_pct(e.chance_majority)} majority"]
        if g.min_accuracy is not None:
            lines.append(f"  floor      {_pct(g.min_accuracy)}")
        if self.baseline is not None and c is not None:
            b = self.baseline
            lines.append(f"  baseline   {_pct(c.baseline_accuracy)} on the same {c.n} items ({shown(b.path)}; model "
                         f"{b.model_label}" + (f", recorded {b.created}" if b.created else "") + ")")
            if c.missing or c.new:
                lines.append(f"  items      compared on {c.n}: {c.missing} baseline items were not evaluated now, "
                             f"{c.new} evaluated items are not in the baseline")
            lines.append(f"  change     {_points(c.change)} ({_pct(c.baseline_accuracy)} -> {_pct(c.current_accuracy)}); "
                         f"allowed drop {100 * g.max_drop:.1f} points")
            lines.append(f"  McNemar    {c.baseline_only} items right in the baseline and wrong now, {c.current_only} "
                         f"wrong in the baseline and right now; exact p = {_p(c.p_value)}, Holm-adjusted p = "
                         f"{_p(self.p_adjusted if self.p_adjusted is not None else c.p_value)} over {self.family} "
                         f"regression gate{'s' if self.family != 1 else ''} (alpha {self.alpha:g})")
        if len(self.failures) > 1:  # a single reason is already on the first line
            lines += [f"  why        {failure.message}" for failure in self.failures]
        if e.samples:
            lines.append(f"  examples   {', '.join(shown(p) for p in e.samples)}")
        lines += [f"  accept     {hint}" for hint in self._accept(node_id)]
        return "\n".join(lines)

    def _accept(self, node_id: str | None) -> list[str]:
        g = self.gate
        spec = shown(g.source) if g.source else "the spec file"
        hints = []
        failed = {f.check for f in self.failures}
        if "min_accuracy" in failed:
            hints.append(f"if the lower accuracy is intended, lower min_accuracy of gate {g.name} in {spec}")
        if "above_chance" in failed:
            hints.append(f"a model that does not beat chance is not robust; if that is expected, remove "
                         f"above_chance from gate {g.name} in {spec}")
        if "regression" in failed and g.baseline is not None:
            target = f" {node_id!r}" if node_id else ""
            hints.append(f"if the change is intended, record the new baseline with "
                         f"`pytest --nli-update-baselines{target}` and commit {shown(g.baseline)}")
        return hints


def decide(gate: Gate, evaluation: Evaluation, *, alpha: float = DEFAULT_ALPHA, baseline: Baseline | None = None,
           comparison: Comparison | None = None, p_adjusted: float | None = None, family: int = 1,
           baseline_written: Path | None = None) -> Verdict:
    """Apply every check of a gate; a regression needs the drop AND the (Holm-adjusted) test to agree."""
    failures: list[Failure] = []
    e = evaluation
    if gate.min_accuracy is not None and e.accuracy < gate.min_accuracy - _EPS:
        failures.append(Failure("min_accuracy", f"accuracy {_pct(e.accuracy)} ({e.correct}/{e.n}) is below the floor {_pct(gate.min_accuracy)}"))
    if gate.above_chance is not None:
        chance = e.chance_of(gate.above_chance)
        if not e.ci_low > chance:
            failures.append(Failure("above_chance", f"the 95% interval's lower bound {_pct(e.ci_low)} does not clear {gate.above_chance} "
                            f"chance {_pct(chance)}"))
    if comparison is not None and baseline_written is None:
        p = comparison.p_value if p_adjusted is None else p_adjusted
        if comparison.drop > gate.max_drop + _EPS and p < alpha:
            failures.append(Failure("regression", f"accuracy fell {100 * comparison.drop:.1f} points on the same {comparison.n} items, more "
                            f"than the allowed {100 * gate.max_drop:.1f}, and McNemar says the drop is not noise "
                            f"(Holm-adjusted p {_p(p)} < alpha {alpha:g})"))
    return Verdict(gate, evaluation, tuple(failures), alpha, baseline, comparison, p_adjusted, family,
                   baseline_written)


# ---------------------------------------------------------------------------------------------
# Assertion helpers for Python tests


def _adhoc(kind: str, result: Evaluation, **checks: Any) -> Gate:
    return Gate(name=kind, settings=result.settings, **checks)


def assert_min_accuracy(result: Evaluation, floor: float) -> Verdict:
    """Fail (GateFailure, an AssertionError) unless accuracy is at least `floor` (a fraction)."""
    gate = _adhoc("assert_min_accuracy", result, min_accuracy=_fraction(floor, "floor", "assert_min_accuracy"))
    return _raise_on_failure(decide(gate, result))


def assert_above_chance(result: Evaluation, chance: str = "uniform") -> Verdict:
    """Fail unless the 95% interval's lower bound clears chance ("uniform" or "majority")."""
    gate = _adhoc("assert_above_chance", result,
                  above_chance=_choice(chance, "chance", "assert_above_chance", CHANCE_KINDS))
    return _raise_on_failure(decide(gate, result))


def assert_no_regression(result: Evaluation, baseline: Baseline | str | Path, max_drop: float = 0.0,
                         alpha: float = DEFAULT_ALPHA, p_adjusted: float | None = None, family: int = 1) -> Verdict:
    """Fail when accuracy dropped more than `max_drop` AND an exact McNemar test says it is not noise.

    A missing or mismatched baseline raises GateError (a setup problem, not a failed check).
    """
    base = baseline if isinstance(baseline, Baseline) else read_baseline(Path(baseline))
    gate = _adhoc("assert_no_regression", result, baseline=base.path,
                  max_drop=_fraction(max_drop, "max_drop", "assert_no_regression"))
    comparison = compare(base, result)
    return _raise_on_failure(decide(gate, result, alpha=alpha, baseline=base, comparison=comparison,
                                    p_adjusted=p_adjusted, family=family))


def _raise_on_failure(verdict: Verdict) -> Verdict:
    if not verdict.passed:
        raise GateFailure(verdict.report())
    return verdict


def markdown_table(rows: Iterable[tuple[str, str, Verdict | None, str]]) -> str:
    """A GitHub step summary: one row per gate (status, node id, verdict or None, error text)."""
    icons = {"passed": "✅ passed", "failed": "❌ failed", "error": "⚠️ error"}
    out = ["### nli-eval gates", "",
           "| gate | result | model | task | n | accuracy (95% CI) | baseline | change | p (Holm) |",
           "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for status, node_id, verdict, error in rows:
        label = icons.get(status, status)
        if verdict is None:
            out.append(f"| `{node_id}` | {label} | | | | | | | |")
            notes.append(f"- `{node_id}`: {error}")
            continue
        e, c = verdict.evaluation, verdict.comparison
        base = change = p = ""
        if c is not None:
            base, change = _pct(c.baseline_accuracy), _points(c.change)
            p = f"{_p(c.p_value)} ({_p(verdict.p_adjusted if verdict.p_adjusted is not None else c.p_value)})"
        elif verdict.baseline_written is not None:
            base = "written"
        out.append(f"| `{node_id}` | {label} | {e.model_label} | {e.task} ({e.shots}-shot) | {e.n} | "
                   f"{_pct(e.accuracy)} ({_pct(e.ci_low)}-{_pct(e.ci_high)}) | {base} | {change} | {p} |")
        for failure in verdict.failures:
            notes.append(f"- `{node_id}`: {failure.message}")
    return "\n".join(out + ([""] + notes if notes else [])) + "\n"


__all__ = [
    "Baseline", "Comparison", "EvalSettings", "Evaluation", "Failure", "Gate", "GateFailure", "Spec", "Verdict",
    "assert_above_chance", "assert_min_accuracy", "assert_no_regression", "baseline_json", "build_settings",
    "compare", "decide", "evaluation_from", "holm_adjust", "load_spec", "markdown_table", "parse_spec",
    "read_baseline", "read_samples", "resolve_model", "write_baseline",
]
