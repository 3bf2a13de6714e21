"""nli-eval against lm-evaluation-harness: time, memory and answers, side by side on one machine.

Both tools read the same file (the first --n rows of ANLI dev R1, Hub layout), score the same
checkpoint in fp32 on the CPU with the same prompt, label words and batch size, each as a whole
process. The 5-shot runs give lm-eval nli-eval's shots (bench/harness_driver.py), so both see
identical prompts and their answers can be compared one by one. Printed: whole-process and
scoring-phase seconds, peak resident memory, agreement, the ratios against the targets, the model
FLOP rate against a matrix-multiply peak measured here, and how time and memory grow with 10x
the examples. The zero-shot pair runs three times by default and is compared on medians.

    python bench/speed.py --model ~/.cache/nli-eval/models/smollm2-135m \
        --anli ../shared/data/anli/dev_r1.jsonl --lm-eval /path/to/venv/bin/lm_eval
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ToolRun, common_arguments, harness_python, run_harness, run_nli_eval,  # noqa: E402
                    slice_anli)


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    unit: str = "x"
    at_least: bool = False

    @property
    def ok(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        sign = ">=" if self.at_least else "<="
        # Four significant digits, more where a ratio a hair off its limit would print as the limit itself.
        digits = 4
        while digits < 9 and self.value != self.limit and float(f"{self.value:.{digits}g}") == self.limit:
            digits += 1
        return (f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.value:.{digits}g}{self.unit} "
                f"(target {sign} {self.limit:.3g}{self.unit})")


def matmul_peak(seconds: float = 2.0) -> tuple[float, str]:
    """Best fp32 matrix-multiply rate (FLOP/s) on this machine, with torch's threads: `torch.mm` (the BLAS)
    and oneDNN with a packed operand (the kernel nli-eval's CPU linear layers run), over a few square sizes."""
    import torch

    ops = torch.ops.mkldnn
    onednn = torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
    best, best_name = 0.0, ""
    for size in (512, 1024, 2048, 3072):
        a, b = torch.randn(size, size), torch.randn(size, size)
        kernels = {"torch.mm": lambda: torch.mm(a, b)}
        if onednn:
            packed = ops._reorder_linear_weight(b, None)
            kernels["oneDNN packed"] = lambda: ops._linear_pointwise(a, packed, None, "none", [], "")
        for name, run in kernels.items():
            for _ in range(3):
                run()
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                run()
                reps += 1
            rate = 2 * size ** 3 * reps / (time.perf_counter() - start)
            if rate > best:
                best, best_name = rate, f"{name} {size}x{size}"
    return best, best_name


def shots_table(data_dir: Path, k: int, sampling: str) -> dict[str, list[str]]:
    """The shots nli-eval draws for each example (uid -> shot uids), for lm-eval to use as well."""
    from nli_eval.prompts import ShotSampler
    from nli_eval.runner import RunConfig, Runner

    runner = Runner(RunConfig(models=("-",), tasks=("anli_r1",), shots=(k,), split="dev",
                              data_dir=str(data_dir), sampling=sampling))
    prep = runner.prepare("anli_r1")
    sampler = ShotSampler(prep.pool, prep.task.name, runner.config.seed, sampling, prep.same_split)
    return {ex.id: [s.id for s in sampler.draw(ex, k)] for ex in prep.examples}


def model_shape(model: Path) -> tuple[int, int, int]:
    """(non-embedding parameters, hidden size, vocabulary size) from the checkpoint."""
    from nli_eval.modeling import count_from_headers, resolve

    config = json.loads((model / "config.json").read_text())
    text = config.get("text_config", config)
    params = count_from_headers(resolve(str(model)))
    if params is None or params.non_embedding is None:
        raise SystemExit(f"cannot count the parameters of {model}")
    return params.non_embedding, int(text["hidden_size"]), int(text["vocab_size"])


def label_tail_tokens(model: Path) -> int:
    """Vocabulary projections per example beyond the first: the extra tokens of multi-token label words."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    return sum(len(tok(" " + w, add_special_tokens=False)["input_ids"]) - 1 for w in ("True", "Neither", "False"))


def model_flops(run: ToolRun, n: int, shape: tuple[int, int, int], tail: int) -> float:
    non_embedding, hidden, vocab = shape
    return 2 * non_embedding * run.tokens + 2 * hidden * vocab * n * (1 + tail)


def agreement(a: ToolRun, b: ToolRun) -> str:
    same = sum(x == y for x, y in zip(a.predictions, b.predictions))
    return f"{same}/{len(a.predictions)}"


def row(setting: str, tool: str, run: ToolRun, agree: str = "") -> str:
    p = run.process
    return (f"| {setting} | {tool} | {p.wall:.1f} | {run.scoring_seconds:.1f} | {p.peak_rss_mb:.0f} | "
            f"{100 * run.accuracy:.1f} | {agree} |")


def zero_shot(args, harness_py: str, model: Path, data_file: Path, data_dir: Path, work: Path,
              shape: tuple[int, int, int], tail: int, peak: float, lines: list[str]) -> list[Check]:
    """Zero-shot: both tools' times, memory and answers, and nli-eval's model FLOP rate.

    Each tool runs `--repeats` times, the two alternating so that a slow spell of the machine meets
    both; the ratios are of the median times. lm-eval's start-up alone varies by tens of seconds
    from run to run on one machine, so a single pair of runs can put the whole-process ratio on
    either side of its target."""
    h_runs: list[ToolRun] = []
    n_runs: list[ToolRun] = []
    for r in range(args.repeats):
        h_runs.append(run_harness(harness_py, model, data_file, work, 0, args.batch_size, f"0r{r}"))
        n_runs.append(run_nli_eval(args.python, model, data_dir, work, 0, args.batch_size, f"0r{r}"))
        lines += [row("0-shot", "lm-eval", h_runs[-1]), row("0-shot", "nli-eval", n_runs[-1],
                                                               agreement(h_runs[-1], n_runs[-1]))]
        print(lines[-2] + "\n" + lines[-1], flush=True)
    whole = [median(run.process.wall for run in runs) for runs in (h_runs, n_runs)]
    scoring = [median(run.scoring_seconds for run in runs) for runs in (h_runs, n_runs)]
    memory = [max(run.process.peak_rss_mb for run in runs) for runs in (h_runs, n_runs)]
    if args.repeats > 1:
        print(f"0-shot medians of {args.repeats} runs each: whole process lm-eval {whole[0]:.1f} s "
              f"({spread(h_runs)}), nli-eval {whole[1]:.1f} s ({spread(n_runs)}); scoring lm-eval "
              f"{scoring[0]:.1f} s, nli-eval {scoring[1]:.1f} s; highest peak RSS lm-eval {memory[0]:.0f} MB, "
              f"nli-eval {memory[1]:.0f} MB", flush=True)
    differing = max(sum(a != b for a, b in zip(h.predictions, n.predictions)) for h in h_runs for n in n_runs)
    checks = [Check("0-shot whole process, nli-eval / lm-eval", whole[1] / whole[0], 0.5),
              Check("0-shot scoring phase, nli-eval / lm-eval", scoring[1] / scoring[0], 2 / 3),
              Check("0-shot peak RSS, nli-eval / lm-eval", memory[1] / memory[0], 1.0),
              Check("0-shot answers differing from lm-eval", differing, 0, "")]
    flops = model_flops(n_runs[0], args.n, shape, tail)
    rate = flops / scoring[1]
    h_rate = flops / scoring[0]
    print(f"0-shot model FLOPs: {flops / 1e12:.2f} TFLOP for {n_runs[0].tokens} tokens; nli-eval {rate / 1e9:.1f} "
          f"GFLOP/s = {100 * rate / peak:.0f}% of peak; lm-eval {h_rate / 1e9:.1f} GFLOP/s = "
          f"{100 * h_rate / peak:.0f}% (the same useful work in its scoring time)", flush=True)
    checks.append(Check("0-shot model FLOP rate / matrix-multiply peak", rate / peak, 0.6, "", at_least=True))
    return checks


def growth(args, model: Path, work: Path) -> list[Check]:
    """Time and peak memory of nli-eval on N and 10 N examples, zero-shot.

    The two sizes run `--scale-repeats` times each, alternating. Where a pass's activations come and
    go, a process's peak memory varies from run to run by where the heap places them (1-2% on the
    oneDNN path), so the check asks that the median 10 N run peak no higher than the highest N run, and
    prints the ratio of the medians beside it. Where they stay in kept buffers (the native forward on
    the BLAS) every run of a size peaks alike, and the check sees what a longer run holds beyond the
    scoring: a run streams its examples from a temporary file in windows of 64 and keeps ~18 bytes an
    example while the model is loaded (its place in the scoring order and where it starts, and two flags;
    the scores wait in a temporary file)."""
    small, large = args.scale_n, 10 * args.scale_n
    for n in (small, large):
        slice_anli(args.anli, n, work / f"scale_{n}")
    runs: dict[int, list[ToolRun]] = {small: [], large: []}
    for r in range(args.scale_repeats):
        for n in (small, large):
            scale_work = work / f"scale_{n}"
            run = run_nli_eval(args.python, model, scale_work / "data", scale_work, 0, args.batch_size, f"scale{n}r{r}")
            if len(run.predictions) < n:
                raise SystemExit(f"--anli has only {len(run.predictions)} rows; the growth check needs {large}")
            runs[n].append(run)
            print(f"growth run {r + 1}: {n} examples, scoring {run.scoring_seconds:.1f} s, whole process "
                  f"{run.process.wall:.1f} s, peak RSS {run.process.peak_rss_mb:.2f} MB", flush=True)
    scoring = {n: median(run.scoring_seconds for run in rs) for n, rs in runs.items()}
    peaks = {n: sorted(run.process.peak_rss_mb for run in rs) for n, rs in runs.items()}
    tokens = runs[large][0].tokens / runs[small][0].tokens
    print(f"growth: {small} -> {large} examples (0-shot nli-eval, medians of {args.scale_repeats} runs): scoring "
          f"{scoring[small]:.1f}s -> {scoring[large]:.1f}s ({scoring[large] / scoring[small]:.2f}x; tokens "
          f"{tokens:.2f}x); peak RSS {median(peaks[small]):.2f} -> {median(peaks[large]):.2f} MB "
          f"({median(peaks[large]) / median(peaks[small]):.5f}x); peak RSS of each run: "
          f"{small}: {', '.join(f'{p:.2f}' for p in peaks[small])}; {large}: {', '.join(f'{p:.2f}' for p in peaks[large])}",
          flush=True)
    return [Check(f"scoring time for 10x the examples ({small} -> {large})", scoring[large] / scoring[small], 10.5),
            Check(f"peak RSS for 10x the examples, median {large}-example run / highest {small}-example run",
                  median(peaks[large]) / peaks[small][-1], 1.0)]


def spread(runs: list[ToolRun]) -> str:
    walls = sorted(run.process.wall for run in runs)
    return f"{walls[0]:.1f}-{walls[-1]:.1f}"


def main() -> int:
    ap = common_arguments(__doc__.splitlines()[0], 200)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--scale-n", type=int, default=100, help="the growth check runs N and 10 N examples")
    ap.add_argument("--scale-repeats", type=int, default=3,
                    help="runs of each size in the growth check, alternating (default: 3)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="zero-shot runs of each tool, alternating; the ratios use the medians (default: 3)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: zero, fewshot, fixed-harness, scale")
    args = ap.parse_args()
    if args.repeats < 1 or args.scale_repeats < 1:
        ap.error("--repeats and --scale-repeats must be at least 1")
    skip = set(filter(None, args.skip.split(",")))
    harness_py = harness_python(args.lm_eval)
    model = args.model.expanduser()
    shape, tail = model_shape(model), label_tail_tokens(model)
    peak, peak_kernel = matmul_peak()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}; model {model.name}; "
          f"first {args.n} examples of ANLI dev R1; fp32; batch size {args.batch_size}", flush=True)
    print(f"matrix-multiply peak: {peak / 1e9:.1f} GFLOP/s (fp32, {peak_kernel})", flush=True)
    checks: list[Check] = []
    lines = ["| setting | tool | whole process s | scoring phase s | peak RSS MB | accuracy % | same answers |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_file = slice_anli(args.anli, args.n, work)
        data_dir = work / "data"

        if "zero" not in skip:
            checks += zero_shot(args, harness_py, model, data_file, data_dir, work, shape, tail, peak, lines)

        if "fewshot" not in skip:
            k = args.shots
            table = shots_table(data_dir, k, "per-example")
            h5 = run_harness(harness_py, model, data_file, work, k, args.batch_size, f"{k}", table)
            n5 = run_nli_eval(args.python, model, data_dir, work, k, args.batch_size, f"{k}")
            f5 = run_nli_eval(args.python, model, data_dir, work, k, args.batch_size, f"{k}f", "fixed")
            lines += [row(f"{k}-shot per-example", "lm-eval", h5),
                      row(f"{k}-shot per-example", "nli-eval", n5, agreement(h5, n5)),
                      row(f"{k}-shot fixed", "nli-eval", f5)]
            print("\n".join(lines[-3:]), flush=True)
            checks += [
                Check(f"{k}-shot scoring phase, nli-eval / lm-eval", n5.scoring_seconds / h5.scoring_seconds, 2 / 3),
                Check(f"{k}-shot fixed scoring phase, nli-eval / lm-eval {k}-shot",
                      f5.scoring_seconds / h5.scoring_seconds, 0.25),
                Check(f"{k}-shot peak RSS, nli-eval / lm-eval", n5.process.peak_rss_mb / h5.process.peak_rss_mb, 1.0),
                Check(f"{k}-shot answers differing from lm-eval",
                      sum(a != b for a, b in zip(h5.predictions, n5.predictions)), 0, ""),
            ]
            if "fixed-harness" not in skip:
                hf = run_harness(harness_py, model, data_file, work, k, args.batch_size, f"{k}f",
                                 shots_table(data_dir, k, "fixed"))
                lines.append(row(f"{k}-shot fixed", "lm-eval", hf, f"{agreement(hf, f5)} (with nli-eval fixed)"))
                print(lines[-1], flush=True)
                checks.append(Check(f"{k}-shot fixed answers differing from lm-eval on the same prompts",
                                    sum(a != b for a, b in zip(hf.predictions, f5.predictions)), 0, ""))

        if "scale" not in skip:
            checks += growth(args, model, work)
    print()
    print("\n".join(lines))
    print()
    for c in checks:
        print(c.line())
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
