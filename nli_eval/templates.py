"""Prompt templates: how an example becomes text, and which label word continues it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError
from .labels import Label, LabelSpace, label_from_name


@dataclass(frozen=True)
class Template:
    name: str
    query: str                      # formatted with {premise} and {hypothesis}
    answers: Mapping[Label, str]    # label word, without the delimiter before it
    target_delimiter: str = " "     # between the query and its answer
    fewshot_delimiter: str = "\n\n" # between shots, and between the last shot and the query
    instruction: str = ""           # text before everything else (once per prompt)
    description: str = ""

    @property
    def space(self) -> LabelSpace:
        if Label.NON_ENTAILMENT in self.answers:
            return LabelSpace.TWO_WAY
        return LabelSpace.THREE_WAY

    def render_query(self, premise: str, hypothesis: str) -> str:
        return self.query.replace("{premise}", premise).replace("{hypothesis}", hypothesis)

    def answer_for(self, label: Label) -> str:
        """The label word a shot shows; a two-way gold under a three-way template shows 'contradiction'."""
        if label in self.answers:
            return self.answers[label]
        if label is Label.NON_ENTAILMENT:
            return self.answers[Label.CONTRADICTION]
        raise ConfigError(f"template {self.name} has no answer for {label.value}")

    def continuations(self) -> dict[Label, str]:
        return {label: self.target_delimiter + word for label, word in self.answers.items()}


_E, _N, _C, _NE = Label.ENTAILMENT, Label.NEUTRAL, Label.CONTRADICTION, Label.NON_ENTAILMENT

BUILTIN_TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "harness",
            "{premise}\nQuestion: {hypothesis} True, False, or Neither?\nAnswer:",
            {_E: "True", _N: "Neither", _C: "False"},
            description="lm-evaluation-harness's ANLI prompt and label words",
        ),
        Template(
            "harness_2way",
            "{premise}\nQuestion: {hypothesis} True or False?\nAnswer:",
            {_E: "True", _NE: "False"},
            description="lm-evaluation-harness's RTE prompt, for two-way sets",
        ),
        Template(
            "gpt3",
            "{premise}\nQuestion: {hypothesis} True, False, or Neither?",
            {_E: "True", _N: "Neither", _C: "False"},
            description="the GPT-3 paper's ANLI format (answer follows the question directly)",
        ),
        Template(
            "gpt3_2way",
            "{premise}\nQuestion: {hypothesis} True or False?",
            {_E: "True", _NE: "False"},
            description="the GPT-3 paper's RTE format",
        ),
    )
}


def parse_template(name: str, raw: Any, source: str) -> Template:
    """A template from a TOML table: query, answers (label name -> word), optional delimiters."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: template {name} must be a table with query and answers")
    query = raw.get("query")
    answers = raw.get("answers")
    if not isinstance(query, str) or "{premise}" not in query or "{hypothesis}" not in query:
        raise ConfigError(f"{source}: template {name} needs a query string with {{premise}} and {{hypothesis}}")
    if not isinstance(answers, dict) or not answers:
        raise ConfigError(f"{source}: template {name} needs answers, e.g. {{entailment = \"True\", ...}}")
    parsed = {}
    for label_name, word in answers.items():
        if not isinstance(word, str) or not word.strip():
            raise ConfigError(f"{source}: template {name}: answer for {label_name} must be a non-empty string")
        parsed[label_from_name(label_name)] = word
    labels = set(parsed)
    if labels not in ({_E, _N, _C}, {_E, _NE}):
        raise ConfigError(f"{source}: template {name} must answer entailment, neutral and contradiction, "
                          "or entailment and non_entailment")
    opts: dict[str, str] = {}
    for key in ("target_delimiter", "fewshot_delimiter", "instruction", "description"):
        if key in raw:
            if not isinstance(raw[key], str):
                raise ConfigError(f"{source}: template {name}: {key} must be a string")
            opts[key] = raw[key]
    return Template(name=name, query=query, answers=parsed, **opts)


def resolve_template(name: str | None, space: LabelSpace, custom: Mapping[str, Template] | None = None) -> Template:
    """The template to use for a task; two-way tasks take a three-way template and collapse its labels."""
    name = name or "harness"
    table = {**BUILTIN_TEMPLATES, **(custom or {})}
    if name not in table:
        raise ConfigError(f"unknown template {name!r}; choose one of: {', '.join(sorted(table))}")
    template = table[name]
    if space is LabelSpace.THREE_WAY and template.space is LabelSpace.TWO_WAY:
        raise ConfigError(f"template {name} is two-way and cannot score a three-way task")
    return template
