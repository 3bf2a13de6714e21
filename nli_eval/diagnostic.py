"""An offline diagnostic NLI set written by the project: template sentence pairs, labelled by construction.

Every pair comes from the project's own vocabulary and templates below (no third-party text), so the
task runs without network access. The probes follow the three syntactic heuristics HANS tests
(McCoy et al., 2019) -- a hypothesis that shares every word, is a subsequence, or is a constituent of
the premise need not be entailed -- plus negation, antonyms and numbers. Each probe has cases whose
gold label differs, so a model that follows the heuristic cannot score well on all of them.

Labels are three-way (neutral where the premise neither entails nor contradicts the hypothesis); the
two-way task variant collapses neutral and contradiction into non-entailment. Generation is seeded
by split and case, so every run and every machine sees the same pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .adapters import Row, register_generator
from .errors import MissingSplitError

NOUNS = ("doctor", "artist", "lawyer", "teacher", "farmer", "singer", "pilot", "baker", "student", "judge",
         "nurse", "writer", "tourist", "manager", "athlete", "banker")


@dataclass(frozen=True)
class Verb:
    base: str
    past: str
    participle: str


TRANSITIVE = (
    Verb("see", "saw", "seen"), Verb("help", "helped", "helped"), Verb("call", "called", "called"),
    Verb("thank", "thanked", "thanked"), Verb("visit", "visited", "visited"),
    Verb("follow", "followed", "followed"), Verb("admire", "admired", "admired"),
    Verb("recognize", "recognized", "recognized"), Verb("avoid", "avoided", "avoided"),
    Verb("greet", "greeted", "greeted"),
)
INTRANSITIVE = (
    Verb("run", "ran", "run"), Verb("sleep", "slept", "slept"), Verb("laugh", "laughed", "laughed"),
    Verb("wait", "waited", "waited"), Verb("sing", "sang", "sung"), Verb("smile", "smiled", "smiled"),
    Verb("arrive", "arrived", "arrived"), Verb("leave", "left", "left"),
)
# Gradable contraries only: "not tall" does not make "short" true, which the negated case relies on.
ANTONYMS = (("tall", "short"), ("happy", "sad"), ("rich", "poor"), ("young", "old"), ("strong", "weak"),
            ("quiet", "loud"), ("early", "late"))
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine")
ANIMALS = ("dogs", "cats", "birds", "horses", "goats", "ducks")
HEDGES = ("Perhaps", "Maybe", "Possibly")
FACTIVE = ("Clearly", "Certainly", "Obviously")

E, N, C = "entailment", "neutral", "contradiction"


@dataclass(frozen=True)
class Case:
    """One template family: how a pair is built and the label every pair it builds has."""

    name: str
    probe: str
    label: str
    build: Callable[[random.Random], tuple[str, str]]


def _two(rng: random.Random, pool: tuple[str, ...] = NOUNS) -> tuple[str, str]:
    a, b = rng.sample(pool, 2)
    return a, b


def _lo_swap(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    v = rng.choice(TRANSITIVE)
    return f"The {a} {v.past} the {b}.", f"The {b} {v.past} the {a}."


# Regular verbs only (helped = helped), so the active hypothesis reuses the passive premise's words.
REGULAR = tuple(v for v in TRANSITIVE if v.past == v.participle)


def _lo_passive(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    v = rng.choice(REGULAR)
    return f"The {a} was {v.participle} by the {b}.", f"The {b} {v.past} the {a}."


def _lo_passive_swap(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    v = rng.choice(REGULAR)
    return f"The {a} was {v.participle} by the {b}.", f"The {a} {v.past} the {b}."


def _sub_pp(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    v = rng.choice(INTRANSITIVE)
    prep = rng.choice(("near", "behind", "beside"))
    return f"The {a} {prep} the {b} {v.past}.", f"The {b} {v.past}."


def _sub_relative(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    t, v = rng.choice(TRANSITIVE), rng.choice(INTRANSITIVE)
    return f"The {a} who {t.past} the {b} {v.past}.", f"The {b} {v.past}."


def _sub_conjunction(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    v = rng.choice(INTRANSITIVE)
    return f"The {a} and the {b} {v.past}.", f"The {b} {v.past}."


def _con_conditional(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    v, w = rng.sample(INTRANSITIVE, 2)
    return f"If the {a} {v.past}, the {b} {w.past}.", f"The {a} {v.past}."


def _con_hedge(rng: random.Random) -> tuple[str, str]:
    a = rng.choice(NOUNS)
    v = rng.choice(INTRANSITIVE)
    return f"{rng.choice(HEDGES)} the {a} {v.past}.", f"The {a} {v.past}."


def _con_factive(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    v, w = rng.sample(INTRANSITIVE, 2)
    if rng.random() < 0.5:
        return f"{rng.choice(FACTIVE)} the {a} {v.past}.", f"The {a} {v.past}."
    return f"Although the {a} {v.past}, the {b} {w.past}.", f"The {a} {v.past}."


def _neg_insert(rng: random.Random) -> tuple[str, str]:
    a, b = _two(rng)
    v = rng.choice(TRANSITIVE)
    return f"The {a} {v.past} the {b}.", f"The {a} did not {v.base} the {b}."


def _neg_remove(rng: random.Random) -> tuple[str, str]:
    a = rng.choice(NOUNS)
    v = rng.choice(INTRANSITIVE)
    return f"The {a} did not {v.base}.", f"The {a} {v.past}."


def _neg_other(rng: random.Random) -> tuple[str, str]:
    a, b, c = rng.sample(NOUNS, 3)
    v = rng.choice(TRANSITIVE)
    return f"The {a} did not {v.base} the {b}.", f"The {a} {v.past} the {c}."


def _ant_contrary(rng: random.Random) -> tuple[str, str]:
    a = rng.choice(NOUNS)
    x, y = rng.choice(ANTONYMS)[:: rng.choice((1, -1))]
    return f"The {a} is {x}.", f"The {a} is {y}."


def _ant_negated(rng: random.Random) -> tuple[str, str]:
    a = rng.choice(NOUNS)
    x, y = rng.choice(ANTONYMS)[:: rng.choice((1, -1))]
    return f"The {a} is not {x}.", f"The {a} is {y}."


def _ant_entailed(rng: random.Random) -> tuple[str, str]:
    a = rng.choice(NOUNS)
    x, y = rng.choice(ANTONYMS)[:: rng.choice((1, -1))]
    return f"The {a} is {x}.", f"The {a} is not {y}."


def _counts(rng: random.Random) -> tuple[str, int, int]:
    a = rng.choice(NOUNS)
    n, m = rng.sample(range(len(NUMBERS)), 2)
    return a, n, m


def _num_exact(rng: random.Random) -> tuple[str, str]:
    a, n, m = _counts(rng)
    animals = rng.choice(ANIMALS)
    return (f"The {a} saw exactly {NUMBERS[n]} {animals}.", f"The {a} saw exactly {NUMBERS[m]} {animals}.")


def _num_bound(rng: random.Random, holds: bool) -> tuple[str, str]:
    a, n, m = _counts(rng)
    animals = rng.choice(ANIMALS)
    # "more than m" holds when n > m, "fewer than m" when n < m.
    word = "more" if (n > m) == holds else "fewer"
    return (f"The {a} saw exactly {NUMBERS[n]} {animals}.", f"The {a} saw {word} than {NUMBERS[m]} {animals}.")


CASES: tuple[Case, ...] = (
    Case("lexical_overlap_swap", "lexical_overlap", N, _lo_swap),
    Case("lexical_overlap_passive_swap", "lexical_overlap", N, _lo_passive_swap),
    Case("lexical_overlap_passive", "lexical_overlap", E, _lo_passive),
    Case("subsequence_pp_on_subject", "subsequence", N, _sub_pp),
    Case("subsequence_relative_clause", "subsequence", N, _sub_relative),
    Case("subsequence_conjunction", "subsequence", E, _sub_conjunction),
    Case("constituent_conditional", "constituent", N, _con_conditional),
    Case("constituent_hedge", "constituent", N, _con_hedge),
    Case("constituent_factive", "constituent", E, _con_factive),
    Case("negation_inserted", "negation", C, _neg_insert),
    Case("negation_removed", "negation", C, _neg_remove),
    Case("negation_other_object", "negation", N, _neg_other),
    Case("antonym_contrary", "antonym", C, _ant_contrary),
    Case("antonym_negated", "antonym", N, _ant_negated),
    Case("antonym_entailed", "antonym", E, _ant_entailed),
    Case("number_exact_mismatch", "number", C, _num_exact),
    Case("number_bound_holds", "number", E, lambda rng: _num_bound(rng, True)),
    Case("number_bound_fails", "number", C, lambda rng: _num_bound(rng, False)),
)
HANS_HEURISTICS = ("lexical_overlap", "subsequence", "constituent")
PER_CASE = {"test": 20, "train": 8}
SEED = "nli-eval-diagnostic-v1"


def _pairs(case: Case, split: str, count: int, taken: set[tuple[str, str]]) -> list[tuple[str, str]]:
    rng = random.Random(f"{SEED}:{split}:{case.name}")
    out: list[tuple[str, str]] = []
    for _ in range(count * 50):  # the vocabulary allows far more distinct pairs than any split needs
        if len(out) == count:
            return out
        pair = case.build(rng)
        if pair not in taken:
            taken.add(pair)
            out.append(pair)
    raise RuntimeError(f"diagnostic case {case.name}: too few distinct pairs for {count}")


def generate(split: str) -> list[Row]:
    """The split's rows: id, premise, hypothesis, label (a name), probe, heuristic, case."""
    if split not in PER_CASE:
        raise MissingSplitError(f"the diagnostic set has no split {split!r}; choose one of: {', '.join(PER_CASE)}")
    taken: set[tuple[str, str]] = set()
    # Splits come out in a fixed order so train never repeats a test pair.
    rows: dict[str, list[Row]] = {}
    for name in ("test", "train"):
        rows[name] = []
        for case in CASES:
            for i, (premise, hypothesis) in enumerate(_pairs(case, name, PER_CASE[name], taken)):
                rows[name].append({
                    "id": f"diagnostic-{name}-{case.name}-{i:02d}",
                    "premise": premise,
                    "hypothesis": hypothesis,
                    "label": case.label,
                    "probe": case.probe,
                    "heuristic": case.probe if case.probe in HANS_HEURISTICS else "none",
                    "case": case.name,
                })
        if name == split:
            return rows[name]
    raise AssertionError("unreachable")  # pragma: no cover


register_generator("diagnostic")(generate)
