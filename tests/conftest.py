from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import COUNTS, build_causal, write_anli_hub, write_anli_release

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_DATA = SHARED / "data"
REAL_MODELS = Path(os.environ.get("NLI_EVAL_MODELS", Path.home() / ".cache" / "nli-eval" / "models"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_causal(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return build_causal(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    return build_causal(tmp_path_factory.mktemp("tiny-gemma"), "gemma")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return build_causal(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


@pytest.fixture(scope="session")
def anli_hub(tmp_path_factory) -> Path:
    return write_anli_hub(tmp_path_factory.mktemp("data-hub"))


@pytest.fixture(scope="session")
def anli_release(tmp_path_factory) -> Path:
    return write_anli_release(tmp_path_factory.mktemp("data-release"))


def real_model(name: str) -> Path:
    path = REAL_MODELS / name
    if not (path / "config.json").exists():
        pytest.skip(f"real checkpoint {name} absent; build it with python ../shared/tools/real_models.py")
    return path


def real_data() -> Path:
    if not (REAL_DATA / "anli" / "dev_r1.jsonl").exists():
        pytest.skip("../shared/data/anli absent")
    return REAL_DATA


def pytest_terminal_summary(terminalreporter) -> None:
    """What the reliability suite generated and injected, and whether any result was lost."""
    if not COUNTS:
        return
    tr = terminalreporter
    tr.write_sep("-", "reliability counts")
    kinds = sorted(name.removeprefix("fault kind: ") for name in COUNTS if name.startswith("fault kind: "))
    for name, count in sorted(COUNTS.items()):
        if not name.startswith("fault kind: "):
            tr.write_line(f"{count:>7}  {name}")
    if kinds:
        tr.write_line(f"{len(kinds):>7}  fault kinds: {', '.join(kinds)}")
    failed = len(tr.stats.get("failed", [])) + len(tr.stats.get("error", []))
    tr.write_line("      0  lost or corrupt results" if not failed else
                  f"      ?  lost or corrupt results: {failed} tests failed, see above")
