"""Row adapters for formats a task TOML cannot express: a registered function per format."""

from __future__ import annotations

from typing import Any, Callable

from .errors import ConfigError

Row = dict[str, Any]
# An adapter turns one raw row into a row with the task's columns, or None to skip it.
Adapter = Callable[[Row], "Row | None"]
ADAPTERS: dict[str, Adapter] = {}


def register_adapter(name: str) -> Callable[[Adapter], Adapter]:
    def wrap(fn: Adapter) -> Adapter:
        ADAPTERS[name] = fn
        return fn
    return wrap


# A generator writes a task's rows itself (the offline diagnostic set): split key -> rows.
Generator = Callable[[str], "list[Row]"]
GENERATORS: dict[str, Generator] = {}


def register_generator(name: str) -> Callable[[Generator], Generator]:
    def wrap(fn: Generator) -> Generator:
        GENERATORS[name] = fn
        return fn
    return wrap


def _load_builtins() -> None:
    # Built-in adapters and generators register themselves on import; loaded on first use only.
    import importlib

    for module in ("nli_eval.formats", "nli_eval.diagnostic"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def get_generator(name: str) -> Generator:
    if name not in GENERATORS:
        _load_builtins()
    if name not in GENERATORS:
        raise ConfigError(f"unknown task generator {name!r}; registered: {', '.join(sorted(GENERATORS)) or 'none'}")
    return GENERATORS[name]


def get_adapter(name: str) -> Adapter:
    if name not in ADAPTERS:
        _load_builtins()
    if name not in ADAPTERS:
        raise ConfigError(f"unknown row adapter {name!r}; registered: {', '.join(sorted(ADAPTERS)) or 'none'}")
    return ADAPTERS[name]
