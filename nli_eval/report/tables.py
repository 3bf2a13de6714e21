"""Analysis -> tables: the tidy CSVs (one row per model, task, shots, template; one per trend) and summary.md."""

from __future__ import annotations

import csv
import io
import math
from typing import Sequence

from .analysis import Analysis, PanelAnalysis, Scored, Series, fmt_params

RESULT_COLUMNS = (
    "model", "model_id", "params", "params_source", "task", "split", "shots", "template", "label_space",
    "n", "correct", "accuracy", "ci_low", "ci_high", "macro_f1", "chance_uniform", "chance_majority",
    "chance_baseline", "p_vs_chance", "p_vs_chance_holm", "vs_chance", "smaller_model", "only_this_right",
    "only_smaller_right", "n_paired", "p_vs_smaller", "p_vs_smaller_holm", "vs_smaller", "per_label_accuracy",
    "source",
)
TREND_COLUMNS = (
    "task", "shots", "template", "n_models", "slope_per_10x", "slope_ci_low", "slope_ci_high", "intercept",
    "target", "params_needed", "extrapolation",
)


def _num(x: float | None, digits: int = 6) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def result_rows(analysis: Analysis) -> list[dict[str, str]]:
    rows = []
    for pa in analysis.panels:
        for s in pa.scored:
            p, c, z = s.point, s.chance, s.size
            rows.append({
                "model": p.model.label, "model_id": p.model.model, "params": _num(p.params),
                "params_source": p.model.params_source, "task": p.task, "split": p.split, "shots": str(p.shots),
                "template": p.template, "label_space": p.label_space, "n": str(p.n), "correct": str(p.correct),
                "accuracy": _num(p.accuracy), "ci_low": _num(p.ci_low), "ci_high": _num(p.ci_high),
                "macro_f1": _num(p.macro_f1), "chance_uniform": _num(p.chance_uniform),
                "chance_majority": _num(p.chance_majority), "chance_baseline": c.baseline_kind,
                "p_vs_chance": _num(c.p), "p_vs_chance_holm": _num(c.p_holm), "vs_chance": c.verdict,
                "smaller_model": z.other or "", "only_this_right": _num(z.only_this) if z.p is not None else "",
                "only_smaller_right": _num(z.only_other) if z.p is not None else "",
                "n_paired": _num(z.n_paired) if z.p is not None else "", "p_vs_smaller": _num(z.p),
                "p_vs_smaller_holm": _num(z.p_holm), "vs_smaller": z.verdict or f"n/a: {z.reason}",
                "per_label_accuracy": ";".join(f"{k}={v:.4f}" for k, v in p.per_label),
                "source": p.model.source,
            })
    return rows


def trend_rows(analysis: Analysis) -> list[dict[str, str]]:
    rows = []
    for pa in analysis.panels:
        for ser in pa.series:
            t = ser.trend
            if t is None:
                continue
            base = {"task": pa.panel.task, "shots": str(ser.shots), "template": ser.template,
                    "n_models": str(t.n_points), "slope_per_10x": _num(t.slope), "slope_ci_low": _num(t.slope_low),
                    "slope_ci_high": _num(t.slope_high), "intercept": _num(t.intercept)}
            if not t.extrapolations:
                rows.append({**base, "target": "", "params_needed": "", "extrapolation": ""})
            for e in t.extrapolations:
                rows.append({**base, "target": _num(e.target), "params_needed": _num(e.params),
                             "extrapolation": e.text})
    return rows


def to_csv(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return buf.getvalue()


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def p_text(p: float | None) -> str:
    """'p=0.0312' or 'p<0.0001'."""
    if p is None:
        return "p=n/a"
    return "p<0.0001" if p < 1e-4 else f"p={p:.4f}"


def chance_cell(s: Scored) -> str:
    mark = {"above chance": "**above**", "below chance": "**below**"}.get(s.chance.verdict, "no")
    return f"{mark} ({p_text(s.chance.p_holm)})"


def size_cell(s: Scored) -> str:
    z = s.size
    if z.p is None:
        return f"n/a ({z.reason})" if z.reason else "n/a"
    if z.significant:
        word, other = z.verdict.split(" than ", 1)
        text = f"**{word}** than {other}"
    else:
        text = z.verdict
    return f"{text} (+{z.only_this}/-{z.only_other}, {p_text(z.p_holm)})"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def panel_rows(pa: PanelAnalysis) -> list[list[str]]:
    rows = []
    for ser in pa.series:
        for s in (*ser.sized, *ser.unsized):
            p = s.point
            rows.append([md_escape(p.model.label), fmt_params(p.params) if p.params else "?", ser.label,
                         str(p.n), f"{pct(p.accuracy)} [{pct(p.ci_low)}, {pct(p.ci_high)}]",
                         pct(p.macro_f1), chance_cell(s), size_cell(s)])
    return rows


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


PANEL_HEADERS = ("model", "params", "setting", "n", "accuracy % [95% CI]", "macro-F1 %",
                 "above chance? (Holm p)", "vs next smaller model (McNemar, Holm p)")


def chance_line(pa: PanelAnalysis) -> str:
    panel = pa.panel
    text = f"chance {pct(panel.chance_uniform)}% (uniform, {panel.label_space})"
    if panel.shows_majority:
        text += f", majority class {pct(panel.chance_majority)}% (the test baseline)"
    if panel.references:
        text += "; references: " + ", ".join(f"{md_escape(n)} {pct(v)}%" for n, v in panel.references)
    return text


def trend_lines(ser: Series) -> list[str]:
    if ser.trend is None:
        return [f"- {ser.label}: {ser.trend_note}"]
    lines = [f"- {ser.label}: {ser.trend.text} (least squares on log10 params, {ser.trend.n_points} models)"]
    lines += [f"  - target {e.text}" for e in ser.trend.extrapolations]
    return lines


def summary_markdown(analysis: Analysis, images: Sequence[tuple[str, str]] = ()) -> str:
    """images: (panel task, image file name) for each per-task figure."""
    data = analysis.data
    out = ["# nli-eval report: accuracy against parameter count", ""]
    out.append("Sources: " + "; ".join(
        f"`{s.path}` (created {s.created}, nli-eval {s.nli_eval_version}"
        + (f", split {s.split}" if s.split else "") + (f", limit {s.limit}" if s.limit else "") + ")"
        for s in data.sources))
    out.append("")
    out.append("Accuracy with Wilson 95% intervals. *Above chance*: exact two-sided binomial test against uniform "
               "chance (against the majority-class rate where that is higher), Holm-adjusted across the models "
               "and settings of each task. *vs next smaller model*: exact McNemar test on the examples both "
               "evaluated (+ only this model right / - only the smaller right), Holm-adjusted within each task. "
               "Significant at 0.05 in **bold**.")
    out.append("")
    models = md_table(["model", "id", "params", "source of count"],
                      [[md_escape(m.label), md_escape(m.model), fmt_params(m.params) if m.params else "unknown",
                        m.params_source or "-"] for m in data.models])
    out += ["## Models", "", models, ""]
    image_for = dict(images)
    for pa in analysis.panels:
        panel = pa.panel
        title = panel.task + (f" (aggregate of {', '.join(panel.members)}, pooled)" if panel.is_aggregate else "")
        out += [f"## {title}", ""]
        if panel.task in image_for:
            out += [f"![{panel.task}]({image_for[panel.task]})", ""]
        out += [chance_line(pa), "", md_table(PANEL_HEADERS, panel_rows(pa)), ""]
        out += ["Trend:", ""]
        for ser in pa.series:
            out += trend_lines(ser)
        out.append("")
        for note in pa.notes:
            out.append(f"- note: {md_escape(note)}")
        if pa.notes:
            out.append("")
    if analysis.notes:
        out += ["## Notes", ""] + [f"- {md_escape(n)}" for n in analysis.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


def terminal_summary(analysis: Analysis) -> str:
    """A few lines for the terminal: the trend of each panel and series."""
    from ..console import table

    rows = []
    for pa in analysis.panels:
        for ser in pa.series:
            best = max((*ser.sized, *ser.unsized), key=lambda s: s.point.accuracy, default=None)
            above = sum(1 for s in (*ser.sized, *ser.unsized) if s.chance.above)
            total = len(ser.sized) + len(ser.unsized)
            rows.append([pa.panel.task, ser.label, f"{above}/{total}",
                         f"{best.point.model.label} {pct(best.point.accuracy)}" if best else "-",
                         ser.trend.text if ser.trend else ser.trend_note])
    return table(["task", "setting", "above chance", "best (acc %)", "trend"], rows)
