"""Build prompts: few-shot draws seeded per example, rendering, and fitting into a context window."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

from .errors import ConfigError
from .labels import Label, LabelSpace
from .templates import Template
from .types import NLIExample, Prompt

SAMPLING_MODES = ("per-example", "fixed", "balanced")


@dataclass(frozen=True)
class ShotSampler:
    """Draws k shots for an example from a pool; the draw depends only on (seed, task, example id)."""

    pool: tuple[NLIExample, ...]
    task: str
    seed: int
    mode: str = "per-example"
    same_split: bool = False  # pool is the evaluated split: never show an example as its own shot

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ConfigError(f"unknown few-shot sampling {self.mode!r}; choose one of: {', '.join(SAMPLING_MODES)}")

    def check(self, k: int) -> None:
        available = len(self.pool) - (1 if self.same_split else 0)
        if k > available:
            raise ConfigError(
                f"--shots {k} is larger than the shot pool of task {self.task} ({available} examples)")

    def draw(self, example: NLIExample, k: int) -> tuple[NLIExample, ...]:
        if k <= 0:
            return ()
        self.check(k)
        if self.mode == "fixed":
            shots = self._draw(random.Random(f"{self.seed}:{self.task}:fixed"), k, exclude=None)
            if any(s.id == example.id for s in shots):
                # The shared prefix would show this example its own answer: give it its own draw.
                return self._draw(random.Random(f"{self.seed}:{self.task}:{example.id}"), k, example.id)
            return shots
        return self._draw(random.Random(f"{self.seed}:{self.task}:{example.id}"), k, example.id)

    def _draw(self, rng: random.Random, k: int, exclude: str | None) -> tuple[NLIExample, ...]:
        # Draw indices one by one, so the first k shots of a k+1 draw are the k-shot draw.
        n = len(self.pool)
        if self.mode == "balanced":
            by_label: dict[Label, list[int]] = {}
            for i, ex in enumerate(self.pool):
                if ex.id != exclude:
                    by_label.setdefault(ex.label, []).append(i)
            labels = sorted(by_label, key=lambda l: l.value)
            rng.shuffle(labels)
            used: dict[Label, set[int]] = {l: set() for l in labels}
            picked: list[int] = []
            turn = 0
            while len(picked) < k:
                label = labels[turn % len(labels)]
                turn += 1
                choices = by_label[label]
                if len(used[label]) >= len(choices):
                    continue
                while True:
                    i = choices[rng.randrange(len(choices))]
                    if i not in used[label]:
                        break
                used[label].add(i)
                picked.append(i)
            return tuple(self.pool[i] for i in picked)
        seen: set[int] = set()
        picked = []
        while len(picked) < k:
            i = rng.randrange(n)
            if i in seen or self.pool[i].id == exclude:
                seen.add(i)
                continue
            seen.add(i)
            picked.append(i)
        return tuple(self.pool[i] for i in picked)


@dataclass(frozen=True)
class PromptBuilder:
    template: Template
    space: LabelSpace

    def options(self) -> Mapping[Label, str]:
        return self._options

    @functools.cached_property
    def _options(self) -> Mapping[Label, str]:
        # One read-only mapping for every prompt of the builder, not a dict of its own per prompt.
        return MappingProxyType(self.template.continuations())

    def render(self, example: NLIExample, shots: Sequence[NLIExample] = (), premise: str | None = None,
               truncated: bool = False) -> Prompt:
        t = self.template
        parts = [t.render_query(s.premise, s.hypothesis) + t.target_delimiter + t.answer_for(s.label) for s in shots]
        prefix = t.instruction + "".join(p + t.fewshot_delimiter for p in parts)
        query = t.render_query(example.premise if premise is None else premise, example.hypothesis)
        return Prompt(example, prefix, query, self.options(), len(shots), truncated)

    def fit(self, example: NLIExample, shots: Sequence[NLIExample], fits: Callable[[Prompt], bool]) -> Prompt:
        """Drop shots first, then cut the premise from the left, until the prompt fits the model."""
        prompt = self.render(example, shots)
        if fits(prompt):
            return prompt
        shots = list(shots)
        while shots:
            shots.pop(0)
            prompt = self.render(example, shots, truncated=True)
            if fits(prompt):
                return prompt
        words = example.premise.split(" ")
        lo, hi = 1, len(words)  # how many leading words to cut; find the fewest that fits
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            candidate = self.render(example, (), " ".join(words[mid:]), truncated=True)
            if fits(candidate):
                best, hi = candidate, mid - 1
            else:
                lo = mid + 1
        if best is None:
            raise ConfigError(
                f"example {example.id}: the prompt does not fit the model's context even with no premise")
        return best
