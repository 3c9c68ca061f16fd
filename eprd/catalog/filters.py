"""``/search`` and ``/categories``: selecting package versions from a snapshot (§5)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eprd.catalog.query import CategoriesQuery, Filter
from eprd.catalog.snapshot import Body, Indexed, Snapshot
from eprd.model import gojson
from eprd.model.categories import CATEGORIES, has_category
from eprd.model.package import Package, render_entry, template_summaries


class FilterError(ValueError):
    """Filtering could not be done (a package without a spec version under ``spec.*``)."""


def search_body(snapshot: Snapshot, query: Filter, observe: IndexerObserver = None) -> bytes:
    """The ``/search`` response body."""
    entries = [entry for _, _, _, entry in search_entries(snapshot, query, observe)]
    if not entries:
        return b"[]"
    return gojson.json_list(entries) + b"\n"


def cached_search(snapshot: Snapshot, query: Filter, observe: IndexerObserver = None) -> Body:
    """The ``/search`` body for ``query``, computed once per snapshot (kept in its response cache)."""
    return snapshot.cache.get_or_compute(
        ("search", query), lambda: Body(search_body(snapshot, query, observe))
    )


def cached_categories(snapshot: Snapshot, query: CategoriesQuery, observe: IndexerObserver = None) -> Body:
    """The ``/categories`` body for ``query``, computed once per snapshot."""
    return snapshot.cache.get_or_compute(
        ("categories", query), lambda: Body(categories_body(snapshot, query, observe))
    )


def search_entries(
    snapshot: Snapshot, query: Filter, observe: IndexerObserver = None
) -> list[tuple[str, str, tuple[Any, ...], bytes]]:
    """The selected packages as (name, version, version sort key, encoded entry), in /search order.

    Proxy mode merges remote entries into this list before encoding the response.
    """
    results = _select(snapshot, query, observe)
    results.sort(key=lambda r: (r[0].package.name, r[0].package.key))
    return [
        (
            item.package.name,
            item.package.version,
            item.package.key,
            item.entry if templates is None else _trimmed(item, templates),
        )
        for item, templates in results
    ]


def categories_body(snapshot: Snapshot, query: CategoriesQuery, observe: IndexerObserver = None) -> bytes:
    """The ``/categories`` response body."""
    counts: dict[str, int] = {}
    for item, _ in _select(snapshot, query.filter, observe):
        _count(item.package, counts, query.include_policy_templates)
    out = []
    for cid in sorted(counts):
        known = CATEGORIES.get(cid)
        doc: dict[str, Any] = {"id": cid, "title": known.title if known else cid, "count": counts[cid]}
        parent = CATEGORIES.get(known.parent) if known and known.parent else None
        if parent is not None:
            doc["parent_id"] = parent.id
            doc["parent_title"] = parent.title
        out.append(doc)
    return gojson.dumps(out)


Selected = tuple[Indexed, list[dict[str, Any]] | None]  # package, trimmed policy templates (or None)


# Told the indexer name and the seconds one selection in it took (epr_indexer_get_duration_seconds).
IndexerObserver = Callable[[str, float], None] | None


def _select(snapshot: Snapshot, query: Filter, observe: IndexerObserver = None) -> list[Selected]:
    merged: dict[tuple[str, str], Selected] = {}
    for indexer, items in snapshot.indexers:
        started = time.perf_counter()
        found = _select_in_indexer(items, query)
        if observe is not None:
            observe(indexer, time.perf_counter() - started)
        for selected in found:
            package = selected[0].package
            merged.setdefault((package.name, package.version), selected)
    if query.all:
        return list(merged.values())
    latest: dict[str, Selected] = {}
    for selected in merged.values():
        current = latest.get(selected[0].package.name)
        if current is None or selected[0].package.key > current[0].package.key:
            latest[selected[0].package.name] = selected
    return list(latest.values())


def _select_in_indexer(items: tuple[Indexed, ...], query: Filter) -> list[Selected]:
    legacy = query.experimental
    matching = [item for item in items if _matches(item.package, query, legacy)]
    if legacy:
        matching = _legacy_versions(matching, query.all)
    elif not query.all:
        matching = _latest(matching, lambda p: p.key)
    if not query.category:
        return [(item, None) for item in matching]
    selected = []
    for item in matching:
        result = _category_match(item.package, query.category)
        if result is not False:
            selected.append((item, result))
    return selected


def _matches(package: Package, query: Filter, legacy: bool) -> bool:
    if not legacy:
        if package.release == "experimental" and not query.prerelease:
            return False
        if package.prerelease and not query.prerelease:
            return False
    if query.kibana is not None and package.kibana is not None and not package.kibana.check(query.kibana):
        return False
    if query.package and package.name != query.package:
        return False
    if query.type and package.type != query.type:
        return False
    if legacy:
        return True
    if query.agent is not None and package.agent is not None and not package.agent.check(query.agent):
        return False
    if (
        query.capabilities is not None
        and package.capabilities is not None
        and not all(c in query.capabilities for c in package.capabilities)
    ):
        return False
    for kind, names in query.discovery:
        if not _discovery_match(package, kind, names):
            return False
    return _spec_match(package, query)


def _discovery_match(package: Package, kind: str, names: tuple[str, ...]) -> bool:
    if kind == "fields":
        return bool(package.discovery_fields) and all(f in names for f in package.discovery_fields)
    return bool(package.discovery_datasets) and any(d in names for d in package.discovery_datasets)


def _spec_match(package: Package, query: Filter) -> bool:
    if query.spec_min is None and query.spec_max is None:
        return True
    if package.spec is None:
        raise FilterError(
            f"can't compare spec version for {package.name} ({query.spec_text}): "
            "package spec version is not set"
        )
    if query.spec_min is not None and package.spec < query.spec_min:
        return False
    return query.spec_max is None or package.spec <= query.spec_max


def _latest(items: list[Indexed], key: Any) -> list[Indexed]:
    """The highest version of each name (by ``key``), the first seen winning ties."""
    best: dict[str, Indexed] = {}
    for item in items:
        current = best.get(item.package.name)
        if current is None or key(item.package) > key(current.package):
            best[item.package.name] = item
    return list(best.values())


def _legacy_versions(items: list[Indexed], all_versions: bool) -> list[Indexed]:
    """Version selection of the deprecated ``experimental=true`` mode (§5.8)."""
    if not all_versions:
        return _latest(items, lambda p: (not p.prerelease, p.key))
    stable = {i.package.name for i in items if not i.package.prerelease and i.package.major > 0}
    return [
        i for i in items if i.package.name not in stable or (not i.package.prerelease and i.package.major > 0)
    ]


def _category_match(package: Package, category: str) -> list[dict[str, Any]] | bool | None:
    """None: matched as a whole; a list: matched through these policy templates; False: no match."""
    if has_category(package.categories, category):
        return None
    if not any(cats and has_category(cats, category) for cats in package.template_categories):
        return False
    return [t for t in template_summaries(package) if category in t.get("categories", ())]


def _trimmed(item: Indexed, templates: list[dict[str, Any]]) -> bytes:
    return render_entry(item.package, item.deprecated, templates)


def _count(package: Package, counts: dict[str, int], include_templates: bool) -> None:
    for category in package.categories:
        counts[category] = counts.get(category, 0) + 1
    if not include_templates:
        return
    templates = package.template_categories
    if len(templates) == 1 and templates[0] is None:
        return
    extra_seen: set[str] = set()
    for template in templates:
        for category in package.categories:
            counts[category] = counts.get(category, 0) + 1
        for category in template or ():
            if not has_category(package.categories, category) and category not in extra_seen:
                extra_seen.add(category)
                counts[category] = counts.get(category, 0) + 1
            counts[category] = counts.get(category, 0) + 1
