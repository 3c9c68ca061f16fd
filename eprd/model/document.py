"""A :class:`Package` built from its ``/package/{n}/{v}/`` JSON document, without reading YAML.

Package Storage v2 indexes hold, for every version, exactly the document a registry
serves for it. :func:`package_from_document` turns one such document back into the
same immutable :class:`Package` that :func:`eprd.model.package.load_package` builds
from a folder, so that every endpoint answers byte for byte as if the version were
served from a package path: the same pre-encoded ``/search`` entry parts, the same
document halves around ``deprecated``, the same values the filters compare.

Such a package has no local files (``files`` is None): its static files, archive and
signature live in the storage bucket and are fetched from there.
"""

from __future__ import annotations

import functools
from typing import Any

import semver

from eprd.model import gojson
from eprd.model.datastream import data_stream_summary
from eprd.model.package import Package, PackageError, encode_members
from eprd.model.sections import template_summary
from eprd.model.versions import Constraint, VersionError, is_prerelease, parse_strict, sort_key

# Members 1-11 (§2.7), shared by the /search entry and the document.
_BASE = (
    "name",
    "title",
    "version",
    "release",
    "source",
    "description",
    "type",
    "download",
    "path",
    "icons",
    "policy_templates_behavior",
)
# Between the policy templates and "deprecated" in both shapes (§2.7 13-17, §2.8 12-16).
_SHARED = ("conditions", "owner", "categories", "signature_path", "discovery")
_LAST = ("requires", "group")
# After "requires"/"group" in the document only (§2.8 20-29).
_DOCUMENT_TAIL = (
    "format_version",
    "readme",
    "license",
    "screenshots",
    "assets",
    "policy_templates",
    "data_streams",
    "vars",
    "elasticsearch",
    "agent",
)


def package_from_document(doc: Any, location: str) -> Package:
    """The package a ``/package/{n}/{v}/`` document describes; raises PackageError if it cannot be served.

    ``location`` names where the document came from (for errors and logs).
    """
    try:
        return _build(doc, location)
    except PackageError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, VersionError) as err:
        raise PackageError(location, f"invalid package document: {err}") from None


def _build(doc: Any, location: str) -> Package:
    if not isinstance(doc, dict):
        raise PackageError(location, "invalid package document: not a JSON object")
    name = doc.get("name")
    version = doc.get("version")
    if not isinstance(name, str) or not name or not isinstance(version, str):
        raise PackageError(location, "invalid package document: no name or version")
    where = f"{location} ({name}-{version})"
    try:
        parsed = parse_strict(version)
    except VersionError as err:
        raise PackageError(where, f"invalid package version: {err}") from None
    _go_floats(doc)
    release = doc.get("release") or ("beta" if parsed.prerelease or parsed.major == 0 else "ga")
    conditions = doc.get("conditions") or {}
    format_version = doc.get("format_version") or ""
    spec = _spec(format_version) if format_version else None
    templates = _list(doc.get("policy_templates"))
    data_streams = _list(doc.get("data_streams"))
    discovery = doc.get("discovery") or {}
    capabilities = (conditions.get("elastic") or {}).get("capabilities")

    base = _pick(doc, _BASE)
    shared = _pick(doc, _SHARED)
    last = _pick(doc, _LAST)
    summaries = {"policy_templates": [template_summary(t) for t in templates]} if templates else {}
    middle = dict(shared)
    if data_streams:
        middle["data_streams"] = [data_stream_summary(d) for d in data_streams]
    head = dict(base)
    head.update(shared)
    tail = dict(last)
    tail["format_version"] = format_version
    tail.update(_pick(doc, _DOCUMENT_TAIL[1:]))
    deprecated = doc.get("deprecated")
    return Package(
        name=name,
        version=version,
        key=sort_key(parsed),
        prerelease=is_prerelease(parsed),
        major=parsed.major,
        release=release,
        type=doc.get("type") or "integration",
        categories=tuple(doc.get("categories") or ()),
        template_categories=tuple(tuple(t["categories"]) if t.get("categories") else None for t in templates),
        kibana=_constraint(conditions, "kibana", where),
        agent=_constraint(conditions, "agent", where),
        capabilities=tuple(capabilities) if capabilities else None,
        discovery_fields=tuple(f["name"] for f in discovery.get("fields") or ()),
        discovery_datasets=tuple(d["name"] for d in discovery.get("datasets") or ()),
        spec=spec,
        deprecated=deprecated if isinstance(deprecated, dict) else None,
        entry_parts=tuple(encode_members(part) for part in (base, summaries, middle, last)),
        # Plain, not compressed as for folders (see eprd.model.package.inflate): loading 10,000
        # versions at start-up costs half as much, for the memory of the documents.
        doc_head=encode_members(head),
        doc_tail=encode_members(tail),
        files=None,
        location=location,
        signature=None,
        folders=0,
    )


def _pick(doc: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The members of ``doc`` named in ``keys``, in that order (the reference's key order)."""
    return {key: doc[key] for key in keys if key in doc}


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


@functools.lru_cache(maxsize=4096)
def _spec(format_version: str) -> tuple[Any, ...]:
    """The sort key of ``major.minor.0`` (few distinct values across an index: memoised)."""
    parsed = parse_strict(format_version)
    return sort_key(semver.Version(parsed.major, parsed.minor, 0))


@functools.lru_cache(maxsize=4096)
def _parse_constraint(text: str) -> Constraint:
    # Most versions of a package share their conditions: parse each distinct one once.
    return Constraint.parse(text)


def _constraint(conditions: dict[str, Any], key: str, where: str) -> Constraint | None:
    section = conditions.get(key)
    if section is None:
        return None
    try:
        return _parse_constraint(section["version"])
    except VersionError as err:
        raise PackageError(where, f"invalid {key} versions range {section['version']}: {err}") from None


def _go_floats(doc: dict[str, Any]) -> None:
    """Go's notation for the floats of a document, which only free-form values can hold.

    Those are variable defaults (package, input, stream) and data streams' index templates
    (§2.1); walking only them keeps loading an index cheap.
    """
    _defaults(doc.get("vars"))
    for template in doc.get("policy_templates") or ():
        for input_ in template.get("inputs") or ():
            _defaults(input_.get("vars"))
            for stream in input_.get("streams") or ():
                _defaults(stream.get("vars"))
    for data_stream in doc.get("data_streams") or ():
        _go_numbers(data_stream.get("elasticsearch"))
        for stream in data_stream.get("streams") or ():
            _defaults(stream.get("vars"))


def _defaults(variables: Any) -> None:
    """Go's notation for floats in the ``default`` of each variable (its only free-form member)."""
    for variable in variables or ():
        default = variable.get("default")
        if type(default) is float:
            variable["default"] = gojson.number(default)
        elif isinstance(default, (dict, list)):
            _go_numbers(default)


def _go_numbers(value: Any) -> Any:
    """``value`` with its floats in Go's notation (integral ones as integers), as folders give them."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                _go_numbers(item)
            elif type(item) is float:
                value[key] = gojson.number(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, (dict, list)):
                _go_numbers(item)
            elif type(item) is float:
                value[index] = gojson.number(item)
    return value
