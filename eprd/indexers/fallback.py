"""The request-time half of the indexer seam: what answers for packages no snapshot holds.

An :class:`~eprd.indexers.base.Indexer` lists what it holds, so the snapshot can be built from it.
A source that cannot list what it holds (proxy mode's upstream registry, §8) is asked at request
time instead, through a :class:`Fallback`: every handler asks ``registry.fallback`` for the
answer to its request, given the local snapshot. The base class adds nothing (the local answers
as they are, no package beyond the snapshot); :class:`~eprd.indexers.proxy.proxy.ProxyMode`
merges the upstream's answers into the local ones and serves the upstream's packages.
"""

from __future__ import annotations

from dataclasses import dataclass

from eprd.catalog.filters import IndexerObserver, cached_categories, cached_search
from eprd.catalog.query import CategoriesQuery, Filter
from eprd.catalog.snapshot import Body, Snapshot
from eprd.indexers.base import Resource

# Told to clients on an answer built from an upstream answer older than its cache time.
STALE_HEADERS = (("Warning", '110 - "Response is Stale"'), ("X-Eprd-Stale", "true"))


@dataclass(frozen=True, slots=True)
class Reply:
    """A JSON body to answer with, and whether it rests on a stale upstream answer."""

    body: Body
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Served:
    """A file of a package no snapshot holds, and whether it rests on a stale upstream answer."""

    resource: Resource
    stale: bool = False


class Unavailable(Exception):
    """The fallback could not answer and has nothing cached to answer with: the handlers answer 500."""


class Fallback:
    """No fallback: the local answers, unchanged (the registry's default)."""

    async def search(
        self, snap: Snapshot, query: Filter, raw_query: str, observe: IndexerObserver = None
    ) -> Reply:
        """The ``/search`` answer for ``query`` (``raw_query``: the request's query string)."""
        return Reply(cached_search(snap, query, observe))

    async def categories(
        self, snap: Snapshot, query: CategoriesQuery, raw_query: str, observe: IndexerObserver = None
    ) -> Reply:
        """The ``/categories`` answer for ``query``."""
        return Reply(cached_categories(snap, query, observe))

    async def package(self, name: str, version: str) -> Reply | None:
        """The document of a package the snapshot does not hold; None: the local 404."""
        return None

    async def resource(self, name: str, version: str, kind: str, path: str = "") -> Served | None:
        """A file of a package the snapshot does not hold: ``kind`` is statics (``path`` in the
        package), artifacts or signatures. None: the local 404."""
        return None
