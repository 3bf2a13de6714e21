"""Templates, few-shot draws and prompt fitting."""

from __future__ import annotations

import random

import pytest

from nli_eval.errors import ConfigError
from nli_eval.labels import Label, LabelSpace
from nli_eval.prompts import PromptBuilder, ShotSampler
from nli_eval.templates import BUILTIN_TEMPLATES, resolve_template
from nli_eval.types import NLIExample

E, N, C = Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION


def pool(n=40):
    return tuple(NLIExample(f"id{i}", f"premise {i}", f"hypothesis {i}", (E, N, C)[i % 3]) for i in range(n))


def test_harness_prompt_is_lm_eval_anli_prompt():
    b = PromptBuilder(BUILTIN_TEMPLATES["harness"], LabelSpace.THREE_WAY)
    ex = NLIExample("x", "A man sleeps.", "A person rests.", E)
    shot = NLIExample("s", "P1.", "H1.", C)
    p = b.render(ex, [shot])
    assert p.query == "A man sleeps.\nQuestion: A person rests. True, False, or Neither?\nAnswer:"
    assert p.prefix == "P1.\nQuestion: H1. True, False, or Neither?\nAnswer: False\n\n"
    assert dict(p.options) == {E: " True", N: " Neither", C: " False"}


def test_shots_do_not_depend_on_order_or_batch():
    examples = pool()
    sampler = ShotSampler(examples, "anli_r1", seed=7)
    forward = {ex.id: sampler.draw(ex, 5) for ex in examples}
    shuffled = list(examples)
    random.Random(3).shuffle(shuffled)
    again = ShotSampler(tuple(examples), "anli_r1", seed=7)
    backward = {ex.id: again.draw(ex, 5) for ex in shuffled}
    assert forward == backward
    assert len({tuple(s.id for s in v) for v in forward.values()}) > 10  # really per example


def test_shot_draws_are_nested_and_exclude_self():
    examples = pool(10)
    sampler = ShotSampler(examples, "t", seed=1, same_split=True)
    for ex in examples:
        five = sampler.draw(ex, 5)
        assert sampler.draw(ex, 2) == five[:2]
        assert ex.id not in {s.id for s in five}
        assert len({s.id for s in five}) == 5
    with pytest.raises(ConfigError, match="larger than the shot pool"):
        sampler.draw(examples[0], 10)


def test_balanced_and_fixed_sampling():
    examples = pool(30)
    balanced = ShotSampler(examples, "t", seed=1, mode="balanced")
    shots = balanced.draw(examples[0], 6)
    assert sorted(s.label.value for s in shots) == sorted([l.value for l in (E, N, C)] * 2)
    fixed = ShotSampler(examples, "t", seed=1, mode="fixed", same_split=True)
    drawn = [tuple(s.id for s in fixed.draw(ex, 3)) for ex in examples]
    shared = max(set(drawn), key=drawn.count)
    assert drawn.count(shared) == len(examples) - 3  # the 3 shot examples get their own draw
    for ex, shots in zip(examples, drawn):
        assert ex.id not in shots


def test_fit_drops_shots_then_cuts_premise_from_the_left():
    b = PromptBuilder(BUILTIN_TEMPLATES["harness"], LabelSpace.THREE_WAY)
    ex = NLIExample("x", " ".join(f"w{i}" for i in range(50)), "h.", E)
    shots = pool(3)
    budget = len(b.render(ex).context) - 40
    p = b.fit(ex, shots, lambda pr: len(pr.context) <= budget)
    assert p.truncated and p.n_shots == 0
    assert p.query.split("\n")[0].endswith("w49") and "w0 " not in p.query
    roomy = b.fit(ex, shots, lambda pr: True)
    assert not roomy.truncated and roomy.n_shots == 3


def test_two_way_template_rejected_for_three_way_task():
    with pytest.raises(ConfigError, match="two-way"):
        resolve_template("harness_2way", LabelSpace.THREE_WAY)
    assert resolve_template(None, LabelSpace.TWO_WAY).name == "harness"
    with pytest.raises(ConfigError, match="unknown template"):
        resolve_template("nope", LabelSpace.THREE_WAY)
