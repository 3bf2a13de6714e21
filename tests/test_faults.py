"""Fault injection: interrupted sweeps, a held lock, out of memory, a full disk, no network, hostile
names and files, and --strict. Whatever goes wrong, no result is lost or corrupt and the error is one
line; rerunning the same command finishes the work without scoring anything twice.

Counts of what was injected are printed at the end of the session ("reliability counts").
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import COUNTS, build_causal, nli_rows, write_jsonl

from nli_eval import fsutil
from nli_eval.cli import main
from nli_eval.errors import ConfigError, GateError, OutputError
from nli_eval.fsutil import directory_lock, inside, safe_name
from nli_eval.results import read_results, samples_path

TESTS = Path(__file__).resolve().parent
DRIVER = TESTS / "fault_driver.py"
INTERRUPTED = "nli-eval: interrupted; finished examples are cached, rerun the same command to resume"


def fault(kind: str) -> None:
    COUNTS[f"fault kind: {kind}"] += 1


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error",
            **extra}


def one_line_error(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("nli-eval: error: "), err[-3000:]
    return last


def journal_lines(root: Path) -> tuple[dict[str, list[str]], int]:
    """Example ids per journal file, in order, and the number of unreadable (torn) lines."""
    ids: dict[str, list[str]] = {}
    torn = 0
    for path in sorted(root.glob("*.jsonl")) if root.is_dir() else []:
        ids[path.name] = []
        for line in path.read_bytes().splitlines():
            try:
                ids[path.name].append(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                torn += 1
    return ids, torn


# -- interruption: SIGINT and SIGKILL at chosen points of a sweep, then the same command again ---

ROWS = 60
SHOTS = (0, 2)
TOTAL = 2 * len(SHOTS) * ROWS  # two models
_rng = random.Random(8)  # the same "random" points on every run
POINTS = [
    "startup",                                                              # lock taken, model loading
    "journal:1",                                                            # the first example scored
    f"journal:{_rng.randint(2, TOTAL // 2 - 1)}:{_rng.randint(1, 20)}",     # inside the first model
    f"journal:{TOTAL // 2}",                                                # first model done, second not loaded
    f"journal:{_rng.randint(TOTAL // 2 + 1, TOTAL - 1)}:{_rng.randint(1, 20)}",  # inside the second model
    f"journal:{TOTAL}",                                                     # all scored, nothing written yet
    f"finalizer:{TOTAL // 4}",                                              # sent while a finalizer runs
    "replace:anli_r1_2shot.jsonl",                                          # a samples file mid atomic write
    "replace:results.json",                                                 # results.json mid atomic write
]
SIGNALS = ("INT", "KILL")
# Fields that describe one run rather than its results.
RUN_FIELDS = {"created", "seconds", "scoring_seconds", "tokens", "examples_scored", "examples_cached",
              "output_dir", "cache_dir"}


@dataclass(frozen=True)
class Sweep:
    args: Callable[[Path], list[str]]
    reference: Path


def without_run_fields(node):
    if isinstance(node, dict):
        return {k: without_run_fields(v) for k, v in node.items() if k not in RUN_FIELDS}
    if isinstance(node, list):
        return [without_run_fields(v) for v in node]
    return node


def outputs(out: Path) -> dict[str, object]:
    """Everything a reader of the output directory sees, without what differs from run to run."""
    found: dict[str, object] = {"results.json": without_run_fields(json.loads((out / "results.json").read_text()))}
    for path in sorted((out / "samples").rglob("*")):
        if path.is_file():
            found[str(path.relative_to(out))] = path.read_text()
    return found


@pytest.fixture(scope="module")
def sweep(tiny_llama, tiny_gpt2, tmp_path_factory) -> Sweep:
    data = tmp_path_factory.mktemp("sweep-data")
    write_jsonl(data / "anli" / "dev_r1.jsonl", nli_rows(ROWS, seed=11))

    def args(out: Path) -> list[str]:
        return ["run", str(tiny_llama), str(tiny_gpt2), "--tasks", "anli_r1", "--split", "dev", "--data-dir",
                str(data), "--shots", ",".join(map(str, SHOTS)), "--batch-size", "1", "-o", str(out),
                "--no-progress", "--no-report"]

    reference = tmp_path_factory.mktemp("sweep-reference")
    assert main(args(reference)) == 0
    return Sweep(args, reference)


def cached_when_stopped(point: str) -> tuple[int, int]:
    """The least and most journal lines an interruption at this point leaves."""
    kind, _, arg = point.partition(":")
    if kind in ("journal", "finalizer"):
        count, _, delay = arg.partition(":")
        return int(count), TOTAL if delay else int(count)
    if kind == "replace":
        return (TOTAL // 2 if arg.startswith("anli_r1_") else TOTAL), TOTAL  # the first model's last file
    return 0, TOTAL


def interrupt(point: str, sig: str, args: list[str], out: Path, delay: float | None = None
              ) -> subprocess.CompletedProcess:
    """Run the command and stop it at `point`; at "startup", `delay` seconds after it takes its lock
    (a fixed pseudo-random delay when not given)."""
    if point != "startup":
        return subprocess.run([sys.executable, str(DRIVER), *args], env=env(NLI_FAULT=point, NLI_FAULT_SIGNAL=sig),
                              capture_output=True, text=True, timeout=300)
    # From outside, like a user's Ctrl-C or the OOM killer: once the run holds its lock.
    # The driver with no fault set is the plain command line, with Ctrl-C restored in background jobs.
    proc = subprocess.Popen([sys.executable, str(DRIVER), *args], env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / ".lock").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(random.Random(f"{point}{sig}").uniform(0.0, 0.5) if delay is None else delay)
    proc.send_signal(getattr(signal, "SIG" + sig))
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("point", POINTS)
def test_interrupt_then_rerun_gives_identical_results(point, sig, sweep, tmp_path):
    out = tmp_path / "out"
    args = sweep.args(out)
    killed = interrupt(point, sig, args, out)

    # What the interrupted run left: a clean exit message, nothing partial.
    if sig == "INT":
        assert killed.returncode == 130, killed.stderr[-3000:]
        assert "Traceback" not in killed.stderr
        assert killed.stderr.strip().splitlines()[-1] == INTERRUPTED
    else:
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    if (out / "results.json").exists():
        read_results(out / "results.json")
    for path in (out / "samples").rglob("*.jsonl") if (out / "samples").exists() else []:
        assert len([json.loads(line) for line in path.read_text().splitlines()]) == ROWS
    temps = [p for p in out.rglob("*.tmp")]
    if sig == "INT":
        assert not temps, temps  # Ctrl-C removes its temporary file
    assert all(p.name.startswith(".") for p in temps)  # never a name a reader would take for results
    before, torn = journal_lines(out / "cache")
    assert torn <= 1
    assert all(len(ids) == len(set(ids)) for ids in before.values())
    cached = sum(len(ids) for ids in before.values())
    least, most = cached_when_stopped(point)
    assert least <= cached <= most, (cached, point)  # stopped where intended

    # The same command again finishes the sweep, scoring only what was not cached.
    assert main(args) == 0
    assert outputs(out) == outputs(sweep.reference)
    record = read_results(out / "results.json")
    assert sum(m.examples_scored for m in record.models) == TOTAL - cached
    assert sum(m.examples_cached for m in record.models) == cached
    after, _ = journal_lines(out / "cache")
    assert sum(len(ids) for ids in after.values()) == TOTAL
    assert all(len(ids) == len(set(ids)) == ROWS for ids in after.values())  # no example scored twice
    assert not list(out.rglob("*.tmp"))
    COUNTS["interrupted runs (points x signals)"] += 1
    COUNTS["examples checked after an interruption"] += TOTAL
    fault(f"SIG{sig}")


@pytest.mark.slow
def test_ctrl_c_anywhere_in_start_up_stops_in_one_line(sweep, tmp_path):
    # Start-up is where libraries import and collect: a Ctrl-C there used to be dropped now and then,
    # and the run either went on to the end or failed later on a half-imported module.
    for step in range(13):
        out = tmp_path / f"out{step}"
        stopped = interrupt("startup", "INT", sweep.args(out), out, delay=0.05 * step)
        stderr = stopped.stderr
        assert stopped.returncode == 130 and "Traceback" not in stderr, (step, stderr[-3000:])
        assert stderr.strip().splitlines()[-1] == INTERRUPTED
    fault("SIGINT")


def test_a_dropped_ctrl_c_is_raised_at_the_next_check_or_in_place_of_the_error_it_caused(capsys):
    from nli_eval import interrupts

    class Dropped:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the KeyboardInterrupt is raised, and dropped, in here

    handler, hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupts.latched():
            interrupts.check()  # nothing pending
            Dropped()
            assert "KeyboardInterrupt" not in capsys.readouterr().err  # not printed as "Exception ignored"
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
            interrupts.check()  # raised once per Ctrl-C
        with pytest.raises(KeyboardInterrupt):
            with interrupts.latched():
                Dropped()  # and nothing checks before the block ends
        with pytest.raises(KeyboardInterrupt):
            with interrupts.latched():
                Dropped()
                raise ValueError("what a half-made import fails with later")  # reported as the interrupt
        with pytest.raises(ValueError):
            with interrupts.latched():
                raise ValueError("an error with no Ctrl-C stays itself")
        with interrupts.latched():
            with pytest.raises(KeyboardInterrupt):
                with interrupts.held():
                    signal.raise_signal(signal.SIGINT)
                    done = "the import went on to its end"
            assert done
        interrupts.check()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and sys.unraisablehook is hook
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's Ctrl-C stays ignored
        with interrupts.latched():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, handler)


def test_fully_cached_model_keeps_its_device_and_context_length(tiny_gpt2, anli_hub, tmp_path):
    args = ["run", str(tiny_gpt2), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub), "-o",
            str(tmp_path), "--no-progress"]
    assert main(args) == 0
    fresh = read_results(tmp_path / "results.json").models[0]
    assert main(args) == 0
    resumed = read_results(tmp_path / "results.json").models[0]
    assert resumed.examples_scored == 0
    assert (resumed.device, resumed.max_length) == (fresh.device, fresh.max_length)


@pytest.mark.slow
def test_a_second_run_on_a_locked_directory_fails_in_one_line(tiny_gpt2, anli_hub, tmp_path):
    out = tmp_path / "out"
    args = ["run", str(tiny_gpt2), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub), "-o", str(out),
            "--no-progress"]
    with directory_lock(out):  # the first run, still writing
        second = subprocess.run([sys.executable, "-m", "nli_eval", *args], env=env(), capture_output=True,
                                text=True, timeout=300)
    assert second.returncode == 2
    last = one_line_error(second.stderr)
    assert "another nli-eval run is writing" in last and str(out) in last
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the second run wrote nothing
    assert main(args) == 0  # the lock goes with the run that held it
    fault("locked output directory")


# -- out of memory while scoring -----------------------------------------------------------------

CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 35184372088832 bytes. Error code 12 (Cannot allocate memory)")


def real_cpu_oom() -> RuntimeError:
    import torch
    try:
        torch.empty(1 << 45, dtype=torch.uint8)  # 32 TiB: the allocator refuses at once
    except RuntimeError as exc:
        return exc
    pytest.skip("this machine allocated 32 TiB")


def causal_backend(path: Path, batch_size: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nli_eval.backends.causal import CausalLMBackend

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return CausalLMBackend(model, AutoTokenizer.from_pretrained(path), name=path.name, batch_size=batch_size)


def prompts(n: int):
    from nli_eval.labels import Label, LabelSpace
    from nli_eval.prompts import PromptBuilder
    from nli_eval.templates import BUILTIN_TEMPLATES
    from nli_eval.types import NLIExample

    builder = PromptBuilder(BUILTIN_TEMPLATES["harness"], LabelSpace.THREE_WAY)
    return [builder.render(NLIExample(r["uid"], r["premise"], r["hypothesis"], list(Label)[r["label"]]))
            for r in nli_rows(n, seed=3)]


def fail_above(model, limit: int, error: Callable[[], BaseException]) -> list[int]:
    """Make the model's forward raise `error` for batches larger than `limit`; returns the sizes tried."""
    forward = model.forward
    sizes: list[int] = []

    def faulty(*args, **kwargs):
        rows = kwargs["input_ids"].shape[0]
        sizes.append(rows)
        if rows > limit:
            raise error()
        return forward(*args, **kwargs)

    model.forward = faulty
    return sizes


@pytest.mark.parametrize("kind", ["cuda", "cpu", "cpu-real"])
def test_out_of_memory_halves_the_batch_and_gives_the_same_scores(kind, tiny_llama):
    import torch

    errors = {
        "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB "
                                               "total capacity; 78.9 GiB already allocated)"),
        "cpu": lambda: RuntimeError(CPU_OOM),
        "cpu-real": real_cpu_oom,
    }
    batch = prompts(24)
    expected = causal_backend(tiny_llama, 16).score(batch)
    backend = causal_backend(tiny_llama, 16)
    sizes = fail_above(backend.model, 3, errors[kind])
    saved: list[str] = []
    got = backend.score(batch, on_batch=lambda ps, _: saved.extend(p.example.id for p in ps))
    assert sorted(saved) == sorted(p.example.id for p in batch)  # each example handed on once
    # halved until it fits (a pass of the longest prompts may hold one prompt fewer than the batch size)
    assert 15 <= sizes[0] <= 16 and sizes[1] <= sizes[0] // 2 + 1 and sizes[2] <= sizes[1] // 2 + 1
    for a, b in zip(expected, got):
        assert max(a, key=a.get) == max(b, key=b.get)
        assert all(abs(a[k] - b[k]) < 1e-4 for k in a)
    fault(f"out of memory ({kind})")


def test_out_of_memory_at_batch_size_one_is_one_line(tiny_llama, anli_hub, tmp_path, capsys, monkeypatch):
    import torch
    from transformers import LlamaForCausalLM

    def no_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(LlamaForCausalLM, "forward", no_memory)
    code = main(["run", str(tiny_llama), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub),
                 "-o", str(tmp_path), "--no-progress"])
    assert code == 2
    last = one_line_error(capsys.readouterr().err)
    assert "out of memory" in last and "batch size 1" in last and "--dtype" in last
    assert not (tmp_path / "results.json").exists()
    fault("out of memory at batch size 1")


def test_a_real_allocation_failure_counts_as_out_of_memory():
    from nli_eval.backends.base import is_out_of_memory

    exc = real_cpu_oom()
    assert is_out_of_memory(exc)
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("shape mismatch"))


# -- a full disk ---------------------------------------------------------------------------------

class FullFile:
    """A file on a disk with `room[0]` bytes left: what fits is written, then writes fail with ENOSPC."""

    def __init__(self, inner, room: list[int]) -> None:
        self.inner, self.room = inner, room

    def write(self, data):
        if len(data) > self.room[0]:
            if self.room[0]:
                self.inner.write(data[: self.room[0]])  # what fitted stays, as on a real disk
                self.inner.flush()
                self.room[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room[0] -= len(data)
        return self.inner.write(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.inner.close()


def fill_disk(monkeypatch, matches: Callable[[str], bool], room: int = 0) -> None:
    """Writes to files whose path matches (atomic writes and the journal) share `room` bytes, then fail."""
    real_fdopen, real_open = os.fdopen, Path.open
    left = [room]

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        return FullFile(handle, left) if matches(os.readlink(f"/proc/self/fd/{fd}")) else handle

    def path_open(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        return FullFile(handle, left) if any(m in mode for m in "wax") and matches(str(self)) else handle

    monkeypatch.setattr(fsutil.os, "fdopen", fdopen)
    monkeypatch.setattr(Path, "open", path_open)


@pytest.mark.parametrize("target", ["results.json", "samples", "journal"])
def test_full_disk_is_one_line_and_the_cache_stays_usable(target, tiny_gpt2, anli_hub, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["run", str(tiny_gpt2), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub), "-o", str(out),
            "--batch-size", "4", "--no-progress"]
    matches = {"results.json": lambda p: "results.json" in p, "samples": lambda p: "/samples/" in p,
               "journal": lambda p: "/cache/" in p}[target]
    # The journal fills up in the middle of a line after two batches (8 lines): a torn line.
    fill_disk(monkeypatch, matches, room=0 if target != "journal" else 900)
    assert main(args) == 2
    last = one_line_error(capsys.readouterr().err)
    assert "no space left on the device" in last and "free space and rerun" in last
    assert (target if target != "journal" else "/cache/") in last
    assert not (out / "results.json").exists()
    assert not list(out.rglob("*.tmp"))
    cached, torn = journal_lines(out / "cache")
    assert torn <= 1
    monkeypatch.undo()  # space freed

    assert main(args) == 0
    record = read_results(out / "results.json")
    n_cached = sum(len(ids) for ids in cached.values())
    assert (target == "journal") == (n_cached < 30)
    assert record.models[0].examples_scored == 30 - n_cached  # nothing scored twice
    after, _ = journal_lines(out / "cache")
    assert all(len(ids) == len(set(ids)) == 30 for ids in after.values())
    fault(f"full disk ({target})")


def test_a_real_full_device_is_reported_as_no_space():
    with pytest.raises(OutputError, match="no space left on the device writing /dev/full"):
        fsutil.append_durable(Path("/dev/full"), "x\n")


# -- the Hub unreachable or offline, nothing cached ------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def no_network_env(home: Path, offline: bool) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
            and not k.lower().endswith("_proxy")}
    base.update(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), HF_DATASETS_CACHE=str(home / "datasets"),
                HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", OMP_NUM_THREADS="1")  # nothing listens there
    if offline:
        base["HF_HUB_OFFLINE"] = "1"
    return base


@pytest.mark.parametrize("offline", [False, True], ids=["unreachable", "offline-mode"])
@pytest.mark.parametrize("what", ["model", "dataset"])
def test_no_hub_and_no_cache_is_one_line_naming_the_local_way(what, offline, tiny_gpt2, anli_hub, tmp_path):
    if what == "model":
        args = ["some-org/some-model", "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub)]
    else:
        args = [str(tiny_gpt2), "--tasks", "anli_r1", "--split", "dev"]
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "nli_eval", "run", *args, "--no-progress"], capture_output=True,
                          text=True, env=no_network_env(tmp_path / "hf", offline), timeout=300)
    seconds = time.time() - started
    assert done.returncode == 2
    last = one_line_error(done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # no stack of connection errors
    assert "Retrying" not in done.stderr and seconds < 60  # was: six retried connection errors, 25 s
    assert "HF_HUB_OFFLINE=1" in last and ("offline mode" in last or "cannot be reached" in last)
    if what == "model":
        assert "local checkpoint folder" in last and "some-org/some-model" in last
    else:
        assert "--data-dir" in last and "facebook/anli" in last
    fault(f"no network ({'offline mode' if offline else 'unreachable Hub'}, {what})")


def test_unreachable_hub_uses_a_cached_model_at_once(tiny_gpt2, anli_hub, tmp_path):
    snapshot = tmp_path / "hf" / "hub" / "models--some-org--tiny" / "snapshots" / "0123abc"
    shutil.copytree(tiny_gpt2, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    done = subprocess.run([sys.executable, "-m", "nli_eval", "run", "some-org/tiny", "--tasks", "anli_r1", "--split",
                           "dev", "--data-dir", str(anli_hub), "--no-progress"], capture_output=True, text=True,
                          env=no_network_env(tmp_path / "hf", offline=False), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "some-org/tiny" in done.stdout and "Retrying" not in done.stderr and "Error" not in done.stderr


@pytest.mark.parametrize("variables, models, datasets", [
    ({}, None, None),
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE", "HF_HUB_OFFLINE"),
    ({"HF_DATASETS_OFFLINE": "1"}, None, "HF_DATASETS_OFFLINE"),   # datasets offline, models still online
    ({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "0"}, "HF_HUB_OFFLINE", None),
    ({"TRANSFORMERS_OFFLINE": "1"}, "TRANSFORMERS_OFFLINE", "TRANSFORMERS_OFFLINE"),
])
def test_offline_mode_is_read_as_the_libraries_read_it(variables, models, datasets, monkeypatch):
    from nli_eval import hub

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delitem(sys.modules, "datasets.config", raising=False)
    assert (hub.offline_setting(), hub.offline_setting(datasets=True)) == (models, datasets)


def test_hub_probe_does_not_hang_on_an_unknown_host(monkeypatch):
    from nli_eval import hub

    started = time.time()
    assert hub.reachable("https://no-such-host.invalid") is False
    assert hub.reachable(f"http://127.0.0.1:{free_port()}") is False
    assert time.time() - started < 2 * (hub.PROBE_SECONDS + 1)


# -- names that must not escape the output directory -----------------------------------------------

ODD_TASKS = ["../../etc/x", "/abs/path", "a\x00b", "..", ".", "ünï cödé", "x" * 300, "a:b*?<>|\\", "-rf", "CON",
             "samples", "../results.json"]


def toml_string(text: str) -> str:
    return json.dumps(text)  # JSON string escapes are valid TOML basic-string escapes


def test_odd_model_and_task_names_stay_inside_the_output_dir(tiny_gpt2, tmp_path):
    from nli_eval.runner import RunConfig, Runner

    data = write_jsonl(tmp_path / "rows.jsonl", nli_rows(3))
    task_file = tmp_path / "odd.toml"
    variants = "".join(f"[[variants]]\nname = {toml_string(name)}\n" for name in ODD_TASKS)
    task_file.write_text(f'family = "odd"\n[labels]\n0 = "entailment"\n1 = "neutral"\n2 = "contradiction"\n'
                         f'[data_files]\ntest = {toml_string(str(data))}\n{variants}', encoding="utf-8")
    models = []
    for name in ("...", "-rf ünï $(x);`y`", "x" * 200):
        models.append(tmp_path / "models" / name)
        shutil.copytree(tiny_gpt2, models[-1])
    base = tmp_path.parent
    before = {p for p in base.rglob("*")}
    out = tmp_path / "out"
    record = Runner(RunConfig(models=tuple(map(str, models)), tasks=tuple(ODD_TASKS), output_dir=str(out),
                              task_files=(str(task_file),), progress=False)).run()
    assert len(record.models) == 3 and all(len(m.results) == len(ODD_TASKS) for m in record.models)
    written = {p for p in base.rglob("*")} - before
    root = out.resolve()
    assert written and all(p.resolve() == root or root in p.resolve().parents for p in written)
    for path in written:
        assert path.name not in (".", "..") and fsutil._UNSAFE.search(path.name) is None, path
    samples = [p for p in written if p.suffix == ".jsonl" and "samples" in p.parts]
    assert len(samples) == 3 * len(ODD_TASKS)  # no two names share a file
    COUNTS["hostile names written"] += len(ODD_TASKS) + len(models)


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(max_size=400), st.sampled_from(ODD_TASKS)), other=st.text(max_size=100))
def test_safe_name_never_escapes_and_never_collides(name, other):
    slug = safe_name(name)
    assert slug and len(slug) <= 80 and slug not in (".", "..") and not slug.startswith(".")
    assert fsutil._UNSAFE.search(slug) is None and "/" not in slug and "\x00" not in slug
    assert len(safe_name(name, 40)) <= 40
    if other != name:
        assert safe_name(other) != slug
    root = Path("/tmp/nli-root")
    assert inside(root, "samples", slug).parent == root / "samples"
    path = samples_path(root, name, other, 0)
    assert path.parent.parent == root / "samples"
    COUNTS["generated unsafe names"] += 1


@pytest.mark.parametrize("parts", [("..", "x"), ("/etc/passwd",), ("samples", "../../x"), ("a", "..", "..", "b")])
def test_inside_refuses_paths_that_leave_the_root(parts, tmp_path):
    with pytest.raises(OutputError, match="outside the output directory"):
        inside(tmp_path / "out", *parts)


def test_inside_refuses_a_symlink_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "samples").symlink_to(tmp_path)
    with pytest.raises(OutputError):
        inside(tmp_path / "out", "samples", "m", "x.jsonl")


# -- task and spec files are data, never code ---------------------------------------------------

PYTHON = 'import pathlib\npathlib.Path({marker!r}).write_text("ran")\n'


def test_task_and_spec_files_are_parsed_never_run(tmp_path, capsys):
    from nli_eval import gates
    from nli_eval.taskspec import load_task_file

    marker = tmp_path / "ran"
    code = PYTHON.format(marker=str(marker))
    for name in ("evil.toml", "evil.py"):
        (tmp_path / name).write_text(code)
        with pytest.raises(ConfigError, match="invalid TOML"):
            load_task_file(tmp_path / name)
        assert main(["tasks", "--task-file", str(tmp_path / name)]) == 2
        assert "invalid TOML" in one_line_error(capsys.readouterr().err)
    (tmp_path / "nli_evil.toml").write_text(code)
    with pytest.raises(GateError, match="invalid TOML"):
        gates.load_spec(tmp_path / "nli_evil.toml")
    # Code inside a TOML string stays a string.
    (tmp_path / "strings.toml").write_text(f'family = "s"\ndescription = {json.dumps(code)}\n'
                                           f'[[variants]]\nname = "__import__(\'os\').system(\'touch {marker}\')"\n')
    variants, _ = load_task_file(tmp_path / "strings.toml")
    assert variants[0].description == code
    assert not marker.exists()


@pytest.mark.parametrize("model_type", ["nli_eval_remote", "llama"])
def test_remote_code_needs_the_flag(model_type, tiny_llama, anli_hub, tmp_path, capsys):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_llama, folder)
    marker = tmp_path / "ran"
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "configuration_remote.RemoteConfig",
                                                   "AutoModelForCausalLM": "modeling_remote.RemoteModel"})
    (folder / "config.json").write_text(json.dumps(config))
    for module in ("configuration_remote.py", "modeling_remote.py"):
        (folder / module).write_text(PYTHON.format(marker=str(marker)))
    code = main(["run", str(folder), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub),
                 "--no-progress"])
    err = capsys.readouterr().err
    if model_type == "llama":  # a known architecture loads with the library's own code
        assert code == 0, err
    else:
        assert code == 2 and "--trust-remote-code" in one_line_error(err)
    assert not marker.exists()  # the repository's code never ran
    if model_type != "llama":  # and with the flag it does run: the marker would have shown it
        assert main(["run", str(folder), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(anli_hub),
                     "--no-progress", "--trust-remote-code"]) == 2
        assert "--trust-remote-code" in one_line_error(capsys.readouterr().err) and marker.exists()


# -- --strict: warnings become errors -----------------------------------------------------------

def strict_case(case: str, tmp_path: Path, models: dict[str, Path]) -> list[str]:
    if case == "truncated prompts":
        model = build_causal(tmp_path / "short", "gpt2", max_positions=80)
        data = tmp_path / "data"
        write_jsonl(data / "anli" / "dev_r1.jsonl", nli_rows(12))
        write_jsonl(data / "anli" / "train_r1.jsonl", nli_rows(12, seed=1, prefix="train"))  # shots from train
        return [str(model), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(data), "--shots", "2"]
    if case == "dropped unlabelled rows":
        rows = nli_rows(6)
        rows[2]["label"] = "-"
        for r in rows:
            r["label"] = {0: "entailment", 1: "neutral", 2: "contradiction"}.get(r["label"], r["label"])
        path = write_jsonl(tmp_path / "pairs.jsonl", rows)
        return [str(models["llama"]), "--data-files", str(path)]
    rows = nli_rows(6)
    rows[4]["uid"] = rows[1]["uid"]
    data = tmp_path / "data"
    write_jsonl(data / "anli" / "dev_r1.jsonl", rows)
    return [str(models["llama"]), "--tasks", "anli_r1", "--split", "dev", "--data-dir", str(data)]


WARNINGS = {"truncated prompts": "prompts were cut to fit", "dropped unlabelled rows": "dropped 1 unlabelled rows",
            "duplicate ids": "1 duplicate example ids"}


@pytest.mark.parametrize("case", sorted(WARNINGS))
def test_strict_turns_each_warning_into_an_error(case, tiny_llama, tmp_path, capsys):
    args = ["run", *strict_case(case, tmp_path, {"llama": tiny_llama}), "--no-progress", "-o", str(tmp_path / "out")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "nli-eval: warning: " in err and WARNINGS[case] in err
    assert any(WARNINGS[case] in w for w in read_results(tmp_path / "out" / "results.json").warnings)

    strict = tmp_path / "strict"
    assert main([*args[:-1], str(strict), "--strict"]) == 2
    last = one_line_error(capsys.readouterr().err)
    assert WARNINGS[case] in last and "--strict" in last
    assert not (strict / "results.json").exists()
