"""Task specifications: one TOML file per dataset family in `tasks/`, parsed into frozen records."""

from __future__ import annotations

import difflib
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, TaskNotFoundError
from .labels import Label, LabelSpace, label_from_name
from .templates import Template, parse_template

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STANDARD_FIELDS = ("id", "premise", "hypothesis", "label")


@dataclass(frozen=True)
class FieldMap:
    premise: str = "premise"
    hypothesis: str = "hypothesis"
    label: str = "label"
    id: str | None = None


@dataclass(frozen=True)
class Layout:
    """One way a dataset is laid out in files: a path pattern, its columns and label spellings."""

    name: str
    path: str  # relative to --data-dir; {split} is the split's file name, other {vars} from the variant
    fields: FieldMap
    labels: Mapping[str, Label]
    splits: Mapping[str, str] = field(default_factory=dict)  # split key -> file name in this layout
    format: str | None = None  # jsonl, json, csv, tsv, parquet, or a registered adapter's format
    adapter: str | None = None
    # A JSON file that is one object of several tables (AdvGLUE's dev.json): the table to read.
    json_key: str | None = None
    # Keep only rows whose column equals the value (one file holding every split, e.g. SICK.txt).
    select: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HubSource:
    path: str
    name: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class TaskVariant:
    """A task a user names (`anli_r1`): a family's data for one variant."""

    name: str
    family: str
    splits: Mapping[str, str]  # split key (test, dev, train, ...) -> Hub split name
    default_split: str
    fewshot_split: str | None
    label_space: LabelSpace
    fields: FieldMap
    labels: Mapping[str, Label]
    drop_labels: tuple[str, ...] = ()
    hub: HubSource | None = None
    layouts: tuple[Layout, ...] = ()
    vars: Mapping[str, str] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)
    breakdown: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    template: str | None = None
    adapter: str | None = None
    generator: str | None = None  # rows written by a registered generator instead of read from files
    description: str = ""
    citation: str = ""
    license: str = ""
    homepage: str = ""
    notes: str = ""
    references: Mapping[str, float] = field(default_factory=dict)
    data_files: Mapping[str, str] = field(default_factory=dict)  # split key -> explicit file
    templates: Mapping[str, Template] = field(default_factory=dict)  # templates the task file defines
    source: str = ""  # the TOML file it came from

    def split_name(self, split: str | None) -> tuple[str, str]:
        """(split key, Hub split name) for a user's --split value (a key such as `dev` or a Hub name)."""
        key = split or self.default_split
        if key in self.splits:
            return key, self.splits[key]
        for k, hub_name in self.splits.items():
            if hub_name == key:
                return k, hub_name
        if self.data_files and key in self.data_files:
            return key, key
        choices = ", ".join(sorted(self.splits)) or "none declared"
        raise ConfigError(f"task {self.name} has no split {key!r}; choose one of: {choices}")


@dataclass(frozen=True)
class Aggregate:
    name: str
    tasks: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Catalog:
    tasks: Mapping[str, TaskVariant]
    aggregates: Mapping[str, Aggregate]

    def names(self) -> list[str]:
        return sorted(set(self.tasks) | set(self.aggregates))

    def expand(self, names: list[str]) -> list[str]:
        """Task names with aggregates replaced by their members, duplicates removed, order kept."""
        out: list[str] = []
        for name in names:
            members = self.aggregates[name].tasks if name in self.aggregates else (self.get(name).name,)
            for member in members:
                if member not in out:
                    out.append(member)
        return out

    def get(self, name: str) -> TaskVariant:
        if name in self.tasks:
            return self.tasks[name]
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `nli-eval tasks` lists them"
        raise TaskNotFoundError(f"unknown task {name!r}{hint}")


def tasks_dir() -> Path:
    """The task files: inside the installed package, or the repository's top-level `tasks/`."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise ConfigError(f"no task files found next to {here}; reinstall nli-eval")


def _str_map(value: Any, what: str, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {what} must be a table of names, got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if isinstance(v, (dict, list)):
            raise ConfigError(f"{source}: {what}.{k} must be a single value, got {type(v).__name__}")
        out[str(k)] = str(v)
    return out


def _labels(value: Any, source: str) -> dict[str, Label]:
    out = {}
    for raw, name in _str_map(value, "labels", source).items():
        try:
            out[raw] = label_from_name(name)
        except ConfigError as exc:
            raise ConfigError(f"{source}: labels.{raw}: {exc}") from None
    return out


def _fields(value: Any, source: str, base: FieldMap | None = None) -> FieldMap:
    mapping = _str_map(value, "fields", source)
    unknown = set(mapping) - set(STANDARD_FIELDS)
    if unknown:
        raise ConfigError(f"{source}: unknown field {sorted(unknown)[0]!r} in fields; use {', '.join(STANDARD_FIELDS)}")
    base = base or FieldMap()
    return FieldMap(
        premise=mapping.get("premise", base.premise),
        hypothesis=mapping.get("hypothesis", base.hypothesis),
        label=mapping.get("label", base.label),
        id=mapping.get("id", base.id),
    )


def _tuple(value: Any, what: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, int)):
        return (str(value),)
    if not isinstance(value, list):
        raise ConfigError(f"{source}: {what} must be a list, got {type(value).__name__}")
    return tuple(str(v) for v in value)


def _label_space(value: Any, source: str) -> LabelSpace:
    text = str(value or "3way").lower().replace("-", "").replace("_", "")
    aliases = {"3way": LabelSpace.THREE_WAY, "3": LabelSpace.THREE_WAY, "three": LabelSpace.THREE_WAY,
               "threeway": LabelSpace.THREE_WAY, "2way": LabelSpace.TWO_WAY, "2": LabelSpace.TWO_WAY,
               "two": LabelSpace.TWO_WAY, "twoway": LabelSpace.TWO_WAY}
    if text not in aliases:
        raise ConfigError(f"{source}: label_space must be '3way' or '2way', got {value!r}")
    return aliases[text]


def _text(value: Any, what: str, source: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{source}: {what} must be a string, got {type(value).__name__}")
    return str(value)


def _table(value: Any, what: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {what} must be a table, got {type(value).__name__}")
    return value


def _tables(value: Any, what: str, source: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{source}: {what} must be an array of tables ([[{what}]])")
    return value


def parse_family(data: Mapping[str, Any], source: str) -> tuple[list[TaskVariant], list[Aggregate]]:
    """Turn one parsed task TOML document into its task variants and aggregates."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a task file must be a TOML table")
    family = _text(data.get("family"), "family", source) or Path(source).stem
    space = _label_space(data.get("label_space"), source)
    fields = _fields(data.get("fields"), source)
    labels = _labels(data.get("labels"), source)
    hub_table = _table(data.get("hub"), "hub", source)
    hub = None
    if hub_table:
        if "path" not in hub_table:
            raise ConfigError(f"{source}: [hub] needs a path (the dataset id on the Hub)")
        hub = HubSource(
            path=_text(hub_table["path"], "hub.path", source),
            name=_text(hub_table.get("name"), "hub.name", source) or None,
            revision=_text(hub_table.get("revision"), "hub.revision", source) or None,
        )
    layout_tables = _tables(data.get("layouts"), "layouts", source)
    for i, lay in enumerate(layout_tables):
        if "path" not in lay:
            raise ConfigError(f"{source}: layouts[{i}] needs a path pattern")

    def build_layouts(base_fields: FieldMap, base_labels: Mapping[str, Label]) -> tuple[Layout, ...]:
        # A layout without its own field or label map reads the columns of the variant it serves.
        return tuple(Layout(
            name=_text(lay.get("name"), "layouts.name", source, f"layout{i}"),
            path=_text(lay["path"], "layouts.path", source),
            fields=_fields(lay.get("fields"), source, base=base_fields),
            labels=_labels(lay.get("labels"), source) or dict(base_labels),
            splits=_str_map(lay.get("splits"), "layouts.splits", source),
            format=_text(lay.get("format"), "layouts.format", source) or None,
            adapter=_text(lay.get("adapter"), "layouts.adapter", source) or None,
            json_key=_text(lay.get("json_key"), "layouts.json_key", source) or None,
            select=_str_map(lay.get("select"), "layouts.select", source),
        ) for i, lay in enumerate(layout_tables))

    templates = {name: parse_template(name, raw, source)
                 for name, raw in _table(data.get("templates"), "templates", source).items()}
    template_name = data.get("template")
    if isinstance(template_name, dict):  # an inline template for this task file
        templates[f"{family}_template"] = parse_template(f"{family}_template", template_name, source)
        template_name = f"{family}_template"
    common = dict(
        family=family,
        templates=templates,
        label_space=space,
        fields=fields,
        labels=labels,
        drop_labels=_tuple(data.get("drop_labels"), "drop_labels", source),
        hub=hub,
        breakdown=_tuple(data.get("breakdown"), "breakdown", source),
        keep=_tuple(data.get("keep"), "keep", source),
        template=_text(template_name, "template", source) or None,
        adapter=_text(data.get("adapter"), "adapter", source) or None,
        generator=_text(data.get("generator"), "generator", source) or None,
        description=_text(data.get("description"), "description", source),
        citation=_text(data.get("citation"), "citation", source).strip(),
        license=_text(data.get("license"), "license", source),
        homepage=_text(data.get("homepage"), "homepage", source),
        notes=_text(data.get("notes"), "notes", source).strip(),
        source=source,
    )
    default_split = _text(data.get("default_split"), "default_split", source, "test")
    fewshot = _text(data.get("fewshot_split"), "fewshot_split", source, "train") or None
    variants_raw = _tables(data.get("variants"), "variants", source)
    if not variants_raw:
        variants_raw = [{"name": family}]
    variants = []
    for i, raw in enumerate(variants_raw):
        name = _text(raw.get("name"), "variants.name", source)
        if not name:
            raise ConfigError(f"{source}: variants[{i}] needs a name")
        splits = _str_map(raw.get("splits"), f"variants.{name}.splits", source) or _str_map(
            data.get("splits"), "splits", source) or {default_split: default_split}
        sizes_raw = _table(raw.get("sizes"), f"variants.{name}.sizes", source)
        try:
            sizes = {str(k): int(v) for k, v in sizes_raw.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: variants.{name}.sizes must map split names to integers") from None
        refs_raw = _table(raw.get("references", data.get("references")), "references", source)
        try:
            refs = {str(k): float(v) for k, v in refs_raw.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: references must map names to accuracies") from None
        overrides = {}
        for key in ("fields", "labels", "hub", "label_space", "breakdown", "template", "description"):
            if key in raw:
                overrides[key] = raw[key]
        variant_common = dict(common)
        if "fields" in overrides:
            variant_common["fields"] = _fields(overrides["fields"], source, base=fields)
        if "labels" in overrides:
            variant_common["labels"] = _labels(overrides["labels"], source)
        if "label_space" in overrides:
            variant_common["label_space"] = _label_space(overrides["label_space"], source)
        if "breakdown" in overrides:
            variant_common["breakdown"] = _tuple(overrides["breakdown"], "breakdown", source)
        if "template" in overrides:
            variant_common["template"] = _text(overrides["template"], "template", source)
        if "description" in overrides:
            variant_common["description"] = _text(overrides["description"], "description", source)
        if "hub" in overrides:
            h = _table(overrides["hub"], "hub", source)
            base = hub or HubSource(path="")
            variant_common["hub"] = HubSource(
                path=_text(h.get("path"), "hub.path", source, base.path),
                name=_text(h.get("name"), "hub.name", source) or base.name,
                revision=_text(h.get("revision"), "hub.revision", source) or base.revision,
            )
        variant_common["layouts"] = build_layouts(variant_common["fields"], variant_common["labels"])
        v_default = _text(raw.get("default_split"), "default_split", source, default_split)
        if v_default not in splits:
            raise ConfigError(f"{source}: task {name} has no split {v_default!r} to use as its default")
        v_fewshot = _text(raw.get("fewshot_split"), "fewshot_split", source, fewshot or "") or None
        variants.append(TaskVariant(
            name=name,
            splits=splits,
            default_split=v_default,
            fewshot_split=v_fewshot,
            vars=_str_map(raw.get("vars"), f"variants.{name}.vars", source),
            sizes=sizes,
            references=refs,
            data_files=_str_map(raw.get("data_files", data.get("data_files")), "data_files", source),
            **variant_common,
        ))
    aggregates = []
    for raw in _tables(data.get("aggregates"), "aggregates", source):
        name = _text(raw.get("name"), "aggregates.name", source)
        members = _tuple(raw.get("tasks"), "aggregates.tasks", source)
        if not name or not members:
            raise ConfigError(f"{source}: every [[aggregates]] needs a name and a list of tasks")
        aggregates.append(Aggregate(name, members, _text(raw.get("description"), "description", source)))
    return variants, aggregates


def read_toml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: TOML nested too deeply to be a task file") from None


def load_task_file(path: str | Path) -> tuple[list[TaskVariant], list[Aggregate]]:
    path = Path(path)
    return parse_family(read_toml(path), str(path))


def build_catalog(files: list[Path]) -> Catalog:
    tasks: dict[str, TaskVariant] = {}
    aggregates: dict[str, Aggregate] = {}
    for path in files:
        variants, aggs = load_task_file(path)
        for v in variants:
            if v.name in tasks:
                raise ConfigError(f"task {v.name} is declared twice ({tasks[v.name].source} and {path})")
            tasks[v.name] = v
        for a in aggs:
            aggregates[a.name] = a
    for agg in aggregates.values():
        for member in agg.tasks:
            if member not in tasks:
                raise ConfigError(f"aggregate {agg.name} names unknown task {member!r}")
    return Catalog(tasks, aggregates)


@functools.lru_cache(maxsize=1)
def builtin_catalog() -> Catalog:
    return build_catalog(sorted(tasks_dir().glob("*.toml")))


def catalog_with(extra_files: list[str] | None = None) -> Catalog:
    """The built-in catalog plus task files a user passed with --task-file."""
    base = builtin_catalog()
    if not extra_files:
        return base
    tasks = dict(base.tasks)
    aggregates = dict(base.aggregates)
    for path in extra_files:
        variants, aggs = load_task_file(path)
        for v in variants:
            tasks[v.name] = v  # a user's file may override a built-in task on purpose
        for a in aggs:
            aggregates[a.name] = a
    return Catalog(tasks, aggregates)
