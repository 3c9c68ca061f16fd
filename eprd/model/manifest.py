"""Decoding manifest values into the JSON shapes the reference emits.

The reference unpacks manifests into Go structs with go-ucfg and marshals them
back with encoding/json, so what reaches a client is decided by struct field
order, scalar coercion and ``omitempty`` rules. Each ``*_doc`` function here
builds one such object as an ordered dict; :func:`put` applies the omission
rules so the builders read like the struct definitions they mirror.
"""

from __future__ import annotations

import posixpath
from typing import Any

from eprd.model import gojson
from eprd.model.gofmt import go_string

OMIT_EMPTY = "omit-empty"  # Go ``omitempty``: drop "", false, 0, nil and empty lists/maps
OMIT_NULL = "omit-null"  # pointer with ``omitempty``: drop only when absent
ALWAYS = "always"


VALID_RELEASES = ("experimental", "beta", "ga")


class ManifestError(ValueError):
    """A manifest value of the wrong type or a missing required key."""


def put(doc: dict[str, Any], key: str, value: Any, rule: str = OMIT_EMPTY) -> None:
    """Set ``doc[key]`` unless the Go omission rule drops ``value``."""
    if value is None or (rule == OMIT_EMPTY and is_empty(value)):
        return
    doc[key] = value


# Tuples, not ``str | list | dict``: a union in isinstance is built again at every call, and
# these checks run for every field of every document loaded.
_SIZED = (str, list, dict)
_NUMBERS = (int, float)
_CONTAINERS = (dict, list)


def is_empty(value: Any) -> bool:
    """Go's notion of an empty value for ``omitempty``."""
    if value is None or value is False:
        return True
    if isinstance(value, _SIZED):
        return not value
    return isinstance(value, _NUMBERS) and value == 0


def obj(value: Any, where: str) -> dict[str, Any] | None:
    """A YAML mapping, None when absent or null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ManifestError(f"type mismatch accessing '{where}': expected an object")
    return value


def text(value: Any, where: str) -> str:
    """A string field: scalars are coerced as go-ucfg does, absent is ``""``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, _CONTAINERS):
        raise ManifestError(f"type mismatch accessing '{where}': expected a string")
    return go_string(value)


def optional_text(value: Any, where: str) -> str | None:
    return None if value is None else text(value, where)


_BOOL_STRINGS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def flag(value: Any, where: str) -> bool | None:
    """A boolean field, None when absent (strings parsed like Go's strconv.ParseBool)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _BOOL_STRINGS:
        return _BOOL_STRINGS[value]
    raise ManifestError(f"type mismatch accessing '{where}': expected a boolean")


def items(value: Any, where: str) -> list[Any]:
    """A list field; a single value counts as a one-element list, as go-ucfg does."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def texts(value: Any, where: str) -> list[str]:
    return [text(item, f"{where}.{i}") for i, item in enumerate(items(value, where))]


def objects(value: Any, where: str) -> list[dict[str, Any]]:
    out = []
    for i, item in enumerate(items(value, where)):
        entry = obj(item, f"{where}.{i}")
        out.append(entry if entry is not None else {})
    return out


def required(value: Any, where: str) -> str:
    """A string the reference marks ``validate:"required"``: present and non-empty."""
    result = text(value, where)
    if result == "":
        raise ManifestError(f"missing required field accessing '{where}'")
    return result


def free_form(value: Any) -> Any:
    """A value kept with its YAML type: maps get sorted keys, floats Go's notation."""
    if isinstance(value, dict):
        return {str(k): free_form(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [free_form(v) for v in value]
    if isinstance(value, float):
        return gojson.number(value)
    return value


def go_path_join(*parts: str) -> str:
    """Go's path.Join: join the non-empty elements and clean the result."""
    joined = "/".join(p for p in parts if p)
    if not joined:
        return ""
    cleaned = posixpath.normpath(joined)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def go_quote(value: str) -> str:
    """Go's ``%q`` for ordinary strings."""
    return gojson.encode(value).decode()


# --- nested objects, in the field order of the reference's structs ---------------------------


def deprecated_doc(value: Any, where: str) -> dict[str, Any] | None:
    raw = obj(value, where)
    if raw is None:
        return None
    doc: dict[str, Any] = {
        "since": text(raw.get("since"), f"{where}.since"),
        "description": text(raw.get("description"), f"{where}.description"),
    }
    replaced = obj(raw.get("replaced_by"), f"{where}.replaced_by")
    if replaced is not None:
        by: dict[str, Any] = {}
        for key in ("package", "policy_template", "input", "data_stream", "variable"):
            put(by, key, text(replaced.get(key), f"{where}.replaced_by.{key}"))
        doc["replaced_by"] = by
    return doc


def image_doc(raw: dict[str, Any], where: str, package_url: str) -> dict[str, Any]:
    src = required(raw.get("src"), f"{where}.src")
    doc: dict[str, Any] = {"src": src, "path": go_path_join(package_url, src)}
    for key in ("title", "size", "type"):
        put(doc, key, text(raw.get(key), f"{where}.{key}"))
    return doc


def images_doc(value: Any, where: str, package_url: str) -> list[dict[str, Any]]:
    return [image_doc(raw, f"{where}.{i}", package_url) for i, raw in enumerate(objects(value, where))]


def variable_doc(raw: dict[str, Any], where: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": text(raw.get("name"), f"{where}.name"),
        "type": text(raw.get("type"), f"{where}.type"),
    }
    put(doc, "title", text(raw.get("title"), f"{where}.title"))
    put(doc, "description", text(raw.get("description"), f"{where}.description"))
    for key in ("multi", "required", "show_user"):
        doc[key] = bool(flag(raw.get(key), f"{where}.{key}"))
    put(doc, "default", free_form(raw.get("default")), OMIT_NULL)
    put(doc, "deprecated", deprecated_doc(raw.get("deprecated"), f"{where}.deprecated"), OMIT_NULL)
    return doc


def variables_doc(value: Any, where: str) -> list[dict[str, Any]]:
    return [variable_doc(raw, f"{where}.{i}") for i, raw in enumerate(objects(value, where))]


def deployment_modes_doc(value: Any, where: str) -> dict[str, Any] | None:
    raw = obj(value, where)
    if raw is None:
        return None
    doc: dict[str, Any] = {}
    for mode in ("default", "agentless"):
        mode_raw = obj(raw.get(mode), f"{where}.{mode}")
        if mode_raw is None:
            continue
        enabled = flag(mode_raw.get("enabled"), f"{where}.{mode}.enabled")
        if enabled is None:
            raise ManifestError(f"missing required field accessing '{where}.{mode}.enabled'")
        mode_doc: dict[str, Any] = {"enabled": enabled}
        if mode == "agentless":
            put(
                mode_doc,
                "is_default",
                flag(mode_raw.get("is_default"), f"{where}.{mode}.is_default"),
                OMIT_NULL,
            )
            put(mode_doc, "release", text(mode_raw.get("release"), f"{where}.{mode}.release"))
        doc[mode] = mode_doc
    return doc


def name_list_doc(value: Any, where: str) -> list[dict[str, str]]:
    """``[{name: ...}]`` lists (discovery fields and datasets); ``name`` is required."""
    return [
        {"name": required(raw.get("name"), f"{where}.{i}.name")}
        for i, raw in enumerate(objects(value, where))
    ]


def agent_doc(value: Any) -> dict[str, Any] | None:
    """``agent.privileges.root``, the same shape for packages and data streams."""
    raw = obj(value, "agent")
    if raw is None:
        return None
    doc: dict[str, Any] = {}
    privileges = obj(raw.get("privileges"), "agent.privileges")
    if privileges is not None:
        doc["privileges"] = {}
        put(doc["privileges"], "root", flag(privileges.get("root"), "agent.privileges.root"))
    return doc
