"""One error tree. Every message is one line naming what was wrong and what to do."""

from __future__ import annotations


class NliEvalError(Exception):
    """Base of every error nli-eval raises on purpose; the CLI prints it as one line."""

    def __init__(self, message: str) -> None:
        # Keep messages on one line: CI logs and the CLI show them verbatim.
        super().__init__(" ".join(str(message).split()))


class ConfigError(NliEvalError):
    """A flag, a spec file or a task file is wrong."""


class TaskNotFoundError(ConfigError):
    """A task name that no task file declares."""


class DataError(NliEvalError):
    """A data file or dataset cannot be read or holds invalid rows."""


class MissingSplitError(DataError):
    """A split a task declares is not available from the chosen source."""


class ModelError(NliEvalError):
    """A model cannot be found, loaded or used."""


class ResultsError(NliEvalError):
    """A results file is missing, corrupt or of an unknown schema."""


class OutputError(NliEvalError):
    """Results cannot be written (disk full, locked directory, bad path)."""


class GateError(NliEvalError):
    """A CI gate cannot be evaluated (setup problem, not a failed gate)."""
