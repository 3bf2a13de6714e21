"""Analysis -> figures: accuracy against parameters per task, a grid of every task, a models x tasks heatmap.

matplotlib is imported inside the functions and used without pyplot (Figure + Agg canvas), so a report
renders headless and leaves no global state. SVG output is byte-for-byte reproducible: a fixed hash salt,
text kept as text, no date. Positions and limits come from pure functions (x_layout, y_limits) that the
tests check without drawing.
"""

from __future__ import annotations

import contextlib
import io
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from ..fsutil import safe_name
from .analysis import Analysis, PanelAnalysis, Scored, Series, baseline, fmt_params

# Okabe-Ito colours (readable with colour-vision deficiencies) and distinct markers per series.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "D", "^", "v", "P", "X")
REF_STYLES = ((0, (5, 2, 1, 2)), (0, (9, 2, 1, 2, 1, 2)), (0, (12, 3)), (0, (2, 2, 7, 2)))  # never dotted
GREY = "0.35"
CHAR_W = 0.56 / 72        # average glyph width per point of font size, in inches (DejaVu Sans)
DPI = 150

AX_W, AX_H = 5.4, 3.4     # the main axes, inches
LEFT = 0.8
TITLE_H = 0.65
LEGEND_W = 2.7
TRACK_FONT = 7.5
TRACK_ROW = 0.17
CAPTION_FONT = 7.5
CAPTION_LINE = 0.16


@dataclass(frozen=True)
class Style:
    color: str
    marker: str


@dataclass(frozen=True)
class XLayout:
    """Horizontal positions in log10(parameters): the axis range, each model's spot, each series' dodge."""

    lo: float
    hi: float
    model_x: Mapping[str, float]       # model label -> log10 position (ties spread apart)
    dodge: Mapping[tuple[int, str], float]

    def x(self, s: Scored) -> float:
        return 10 ** (self.model_x[s.point.model.label] + self.dodge[s.point.series])


@dataclass(frozen=True)
class YLimits:
    lo: float
    hi: float
    refs_in: tuple[tuple[str, float], ...]
    refs_above: tuple[tuple[str, float], ...]   # too far above the data: named, not drawn


@contextlib.contextmanager
def style() -> Iterator[None]:
    import matplotlib

    rc = {
        "svg.hashsalt": "nli-eval", "svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 9,
        "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
        "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "path.simplify": False,
        "axes.grid": True, "grid.color": "0.9", "grid.linewidth": 0.6, "axes.axisbelow": True,
    }
    with matplotlib.rc_context(rc):
        yield


def series_styles(analysis: Analysis) -> dict[tuple[int, str], Style]:
    keys = sorted({(s.shots, s.template) for pa in analysis.panels for s in pa.series})
    return {k: Style(PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]) for i, k in enumerate(keys)}


def sized_models(pa: PanelAnalysis) -> list[tuple[str, int]]:
    seen: dict[str, int] = {}
    for ser in pa.series:
        for s in ser.sized:
            seen[s.point.model.label] = s.point.params or 0
    return sorted(seen.items(), key=lambda kv: (kv[1], kv[0]))


def unsized_models(pa: PanelAnalysis) -> list[str]:
    return sorted({s.point.model.label for ser in pa.series for s in ser.unsized})


def x_layout(pa: PanelAnalysis, width_in: float = AX_W, tie_in: float = 0.13, dodge_in: float = 0.045) -> XLayout:
    """Models of (nearly) equal size are spread `tie_in` inches apart; series are dodged `dodge_in` inches."""
    models = sized_models(pa)
    if not models:
        return XLayout(7.0, 9.0, {}, {(s.shots, s.template): 0.0 for s in pa.series})
    logs = [math.log10(p) for _, p in models]
    span = max(logs) - min(logs)
    pad = 0.5 if span == 0 else max(0.15, 0.12 * span)
    lo, hi = min(logs) - pad, max(logs) + pad
    per_in = (hi - lo) / width_in           # decades per inch
    groups: list[list[tuple[str, float]]] = []
    for (label, _), x in zip(models, logs):
        if groups and x - groups[-1][0][1] < tie_in * per_in * 0.5:
            groups[-1].append((label, x))
        else:
            groups.append([(label, x)])
    model_x: dict[str, float] = {}
    for g in groups:
        centre = sum(x for _, x in g) / len(g)
        for i, (label, _) in enumerate(g):
            model_x[label] = centre + (i - (len(g) - 1) / 2) * tie_in * per_in
    widest = max(len(g) for g in groups)
    lo = min(lo, min(model_x.values()) - 0.6 * tie_in * per_in * widest)
    hi = max(hi, max(model_x.values()) + 0.6 * tie_in * per_in * widest)
    keys = [(s.shots, s.template) for s in pa.series]
    n = len(keys)
    dodge = {k: (i - (n - 1) / 2) * dodge_in * per_in for i, k in enumerate(keys)}
    return XLayout(lo, hi, model_x, dodge)


def y_limits(pa: PanelAnalysis, near: float = 0.15, references: bool = True) -> YLimits:
    """Y range covering every interval and chance line; references more than `near` above the data are named only
    (all of them when `references` is false)."""
    panel = pa.panel
    pts = [s.point for s in pa.scored]
    values = [p.ci_low for p in pts] + [p.ci_high for p in pts] + [panel.chance_uniform]
    if panel.shows_majority:
        values.append(panel.chance_majority)
    top, bottom = max(values), min(values)
    refs_in = tuple((n, v) for n, v in panel.references if references and bottom - near <= v <= top + near)
    refs_above = tuple((n, v) for n, v in panel.references if (n, v) not in refs_in)
    values += [v for _, v in refs_in]
    lo, hi = min(values), max(values)
    pad = max(0.015, 0.08 * (hi - lo))
    return YLimits(max(0.0, lo - pad), min(1.0, hi + pad * 1.6), refs_in, refs_above)


def pct_label(v: float) -> str:
    return f"{100 * v:.1f}".rstrip("0").rstrip(".") + "%"


def _locators(ax, lo: float, hi: float) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    span = hi - lo
    subs = (1.0, 2.0, 5.0) if span <= 2.5 else ((1.0, 3.0) if span <= 4 else (1.0,))
    ax.set_xscale("log")
    ax.set_xlim(10 ** lo, 10 ** hi)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_params(v)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _y_axis(ax, ylim: YLimits) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_ylim(ylim.lo, ylim.hi)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}" if abs(100 * v - round(100 * v)) < 1e-6
                                               else f"{100 * v:.1f}"))


def _reference_lines(ax, pa: PanelAnalysis, ylim: YLimits, with_gid: bool = True) -> list:
    panel = pa.panel
    handles = []
    h = ax.axhline(panel.chance_uniform, color=GREY, ls=(0, (6, 3)), lw=1.2, zorder=1,
                   label=f"uniform chance ({pct_label(panel.chance_uniform)})")
    if with_gid:
        h.set_gid("chance-line")
    handles.append(h)
    if panel.shows_majority:
        h = ax.axhline(panel.chance_majority, color="0.55", ls=(0, (1, 1.5)), lw=1.4, zorder=1,
                       label=f"majority class ({pct_label(panel.chance_majority)})")
        if with_gid:
            h.set_gid("majority-line")
        handles.append(h)
    for i, (name, value) in enumerate(ylim.refs_in):
        h = ax.axhline(value, color="0.15", ls=REF_STYLES[i % len(REF_STYLES)], lw=1.0, zorder=1,
                       label=f"{name}: {pct_label(value)}")
        handles.append(h)
    return handles


def _draw_series(ax, ser: Series, st: Style, xl: XLayout, ylim: YLimits, detailed: bool) -> None:
    pts = sorted(ser.sized, key=lambda s: xl.x(s))
    if not pts:
        return
    xs = [xl.x(s) for s in pts]
    ys = [s.point.accuracy for s in pts]
    lows = [s.point.ci_low for s in pts]
    highs = [s.point.ci_high for s in pts]
    ax.fill_between(xs, lows, highs, color=st.color, alpha=0.13, lw=0, zorder=2)
    ax.vlines(xs, lows, highs, color=st.color, lw=1.0, alpha=0.85, zorder=3)
    ax.plot(xs, ys, color=st.color, lw=1.6, zorder=4)
    _markers(ax, pts, xs, st, ylim, size=6.5 if detailed else 5)
    if ser.trend is not None and len({s.point.params for s in pts}) >= 3:
        p_lo = min(s.point.params for s in pts)
        p_hi = max(s.point.params for s in pts)
        grid = [10 ** (math.log10(p_lo) + i * (math.log10(p_hi) - math.log10(p_lo)) / 20) for i in range(21)]
        ax.plot(grid, [ser.trend.predict(g) for g in grid], color=st.color, lw=1.1, ls=(0, (1, 1.2)),
                alpha=0.9, zorder=3)


def _markers(ax, pts: Sequence[Scored], xs: Sequence[float], st: Style, ylim: YLimits, size: float) -> None:
    star_dy = 0.025 * (ylim.hi - ylim.lo)
    for s, x in zip(pts, xs):
        filled = s.chance.above
        ax.plot([x], [s.point.accuracy], ls="none", marker=st.marker, ms=size, mew=1.4, mec=st.color,
                mfc=st.color if filled else "white", zorder=5)
        if s.size.significant:
            ax.plot([x], [s.point.ci_high + star_dy], ls="none", marker="*", ms=size + 2.5, color=st.color,
                    mec="white", mew=0.4, zorder=6)


def _legend_handles(pa: PanelAnalysis, styles: Mapping[tuple[int, str], Style], lines: list,
                    ylim: YLimits, wrap: int) -> tuple[list, list]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = [], []
    for ser in pa.series:
        st = styles[(ser.shots, ser.template)]
        handles.append(Line2D([], [], color=st.color, marker=st.marker, mfc=st.color, mec=st.color, lw=1.6, ms=6))
        labels.append(ser.label)
    handles.append(Patch(facecolor="0.5", alpha=0.25, lw=0))
    labels.append("95% interval (Wilson)")
    if any(ser.trend is not None and len({s.point.params for s in ser.sized}) >= 3 for ser in pa.series):
        handles.append(Line2D([], [], color="0.3", lw=1.1, ls=(0, (1, 1.2))))
        labels.append("least-squares trend")
    for h in lines:
        handles.append(h)
        labels.append(h.get_label())
    for name, value in ylim.refs_above:
        handles.append(Line2D([], [], ls="none", marker="$\u2191$", color="0.15", ms=7))
        labels.append(f"{name}: {pct_label(value)} (above the plotted range)")
    handles.append(Line2D([], [], ls="none", marker="o", color="0.3", mfc="0.3", ms=6))
    labels.append("above chance (exact binomial, Holm)")
    handles.append(Line2D([], [], ls="none", marker="o", color="0.3", mfc="white", mew=1.4, ms=6))
    labels.append("not above chance")
    handles.append(Line2D([], [], ls="none", marker="*", color="0.3", ms=9))
    labels.append("differs from next smaller model (exact McNemar, Holm)")
    return handles, ["\n".join(textwrap.wrap(t, wrap)) or t for t in labels]


def _track_rows(labels: Sequence[tuple[str, float]], lo: float, hi: float, width_in: float,
                font: float = TRACK_FONT) -> list[tuple[str, float, float, int]]:
    """Greedy rows for model names under the axis: (text, x of the model, x of the text centre, row)."""
    per_in = (hi - lo) / width_in
    rows_end: list[float] = []
    out = []
    for text, x in sorted(labels, key=lambda t: t[1]):
        w = (len(text) * font * CHAR_W + 0.12) * per_in
        centre = min(max(x, lo + w / 2), hi - w / 2)
        for r, end in enumerate(rows_end):
            if centre - w / 2 > end:
                rows_end[r] = centre + w / 2
                break
        else:
            rows_end.append(centre + w / 2)
            r = len(rows_end) - 1
        out.append((text, x, centre, r))
    return out


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _caption(pa: PanelAnalysis, width_in: float, extra: Sequence[str] = ()) -> list[str]:
    chars = int(width_in / (CAPTION_FONT * CHAR_W))
    lines: list[str] = []
    for ser in pa.series:
        if ser.trend is not None:
            text = f"Trend {ser.label}: {ser.trend.text}."
            for e in ser.trend.extrapolations:
                text += f" Target {e.text}."
        else:
            text = f"{ser.label}: {ser.trend_note}."
        lines += textwrap.wrap(text, chars, subsequent_indent="    ")
    for note in extra:
        lines += textwrap.wrap(note, chars, subsequent_indent="    ")
    return lines


def _title(pa: PanelAnalysis) -> str:
    panel = pa.panel
    ns = sorted({s.point.n for s in pa.scored})
    splits = sorted({s.point.split for s in pa.scored})
    n = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
    what = f"{panel.task} (pooled {', '.join(panel.members)})" if panel.is_aggregate else panel.task
    return f"{what}: accuracy against parameter count ({'/'.join(splits)} split, {n} per model)"


def scaling_figure(pa: PanelAnalysis, styles: Mapping[tuple[int, str], Style]):
    """The headline plot for one task: accuracy against log parameters, one line per shot setting."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    sized = sized_models(pa)
    unsized = unsized_models(pa)
    xl = x_layout(pa)
    ylim = y_limits(pa)
    track = _track_rows([(_short(f"{m} ({fmt_params(p)})", 34), xl.model_x[m]) for m, p in sized],
                        xl.lo, xl.hi, AX_W) if sized else []
    n_rows = max((r for *_, r in track), default=-1) + 1
    side_w = 0.5 * len(unsized) + 0.3 if unsized else 0.0
    side_gap = 0.3 if unsized else 0.0
    main_w = AX_W if sized else 0.0
    side_label_h = (max((len(_short(m, 22)) for m in unsized), default=0) * 8 * CHAR_W * 0.5 + 0.25) if unsized else 0
    below = max(0.3 + (n_rows * TRACK_ROW + 0.12 if n_rows else 0) + 0.3, side_label_h + 0.1)
    width = max(LEFT + main_w + side_gap + side_w + 0.35 + LEGEND_W, 7.5)
    title = textwrap.wrap(_title(pa), int((width - LEFT - 0.2) / (10.5 * CHAR_W * 1.08)))
    title_h = TITLE_H + 0.2 * (len(title) - 1)
    notes = []
    if unsized and sized:
        notes.append("Right panel: models without a parameter count, left out of trends and size comparisons.")
    elif unsized:
        notes.append("No model here has a parameter count, so they are shown side by side without a size axis.")
    if ylim.refs_above:
        notes.append("References above the plotted range are listed in the legend, not drawn.")
    caption = _caption(pa, width - 0.4, notes)
    cap_h = len(caption) * CAPTION_LINE + 0.2
    handles_dummy = 6 + len(pa.series) + len(ylim.refs_in) + len(ylim.refs_above) + int(pa.panel.shows_majority)
    legend_h = handles_dummy * 0.24 + 0.3
    body = max(AX_H + below, legend_h)
    height = title_h + body + cap_h
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)

    def rect(x0: float, top: float, w: float, h: float) -> list[float]:
        return [x0 / width, 1 - (top + h) / height, w / width, h / height]

    fig.text(LEFT / width, 1 - 0.2 / height, "\n".join(title), fontsize=10.5, fontweight="bold", va="top",
             ha="left", linespacing=1.3)
    ax = None
    if sized:
        ax = fig.add_axes(rect(LEFT, title_h, AX_W, AX_H))
        ax.patch.set_gid("main-axes")
        _locators(ax, xl.lo, xl.hi)
        _y_axis(ax, ylim)
        ax.set_ylabel("accuracy (%)")
        lines = _reference_lines(ax, pa, ylim)
        for ser in pa.series:
            _draw_series(ax, ser, styles[(ser.shots, ser.template)], xl, ylim, detailed=True)
        if track:
            trk = fig.add_axes(rect(LEFT, title_h + AX_H + 0.3, AX_W, n_rows * TRACK_ROW + 0.1), sharex=ax)
            trk.set_axis_off()
            trk.set_ylim(n_rows, -0.1)
            for text, x, centre, r in track:
                # A vertical leader at the model's position; labels sit on white so leaders pass behind them.
                trk.plot([10 ** x, 10 ** x], [-0.1, r + 0.2], color="0.6", lw=0.6, zorder=1)
                trk.text(10 ** centre, r + 0.2, text, ha="center", va="top", fontsize=TRACK_FONT, color="0.15",
                         zorder=2, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6})
        fig.text((LEFT + AX_W / 2) / width, 1 - (title_h + AX_H + below - 0.05) / height,
                 "parameters (log scale)", ha="center", va="bottom", fontsize=9)
    if unsized:
        x0 = LEFT + main_w + side_gap
        side = fig.add_axes(rect(x0, title_h, side_w, AX_H), sharey=ax) if ax else \
            fig.add_axes(rect(x0, title_h, side_w, AX_H))
        if ax is None:
            _y_axis(side, ylim)
            side.set_ylabel("accuracy (%)")
            lines = _reference_lines(side, pa, ylim)
        else:
            _reference_lines(side, pa, ylim, with_gid=False)
            side.tick_params(labelleft=False)
        _draw_unsized(side, pa, styles, unsized, ylim)
        side.set_title("no parameter count", fontsize=8, color="0.3")
    handles, labels = _legend_handles(pa, styles, lines, ylim, wrap=34)
    x_leg = LEFT + main_w + side_gap + side_w + 0.35
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(x_leg / width, 1 - title_h / height),
               frameon=False, borderaxespad=0, handlelength=2.6, labelspacing=0.55)
    y = title_h + body + 0.12
    for line in caption:
        fig.text(0.2 / width, 1 - y / height, line, fontsize=CAPTION_FONT, va="top", ha="left", color="0.15")
        y += CAPTION_LINE
    return fig


def _draw_unsized(ax, pa: PanelAnalysis, styles: Mapping[tuple[int, str], Style], models: Sequence[str],
                  ylim: YLimits) -> None:
    pos = {m: i for i, m in enumerate(models)}
    n = len(pa.series)
    for si, ser in enumerate(pa.series):
        st = styles[(ser.shots, ser.template)]
        pts = list(ser.unsized)
        xs = [pos[s.point.model.label] + (si - (n - 1) / 2) * 0.16 for s in pts]
        ax.vlines(xs, [s.point.ci_low for s in pts], [s.point.ci_high for s in pts], color=st.color, lw=1.2)
        _markers(ax, pts, xs, st, ylim, size=6.5)
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([_short(m, 22) for m in models], rotation=30, ha="right", fontsize=7.5)
    ax.grid(False, axis="x")


def grid_figure(analysis: Analysis, styles: Mapping[tuple[int, str], Style]):
    """Every task in one figure (small multiples), one legend."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.lines import Line2D

    panels = [pa for pa in analysis.panels if sized_models(pa)]
    cols = 2 if len(panels) == 4 else min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    cell_w, cell_h, gap_w, gap_h = 3.3, 2.3, 0.65, 0.85
    left, top = 0.7, 0.75
    keys = sorted({(s.shots, s.template) for pa in panels for s in pa.series})
    legend_rows = 2
    bottom = 0.75 + legend_rows * 0.22
    width = left + cols * cell_w + (cols - 1) * gap_w + 0.3
    height = top + rows * cell_h + (rows - 1) * gap_h + bottom
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.text(left / width, 1 - 0.2 / height, "Accuracy against parameter count, every task",
             fontsize=11, fontweight="bold", va="top")
    for i, pa in enumerate(panels):
        r, c = divmod(i, cols)
        x0 = left + c * (cell_w + gap_w)
        y0 = top + r * (cell_h + gap_h)
        ax = fig.add_axes([x0 / width, 1 - (y0 + cell_h) / height, cell_w / width, cell_h / height])
        xl = x_layout(pa, width_in=cell_w, tie_in=0.09, dodge_in=0.035)
        ylim = y_limits(pa, references=False)
        _locators(ax, xl.lo, xl.hi)
        _y_axis(ax, ylim)
        _reference_lines(ax, pa, ylim, with_gid=False)
        for ser in pa.series:
            _draw_series(ax, ser, styles[(ser.shots, ser.template)], xl, ylim, detailed=False)
        name = pa.panel.task + (" (pooled)" if pa.panel.is_aggregate else "")
        ax.set_title(name, fontsize=9.5, loc="left")
        if c == 0:
            ax.set_ylabel("accuracy (%)")
        ax.tick_params(axis="x", labelsize=7.5)
    handles = [Line2D([], [], color=styles[k].color, marker=styles[k].marker, lw=1.6, ms=5) for k in keys]
    several = len({k[1] for k in keys}) > 1
    labels = [f"{k[0]}-shot" + (f" ({k[1]})" if several else "") for k in keys]
    handles += [Line2D([], [], color=GREY, ls=(0, (6, 3)), lw=1.2), Line2D([], [], color="0.55", ls=(0, (1, 1.5)), lw=1.4),
                Line2D([], [], ls="none", marker="o", color="0.3", ms=5),
                Line2D([], [], ls="none", marker="o", color="0.3", mfc="white", mew=1.3, ms=5),
                Line2D([], [], ls="none", marker="*", color="0.3", ms=8)]
    labels += ["uniform chance", "majority class (where it differs)", "above chance", "not above chance",
               "differs from next smaller"]
    ncol = min(len(labels), max(3, math.ceil(len(labels) / legend_rows)))
    fig.legend(handles, labels, loc="lower left", bbox_to_anchor=(left / width, 0.12 / height), ncol=ncol,
               frameon=False, borderaxespad=0, columnspacing=1.4, fontsize=7.5)
    fig.text(left / width, (0.12 + legend_rows * 0.22 + 0.1) / height,
             "Bands: 95% Wilson intervals. Parameters on a log scale. Reference lines and models without a "
             "parameter count: see the per-task figures.", fontsize=7, color="0.3", va="bottom")
    return fig


@dataclass(frozen=True)
class HeatCell:
    value: float | None        # accuracy minus chance, in points
    above: bool = False
    below: bool = False


def heatmap_data(analysis: Analysis) -> tuple[list[str], list[str], list[list[HeatCell]]]:
    """Rows (models, smallest first, unsized last), columns (task and setting), accuracy minus chance."""
    models = sorted(analysis.data.models, key=lambda m: (m.params is None, m.params or 0, m.label))
    columns: list[tuple[str, int, str, str]] = []
    for pa in analysis.panels:
        for ser in pa.series:
            columns.append((pa.panel.task, ser.shots, ser.template, ser.label))
    cells = []
    index = {}
    for pa in analysis.panels:
        for s in pa.scored:
            p = s.point
            index[(p.model.label, p.task, p.shots, p.template)] = s
    for m in models:
        row = []
        for task, shots, template, _ in columns:
            s = index.get((m.label, task, shots, template))
            if s is None:
                row.append(HeatCell(None))
            else:
                base, _ = baseline(s.point)
                row.append(HeatCell(100 * (s.point.accuracy - base), s.chance.verdict == "above chance",
                                    s.chance.verdict == "below chance"))
        cells.append(row)
    row_labels = [f"{m.label} ({fmt_params(m.params)})" if m.params else f"{m.label} (size ?)" for m in models]
    col_labels = [f"{t}\n{lab}" for t, _, _, lab in columns]
    return row_labels, col_labels, cells


def heatmap_figure(analysis: Analysis):
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rows, cols, cells = heatmap_data(analysis)
    values = [c.value for r in cells for c in r if c.value is not None]
    vmax = max([5.0] + [abs(v) for v in values])
    cell_w, cell_h = 0.85, 0.36
    row_w = max(len(r) for r in rows) * 8 * CHAR_W + 0.3
    longest = max(len(part) for c in cols for part in c.split("\n"))
    rotate = longest * 7.5 * CHAR_W > cell_w - 0.05
    col_h = (longest * 7.5 * CHAR_W * 0.75 + 0.3) if rotate else 0.45
    width = row_w + len(cols) * cell_w + 1.3
    height = 0.6 + col_h + len(rows) * cell_h + 0.55
    fig = Figure(figsize=(max(width, 4.5), height))
    width = max(width, 4.5)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([row_w / width, 0.55 / height, len(cols) * cell_w / width, len(rows) * cell_h / height])
    import numpy as np

    grid = np.array([[np.nan if c.value is None else c.value for c in r] for r in cells], dtype=float)
    cmap = _cmap()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=TwoSlopeNorm(0.0, -vmax, vmax), aspect="auto",
                      interpolation="nearest")
    ax.set_facecolor("0.92")
    for i, r in enumerate(cells):
        for j, c in enumerate(r):
            if c.value is None:
                ax.text(j, i, "\u2013", ha="center", va="center", fontsize=8, color="0.5")
                continue
            mark = "*" if (c.above or c.below) else ""
            colour = "white" if abs(c.value) > 0.55 * vmax else "0.1"
            ax.text(j, i, f"{c.value:+.1f}{mark}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, fontsize=7.5, rotation=40 if rotate else 0, ha="left" if rotate else "center")
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    cax = fig.add_axes([(row_w + len(cols) * cell_w + 0.25) / width, 0.55 / height, 0.14 / width,
                        max(len(rows) * cell_h, 0.8) / height])
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("accuracy minus chance (points)", fontsize=7.5)
    bar.ax.tick_params(labelsize=7)
    fig.text(0.15 / width, 1 - 0.15 / height, "Accuracy minus chance, models x tasks", fontsize=10.5,
             fontweight="bold", va="top")
    fig.text(0.15 / width, 0.12 / height, "* differs from chance (exact binomial, Holm within the task). "
             "Chance: uniform, or the majority-class rate where higher. \u2013: not evaluated.",
             fontsize=7, color="0.3", va="bottom")
    return fig


def _cmap():
    from matplotlib import colormaps

    return colormaps["RdBu"]


def render(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "svg":
        fig.savefig(buf, format="svg", metadata={"Date": None})
    else:
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def figures(analysis: Analysis) -> list[tuple[str, str, object]]:
    """(file stem, panel task or '', figure) for every figure of the report."""
    styles = series_styles(analysis)
    out = []
    for pa in analysis.panels:
        out.append((f"scaling_{safe_name(pa.panel.task)}", pa.panel.task, scaling_figure(pa, styles)))
    if any(sized_models(pa) for pa in analysis.panels):
        out.append(("grid", "", grid_figure(analysis, styles)))
    out.append(("heatmap", "", heatmap_figure(analysis)))
    return out


def write_figures(analysis: Analysis, out_dir: Path, png: bool = True) -> list[tuple[str, str, dict[str, bytes]]]:
    """Render every figure; returns (stem, task, {format: bytes}) and leaves writing to the caller."""
    rendered = []
    with style():
        for stem, task, fig in figures(analysis):
            data = {"svg": render(fig, "svg")}
            if png:
                data["png"] = render(fig, "png")
            rendered.append((stem, task, data))
    return rendered
