"""ReportData -> Analysis: tests against chance, McNemar against the next smaller model, scaling trends.

Families for the Holm adjustment are the panel (one task or aggregate): all its chance tests form one
family, all its size comparisons another. A mark in a plot or a verdict in a table uses the adjusted p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError
from ..stats import binomial_test, fit_trend, holm, mcnemar_exact
from .data import MAJORITY_MARGIN, Outcomes, Panel, Point, ReportData, paired_counts, read_outcomes

ALPHA = 0.05


@dataclass(frozen=True)
class ChanceTest:
    baseline: float
    baseline_kind: str        # "uniform" or "majority"
    p: float                  # exact two-sided binomial
    p_holm: float
    verdict: str              # "above chance", "below chance", "not distinguishable from chance"

    @property
    def above(self) -> bool:
        return self.verdict == "above chance"


@dataclass(frozen=True)
class SizeTest:
    """Exact McNemar of a model against the next smaller one on the same examples."""

    other: str | None         # the smaller model's label
    only_this: int = 0        # examples only this model got right
    only_other: int = 0
    n_paired: int = 0
    p: float | None = None
    p_holm: float | None = None
    verdict: str = ""
    reason: str = ""          # why there is no test

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA


@dataclass(frozen=True)
class Extrapolation:
    target: float
    params: float | None      # None: the line never gets there
    text: str


@dataclass(frozen=True)
class TrendResult:
    n_points: int
    slope: float              # accuracy per 10x parameters
    slope_low: float
    slope_high: float
    intercept: float
    text: str
    extrapolations: tuple[Extrapolation, ...] = ()

    def predict(self, params: float) -> float:
        return self.intercept + self.slope * math.log10(params)


@dataclass(frozen=True)
class Scored:
    point: Point
    chance: ChanceTest
    size: SizeTest


@dataclass(frozen=True)
class Series:
    shots: int
    template: str
    label: str
    sized: tuple[Scored, ...]      # models with a parameter count, smallest first
    unsized: tuple[Scored, ...]
    trend: TrendResult | None
    trend_note: str = ""


@dataclass(frozen=True)
class PanelAnalysis:
    panel: Panel
    series: tuple[Series, ...]
    notes: tuple[str, ...] = ()
    missing_samples: tuple[str, ...] = ()

    @property
    def scored(self) -> tuple[Scored, ...]:
        return tuple(s for ser in self.series for s in (*ser.sized, *ser.unsized))


@dataclass(frozen=True)
class Analysis:
    data: ReportData
    panels: tuple[PanelAnalysis, ...]
    targets: tuple[float, ...]
    notes: tuple[str, ...] = ()


def check_targets(targets: Sequence[float]) -> tuple[float, ...]:
    out = []
    for t in targets:
        if not (isinstance(t, (int, float)) and 0.0 < t < 1.0) or math.isnan(t):
            raise ConfigError(f"--target {t}: expected an accuracy between 0 and 1, e.g. --target 0.5")
        out.append(float(t))
    return tuple(dict.fromkeys(out))


def baseline(point: Point) -> tuple[float, str]:
    if point.chance_majority - point.chance_uniform > MAJORITY_MARGIN:
        return point.chance_majority, "majority"
    return point.chance_uniform, "uniform"


def fmt_params(n: float) -> str:
    """135000000 -> '135M'; 1.2e12 -> '1.2T'; beyond 1e15 in scientific notation."""
    if n is None or not math.isfinite(n):
        return "inf"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            if v >= 1000:
                return f"{n:.1e}"
            return f"{v:.3g}{unit}"
    return f"{n:.3g}"


def pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def trend_text(t: "TrendResult | None", n_points: int) -> str:
    if t is None:
        return ""
    if math.isinf(t.slope_low):
        ci = f"no interval with {n_points} sizes"
    else:
        ci = f"95% CI {pts(t.slope_low)} to {pts(t.slope_high)}"
    return f"{pts(t.slope)} points per 10x parameters [{ci}]"


def extrapolate(t: TrendResult, target: float, largest: float) -> Extrapolation:
    from ..stats import Interval, Trend

    line = Trend(t.slope, t.intercept, Interval(t.slope_low, t.slope_high), t.n_points)
    need = line.params_for(target)
    tag = f"{100 * target:.1f}%"
    caveat = "extrapolation from the fitted line; not a prediction"
    if need is None:
        return Extrapolation(target, None, f"{tag}: never on this line (it does not rise with size)")
    if math.isinf(need) or need > 1e300:
        return Extrapolation(target, math.inf, f"{tag}: would need more than 1e300 params ({caveat})")
    flat = t.slope_low <= 0 <= t.slope_high or math.isinf(t.slope_low)
    extra = "; the slope's interval includes 0, so the line may never get there" if flat else ""
    if need <= largest:
        return Extrapolation(target, need, f"{tag}: the fitted line crosses it at ~{fmt_params(need)} params, "
                                           f"inside the evaluated range (a reading of the line, not a prediction)")
    return Extrapolation(target, need, f"{tag}: would need ~{fmt_params(need)} params ({caveat}{extra})")


def _chance_tests(points: Sequence[Point]) -> list[ChanceTest]:
    raw = []
    for p in points:
        base, kind = baseline(p)
        raw.append((base, kind, binomial_test(p.correct, p.n, base)))
    adjusted = holm([r[2] for r in raw]) if raw else []
    out = []
    for p, (base, kind, pv), adj in zip(points, raw, adjusted):
        if adj < ALPHA and p.accuracy > base:
            verdict = "above chance"
        elif adj < ALPHA and p.accuracy < base:
            verdict = "below chance"
        else:
            verdict = "not distinguishable from chance"
        out.append(ChanceTest(base, kind, pv, adj, verdict))
    return out


def _next_smaller(sized: Sequence[Point], i: int) -> Point | None:
    """The model with the largest parameter count strictly below point i's (ties: last by label)."""
    me = sized[i].params or 0
    smaller = [p for p in sized if (p.params or 0) < me]
    if not smaller:
        return None
    top = max(p.params or 0 for p in smaller)
    return sorted((p for p in smaller if p.params == top), key=lambda p: p.model.label)[-1]


def analyse_panel(panel: Panel, targets: Sequence[float], outcomes: "OutcomeCache") -> PanelAnalysis:
    notes: list[str] = []
    missing: list[str] = []
    chance = dict(zip(panel.points, _chance_tests(panel.points)))
    keys = sorted({p.series for p in panel.points})
    several_templates = len(panel.templates) > 1
    # Size comparisons for every series first, so Holm runs over the whole panel.
    raw_size: dict[Point, SizeTest] = {}
    for key in keys:
        sized = sorted((p for p in panel.points if p.series == key and p.params is not None),
                       key=lambda p: (p.params, p.model.label))
        for i, p in enumerate(sized):
            other = _next_smaller(sized, i)
            if other is None:
                raw_size[p] = SizeTest(None, reason="smallest model")
                continue
            a, b = outcomes.get(p), outcomes.get(other)
            reason = a.reason or b.reason
            if reason:
                raw_size[p] = SizeTest(other.model.label, reason=reason)
                (missing if reason.startswith("no per-example samples") else notes).append(reason)
                continue
            only_this, only_other, shared = paired_counts(a, b)
            if shared == 0:
                raw_size[p] = SizeTest(other.model.label, reason="no examples in common")
                continue
            if shared < max(p.n, other.n):
                notes.append(f"{p.model.label} vs {other.model.label} ({p.task} {p.shots}-shot): paired on the "
                             f"{shared} examples both evaluated")
            raw_size[p] = SizeTest(other.model.label, only_this, only_other, shared,
                                   mcnemar_exact(only_this, only_other))
    tested = [p for p, t in raw_size.items() if t.p is not None]
    adjusted = dict(zip(tested, holm([raw_size[p].p for p in tested]))) if tested else {}
    size: dict[Point, SizeTest] = {}
    for p, t in raw_size.items():
        if t.p is None:
            size[p] = t
            continue
        adj = adjusted[p]
        if adj < ALPHA:
            verdict = f"{'better' if t.only_this > t.only_other else 'worse'} than {t.other}"
        else:
            verdict = f"no difference from {t.other}"
        size[p] = SizeTest(t.other, t.only_this, t.only_other, t.n_paired, t.p, adj, verdict)
    series = []
    for shots, template in keys:
        label = f"{shots}-shot" + (f" ({template})" if several_templates else "")
        mine = [p for p in panel.points if p.series == (shots, template)]
        sized_pts = sorted((p for p in mine if p.params is not None), key=lambda p: (p.params, p.model.label))
        unsized_pts = [p for p in mine if p.params is None]
        sized = tuple(Scored(p, chance[p], size[p]) for p in sized_pts)
        unsized = tuple(Scored(p, chance[p], SizeTest(None, reason="no parameter count")) for p in unsized_pts)
        trend, note = _trend(sized_pts, targets)
        series.append(Series(shots, template, label, sized, unsized, trend, note))
    return PanelAnalysis(panel, tuple(series), tuple(dict.fromkeys(notes)), tuple(dict.fromkeys(missing)))


def _trend(points: Sequence[Point], targets: Sequence[float]) -> tuple[TrendResult | None, str]:
    sizes = {p.params for p in points}
    if len(sizes) < 2:
        return None, "no trend (fewer than 2 model sizes)"
    fit = fit_trend([p.params for p in points], [p.accuracy for p in points])
    if fit is None:
        return None, "no trend (fewer than 2 model sizes)"
    t = TrendResult(fit.n_points, fit.slope, fit.slope_interval.low, fit.slope_interval.high, fit.intercept, "")
    largest = max(p.params for p in points)
    ext = tuple(extrapolate(t, target, largest) for target in targets)
    text = trend_text(t, len(sizes))
    return TrendResult(t.n_points, t.slope, t.slope_low, t.slope_high, t.intercept, text, ext), ""


class OutcomeCache:
    """Reads each point's samples once."""

    def __init__(self) -> None:
        self._cache: dict[Point, Outcomes] = {}

    def get(self, point: Point) -> Outcomes:
        if point not in self._cache:
            self._cache[point] = read_outcomes(point)
        return self._cache[point]


def analyse(data: ReportData, targets: Sequence[float] = ()) -> Analysis:
    targets = check_targets(targets)
    cache = OutcomeCache()
    panels = tuple(analyse_panel(p, targets, cache) for p in data.panels)
    missing = sorted({n for pa in panels for n in pa.missing_samples})
    notes = list(data.notes)
    if missing:
        notes.append(f"size comparisons skipped where per-example samples are missing ({len(missing)} files), "
                     f"e.g. {missing[0].removeprefix('no per-example samples at ')}")
    return Analysis(data, panels, targets, tuple(notes))
