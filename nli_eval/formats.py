"""Row adapters for original release files whose quirks a task TOML cannot express.

Each adapter takes one raw row and returns the row the task's field map reads (or None to skip it).
They are registered by name and named in `tasks/*.toml` with `adapter = "NAME"`.
"""

from __future__ import annotations

from typing import Any

from .adapters import Row, register_adapter


def unquote(value: Any) -> Any:
    """A field as pandas' `to_csv(sep="\\t")` quoted it ("a ""b"" c"), back to its text (a "b" c).

    Those files are tab-separated but CSV-quoted only where a field holds a double quote, so the
    tab reader (which must not treat quotes specially) leaves the quoting in place.
    """
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('""', '"')
    return value


@register_adapter("pandas_tsv")
def pandas_tsv(row: Row) -> Row:
    """TSVs written by pandas: counterfactually augmented NLI (NLI/<subset>/<split>.tsv)."""
    return {key: unquote(value) for key, value in row.items()}


# TaxiNLI's reasoning categories: one 0/1 column each in taxinli10k*.tsv.
TAXINLI_CATEGORIES = (
    "lexical_linguistic", "syntactic_linguistic", "factivity_linguistic",
    "negation_logic", "boolean_logic", "quantifier_logic", "conditional_logic", "comparative_logic",
    "relational_reasoning", "spatial_reasoning", "temporal_reasoning", "causal_reasoning",
    "coreference_reasoning", "world_knowledge", "taxonomic_knowledge",
)
_TRUE = {"1", "1.0", "true", "yes"}


@register_adapter("taxinli")
def taxinli(row: Row) -> Row:
    """TaxiNLI's TSV: pandas quoting, and a category column holds "yes" only where it applies.

    An example needs several kinds of reasoning at once, so each category is its own breakdown
    field; leaving the column out where it is 0 reports only the examples that need it.
    """
    out = pandas_tsv(row)
    for name in TAXINLI_CATEGORIES:
        if name in out:
            out[name] = "yes" if str(out[name]).strip().lower() in _TRUE else None
    return out


# The GLUE diagnostic's coarse categories; the original TSV capitalises them, the Hub mirror does not.
GLUE_DIAGNOSTIC_CATEGORIES = {
    "lexical semantics": "lexical_semantics",
    "predicate-argument structure": "predicate_argument_structure",
    "logic": "logic",
    "knowledge": "knowledge",
}


@register_adapter("glue_diagnostic")
def glue_diagnostic(row: Row) -> Row:
    """GLUE's diagnostic set: one breakdown field per coarse category, valued by its fine-grained tags.

    Untagged rows get no value, so each category reports only the examples it covers.
    """
    out = {}
    for key, value in row.items():
        name = GLUE_DIAGNOSTIC_CATEGORIES.get(str(key).strip().lower())
        if name is None:
            out[key] = value
            continue
        text = "" if value is None else str(value).strip()
        out[name] = text or None
    return out
