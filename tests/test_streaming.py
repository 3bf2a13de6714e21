"""A run streams its examples: kept in a file, scored a window at a time, predictions built after."""

from __future__ import annotations

import json

import pytest

from nli_eval.backends.loader import BackendOptions
from nli_eval.errors import OutputError
from nli_eval.labels import Label
from nli_eval.runner import RunConfig, Runner, scoring_order
from nli_eval.scoresheet import ScoreSheet
from nli_eval.spill import SpilledExamples
from nli_eval.types import NLIExample

E, N, C = Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION


def run(model, data, **kw):
    cfg = RunConfig(models=(str(model),), tasks=("anli_r1",), split="dev", data_dir=str(data),
                    backend=BackendOptions(batch_size=4), progress=False, **kw)
    return Runner(cfg).run()


def examples(n: int) -> list[NLIExample]:
    labels = (E, N, C)
    return [NLIExample(f"id{i}", f"premise {i % 7} " + "é" * i, f"hypothesis {i}", labels[i % 3],
                       {"genre": str(i % 2)} if i % 2 else {}) for i in range(n)]


def test_spilled_examples_read_back_as_written():
    exs = examples(600)
    spilled = SpilledExamples(exs)
    try:
        assert len(spilled) == 600
        assert list(spilled) == exs  # iterated in blocks
        assert spilled[0] == exs[0] and spilled[-1] == exs[-1] and spilled[299] == exs[299]
        assert spilled[10:20] == exs[10:20] and spilled[5:50:7] == exs[5:50:7] and spilled[30:30] == []
        assert spilled.take([3, 4, 5, 9, 2, 300, 301]) == [exs[i] for i in (3, 4, 5, 9, 2, 300, 301)]
        assert spilled.take(range(590, 600)) == exs[590:] and spilled.take([]) == []
        assert spilled[1].meta == {"genre": "1"} and spilled[1].label is N
        with pytest.raises(IndexError):
            spilled[600]
    finally:
        spilled.close()
    assert len(SpilledExamples([])) == 0 and list(SpilledExamples([])) == []


def test_spilling_to_a_full_disk_fails_with_one_line(monkeypatch):
    import tempfile

    class Full:
        def write(self, _data):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **_: Full())
    with pytest.raises(OutputError, match="No space left on device.*TMPDIR"):
        SpilledExamples(examples(3))


def test_score_sheet_keeps_scores_exactly():
    sheet = ScoreSheet(4)
    sheet.put(2, {E: -0.1, N: -1e-300, C: -2.5}, True)
    sheet.put(0, {E: -3.0, N: -2.0, C: -1.0}, False)
    sheet.put(3, {E: -1.0, C: -2.0}, False)  # another label set (a two-way classifier's, say)
    assert sheet.get(2) == ({E: -0.1, N: -1e-300, C: -2.5}, True)
    assert list(sheet.get(0)[0]) == [E, N, C]  # the first example's label order
    assert sheet.get(3) == ({E: -1.0, C: -2.0}, False)
    assert sheet.get(1) is None and len(sheet) == 3
    sheet.put(1, {E: 0.0, N: -7.25, C: -1e9}, False)  # between two written places, after them
    assert sheet.get(1) == ({E: 0.0, N: -7.25, C: -1e9}, False) and sheet.get(2)[0][N] == -1e-300
    sheet.close()


def test_score_sheet_keeps_its_scores_out_of_memory(monkeypatch):
    # The scores wait in a temporary file: memory holds two bytes a place, whatever the labels.
    sheet = ScoreSheet(100_000)
    sheet.put(99_999, {E: -0.5, N: -1.5, C: -2.5}, True)
    assert not hasattr(sheet, "_values") and len(sheet._filled) + len(sheet._truncated) == 200_000
    assert sheet.get(99_999) == ({E: -0.5, N: -1.5, C: -2.5}, True) and len(sheet) == 1
    sheet.close()

    import tempfile

    class Full:
        def seek(self, _pos):
            pass

        def write(self, _data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **_: Full())
    with pytest.raises(OutputError, match="No space left on device.*TMPDIR"):
        ScoreSheet(3).put(0, {E: -1.0, N: -2.0, C: -3.0}, False)


def test_examples_sharing_a_premise_are_scored_together_after_the_rest():
    exs = [NLIExample(str(i), p, "h", E) for i, p in enumerate(["b", "a", "c", "b", "d", "a", "b"])]
    assert list(scoring_order(exs)) == [2, 4, 1, 5, 0, 3, 6]


def test_a_few_shot_prefix_shared_by_every_window_runs_once(tiny_llama, anli_hub, tmp_path, monkeypatch):
    from nli_eval import runner
    from nli_eval.backends.causal import CausalLMBackend

    whole = tmp_path / "whole"
    run(tiny_llama, anli_hub, shots=(2,), sampling="fixed", output_dir=str(whole))
    prefixes = []
    original = CausalLMBackend._run_prefix

    def counting(self, tokens):
        prefixes.append(len(tokens))
        return original(self, tokens)

    monkeypatch.setattr(CausalLMBackend, "_run_prefix", counting)
    monkeypatch.setattr(runner, "STREAM_WINDOW", 8)
    windows = tmp_path / "windows"
    record = run(tiny_llama, anli_hub, shots=(2,), sampling="fixed", output_dir=str(windows))
    assert len(prefixes) == 1 and record.models[0].results[0].n == 30
    for path in sorted((whole / "samples").rglob("*.jsonl")):
        want = [json.loads(line) for line in path.read_text().splitlines()]
        got = [json.loads(line) for line in (windows / path.relative_to(whole)).read_text().splitlines()]
        assert [r["id"] for r in got] == [r["id"] for r in want]  # in the split's order, not the scoring order
        assert [r["predicted"] for r in got] == [r["predicted"] for r in want]


def test_predictions_are_built_after_the_model_is_released(tiny_llama, anli_hub, tmp_path, monkeypatch):
    from nli_eval import runner
    from nli_eval.backends.causal import CausalLMBackend

    events = []
    close, finish = CausalLMBackend.close, runner.Runner.finish_task
    monkeypatch.setattr(CausalLMBackend, "close", lambda self: (events.append("close"), close(self))[1])
    monkeypatch.setattr(runner.Runner, "finish_task",
                        lambda self, *a: (events.append("finish"), finish(self, *a))[1])
    run(tiny_llama, anli_hub, shots=(0, 2), output_dir=str(tmp_path / "out"))
    assert events == ["close", "finish", "finish"]


def test_a_pass_holds_no_more_prompts_than_asked():
    from nli_eval.backends import packing

    assert packing.plan([10] * 5, 100, [2] * 5, 4) == [[0, 1], [2, 3], [4]]
    assert packing.plan([10] * 5, 100, [2] * 5) == [[0, 1, 2, 3, 4]]
    assert packing.plan([10, 10], 100, [7, 1], 4) == [[0], [1]]  # a unit of more prompts runs alone

