"""Reaching the Hugging Face Hub: tell offline mode and an unreachable Hub apart, fail in one line.

Without this, an unreachable Hub costs a stack of retried connection errors (about 25 seconds per
file) before the real message. One quick connection test per process decides instead: when the Hub
cannot be reached, this process switches to offline mode, so whatever is cached is used at once and
anything missing fails with a message that names the local alternative.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
OFFLINE_MODE = "offline mode is on"
PROBE_SECONDS = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_setting(datasets: bool = False) -> str | None:
    """The variable that turned Hub access off for models (or for datasets), or None.

    The libraries read them so: datasets follows HF_DATASETS_OFFLINE when it is set and HF_HUB_OFFLINE
    otherwise; models follow HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE.
    """
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if datasets and os.environ.get("HF_DATASETS_OFFLINE") is not None:
        names = ("HF_DATASETS_OFFLINE",)
    for name in names:
        if os.environ.get(name, "").upper() in _TRUE:
            return name
    # A library already imported may have been switched in code rather than by the environment.
    module = sys.modules.get("datasets.config" if datasets else "huggingface_hub.constants")
    return "HF_HUB_OFFLINE" if getattr(module, "HF_HUB_OFFLINE", False) is True else None


def _connect(host: str, port: int, result: list[bool]) -> None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            result.append(True)
    except (OSError, ValueError):
        result.append(False)


@functools.lru_cache(maxsize=None)
def reachable(url: str) -> bool:
    """Whether a TCP connection to the endpoint opens within a few seconds (name lookup included)."""
    if any(os.environ.get(name) for name in _PROXIES):
        return True  # behind a proxy a direct connection says nothing; let the libraries try
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []
    # The name lookup has no timeout of its own, so the probe runs where a hung lookup cannot block.
    probe = threading.Thread(target=_connect, args=(parts.hostname, port, result), daemon=True)
    probe.start()
    probe.join(PROBE_SECONDS + 1.0)
    return bool(result and result[0])


def go_offline() -> None:
    """Offline mode for this process and the libraries it already imported: cached files only, no retries."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, name in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_DATASETS_OFFLINE")):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, name):
            setattr(loaded, name, True)


_switched: str | None = None  # why this process turned offline mode on by itself


def unavailable(datasets: bool = False) -> str | None:
    """Why the Hub cannot be used now for models (or datasets), or None when it can.

    The reason starts with OFFLINE_MODE when the user turned offline mode on. An unreachable Hub
    switches this process to offline mode, so cached files still load at once.
    """
    global _switched
    if _switched is not None:
        return _switched
    setting = offline_setting(datasets)
    if setting:
        return f"{OFFLINE_MODE} ({setting}=1)"
    url = endpoint()
    if reachable(url):
        return None
    _switched = f"the Hub ({url}) cannot be reached"
    go_offline()
    return _switched


def cached_model_file(repo: str, filename: str, revision: str | None) -> str | None:
    """Where the Hugging Face cache holds this file of a model repository, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers needs huggingface_hub
        return None
    try:
        found = try_to_load_from_cache(repo, filename, revision=revision)
    except Exception:  # a malformed repo id is simply not cached
        return None
    return found if isinstance(found, str) else None


def cached_commit(repo: str, revision: str | None) -> str | None:
    """The commit of a cached model (snapshots/<commit>/config.json), the one the Hub would name online."""
    found = cached_model_file(repo, "config.json", revision)
    return os.path.basename(os.path.dirname(found)) if found else None
