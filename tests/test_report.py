"""The reporter: plots, tables and trends built from fixture results files written the way a run writes them."""

from __future__ import annotations

import csv
import json
import math
import random
import re
from pathlib import Path

import pytest

from nli_eval.errors import ConfigError, ResultsError
from nli_eval.labels import LabelSpace
from nli_eval.metrics import aggregate, compute
from nli_eval.results import ModelRecord, RunRecord, write_results, write_samples
from nli_eval.types import Prediction

ANLI = ("anli_r1", "anli_r2", "anli_r3")


def predictions(task: str, n: int, accuracy: float, space: LabelSpace) -> list[Prediction]:
    """n examples with balanced gold labels; the first round(accuracy * n) of a task-seeded order are right,
    so a more accurate model is right on a superset of a less accurate one's examples."""
    labels = space.labels
    order = list(range(n))
    random.Random(task).shuffle(order)
    right = set(order[: round(accuracy * n)])
    out = []
    for i in range(n):
        gold = labels[i % len(labels)]
        wrong = labels[(labels.index(gold) + 1 + (i // 7) % (len(labels) - 1)) % len(labels)]
        out.append(Prediction(f"{task}-{i}", gold, gold if i in right else wrong, {lab: -1.0 for lab in labels}))
    return out


def write_run(out: Path, models, n: int = 300, space: LabelSpace = LabelSpace.THREE_WAY,
              aggregate_of: tuple[str, tuple[str, ...]] | None = None, samples: bool = True,
              fingerprint: str = "fp") -> Path:
    """models: (label, params or None, {(task, shots): accuracy})."""
    records = []
    for label, params, accs in models:
        results = []
        for (task, shots), acc in accs.items():
            preds = predictions(task, n, acc, space)
            if samples:
                write_samples(out, label, task, shots, preds)
            results.append(compute(preds, task=task, split="dev", shots=shots, template="harness", space=space))
        aggs = []
        if aggregate_of:
            name, members = aggregate_of
            for shots in sorted({s for _, s in accs}):
                parts = [r for r in results if r.shots == shots and r.task in members]
                aggs.append(aggregate(name, parts))
        records.append(ModelRecord(
            model=f"org/{label}", label=label, fingerprint=f"{fingerprint}-{label}", backend="causal",
            dtype="float32", device="cpu", max_length=2048, params_total=params, params_non_embedding=None,
            params_source="config" if params else "", results=tuple(results), aggregates=tuple(aggs)))
    record = RunRecord(created="2025-01-01T00:00:00+00:00", nli_eval_version="0.1.0", versions={},
                       config={"split": "dev", "limit": n, "seed": 1234}, models=tuple(records))
    return write_results(out, record)


def ladder(tasks=ANLI, shots=(0, 5), unsized: bool = True):
    sizes = [("tiny-70m", 70_000_000), ("small-160m", 160_000_000), ("mid-410m", 410_000_000),
             ("mid-410m-b", 410_000_000), ("big-1.4b", 1_400_000_000)]
    if unsized:
        sizes.append(("mystery", None))
    models = []
    for i, (label, params) in enumerate(sizes):
        accs = {(t, s): 1 / 3 + 0.02 * i + (0.01 * i if s else 0) for t in tasks for s in shots}
        models.append((label, params, accs))
    return models


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One full report (PNG and SVG) over ANLI R1-R3 plus the pooled aggregate; built once, read by many tests."""
    from nli_eval.report import build_report

    run = tmp_path_factory.mktemp("run")
    results = write_run(run, ladder(), aggregate_of=("anli", ANLI))
    out = tmp_path_factory.mktemp("report")
    index = build_report([results], out, targets=[0.5])
    return results, out, index


# ---- reading SVGs --------------------------------------------------------------------------------------

SVG_NS = "{http://www.w3.org/2000/svg}"


def _ytick_map(svg: str) -> tuple[float, float]:
    """(slope, intercept) mapping an SVG y coordinate to an accuracy, from the main axes' y ticks and labels."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg.encode("utf-8"))
    axes = next(g for g in root.iter(f"{SVG_NS}g") if g.get("id") == "axes_1")
    ticks = []
    for g in axes.iter(f"{SVG_NS}g"):
        if not (g.get("id") or "").startswith("ytick_"):
            continue
        use = next(g.iter(f"{SVG_NS}use"))
        text = next(g.iter(f"{SVG_NS}text"), None)
        if text is not None:
            ticks.append((float(use.get("y")), float(text.text) / 100))
    assert len(ticks) >= 2, "no labelled y ticks found in the SVG"
    (y0, v0), (y1, v1) = ticks[0], ticks[-1]
    slope = (v1 - v0) / (y1 - y0)
    return slope, v0 - slope * y0


def line_value(svg: str, gid: str) -> float:
    """The accuracy at which the horizontal line with this id is drawn, read off the plot's y axis."""
    m = re.search(rf'<g id="{gid}">\s*<path d="M ([-\d.]+) ([-\d.]+)\s+L ([-\d.]+) ([-\d.]+)', svg)
    assert m, f"no line {gid} in the SVG"
    assert float(m.group(2)) == pytest.approx(float(m.group(4))), "the line is not horizontal"
    slope, intercept = _ytick_map(svg)
    return slope * float(m.group(2)) + intercept


def wilson_direct(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---- the report ----------------------------------------------------------------------------------------

def test_report_writes_every_file(report):
    _, out, index = report
    assert index == out / "index.html"
    for name in ("summary.md", "results.csv", "trends.csv", "grid.svg", "grid.png", "heatmap.svg", "heatmap.png"):
        assert (out / name).stat().st_size > 0, name
    for task in (*ANLI, "anli"):
        assert (out / f"scaling_{task}.svg").exists()
        assert (out / f"scaling_{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained_with_svgs_inline(report):
    _, out, index = report
    page = index.read_text(encoding="utf-8")
    assert page.count("<svg") == 6  # four tasks, the grid and the heatmap
    assert "<?xml" not in page and "<img" not in page and "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "ids of inlined SVGs collide"


def test_svg_output_is_deterministic(tmp_path):
    from nli_eval.report import build_report

    results = write_run(tmp_path / "run", ladder(tasks=("anli_r1",), shots=(0,)))
    first = build_report([results], tmp_path / "a", png=False).parent
    second = build_report([results], tmp_path / "b", png=False).parent
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert any(n.endswith(".svg") for n in names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_chance_line_at_one_third_for_three_way(report):
    _, out, _ = report
    for task in ("anli_r1", "anli"):
        svg = (out / f"scaling_{task}.svg").read_text(encoding="utf-8")
        assert line_value(svg, "chance-line") == pytest.approx(1 / 3, abs=0.002)
        assert 'id="majority-line"' not in svg  # balanced labels: majority equals uniform chance


def test_chance_line_at_one_half_for_two_way(tmp_path):
    from nli_eval.report import build_report

    # 300 examples, gold alternating entailment / non_entailment: balanced, no majority line.
    models = [("a-100m", 100_000_000, {("hans_like", 0): 0.52}), ("b-1b", 1_000_000_000, {("hans_like", 0): 0.61})]
    results = write_run(tmp_path / "run", models, space=LabelSpace.TWO_WAY)
    out = build_report([results], tmp_path / "out", png=False).parent
    svg = (out / "scaling_hans_like.svg").read_text(encoding="utf-8")
    assert line_value(svg, "chance-line") == pytest.approx(0.5, abs=0.002)
    assert "uniform chance (50%)" in svg and 'id="majority-line"' not in svg


def test_majority_line_where_it_differs(tmp_path):
    from nli_eval.report import build_report
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load

    results = write_run(tmp_path / "run", [("m-100m", 100_000_000, {("skewed", 0): 0.7}),
                                           ("m-1b", 1_000_000_000, {("skewed", 0): 0.8})], n=7)
    # n=7 with labels cycling e, n, c, e, n, c, e: majority class entailment = 3/7.
    analysis = analyse(load([results]))
    panel = analysis.panels[0].panel
    assert panel.chance_majority == pytest.approx(3 / 7) and panel.shows_majority
    assert {s.chance.baseline_kind for s in analysis.panels[0].scored} == {"majority"}
    svg = (build_report([results], tmp_path / "out", png=False).parent / "scaling_skewed.svg").read_text("utf-8")
    assert line_value(svg, "majority-line") == pytest.approx(3 / 7, abs=0.003)
    assert line_value(svg, "chance-line") == pytest.approx(1 / 3, abs=0.003)


def test_intervals_match_a_direct_wilson_computation(report):
    _, out, _ = report
    table = rows(out / "results.csv")
    assert len(table) == 6 * 4 * 2  # models x (3 rounds + pooled) x shot settings
    for r in table:
        low, high = wilson_direct(int(r["correct"]), int(r["n"]))
        assert float(r["ci_low"]) == pytest.approx(low, abs=1e-5)
        assert float(r["ci_high"]) == pytest.approx(high, abs=1e-5)
    pooled = [r for r in table if r["task"] == "anli" and r["model"] == "big-1.4b" and r["shots"] == "0"][0]
    parts = [r for r in table if r["task"] in ANLI and r["model"] == "big-1.4b" and r["shots"] == "0"]
    assert int(pooled["n"]) == sum(int(r["n"]) for r in parts) == 900
    assert int(pooled["correct"]) == sum(int(r["correct"]) for r in parts)


def test_plotted_band_is_the_wilson_interval(report):
    """The plot stage draws the band and bars from the Points; their ends are the Wilson limits."""
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load

    results, _, _ = report
    analysis = analyse(load([results]))
    for s in analysis.panels[0].scored:
        low, high = wilson_direct(s.point.correct, s.point.n)
        assert (s.point.ci_low, s.point.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_trend_slope_on_points_with_a_known_slope(tmp_path):
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load

    n = 1000
    params = [10 ** 8, 10 ** 8.5, 10 ** 9, 10 ** 9.5, 10 ** 10]
    # accuracy = 0.30 + 0.04 * log10(params / 1e8): 4 points per 10x, exact on n = 1000 examples.
    models = [(f"m{i}", round(p), {("anli_r1", 0): 0.30 + 0.04 * math.log10(p / 1e8)}) for i, p in enumerate(params)]
    results = write_run(tmp_path / "run", models, n=n)
    analysis = analyse(load([results]), targets=[0.5, 0.36])
    series = analysis.panels[0].series[0]
    trend = series.trend
    assert trend.n_points == 5
    assert trend.slope == pytest.approx(0.04, abs=1e-3)
    assert trend.slope_low <= trend.slope <= trend.slope_high and trend.slope_high - trend.slope_low < 0.01
    assert trend.text.startswith("+4.0 points per 10x parameters [95% CI")
    far, near = trend.extrapolations
    assert far.params == pytest.approx(10 ** (8 + 0.2 / 0.04), rel=0.05)  # 1e13
    assert "would need ~" in far.text and "extrapolation from the fitted line; not a prediction" in far.text
    assert "inside the evaluated range" in near.text
    trends = rows(build_csv(tmp_path, results) / "trends.csv")
    assert float(trends[0]["slope_per_10x"]) == pytest.approx(0.04, abs=1e-3)


def build_csv(tmp_path: Path, results: Path) -> Path:
    from nli_eval.report import build_report

    return build_report([results], tmp_path / "out", targets=[0.5], png=False).parent


def test_flat_trend_gets_no_target_and_two_models_no_interval(tmp_path):
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load

    models = [("a", 100_000_000, {("anli_r1", 0): 0.40}), ("b", 1_000_000_000, {("anli_r1", 0): 0.36})]
    analysis = analyse(load([write_run(tmp_path, models)]), targets=[0.5])
    trend = analysis.panels[0].series[0].trend
    assert trend.slope == pytest.approx(-0.04)
    assert "no interval with 2 sizes" in trend.text
    assert trend.extrapolations[0].params is None
    assert "never" in trend.extrapolations[0].text


def test_tests_against_chance_and_next_smaller_model(report):
    from nli_eval.stats import binomial_test, holm, mcnemar_exact

    _, out, _ = report
    table = [r for r in rows(out / "results.csv") if r["task"] == "anli_r1"]
    raw = [binomial_test(int(r["correct"]), int(r["n"]), 1 / 3) for r in table]
    for r, p, adj in zip(table, raw, holm(raw)):
        assert float(r["p_vs_chance"]) == pytest.approx(p, rel=1e-4)
        assert float(r["p_vs_chance_holm"]) == pytest.approx(adj, rel=1e-4)
        assert r["vs_chance"] == ("above chance" if adj < 0.05 else "not distinguishable from chance")
    by = {(r["model"], r["shots"]): r for r in table}
    assert by[("tiny-70m", "0")]["vs_smaller"] == "n/a: smallest model"
    assert by[("mystery", "0")]["vs_smaller"] == "n/a: no parameter count"
    # Both 410M models are compared with the 160M one, not with each other.
    assert by[("mid-410m", "0")]["smaller_model"] == by[("mid-410m-b", "0")]["smaller_model"] == "small-160m"
    # Nested right answers: the larger model is right on every example the smaller one is right on.
    big, small = by[("big-1.4b", "5")], by[("mid-410m-b", "5")]
    assert int(big["only_smaller_right"]) == 0
    assert int(big["only_this_right"]) == int(big["correct"]) - int(small["correct"])
    assert float(big["p_vs_smaller"]) == pytest.approx(mcnemar_exact(int(big["only_this_right"]), 0))
    assert big["vs_smaller"] == "better than mid-410m-b"


def test_significance_marks_in_the_plot(report):
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load

    results, out, _ = report
    analysis = analyse(load([results]))
    marks = [(s.chance.above, s.size.significant) for s in analysis.panels[0].scored]
    assert (True, True) in marks and (False, False) in marks  # both kinds appear in the fixture
    svg = (out / "scaling_anli_r1.svg").read_text(encoding="utf-8")
    text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg))  # legend lines are wrapped
    assert "above chance (exact binomial, Holm)" in text and "not above chance" in text
    assert "differs from next smaller model (exact McNemar, Holm)" in text


def test_summary_and_references(report):
    _, out, _ = report
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "## anli_r1" in md and "## anli (aggregate of anli_r1, anli_r2, anli_r3, pooled)" in md
    assert "| tiny-70m | 70M | 0-shot | 300 | 33.3 [28.2, 38.8] |" in md
    assert "points per 10x parameters" in md
    assert "target 50.0%: would need ~" in md and "not a prediction" in md
    # References from tasks/anli.toml: GPT-3 few-shot (in range) is drawn, fine-tuned RoBERTa is named.
    svg = (out / "scaling_anli_r1.svg").read_text(encoding="utf-8")
    text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg))
    assert "GPT-3 175B few-shot (test): 36.8%" in text
    assert "RoBERTa-large fine-tuned (test): 73.8% (above the plotted range)" in text


def test_models_without_parameter_count_are_plotted_apart_with_a_note(report):
    _, out, _ = report
    svg = (out / "scaling_anli_r1.svg").read_text(encoding="utf-8")
    assert "no parameter count" in svg and ">mystery<" in svg
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "no parameter count for mystery" in md
    trends = rows(out / "trends.csv")
    assert {r["n_models"] for r in trends} == {"5"}  # the unsized model is left out of every fit


def test_models_of_equal_size_are_spread_apart_and_labelled_in_rows(report):
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load
    from nli_eval.report.plots import AX_W, _track_rows, x_layout

    results, _, _ = report
    pa = analyse(load([results])).panels[0]
    xl = x_layout(pa)
    a, b = xl.model_x["mid-410m"], xl.model_x["mid-410m-b"]
    per_in = (xl.hi - xl.lo) / AX_W
    assert abs(a - b) >= 0.12 * per_in  # at least 0.12 inch apart on the page
    assert (a + b) / 2 == pytest.approx(math.log10(410_000_000))
    track = _track_rows([(m, x) for m, x in xl.model_x.items()], xl.lo, xl.hi, AX_W)
    rows_of = {t: r for t, _, _, r in track}
    assert rows_of["mid-410m"] != rows_of["mid-410m-b"]


def test_many_models_at_one_size(tmp_path):
    from nli_eval.report import build_report
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load
    from nli_eval.report.plots import x_layout

    models = [(f"variant-{i}", 1_000_000_000, {("anli_r1", 0): 0.34 + 0.01 * i}) for i in range(6)]
    models.append(("small", 100_000_000, {("anli_r1", 0): 0.33}))
    results = write_run(tmp_path / "run", models)
    xs = sorted(x_layout(analyse(load([results])).panels[0]).model_x.values())
    assert len(set(xs)) == 7
    assert build_report([results], tmp_path / "out", png=False).exists()


def test_missing_samples_skip_size_comparisons_with_a_note(tmp_path):
    from nli_eval.report import build_report

    results = write_run(tmp_path / "run", ladder(tasks=("anli_r1",), shots=(0,), unsized=False), samples=False)
    out = build_report([results], tmp_path / "out", png=False).parent
    table = rows(out / "results.csv")
    assert all(r["p_vs_smaller"] == "" for r in table)
    assert any(r["vs_smaller"].startswith("n/a: no per-example samples at ") for r in table)
    assert "size comparisons skipped where per-example samples are missing" in (out / "summary.md").read_text()


def test_heatmap_holds_accuracy_minus_chance(report):
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load
    from nli_eval.report.plots import heatmap_data

    results, _, _ = report
    row_labels, col_labels, cells = heatmap_data(analyse(load([results])))
    assert row_labels[0] == "tiny-70m (70M)" and row_labels[-1] == "mystery (size ?)"
    assert col_labels[0] == "anli_r1\n0-shot" and len(col_labels) == 8
    assert cells[0][0].value == pytest.approx(0.0, abs=0.2)
    assert cells[4][0].value == pytest.approx(100 * (round(300 * (1 / 3 + 0.08)) / 300 - 1 / 3))


def test_several_results_files_merge(tmp_path):
    from nli_eval.report.analysis import analyse
    from nli_eval.report.data import load

    one = write_run(tmp_path / "one", ladder(tasks=("anli_r1",), shots=(0,), unsized=False)[:2])
    two = write_run(tmp_path / "two", ladder(tasks=("anli_r1",), shots=(0,), unsized=False)[2:])
    analysis = analyse(load([one, two]))
    scored = analysis.panels[0].scored
    assert [s.point.model.label for s in scored] == ["tiny-70m", "small-160m", "mid-410m", "mid-410m-b", "big-1.4b"]
    assert scored[2].size.other == "small-160m" and scored[2].size.p is not None  # samples from both folders


# ---- bad input -----------------------------------------------------------------------------------------

def _cli(args: list[str], capsys) -> tuple[int, str]:
    from nli_eval.cli import main

    code = main(["report", *args])
    return code, capsys.readouterr().err


def test_schema_versions_that_differ(tmp_path, capsys):
    good = write_run(tmp_path / "good", ladder(tasks=("anli_r1",), shots=(0,))[:2])
    data = json.loads(good.read_text())
    data["schema_version"] = 2
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    code, err = _cli([str(good), str(other), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "different schema versions" in err and f"{good} (version 1)" in err and f"{other} (version 2)" in err


def test_empty_file(tmp_path, capsys):
    empty = tmp_path / "results.json"
    empty.write_text("")
    code, err = _cli([str(empty), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and f"{empty}: empty file" in err
    assert not (tmp_path / "out").exists()


def test_malformed_and_modelless_files(tmp_path):
    from nli_eval.report import build_report

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        build_report([bad], tmp_path / "out")
    good = write_run(tmp_path / "run", ladder(tasks=("anli_r1",), shots=(0,))[:1])
    data = json.loads(good.read_text())
    data["models"] = []
    none = tmp_path / "none.json"
    none.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match="holds no models"):
        build_report([none], tmp_path / "out")


def test_same_label_for_different_models_across_files(tmp_path):
    from nli_eval.report import build_report

    models = ladder(tasks=("anli_r1",), shots=(0,))[:2]
    one = write_run(tmp_path / "one", models)
    two = write_run(tmp_path / "two", models, fingerprint="other")
    with pytest.raises(ResultsError, match="names different models"):
        build_report([one, two], tmp_path / "out")


def test_target_must_be_an_accuracy(tmp_path):
    from nli_eval.report import build_report

    results = write_run(tmp_path / "run", ladder(tasks=("anli_r1",), shots=(0,))[:2])
    with pytest.raises(ConfigError, match="between 0 and 1"):
        build_report([results], tmp_path / "out", targets=[50])


def test_cli_report_prints_summary_and_path(tmp_path, capsys):
    from nli_eval.cli import main

    results = write_run(tmp_path / "run", ladder(tasks=("anli_r1",), shots=(0,), unsized=False))
    assert main(["report", str(results), "--out", str(tmp_path / "out"), "--target", "0.45"]) == 0
    text = capsys.readouterr().out
    assert "anli_r1" in text and "points per 10x parameters" in text
    assert f"report: {tmp_path / 'out' / 'index.html'}" in text
    assert "45.0%: would need" in (tmp_path / "out" / "summary.md").read_text()
