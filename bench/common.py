"""Shared pieces of the side-by-side scripts: a data slice both tools read, and both tools' runs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class ProcessRun:
    wall: float            # whole process, seconds
    peak_rss_mb: float     # peak resident memory of the process tree's largest child
    output: str


def slice_anli(source: Path, n: int | None, work: Path) -> Path:
    """The first n rows of an ANLI file in the Hub layout, as WORK/anli/dev_r1.jsonl (both tools read it)."""
    rows = source.read_text(encoding="utf-8").splitlines()
    rows = [r for r in rows if r.strip()][: n or None]
    target = work / "data" / "anli" / "dev_r1.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return target


def timed(cmd: list[str], env: dict[str, str] | None = None) -> ProcessRun:
    """Run a command as its own process; wall time and the peak RSS of that child (getrusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    # ru_maxrss of children is the max over all children so far: run the bigger tool last or
    # read it per run via a wrapper; here each run happens in a fresh `/usr/bin/time`-free child.
    return ProcessRun(wall, max(peak, before) / 1024, proc.stdout + proc.stderr)


def run_harness(lm_eval: str, model: Path, data_file: Path, work: Path, shots: int, batch: int,
                name: str = "anli_r1_local") -> tuple[ProcessRun, list[int], float]:
    """lm_eval --model hf on a local task YAML; returns the run, predicted choice indices, accuracy."""
    tasks = work / f"harness_tasks_{shots}"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / f"{name}.yaml").write_text(HARNESS_TASK.format(name=name, path=data_file))
    out = work / f"harness_out_{shots}"
    cmd = [lm_eval, "run", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
           "--tasks", name, "--include_path", str(tasks), "--batch_size", str(batch), "--device", "cpu",
           "--num_fewshot", str(shots), "--log_samples", "--output_path", str(out), "--seed", "1234"]
    run = timed(cmd, env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    samples = sorted(out.rglob(f"samples_{name}_*.jsonl"))[-1]
    rows = [json.loads(l) for l in samples.read_text().splitlines() if l.strip()]
    rows.sort(key=lambda r: r["doc_id"])
    preds = []
    for r in rows:
        lls = [float(resp[0]) for resp in r["filtered_resps"]]  # logged as strings
        preds.append(max(range(len(lls)), key=lambda i: lls[i]))
    acc = sum(int(r["acc"]) for r in rows) / len(rows)
    return run, preds, acc


def run_nli_eval(python: str, model: Path, data_dir: Path, work: Path, shots: int, batch: int,
                 sampling: str = "per-example") -> tuple[ProcessRun, list[int], float, dict]:
    out = work / f"nli_eval_out_{shots}_{sampling}"
    cmd = [python, "-m", "nli_eval", "run", str(model), "--tasks", "anli_r1", "--split", "dev",
           "--data-dir", str(data_dir), "--shots", str(shots), "--batch-size", str(batch), "--dtype", "float32",
           "--device", "cpu", "--fewshot-sampling", sampling, "--output-dir", str(out),
           "--cache-dir", str(work / f"cache_{shots}_{sampling}_{time.time_ns()}"), "--no-progress", "--no-report"]
    run = timed(cmd, env={"TOKENIZERS_PARALLELISM": "false"})
    results = json.loads((out / "results.json").read_text())
    sample_file = next((out / "samples").rglob(f"anli_r1_{shots}shot.jsonl"))
    order = {"entailment": 0, "neutral": 1, "contradiction": 2}
    preds = [order[json.loads(l)["predicted"]] for l in sample_file.read_text().splitlines() if l.strip()]
    result = results["models"][0]["results"][0]
    return run, preds, result["accuracy"], result
