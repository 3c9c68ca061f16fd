"""Remote JSON re-serialised in the reference's shapes (§2.7 /search entry, §2.8 document).

The reference decodes an upstream's answer into its Go structs and encodes it again, so
unknown keys disappear, keys come in struct order and the ``omitempty`` rules apply. The
tables below describe those structs field by field; :func:`render` walks a decoded value
along one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eprd.model import gojson

ALWAYS = "always"  # emitted even when empty (the zero value when absent)
EMPTY = "empty"  # omitted when "", false, 0, null, [] or {}
NULL = "null"  # omitted only when absent or null


@dataclass(frozen=True, slots=True)
class Obj:
    """A struct: its fields in output order."""

    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Obj


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    rule: str = EMPTY
    shape: Obj | ListOf | None = None  # None: a scalar or a free-form value
    zero: Any = ""  # what ALWAYS emits for an absent value


def f(key: str, rule: str = EMPTY, shape: Obj | ListOf | None = None, zero: Any = "") -> Field:
    return Field(key, rule, shape, zero)


def obj(*fields: Field) -> Obj:
    return Obj(fields)


IMAGE = obj(f("src", ALWAYS), f("path", ALWAYS), f("title"), f("size"), f("type"))
DEPRECATED = obj(
    f("since", ALWAYS),
    f("description", ALWAYS),
    f(
        "replaced_by",
        NULL,
        obj(f("package"), f("policy_template"), f("input"), f("data_stream"), f("variable")),
    ),
)
CONDITIONS = obj(
    f("kibana", NULL, obj(f("version", ALWAYS))),
    f("elastic", NULL, obj(f("subscription", ALWAYS), f("capabilities"))),
    f("agent", NULL, obj(f("version", ALWAYS))),
)
DEPLOYMENT_MODES = obj(
    f("default", NULL, obj(f("enabled", ALWAYS, zero=False))),
    f("agentless", NULL, obj(f("enabled", ALWAYS, zero=False), f("is_default", NULL), f("release"))),
)
OWNER = obj(f("type"), f("github"))
SOURCE = obj(f("license"))
REQUIREMENT = obj(f("package", ALWAYS), f("version", ALWAYS))
REQUIRES = obj(f("input", EMPTY, ListOf(REQUIREMENT)), f("content", EMPTY, ListOf(REQUIREMENT)))
DISCOVERY = obj(
    f("fields", EMPTY, ListOf(obj(f("name", ALWAYS)))), f("datasets", EMPTY, ListOf(obj(f("name", ALWAYS))))
)
VARIABLE = obj(
    f("name", ALWAYS),
    f("type", ALWAYS),
    f("title"),
    f("description"),
    f("multi", ALWAYS, zero=False),
    f("required", ALWAYS, zero=False),
    f("show_user", ALWAYS, zero=False),
    f("default", NULL),
    f("deprecated", NULL, DEPRECATED),
)
SUMMARY_TEMPLATE = obj(
    f("name", ALWAYS),
    f("title", ALWAYS),
    f("description", ALWAYS),
    f("icons", EMPTY, ListOf(IMAGE)),
    f("categories"),
    f("deployment_modes", NULL, DEPLOYMENT_MODES),
    f("data_streams"),
    f("deprecated", NULL, DEPRECATED),
)
SUMMARY_DATA_STREAM = obj(
    f("type"), f("dataset", ALWAYS), f("title", ALWAYS), f("deprecated", NULL, DEPRECATED)
)
STREAM = obj(
    f("input"),
    f("package"),
    f("vars", EMPTY, ListOf(VARIABLE)),
    f("data_stream"),
    f("template_path"),
    f("title"),
    f("description"),
    f("enabled", NULL),
    f("ingestion_method"),
)
INPUT = obj(
    f("type"),
    f("package"),
    f("vars", EMPTY, ListOf(VARIABLE)),
    f("title"),
    f("description"),
    f("streams"),
    f("template_path"),
    f("input_group"),
    f("deployment_modes"),  # a list of mode names here
    f("deprecated", NULL, DEPRECATED),
)
FULL_TEMPLATE = obj(
    f("name", ALWAYS),
    f("title", ALWAYS),
    f("description", ALWAYS),
    f("data_streams"),
    f("inputs", EMPTY, ListOf(INPUT)),
    f("multiple", NULL),
    f("icons", EMPTY, ListOf(IMAGE)),
    f("categories"),
    f("screenshots", EMPTY, ListOf(IMAGE)),
    f("readme"),
    f("deployment_modes", NULL, DEPLOYMENT_MODES),
    f("type"),
    f("input"),
    f("ingestion_method"),
    f("template_path"),
    f("vars", EMPTY, ListOf(VARIABLE)),
    f("deprecated", NULL, DEPRECATED),
)
DATA_STREAM_ES = obj(
    f("index_template.settings"),
    f("index_template.mappings"),
    f("ingest_pipeline.name"),
    f("privileges", EMPTY, obj(f("indices"))),
)
FULL_DATA_STREAM = obj(
    f("type", ALWAYS),
    f("dataset"),
    f("hidden"),
    f("ilm_policy"),
    f("dataset_is_prefix"),
    f("title", ALWAYS),
    f("release"),
    f("ingest_pipeline"),
    f("streams", EMPTY, ListOf(STREAM)),
    f("package"),
    f("elasticsearch", EMPTY, DATA_STREAM_ES),
    f("agent"),
    f("path"),
    f("deprecated", NULL, DEPRECATED),
)

# Members 1-11 of both shapes.
_HEAD = (
    f("name", ALWAYS),
    f("title", NULL),
    f("version", ALWAYS),
    f("release"),
    f("source", NULL, SOURCE),
    f("description", ALWAYS),
    f("type", ALWAYS),
    f("download", ALWAYS),
    f("path", ALWAYS),
    f("icons", EMPTY, ListOf(IMAGE)),
    f("policy_templates_behavior"),
)
# conditions .. discovery, deprecated, requires, group: the same in both shapes.
_SHARED = (
    f("conditions", NULL, CONDITIONS),
    f("owner", NULL, OWNER),
    f("categories"),
    f("signature_path"),
    f("discovery", NULL, DISCOVERY),
)
_REQUIRES = (f("requires", NULL, REQUIRES), f("group"))

SEARCH_ENTRY = obj(
    *_HEAD,
    f("policy_templates", EMPTY, ListOf(SUMMARY_TEMPLATE)),
    *_SHARED,
    f("data_streams", EMPTY, ListOf(SUMMARY_DATA_STREAM)),
    f("deprecated", NULL, DEPRECATED),
    *_REQUIRES,
)
PACKAGE_DOCUMENT = obj(
    *_HEAD,
    *_SHARED,
    f("deprecated", NULL, DEPRECATED),
    *_REQUIRES,
    f("format_version", ALWAYS),
    f("readme", NULL),
    f("license"),
    f("screenshots", EMPTY, ListOf(IMAGE)),
    f("assets"),
    f("policy_templates", EMPTY, ListOf(FULL_TEMPLATE)),
    f("data_streams", EMPTY, ListOf(FULL_DATA_STREAM)),
    f("vars", EMPTY, ListOf(VARIABLE)),
    f("elasticsearch", NULL, obj(f("privileges", NULL, obj(f("cluster"))))),
    f("agent", NULL, obj(f("privileges", NULL, obj(f("root"))))),
)


def _empty(value: Any) -> bool:
    return (
        value is None
        or value is False
        or value == ""
        or value == []
        or value == {}
        or (type(value) in (int, float) and value == 0)
    )


def _free(value: Any) -> Any:
    """A free-form value as Go encodes a map[string]interface{}: keys sorted, Go numbers."""
    if isinstance(value, dict):
        return {k: _free(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_free(v) for v in value]
    if isinstance(value, float):
        return gojson.number(value)
    return value


def render(value: Any, shape: Obj) -> dict[str, Any]:
    """``value`` (decoded JSON) as ``shape``; a non-object counts as an empty one."""
    source = value if isinstance(value, dict) else {}
    out: dict[str, Any] = {}
    for field in shape.fields:
        raw = source.get(field.key)
        if raw is None:
            if field.rule == ALWAYS:
                out[field.key] = render({}, field.shape) if isinstance(field.shape, Obj) else field.zero
            continue
        if isinstance(field.shape, Obj):
            rendered: Any = render(raw, field.shape)
        elif isinstance(field.shape, ListOf):
            rendered = [render(item, field.shape.item) for item in raw] if isinstance(raw, list) else []
        else:
            rendered = _free(raw)
        if field.rule == EMPTY and _empty(rendered if field.shape is None else raw):
            continue
        if field.key == "discovery" and not (rendered.get("fields") or rendered.get("datasets")):
            continue  # omitted when both lists are empty, as the reference does
        out[field.key] = rendered
    return out
