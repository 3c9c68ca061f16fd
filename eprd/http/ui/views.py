"""What each page shows, taken from a snapshot: plain data for the templates.

The catalog selects packages exactly as ``/search`` does, through the same parser, filter
and response cache, and reads the very entries ``/search`` would send, so the page and
the API cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from multidict import MultiMapping

from eprd.catalog.filters import FilterError, cached_search
from eprd.catalog.query import QueryError, parse_search
from eprd.catalog.snapshot import Snapshot
from eprd.model.categories import CATEGORIES

# The /search parameters the catalog's filters set, in the order the form shows them.
FILTER_PARAMS = ("kibana.version", "category", "type", "prerelease")
PACKAGE_TYPES = ("integration", "input", "content")


@dataclass
class Catalog:
    """The catalog page: the filters as given, the packages they select and the choices."""

    filters: dict[str, str]
    text: str  # the name-or-title search (applied here too, so the page works without scripts)
    query: str  # the /search query string the filters map onto
    packages: list[dict[str, Any]] = field(default_factory=list)
    categories: list[tuple[str, str]] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    error: str = ""


def filters_of(params: MultiMapping[str]) -> dict[str, str]:
    """The catalog filters of a page request (empty ones left out)."""
    out = {}
    for key in FILTER_PARAMS:
        value = params.get(key, "").strip()
        if value:
            out[key] = "true" if key == "prerelease" and value in ("on", "1", "true") else value
    return out


def search(snapshot: Snapshot, query: str) -> list[dict[str, Any]]:
    """The entries ``/search?<query>`` answers (raises QueryError or FilterError as it would)."""
    parsed = parse_search(query, True)
    body = cached_search(snapshot, parsed)
    return orjson.loads(body.data) if body.data != b"[]" else []


def catalog(snapshot: Snapshot, params: MultiMapping[str]) -> Catalog:
    """Build the catalog page for the filters in ``params``."""
    filters = filters_of(params)
    text = params.get("q", "").strip()
    page = Catalog(filters, text, urlencode(filters))
    page.categories, page.types = _choices(snapshot)
    try:
        latest = search(snapshot, page.query)
        every = search(snapshot, urlencode({**filters, "all": "true"}))
    except (QueryError, FilterError) as err:
        page.error = str(err)
        return page
    versions: dict[str, list[dict[str, Any]]] = {}
    for entry in every:
        versions.setdefault(entry["name"], []).append(entry)
    needle = text.lower()
    for entry in latest:
        if needle and needle not in entry["name"].lower() and needle not in entry.get("title", "").lower():
            continue
        others = versions.get(entry["name"], [entry])
        others.sort(key=lambda e: _key(snapshot, e), reverse=True)  # latest first
        page.packages.append(_row(entry, others))
    return page


def _key(snapshot: Snapshot, entry: dict[str, Any]) -> tuple[Any, ...]:
    item = snapshot.lookup(entry["name"], entry["version"])
    return item.package.key if item is not None else ()


def _row(entry: dict[str, Any], versions: list[dict[str, Any]]) -> dict[str, Any]:
    conditions = entry.get("conditions") or {}
    icons = entry.get("icons") or []
    return {
        "name": entry["name"],
        "title": entry.get("title") or entry["name"],
        "version": entry["version"],
        "type": entry.get("type", ""),
        "release": entry.get("release", ""),
        "description": entry.get("description", ""),
        "icon": icons[0].get("path") if icons else None,
        "categories": [category_title(c) for c in entry.get("categories") or ()],
        "kibana": (conditions.get("kibana") or {}).get("version", ""),
        "agent": (conditions.get("agent") or {}).get("version", ""),
        "deprecated": bool(entry.get("deprecated")),
        "versions": [{"version": v["version"], "release": v.get("release", "")} for v in versions],
    }


def category_title(cid: str) -> str:
    known = CATEGORIES.get(cid)
    return known.title if known is not None else cid


def _choices(snapshot: Snapshot) -> tuple[list[tuple[str, str]], list[str]]:
    """The categories and types any served package has (policy template categories included)."""
    categories: set[str] = set()
    types = set(PACKAGE_TYPES)
    for item in snapshot.packages.values():
        package = item.package
        categories.update(package.categories)
        for template in package.template_categories:
            categories.update(template or ())
        types.add(package.type)
    named = sorted(((cid, category_title(cid)) for cid in categories), key=lambda c: c[1].lower())
    return named, sorted(types)


def package_page(snapshot: Snapshot, name: str, version: str) -> dict[str, Any] | None:
    """The package page's data (its document as /package/{n}/{v}/ has it), or None."""
    item = snapshot.lookup(name, version)
    if item is None:
        return None
    doc = orjson.loads(item.document)
    conditions = doc.get("conditions") or {}
    versions = sorted(
        (i for (n, _), i in snapshot.packages.items() if n == name),
        key=lambda i: i.package.key,
        reverse=True,
    )
    return {
        "doc": doc,
        "title": doc.get("title") or name,
        "icon": (doc.get("icons") or [{}])[0].get("path"),
        "categories": [category_title(c) for c in doc.get("categories") or ()],
        "kibana": (conditions.get("kibana") or {}).get("version", ""),
        "agent": (conditions.get("agent") or {}).get("version", ""),
        "subscription": (conditions.get("elastic") or {}).get("subscription", ""),
        "json": f"/package/{name}/{version}/",
        "download": doc.get("download", ""),
        "signature": doc.get("signature_path", ""),
        "versions": [i.package.version for i in versions],
        "location": item.package.location,
        "item": item,
    }
