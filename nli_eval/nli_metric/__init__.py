"""The NLI metrics as a Hugging Face `evaluate` module: `evaluate.load(nli_eval.nli_metric.PATH)`.

Importing this package loads neither `evaluate` nor `datasets`; `nli_metric.py` in this folder does.
"""

from __future__ import annotations

from pathlib import Path

PATH = str(Path(__file__).resolve().parent)

__all__ = ["PATH"]
