"""`nli-eval report`: accuracy against parameter count, next to the chance line, with trends and intervals.

Stages (frozen dataclasses between them):
    results.json files --data.load--> ReportData (Points grouped in Panels)
      --analysis.analyse--> Analysis (chance tests, McNemar against the next smaller model, trends)
      --plots / tables / html--> PNG and SVG figures, summary.md, results.csv, trends.csv, index.html

    from nli_eval.report import build_report
    build_report(["out/results.json"], "out/report", targets=[0.5])   # -> out/report/index.html
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import OutputError

__all__ = ["build_report", "cli_report", "FILES"]

# What a report folder holds besides one scaling_<task>.png/.svg per task.
FILES = ("index.html", "summary.md", "results.csv", "trends.csv", "grid.svg", "grid.png", "heatmap.svg",
         "heatmap.png")


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}); choose another --out") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}); choose another --out") from None


def build_report(results: Sequence[str | Path], out_dir: str | Path, targets: Sequence[float] = (),
                 png: bool = True) -> Path:
    """Write the report for these results files into out_dir; returns the path of index.html."""
    return _build(results, out_dir, targets, png)[0]


def _build(results: Sequence[str | Path], out_dir: str | Path, targets: Sequence[float], png: bool):
    from . import html as html_page
    from .analysis import analyse, check_targets
    from .data import load
    from .plots import write_figures
    from .tables import RESULT_COLUMNS, TREND_COLUMNS, result_rows, summary_markdown, to_csv, trend_rows

    targets = check_targets(targets)
    analysis = analyse(load(results), targets)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file; --out needs a folder")
    rendered = write_figures(analysis, out, png=png)
    svgs: dict[str, str] = {}
    panel_stem: dict[str, str] = {}
    images = []
    for stem, task, data in rendered:
        for fmt, blob in data.items():
            _write(out / f"{stem}.{fmt}", blob)
        svgs[stem] = data["svg"].decode("utf-8")
        if task:
            panel_stem[task] = stem
            images.append((task, f"{stem}.png" if png else f"{stem}.svg"))
    _write(out / "results.csv", to_csv(result_rows(analysis), RESULT_COLUMNS).encode("utf-8"))
    _write(out / "trends.csv", to_csv(trend_rows(analysis), TREND_COLUMNS).encode("utf-8"))
    _write(out / "summary.md", summary_markdown(analysis, images).encode("utf-8"))
    links = ["summary.md", "results.csv", "trends.csv"]
    index = out / "index.html"
    _write(index, html_page.page(analysis, svgs, panel_stem, links).encode("utf-8"))
    return index, analysis


def cli_report(args) -> int:
    """The `report` subcommand: args.results (paths), args.out (folder), args.target (accuracies)."""
    from .tables import terminal_summary

    index, analysis = _build(args.results, args.out, args.target or (), True)
    print(terminal_summary(analysis))
    print(f"\nreport: {index}")
    print(f"        {Path(args.out) / 'summary.md'}, results.csv, trends.csv, scaling_<task>.png/.svg, "
          "grid.png, heatmap.png")
    return 0
