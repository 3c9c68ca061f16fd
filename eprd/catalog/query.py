"""Parsing and validating the query parameters of ``/search`` and ``/categories``.

The result is a frozen, hashable query: two requests that mean the same thing
(parameter order, repeated parameters, ``true`` vs ``1``) produce equal
queries, which is what the response cache of a snapshot is keyed by.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import semver

from eprd.model.versions import VersionError, parse_loose, sort_key


class QueryError(ValueError):
    """A query parameter the reference answers with 400 and this text."""


SEARCH_PARAMS = frozenset(
    (
        "kibana.version", "agent.version", "category", "package", "type", "capabilities",
        "spec.min", "spec.max", "all", "prerelease", "experimental", "discovery", "internal",
    )
)  # fmt: skip
CATEGORIES_PARAMS = frozenset(
    (
        "kibana.version", "agent.version", "prerelease", "experimental", "capabilities",
        "spec.min", "spec.max", "discovery", "include_policy_templates",
    )
)  # fmt: skip

_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


@dataclass(frozen=True, slots=True)
class Filter:
    """Everything both endpoints filter on (§5)."""

    kibana: semver.Version | None = None
    agent: semver.Version | None = None
    package: str = ""
    type: str = ""
    capabilities: tuple[str, ...] | None = None
    spec_min: tuple[object, ...] | None = None  # sort keys of <major>.<minor>.0
    spec_max: tuple[object, ...] | None = None
    spec_text: str = ""  # "<min>-<max>" as given, for the error of a package without a spec
    prerelease: bool = False
    experimental: bool = False
    discovery: tuple[tuple[str, tuple[str, ...]], ...] = ()
    category: str = ""
    all: bool = False


@dataclass(frozen=True, slots=True)
class CategoriesQuery:
    filter: Filter
    include_policy_templates: bool = False


def parse_query_string(raw: str) -> dict[str, list[str]]:
    """Go's url.ParseQuery: ``&``-separated, pairs with ``;`` or bad escapes dropped."""
    params: dict[str, list[str]] = {}
    for pair in raw.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        key_text, value_text = _unescape(key), _unescape(value)
        if key_text is None or value_text is None:
            continue
        params.setdefault(key_text, []).append(value_text)
    return params


def _unescape(text: str) -> str | None:
    # Surrogate escapes keep bytes that are not UTF-8 (``%ff``) as the client sent them: Go's
    # strings are bytes, and the reference quotes them back in its error texts.
    if _BAD_ESCAPE.search(text):
        return None
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=4096)
def parse_search(raw: str, allow_unknown: bool) -> Filter:
    """The filter of a ``/search`` request; raises QueryError."""
    params = parse_query_string(raw)
    _check_unknown(params, SEARCH_PARAMS, allow_unknown)
    return _parse_filter(params, search=True)


@functools.lru_cache(maxsize=1024)
def parse_categories(raw: str, allow_unknown: bool) -> CategoriesQuery:
    """The query of a ``/categories`` request; raises QueryError."""
    params = parse_query_string(raw)
    _check_unknown(params, CATEGORIES_PARAMS, allow_unknown)
    query_filter = _parse_filter(params, search=False)
    include = _bool(params, "include_policy_templates")
    return CategoriesQuery(query_filter, bool(include))


def _check_unknown(params: dict[str, list[str]], known: frozenset[str], allow_unknown: bool) -> None:
    if allow_unknown:
        return
    for key in params:
        if key not in known:
            raise QueryError(f"unknown query parameter: {_go_quote(key)}")


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_GO_ESCAPES.update({'"': '\\"', "\\": "\\\\"})


def _go_quote(text: str) -> str:
    """Go's strconv.Quote (``%q``): printable characters as they are, the rest escaped."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return '"' + "".join(_go_quote_char(c) for c in text) + '"'


def _go_quote_char(c: str) -> str:
    escaped = _GO_ESCAPES.get(c)
    if escaped is not None:
        return escaped
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogate escape)
        return f"\\x{code - 0xDC00:02x}"
    if c.isprintable():
        return c
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return "\\ufffd"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _first(params: dict[str, list[str]], key: str) -> str:
    values = params.get(key)
    return values[0] if values else ""


def _bool(params: dict[str, list[str]], key: str) -> bool | None:
    value = _first(params, key)
    if not value:
        return None
    if value not in _BOOLS:
        raise QueryError(f"invalid '{key}' query param: '{value}'")
    return _BOOLS[value]


def _version(params: dict[str, list[str]], key: str, label: str) -> semver.Version | None:
    value = _first(params, key)
    if not value:
        return None
    try:
        return parse_loose(value)
    except VersionError as err:
        raise QueryError(f"invalid {label} version '{value}': {err}") from None


def _spec(params: dict[str, list[str]], key: str) -> tuple[object, ...] | None:
    value = _first(params, key)
    if not value:
        return None
    if len(value.split(".")) != 2:
        raise QueryError(f"invalid '{key}' version: invalid version '{value}': it should be <major.version>")
    try:
        version = parse_loose(value)
    except VersionError as err:
        raise QueryError(f"invalid '{key}' version: invalid spec version '{value}': {err}") from None
    return sort_key(semver.Version(version.major, version.minor, 0))


def _discovery(params: dict[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    filters = []
    for value in params.get("discovery", []):
        kind, sep, names = value.partition(":")
        if not sep:
            raise QueryError(
                f"invalid 'discovery' query param: '{value}': could not parse filter {_go_quote(value)}"
            )
        if kind not in ("fields", "datasets"):
            raise QueryError(
                f"invalid 'discovery' query param: '{value}': unknown discovery filter {_go_quote(kind)}"
            )
        filters.append((kind, tuple(names.split(","))))
    return tuple(filters)


def _parse_filter(params: dict[str, list[str]], search: bool) -> Filter:
    kibana = _version(params, "kibana.version", "Kibana")
    agent = _version(params, "agent.version", "agent")
    capabilities_text = _first(params, "capabilities")
    spec_min, spec_max = _spec(params, "spec.min"), _spec(params, "spec.max")
    prerelease = bool(_bool(params, "prerelease"))
    experimental = bool(_bool(params, "experimental"))
    discovery = _discovery(params)
    spec_text = f"{_first(params, 'spec.min')}-{_first(params, 'spec.max')}"
    if not search:
        return Filter(
            kibana=kibana,
            agent=agent,
            capabilities=tuple(capabilities_text.split(",")) if capabilities_text else None,
            spec_min=spec_min,
            spec_max=spec_max,
            spec_text=spec_text,
            prerelease=prerelease,
            experimental=experimental,
            discovery=discovery,
        )
    return Filter(
        kibana=kibana,
        agent=agent,
        package=_first(params, "package"),
        type=_first(params, "type"),
        capabilities=tuple(capabilities_text.split(",")) if capabilities_text else None,
        spec_min=spec_min,
        spec_max=spec_max,
        spec_text=spec_text,
        prerelease=prerelease,
        experimental=experimental,
        discovery=discovery,
        category=_first(params, "category"),
        all=bool(_bool(params, "all")),
    )
