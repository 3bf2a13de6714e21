"""nli-eval: how robust are language models on natural language inference?

Importing the package loads no torch, transformers or datasets; they load when a model runs.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import NliEvalError  # noqa: E402
from .labels import Label, LabelSpace  # noqa: E402
from .types import NLIExample, Prediction, Prompt  # noqa: E402

__all__ = ["__version__", "NliEvalError", "Label", "LabelSpace", "NLIExample", "Prediction", "Prompt"]
