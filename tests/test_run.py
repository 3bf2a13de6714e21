"""End to end on tiny random checkpoints and fixture data in the Hub and release layouts."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from helpers import build_causal, nli_rows, write_jsonl

from nli_eval.backends.loader import BackendOptions
from nli_eval.cli import main
from nli_eval.labels import Label
from nli_eval.results import read_results
from nli_eval.runner import RunConfig, Runner


def run(model, data, **kw):
    batch = kw.pop("batch_size", 4)
    cfg = RunConfig(models=(str(model),), tasks=kw.pop("tasks", ("anli_r1",)), split="dev", data_dir=str(data),
                    backend=BackendOptions(batch_size=batch), progress=False, **kw)
    return Runner(cfg).run()


@pytest.mark.parametrize("shape", ["tiny_llama", "tiny_gpt2"])
def test_predictions_identical_for_batch_sizes(shape, request, anli_hub, tmp_path):
    model = request.getfixturevalue(shape)
    outs = {}
    for bs in (1, 3, 16):
        out = tmp_path / f"bs{bs}"
        run(model, anli_hub, shots=(0, 2), batch_size=bs, output_dir=str(out))
        outs[bs] = {f.name: [json.loads(l) for l in f.read_text().splitlines()]
                    for f in sorted((out / "samples").rglob("*.jsonl"))}
    assert set(outs[1]) == {"anli_r1_0shot.jsonl", "anli_r1_2shot.jsonl"}
    for bs in (3, 16):
        for name, rows in outs[1].items():
            other = outs[bs][name]
            assert [r["predicted"] for r in rows] == [r["predicted"] for r in other]
            for a, b in zip(rows, other):
                for lab in a["scores"]:
                    assert math.isclose(a["scores"][lab], b["scores"][lab], abs_tol=1e-4)


def test_results_json_and_samples(tiny_llama, anli_hub, tmp_path):
    record = run(tiny_llama, anli_hub, tasks=("anli",), shots=(0,), output_dir=str(tmp_path))
    back = read_results(tmp_path / "results.json")
    assert back.models == record.models and back.config["tasks"] == ["anli"]
    m = back.models[0]
    assert [r.task for r in m.results] == ["anli_r1", "anli_r2", "anli_r3"]
    (agg,) = m.aggregates
    assert agg.task == "anli" and agg.n == 90 and agg.correct == sum(r.correct for r in m.results)
    r1 = m.results[0]
    assert r1.n == 30 and r1.chance_uniform == pytest.approx(1 / 3)
    assert sum(r1.predicted_distribution.values()) == 30
    assert sum(sum(row.values()) for row in r1.confusion.values()) == 30
    assert r1.ci_low <= r1.accuracy <= r1.ci_high
    assert m.params_total and m.params_total > m.params_non_embedding > 0
    assert back.versions["torch"] and back.config["seed"] == 1234
    from nli_eval.backends import cpu_linear
    # What ran is recorded: the CPU's packed layers or chunked MLPs, and the attention function.
    kernels = "packed_linear_layers" if cpu_linear.onednn_pays() else "chunked_gated_mlps"
    assert int(m.backend_details[kernels]) > 0 and m.backend_details["attention"]
    lines = (tmp_path / "samples" / m.label / "anli_r1_0shot.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    assert set(row) >= {"id", "gold", "predicted", "scores"} and row["id"] == "dev1-0000"
    assert set(row["scores"]) == {"entailment", "neutral", "contradiction"}


def test_a_library_run_bounds_the_kernel_caches_unless_the_user_set_them(tiny_llama, anli_hub, tmp_path, monkeypatch):
    """oneDNN's per-shape kernel caches are capped and MKL's buffer pool is off for `Runner.run()` too,
    not only for the CLI."""
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.delenv("MKL_DISABLE_FAST_MM", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "64")
    run(tiny_llama, anli_hub, shots=(0,), limit=4, output_dir=str(tmp_path))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "16" and os.environ["LRU_CACHE_CAPACITY"] == "64"
    assert os.environ["MKL_DISABLE_FAST_MM"] == "1"


@pytest.mark.parametrize("sampling", ["per-example", "fixed"])
def test_prompts_stream_through_in_chunks_with_the_same_results(sampling, tiny_llama, anli_hub, tmp_path,
                                                                 monkeypatch):
    """A run builds, encodes and scores a bounded chunk of prompts at a time, and drops each chunk's
    encodings once scored, so memory does not grow with the split; the results are those of one pass."""
    from nli_eval import runner
    from nli_eval.backends.causal import CausalLMBackend

    whole = tmp_path / "whole"
    run(tiny_llama, anli_hub, shots=(0, 2), sampling=sampling, output_dir=str(whole))
    calls = []
    score = CausalLMBackend.score

    def counting(self, prompts, on_batch=None):
        out = score(self, prompts, on_batch=on_batch)
        calls.append((len(prompts), len(self._encoded)))
        return out

    monkeypatch.setattr(CausalLMBackend, "score", counting)
    monkeypatch.setattr(runner, "STREAM_WINDOW", 7)
    chunked = tmp_path / "chunked"
    run(tiny_llama, anli_hub, shots=(0, 2), sampling=sampling, output_dir=str(chunked))
    assert [n for n, _ in calls] == [7, 7, 7, 7, 2] * 2  # 30 examples, at 0 and 2 shots
    assert all(kept == 0 for _, kept in calls)
    for path in sorted((whole / "samples").rglob("*.jsonl")):
        want = [json.loads(line) for line in path.read_text().splitlines()]
        got = [json.loads(line) for line in (chunked / path.relative_to(whole)).read_text().splitlines()]
        assert [r["predicted"] for r in got] == [r["predicted"] for r in want]
        for a, b in zip(got, want):
            assert all(math.isclose(a["scores"][lab], b["scores"][lab], abs_tol=1e-4) for lab in a["scores"])


def test_release_layout_gives_same_labels(anli_release):
    from nli_eval.data import load_split
    from nli_eval.taskspec import builtin_catalog

    split = load_split(builtin_catalog().get("anli_r2"), "dev", anli_release)
    assert split.source.endswith("anli-v1.0/R2/dev.jsonl")
    assert [e.label for e in split.examples[:3]] == [Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION]


def test_limit_is_stratified_and_seeded(tiny_gpt2, anli_hub):
    a = run(tiny_gpt2, anli_hub, limit=12)
    b = run(tiny_gpt2, anli_hub, limit=12)
    r = a.models[0].results[0]
    assert r.n == 12 and {c.n for c in r.per_label.values()} == {4}
    assert [x.correct for x in a.models[0].results] == [x.correct for x in b.models[0].results]


def test_long_prompts_are_cut_and_counted(tmp_path, anli_hub):
    model = build_causal(tmp_path / "short", "gpt2", max_positions=80)
    record = run(model, anli_hub, shots=(2,))
    r = record.models[0].results[0]
    assert r.truncated > 0 and r.n == 30
    assert any("cut to fit" in w for w in record.warnings)


def test_tokenizer_without_pad_token_works(tmp_path, anli_hub):
    model = build_causal(tmp_path / "nopad", "llama", pad=False)
    from transformers import AutoTokenizer
    assert AutoTokenizer.from_pretrained(model).pad_token is None
    assert run(model, anli_hub).models[0].results[0].n == 30


def test_resume_scores_only_missing(tiny_llama, anli_hub, tmp_path):
    cfg = RunConfig(models=(str(tiny_llama),), tasks=("anli_r1",), split="dev", data_dir=str(anli_hub),
                    output_dir=str(tmp_path), progress=False)
    first = Runner(cfg)
    full = first.run()
    assert first.scored == 30
    cache = next((tmp_path / "cache").glob("*.jsonl"))
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:10]) + "\n" + lines[10][:25])  # lose the rest, tear a line
    again = Runner(cfg)
    resumed = again.run()
    assert again.scored == 20
    assert resumed.models[0].results[0].correct == full.models[0].results[0].correct


def test_the_cache_is_not_reused_under_another_dtype_or_context_length(tiny_llama, anli_hub, tmp_path):
    from nli_eval.modeling import LoadOptions

    def scored(**kw):
        runner = Runner(RunConfig(models=(str(tiny_llama),), tasks=("anli_r1",), split="dev", data_dir=str(anli_hub),
                                  output_dir=str(tmp_path), progress=False, **kw))
        record = runner.run()
        return runner.scored, record.models[0]

    first, fp32 = scored(load=LoadOptions(dtype="float32"))
    assert first == 30 and fp32.dtype == "float32"
    assert scored(load=LoadOptions(dtype="auto"))[0] == 0  # auto is float32 on a CPU: the same scores
    again, bf16 = scored(load=LoadOptions(dtype="bfloat16"))
    assert again == 30 and bf16.dtype == "bfloat16"
    assert scored(backend=BackendOptions(max_length=64))[0] == 30
    # Each setting keeps its own scores and the dtype they were computed in, also when nothing is loaded.
    cached, record = scored(load=LoadOptions(dtype="bfloat16"))
    assert cached == 0 and record.examples_cached == 30 and record.dtype == "bfloat16"
    assert scored(load=LoadOptions(dtype="float32"))[0] == 0


@pytest.mark.parametrize("flag", [["--no-progress"], []])
def test_loading_bars_follow_the_runs_own(flag, tiny_llama, anli_hub, tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    args = ["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub), "--limit", "3",
            "-o", str(tmp_path), *flag]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "%|" not in err  # captured output is no terminal
    assert hf_logging.is_progress_bar_enabled()  # as it was found


# -- the command line: one-line errors, non-zero exit, nothing half-written --------------------

def cli_error(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("nli-eval: error: ") and "Traceback" not in err
    return last


def test_unknown_task_suggests(capsys, tiny_llama):
    assert "did you mean anli_r3, anli_r2, anli_r1" in cli_error(["run", str(tiny_llama), "--tasks", "anli_r4"], capsys)


def test_missing_model_path(capsys, anli_hub):
    msg = cli_error(["run", "./no/such/model", "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub)], capsys)
    assert "does not exist" in msg


def test_model_folder_without_weights(capsys, tmp_path, anli_hub, tiny_llama):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_llama / "config.json", bare / "config.json")
    msg = cli_error(["run", str(bare), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub)], capsys)
    assert "no weight files" in msg


def test_malformed_json_line(capsys, tmp_path, tiny_llama):
    path = write_jsonl(tmp_path / "anli" / "dev_r1.jsonl", nli_rows(5))
    path.write_text(path.read_text() + '{"uid": "x", "premise": \n')
    out = tmp_path / "out"
    msg = cli_error(["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(tmp_path),
                     "-o", str(out)], capsys)
    assert "dev_r1.jsonl: line 6: malformed JSON" in msg
    assert not (out / "results.json").exists()


def test_unknown_and_missing_labels_name_file_row_value(capsys, tmp_path, tiny_llama):
    rows = nli_rows(4)
    rows[2]["label"] = 7
    write_jsonl(tmp_path / "anli" / "dev_r1.jsonl", rows)
    msg = cli_error(["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(tmp_path)], capsys)
    assert "dev_r1.jsonl: row 3: unknown label 7" in msg
    rows[2]["label"] = None
    write_jsonl(tmp_path / "anli" / "dev_r1.jsonl", rows)
    msg = cli_error(["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(tmp_path)], capsys)
    assert "row 3: missing label" in msg


def test_empty_split(capsys, tmp_path, tiny_llama):
    (tmp_path / "anli").mkdir()
    (tmp_path / "anli" / "dev_r1.jsonl").write_text("")
    msg = cli_error(["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(tmp_path)], capsys)
    assert "has no labelled examples" in msg


def test_shots_larger_than_pool(capsys, anli_hub, tiny_llama):
    msg = cli_error(["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub),
                     "--shots", "0,40"], capsys)
    assert "--shots 40 is larger than the shot pool" in msg


def test_unknown_split_and_bad_flags(capsys, anli_hub, tiny_llama):
    msg = cli_error(["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "validation", "--data-dir", str(anli_hub)], capsys)
    assert "no split 'validation'" in msg
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tiny_llama), "--shots", "a,b"])
    assert exc.value.code == 2
    assert "expected numbers" in capsys.readouterr().err


def test_cli_prints_table_and_writes(capsys, tiny_gpt2, anli_hub, tmp_path):
    code = main(["run", str(tiny_gpt2), "--tasks", "anli_r1,anli_r2", "--split", "dev", "--data-dir", str(anli_hub),
                 "--shots", "0,1", "-o", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "anli_r2" in out and "95% CI" in out
    assert (tmp_path / "samples" / tiny_gpt2.name / "anli_r2_1shot.jsonl").exists()


def test_tasks_listing(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "anli_r3" in out and "test=test_r3 (1200)" in out
    assert main(["tasks", "--details", "anli_r1"]) == 0
    details = capsys.readouterr().out
    assert "facebook/anli" in details and "anli-v1.0/R{round}/{split}.jsonl" in details and "Nie" in details


def test_framework_import_pauses_and_freezes_only_when_asked():
    # In a fresh process: the command line's first import freezes what exists, a library call never
    # does, a second call freezes nothing more, and the collector is left as it was found.
    code = ("import gc; from nli_eval.modeling import import_frameworks;"
            "gc.disable(); import_frameworks(); assert not gc.isenabled() and gc.get_freeze_count() == 0;"
            "gc.enable(); import_frameworks(freeze=True); assert gc.isenabled() and gc.get_freeze_count() == 0;"
            "import subprocess, sys;"
            "probe = 'import gc; from nli_eval.modeling import import_frameworks as f; f(freeze=True); n = gc.get_freeze_count();"
            " f(freeze=True); assert gc.isenabled() and n > 100000 and gc.get_freeze_count() == n';"
            "subprocess.run([sys.executable, '-c', probe], check=True)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_the_command_owns_its_process(tiny_llama, anli_hub, tmp_path, monkeypatch):
    seen = []
    original = Runner.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.owns_process)

    monkeypatch.setattr(Runner, "__init__", spy)
    assert main(["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub),
                 "--limit", "4", "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert seen == [False]  # `main` called from Python (tests, notebooks) leaves the collector alone


def test_command_line_freezes_a_loaded_model_and_thaws_it_before_the_next(tiny_llama, tiny_gpt2, anli_hub, tmp_path):
    # In a fresh process, as the command runs it: the collector skips a loaded model while it scores,
    # a model that another follows is thawed before it is dropped (so it is collected in full), and
    # the collector is running again at the end.
    code = f"""
import gc, weakref
from nli_eval.backends.causal import CausalLMBackend
from nli_eval.cli import main
seen = []
close = CausalLMBackend.close
def spy(self):
    seen.append((gc.get_freeze_count(), weakref.ref(self.model)))
    close(self)
CausalLMBackend.close = spy
args = ["run", {str(tiny_llama)!r}, {str(tiny_gpt2)!r}, "--tasks", "anli_r1", "--split", "dev", "--data-dir",
        {str(anli_hub)!r}, "--limit", "4", "-o", {str(tmp_path / "out")!r}, "--no-progress", "--no-report"]
assert main(args, owns_process=True) == 0
(first, first_model), (last, _) = seen
assert first == 0 and last > 100000 and first_model() is None and gc.isenabled(), (first, last)
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_light_imports():
    code = ("import sys, nli_eval, nli_eval.cli, nli_eval.taskspec, nli_eval.data;"
            "from nli_eval.cli import build_parser; build_parser().format_help();"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'matplotlib') if m in sys.modules];"
            "print(heavy); assert not heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
    help_run = subprocess.run([sys.executable, "-m", "nli_eval", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "run" in help_run.stdout


def test_every_process_reads_the_cache_before_any_writes_to_it(tiny_llama, anli_hub, tmp_path, monkeypatch):
    """Processes of one run shard the examples left to score; they agree on that list only if none has
    journaled a batch of the task before every process has read the cache."""
    from nli_eval.cache import ScoreCache
    from nli_eval.dist import Ranks

    events = []

    class TwoRanks(Ranks):  # the first of two processes, here scoring the other's share too
        def barrier(self):
            events.append("barrier")

        def shard(self, n):
            return 0, n

        def gather(self, obj):
            return [obj]

    load, append = ScoreCache.load, ScoreCache.append
    monkeypatch.setattr(ScoreCache, "load", lambda self, key: events.append(f"load {key.shots}") or load(self, key))
    monkeypatch.setattr(ScoreCache, "append",
                        lambda self, key, *a: events.append(f"append {key.shots}") or append(self, key, *a))
    cfg = RunConfig(models=(str(tiny_llama),), tasks=("anli_r1",), split="dev", data_dir=str(anli_hub), limit=6,
                    shots=(0, 1), output_dir=str(tmp_path), progress=False, backend=BackendOptions(batch_size=2))
    Runner(cfg, ranks=TwoRanks(rank=0, world=2)).run()
    for shots in (0, 1):
        first_write = events.index(f"append {shots}")
        read = events.index(f"load {shots}")
        assert read < first_write and "barrier" in events[read:first_write], events
