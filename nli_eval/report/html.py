"""Analysis + rendered SVGs -> one self-contained HTML page (SVGs inline, no scripts, no external files)."""

from __future__ import annotations

import html
import re
from typing import Mapping, Sequence

from .analysis import Analysis
from .tables import PANEL_HEADERS, chance_line, panel_rows, trend_lines

CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.9em; } code { background: #f4f4f4; padding: 0 0.2em; }
"""

_ID = re.compile(r'\bid="([^"]+)"')
_URL = re.compile(r"url\(#([^)]+)\)")
_HREF = re.compile(r'xlink:href="#([^"]+)"')


def inline_svg(svg: str, prefix: str) -> str:
    """An SVG document as an inline element, its ids prefixed so several can share one page."""
    start = svg.find("<svg")
    body = svg[start:] if start >= 0 else svg
    body = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', body)
    body = _URL.sub(lambda m: f"url(#{prefix}-{m.group(1)})", body)
    return _HREF.sub(lambda m: f'xlink:href="#{prefix}-{m.group(1)}"', body)


def _cell(text: str) -> str:
    escaped = html.escape(text.replace("\\|", "|"))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f'<td class="num">{_cell(c)}</td>' if i in numeric else f"<td>{_cell(c)}</td>"
                                     for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def page(analysis: Analysis, svgs: Mapping[str, str], panel_stem: Mapping[str, str],
         links: Sequence[str] = ()) -> str:
    """svgs: file stem -> SVG text; panel_stem: task -> file stem of its figure."""
    from .analysis import fmt_params

    data = analysis.data
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             "<title>nli-eval report</title>", f"<style>{CSS}</style>", "</head>", "<body>",
             "<h1>nli-eval report: accuracy against parameter count</h1>"]
    parts.append('<p class="note">Sources: ' + "; ".join(
        f"<code>{html.escape(s.path)}</code> (created {html.escape(s.created)})" for s in data.sources) + "</p>")
    parts.append('<p class="note">Accuracy with Wilson 95% intervals. Above chance: exact binomial test against '
                 "uniform chance (the majority-class rate where higher), Holm-adjusted within each task. "
                 "Versus the next smaller model: exact McNemar test on the examples both evaluated, "
                 "Holm-adjusted within each task. Extrapolations follow the fitted line and are not "
                 "predictions.</p>")
    if links:
        parts.append('<p class="note">Files: ' + ", ".join(
            f'<a href="{html.escape(l)}">{html.escape(l)}</a>' for l in links) + "</p>")
    parts.append("<h2>Models</h2>")
    parts.append(_table(["model", "id", "params", "source of count"],
                        [[m.label, m.model, fmt_params(m.params) if m.params else "unknown", m.params_source or "-"]
                         for m in data.models], numeric=(2,)))
    for i, stem in enumerate(s for s in ("grid", "heatmap") if s in svgs):
        title = "Every task" if stem == "grid" else "Accuracy minus chance"
        parts += [f"<h2>{title}</h2>", f"<figure>{inline_svg(svgs[stem], f'{stem}')}</figure>"]
    for i, pa in enumerate(analysis.panels):
        task = pa.panel.task
        parts.append(f'<h2 id="task-{html.escape(task)}">{html.escape(task)}</h2>')
        stem = panel_stem.get(task)
        if stem and stem in svgs:
            parts.append(f"<figure>{inline_svg(svgs[stem], f'p{i}')}</figure>")
        parts.append(f'<p class="note">{_cell(chance_line(pa))}</p>')
        parts.append(_table(PANEL_HEADERS, panel_rows(pa), numeric=(1, 3, 4, 5)))
        parts.append("<ul>" + "".join(f"<li>{_cell(l.lstrip('- ').strip())}</li>"
                                      for ser in pa.series for l in trend_lines(ser)) + "</ul>")
        for note in pa.notes:
            parts.append(f'<p class="note">Note: {html.escape(note)}</p>')
    if analysis.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in analysis.notes) + "</ul>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
