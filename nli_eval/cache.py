"""Resumable per-example results: an append-only JSON-lines journal per (model, task, setting)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .fsutil import append_durable, atomic_write, safe_name
from .labels import Label


@dataclass(frozen=True)
class CacheKey:
    model_fingerprint: str
    task: str
    split: str
    template: str        # the template's full text, so an edited template never reuses old scores
    shots: int
    seed: int
    sampling: str
    backend: str

    def digest(self) -> str:
        raw = json.dumps(self.__dict__, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


class ScoreCache:
    """Scores already computed, read from every journal of a key (one per process rank)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _stem(self, key: CacheKey) -> str:
        return f"{safe_name(key.task, 40)}-{key.shots}shot-{key.digest()}"

    def load(self, key: CacheKey) -> dict[str, tuple[dict[Label, float], bool]]:
        """Example id -> (scores, truncated) for every example already scored under this key."""
        if self.root is None or not self.root.is_dir():
            return {}
        found: dict[str, tuple[dict[Label, float], bool]] = {}
        for path in sorted(self.root.glob(self._stem(key) + "*.jsonl")):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            for line in raw.splitlines():
                try:
                    row = json.loads(line)
                    scores = {Label(k): float(v) for k, v in row["scores"].items()}
                    found[str(row["id"])] = (scores, bool(row.get("truncated", False)))
                except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                    continue  # a line torn by an interrupted write: only that example is scored again
        return found

    def append(self, key: CacheKey, rank: int, ids: Sequence[str], scores: Sequence[Mapping[Label, float]],
               truncated: Sequence[bool]) -> None:
        if self.root is None or not ids:
            return
        lines = "".join(
            json.dumps({"id": i, "scores": {k.value: v for k, v in s.items()}, "truncated": t}) + "\n"
            for i, s, t in zip(ids, scores, truncated))
        append_durable(self.root / f"{self._stem(key)}.rank{rank}.jsonl", lines)

    # How a model ran (device, dtype, context length), so a run read wholly from the cache reports it too.
    def save_model_info(self, fingerprint: str, info: Mapping[str, object]) -> None:
        if self.root is not None:
            atomic_write(self.root / f"model-{safe_name(fingerprint, 60)}.json", json.dumps(dict(info)) + "\n")

    def model_info(self, fingerprint: str) -> dict[str, object]:
        if self.root is None:
            return {}
        try:
            info = json.loads((self.root / f"model-{safe_name(fingerprint, 60)}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        return info if isinstance(info, dict) else {}
