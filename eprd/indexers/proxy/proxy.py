"""Proxy mode (§8): the upstream's /search, /categories and packages merged with local ones.

:class:`ProxyMode` is the registry's :class:`~eprd.indexers.fallback.Fallback` when proxy mode
is on: it merges the upstream's /search and /categories answers into the local ones, and
answers for the document and files of packages not found locally. Upstream answers come
through :class:`~eprd.indexers.proxy.cache.UpstreamCache`; merged bodies are memoised per
upstream answer, local snapshot and query, so a warm cache answers at local speed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from eprd.catalog.filters import IndexerObserver, search_entries
from eprd.catalog.query import CategoriesQuery, Filter
from eprd.catalog.snapshot import Body, Snapshot
from eprd.indexers.base import Redirect, Resource
from eprd.indexers.fallback import Fallback, Reply, Served, Unavailable
from eprd.indexers.proxy import shapes
from eprd.indexers.proxy.cache import Answer, Entry, UpstreamCache
from eprd.indexers.proxy.pulled import PulledFiles
from eprd.model import gojson
from eprd.model.categories import CATEGORIES
from eprd.model.versions import VersionError, parse_loose, sort_key
from eprd.upstream.client import UpstreamError

log = logging.getLogger("eprd.proxy")

_MEMO_SIZE = 64  # merged bodies kept per upstream answer (one per local snapshot and query)

LocalEntries = list[tuple[str, str, tuple[Any, ...], bytes]]  # filters.search_entries


class ProxyError(Unavailable):
    """The upstream gave no usable answer and none is cached."""


@dataclass(frozen=True, slots=True)
class Located:
    """Where a remote package's file is (``url``), or None when the upstream has no such package."""

    url: str | None
    stale: bool


def _is_list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


class ProxyMode(Fallback):
    """The upstream side of proxy mode (see the module docstring)."""

    def __init__(self, proxy_to: str, cache: UpstreamCache, pulled: PulledFiles | None = None) -> None:
        parts = urlsplit(proxy_to)
        self.pulled = pulled  # -proxy-cache-artifacts; None: 301 to the upstream
        # Only scheme, user and host of -proxy-to count: a path prefix is ignored, as the reference.
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.cache = cache

    def url(self, path: str, raw_query: str = "") -> str:
        return self.origin + path + (f"?{raw_query}" if raw_query else "")

    async def _get(self, url: str, component: str, check: Any) -> Answer:
        try:
            return await self.cache.get(url, component, check)
        except UpstreamError as err:
            raise ProxyError(str(err)) from None

    # --- /search ------------------------------------------------------------------------------

    async def search(
        self, snap: Snapshot, query: Filter, raw_query: str, observe: IndexerObserver = None
    ) -> Reply:
        """/search: the upstream's answer for the same query string merged into the local one."""
        local = snap.cache.get_or_compute(
            ("search-entries", query), lambda: search_entries(snap, query, observe)
        )
        answer = await self._get(self.url("/search", raw_query), "search", _is_list_of_objects)
        body = _memo(
            answer.entry,
            ("search", snap.generation, query),
            lambda: self._merge_search(answer.entry, local, query.all),
        )
        return Reply(body, answer.stale)

    @staticmethod
    def _merge_search(entry: Entry, local: LocalEntries, all_versions: bool) -> Body:
        # Local entries win a name+version clash; remote ones are not filtered again.
        merged = [(name, key, body) for name, _, key, body in local]
        taken = {(name, version) for name, version, _, _ in local}
        for doc in entry.value:
            name, version = doc.get("name"), doc.get("version")
            if not isinstance(name, str) or not isinstance(version, str) or (name, version) in taken:
                continue
            try:
                key = sort_key(parse_loose(version))
            except VersionError:
                log.debug("proxy mode: skipping a remote package with a bad version", extra={"package": name})
                continue
            taken.add((name, version))
            merged.append((name, key, gojson.encode(shapes.render(doc, shapes.SEARCH_ENTRY))))
        if not all_versions:
            # After the merge, as the reference: a newer remote version hides an older local one.
            latest: dict[str, tuple[str, tuple[Any, ...], bytes]] = {}
            for item in merged:  # local first: a tie keeps the local entry
                current = latest.get(item[0])
                if current is None or item[1] > current[1]:
                    latest[item[0]] = item
            merged = list(latest.values())
        merged.sort(key=lambda item: (item[0], item[1]))
        if not merged:
            return Body(b"[]")
        return Body(gojson.json_list([body for _, _, body in merged]) + b"\n")

    # --- /categories --------------------------------------------------------------------------

    async def categories(
        self, snap: Snapshot, query: CategoriesQuery, raw_query: str, observe: IndexerObserver = None
    ) -> Reply:
        """/categories: the upstream's counts added to the local ones."""
        local = await super().categories(snap, query, raw_query, observe)
        answer = await self._get(self.url("/categories", raw_query), "categories", _is_list_of_objects)
        body = _memo(
            answer.entry,
            ("categories", snap.generation, query),
            lambda: _merge_categories(answer.entry, local.body.data),
        )
        return Reply(body, answer.stale)

    # --- packages -----------------------------------------------------------------------------

    async def package(self, name: str, version: str) -> Reply | None:
        """/package/{n}/{v}/ of a package not found locally; None when the upstream has none."""
        answer = await self._package(name, version)
        if answer.entry.missing:
            return None
        body = _memo(
            answer.entry,
            "document",
            lambda: Body(gojson.dumps(shapes.render(answer.entry.value, shapes.PACKAGE_DOCUMENT))),
        )
        return Reply(body, answer.stale)

    async def _package(self, name: str, version: str) -> Answer:
        url = self.origin + f"/package/{name}/{version}/"
        return await self._get(url, "package", lambda v: isinstance(v, dict))

    async def locate(self, name: str, version: str, kind: str, file: str = "") -> Located:
        """The upstream URL of a remote package's static file, artifact or signature (§8).

        As the reference, the package document is fetched first (an unknown package is a
        404); whether the file itself exists is the upstream's business.
        """
        answer = await self._package(name, version)
        if answer.entry.missing:
            return Located(None, answer.stale)
        if kind == "statics":
            path = f"/package/{name}/{version}/{file}"
        elif kind == "artifacts":
            path = f"/epr/package/{name}-{version}.zip"
        else:
            path = f"/epr/package/{name}-{version}.zip.sig"
        return Located(self.origin + quote(path, safe="/$&+,:;=@"), answer.stale)

    async def resource(self, name: str, version: str, kind: str, path: str = "") -> Served | None:
        """What to serve for a remote package's file.

        None: the upstream has no such package (the handler's own 404). Otherwise a
        :class:`Redirect` to the upstream (the reference), or with ``-proxy-cache-artifacts``
        the file pulled through (:class:`DiskFile`, or ``NotFound``/``Failed``).
        """
        located = await self.locate(name, version, kind, path)
        if located.url is None:
            return None
        resource: Resource = Redirect(located.url)
        if self.pulled is not None:
            resource = await self.pulled.get(located.url, kind, path or located.url)
        return Served(resource, located.stale)


def _memo(entry: Entry, key: Any, build: Any) -> Body:
    body = entry.memo.get(key)
    if body is None:
        if len(entry.memo) >= _MEMO_SIZE:
            entry.memo.clear()
        body = entry.memo[key] = build()
    return body


def _merge_categories(entry: Entry, local_body: bytes) -> Body:
    merged: dict[str, dict[str, Any]] = {c["id"]: dict(c) for c in orjson.loads(local_body)}
    for remote in entry.value:
        cid = remote.get("id")
        if not isinstance(cid, str):
            continue
        count = remote.get("count") if isinstance(remote.get("count"), int) else 0
        if cid in merged:
            merged[cid]["count"] += count
            continue
        doc: dict[str, Any] = {"id": cid, "title": remote.get("title") or "", "count": count}
        parent_id, parent_title = remote.get("parent_id") or "", remote.get("parent_title") or ""
        # The reference looks remote-only categories up in its table by their *title*.
        known = CATEGORIES.get(doc["title"])
        if known is not None:
            doc["title"] = known.title
            parent = CATEGORIES.get(known.parent) if known.parent else None
            if parent is not None:
                parent_id, parent_title = parent.id, parent.title
        if parent_id:
            doc["parent_id"] = parent_id
        if parent_title:
            doc["parent_title"] = parent_title
        merged[cid] = doc
    return Body(gojson.dumps([merged[cid] for cid in sorted(merged)]))
