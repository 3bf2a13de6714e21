"""Shared pieces of the side-by-side scripts: a data slice both tools read, and both tools' runs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DRIVER = Path(__file__).resolve().parent / "harness_driver.py"

HARNESS_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
output_type: multiple_choice
test_split: test
fewshot_split: test
doc_to_text: "{{{{premise}}}}\\nQuestion: {{{{hypothesis}}}} True, False, or Neither?\\nAnswer:"
doc_to_target: "{{{{['True', 'Neither', 'False'][label]}}}}"
doc_to_choice: ["True", "Neither", "False"]
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

ORDER = {"entailment": 0, "neutral": 1, "contradiction": 2}  # the harness choice index of each label


def common_arguments(description: str, examples_default: int | None) -> argparse.ArgumentParser:
    """The arguments every side-by-side script takes: the model, the data, both tools."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--anli", type=Path, required=True, help="ANLI dev_r1.jsonl in the Hub layout")
    ap.add_argument("--lm-eval", default=shutil.which("lm_eval") or "lm_eval", help="the lm_eval executable")
    ap.add_argument("--python", default=sys.executable, help="the Python that has nli-eval installed")
    ap.add_argument("--n", type=int, default=examples_default,
                    help=f"first N examples (default: {examples_default or 'all'})")
    ap.add_argument("--batch-size", type=int, default=16)
    return ap


@dataclass(frozen=True)
class ProcessRun:
    wall: float            # whole process, seconds
    peak_rss_mb: float     # peak resident memory of that process (wait4's rusage of the child)
    output: str


@dataclass(frozen=True)
class ToolRun:
    process: ProcessRun
    scoring_seconds: float     # the scoring phase alone, as each tool measures it
    predictions: tuple[int, ...]
    accuracy: float
    tokens: int = 0            # model tokens run (nli-eval reports it)


def slice_anli(source: Path, n: int | None, work: Path) -> Path:
    """The first n rows of an ANLI file in the Hub layout, as WORK/data/anli/dev_r1.jsonl (both tools read it)."""
    rows = [r for r in source.read_text(encoding="utf-8").splitlines() if r.strip()][: n or None]
    target = work / "data" / "anli" / "dev_r1.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return target


def timed(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> ProcessRun:
    """Run a command as its own process: wall time and that child's own peak RSS."""
    log = log or Path(os.devnull)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    text = log.read_text(encoding="utf-8", errors="replace") if log != Path(os.devnull) else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(text[-4000:])
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}")
    return ProcessRun(wall, usage.ru_maxrss / 1024, text)


def harness_python(lm_eval: str) -> str:
    """The Python interpreter lm_eval is installed in (from its console script)."""
    first = Path(lm_eval).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    return first[2:].strip() if first.startswith("#!") else sys.executable


def run_harness(python: str, model: Path, data_file: Path, work: Path, shots: int, batch: int, tag: str,
                shots_table: dict[str, list[str]] | None = None) -> ToolRun:
    """lm_eval --model hf on a local task YAML, through the timing driver."""
    name = "anli_r1_local"
    tasks = work / f"harness_tasks_{tag}"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / f"{name}.yaml").write_text(HARNESS_TASK.format(name=name, path=data_file))
    out = work / f"harness_out_{tag}"
    timing = work / f"harness_timing_{tag}.json"
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "NLI_BENCH_TIMING": str(timing)}
    if shots_table is not None:
        table = work / f"shots_{tag}.json"
        table.write_text(json.dumps(shots_table))
        env["NLI_BENCH_SHOTS"] = str(table)
    cmd = [python, str(DRIVER), "run", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
           "--tasks", name, "--include_path", str(tasks), "--batch_size", str(batch), "--device", "cpu",
           "--num_fewshot", str(shots), "--log_samples", "--output_path", str(out), "--seed", "1234"]
    run = timed(cmd, env=env, log=work / f"harness_{tag}.log")
    samples = sorted(out.rglob(f"samples_{name}_*.jsonl"))[-1]
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["doc_id"])
    preds = []
    for r in rows:
        lls = [float(resp[0]) for resp in r["filtered_resps"]]  # logged as strings
        preds.append(max(range(len(lls)), key=lambda i: lls[i]))
    acc = sum(int(r["acc"]) for r in rows) / len(rows)
    seconds = json.loads(timing.read_text())["loglikelihood_seconds"]
    return ToolRun(run, seconds, tuple(preds), acc)


def run_nli_eval(python: str, model: Path, data_dir: Path, work: Path, shots: int, batch: int, tag: str,
                 sampling: str = "per-example") -> ToolRun:
    out = work / f"nli_eval_out_{tag}"
    cmd = [python, "-m", "nli_eval", "run", str(model), "--tasks", "anli_r1", "--split", "dev",
           "--data-dir", str(data_dir), "--shots", str(shots), "--batch-size", str(batch), "--dtype", "float32",
           "--device", "cpu", "--fewshot-sampling", sampling, "--output-dir", str(out),
           "--cache-dir", str(work / f"cache_{tag}_{time.time_ns()}"), "--no-progress", "--no-report"]
    run = timed(cmd, env={"TOKENIZERS_PARALLELISM": "false"}, log=work / f"nli_eval_{tag}.log")
    result = json.loads((out / "results.json").read_text())["models"][0]["results"][0]
    sample_file = next((out / "samples").rglob(f"anli_r1_{shots}shot.jsonl"))
    preds = [ORDER[json.loads(line)["predicted"]] for line in sample_file.read_text().splitlines() if line.strip()]
    return ToolRun(run, result["scoring_seconds"], tuple(preds), result["accuracy"], result["tokens"])
