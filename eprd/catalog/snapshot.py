"""The immutable index the server answers from.

A :class:`Snapshot` is built from loaded packages by a pure function
(:func:`build_snapshot`) and never changes afterwards; the server swaps the
whole object when packages change. Everything a request needs is prepared
here: packages by (name, version), each indexer's list in discovery order,
the effective deprecation of every version and its encoded documents.
Responses computed from it are memoised in a bounded cache that lives and
dies with the snapshot.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from eprd.model.package import Package, PackageError, render_document, render_entry


@dataclass(frozen=True, slots=True, eq=False)
class Indexed:
    """A package as served: its effective ``deprecated`` block and its encoded /search entry."""

    package: Package
    deprecated: dict[str, Any] | None
    entry: bytes  # /search entry
    source: str  # the name of the indexer that serves its files

    @property
    def document(self) -> bytes:
        """The /package/{n}/{v}/ body, joined from pre-encoded parts (responses cache it)."""
        return render_document(self.package, self.deprecated)


class Body:
    """A ready JSON response body with its strong ETag; the gzip variant is made once, on demand."""

    __slots__ = ("_gzip", "data", "etag", "headers")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
        self._gzip: bytes | None = None
        # The HTTP layer's header sets for this body, made on first use (eprd.http.responses).
        self.headers: dict[Any, Any] = {}

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gzip"'

    def gzipped(self) -> bytes:
        if self._gzip is None:
            self._gzip = gzip.compress(self.data, compresslevel=6, mtime=0)
        return self._gzip


class ResponseCache:
    """A bounded LRU of ready response bodies, keyed by normalised query or document."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get_or_compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            return value
        value = compute()
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One consistent view of every package, built once and only read afterwards."""

    # (indexer name, its packages in discovery order, duplicates within the indexer removed)
    indexers: tuple[tuple[str, tuple[Indexed, ...]], ...]
    packages: dict[tuple[str, str], Indexed]  # first indexer wins
    rejected: tuple[PackageError, ...]
    built_at: float
    generation: int
    cache: ResponseCache = field(default_factory=lambda: ResponseCache(4096))

    def lookup(self, name: str, version: str) -> Indexed | None:
        return self.packages.get((name, version))

    def __len__(self) -> int:
        return len(self.packages)


def build_snapshot(
    indexers_packages: Iterable[tuple[str, Iterable[Package]]],
    rejected: Iterable[PackageError] = (),
    generation: int = 1,
    previous: Snapshot | None = None,
) -> Snapshot:
    """Combine the packages of each indexer, in precedence order, with the reference's rules.

    ``previous`` lets documents whose package and deprecation did not change be
    reused instead of re-encoded.
    """
    reuse = _reusable(previous)
    indexers = []
    merged: dict[tuple[str, str], Indexed] = {}
    for name, packages in indexers_packages:
        unique = _first_of_each(packages)
        inherited = _deprecations(unique)
        served = tuple(_indexed(p, inherited.get(p.name), reuse, name) for p in unique)
        indexers.append((name, served))
        for item in served:
            merged.setdefault((item.package.name, item.package.version), item)
    return Snapshot(
        indexers=tuple(indexers),
        packages=merged,
        rejected=tuple(rejected),
        built_at=time.time(),
        generation=generation,
    )


def _first_of_each(packages: Iterable[Package]) -> list[Package]:
    """Drop later duplicates of the same name and version (the earliest package path wins)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for package in packages:
        key = (package.name, package.version)
        if key not in seen:
            seen.add(key)
            out.append(package)
    return out


def _deprecations(packages: list[Package]) -> dict[str, dict[str, Any]]:
    """Per name, the ``deprecated`` block of its highest deprecated version (§1.4)."""
    best: dict[str, Package] = {}
    for package in packages:
        if package.deprecated is None:
            continue
        current = best.get(package.name)
        if current is None or package.key > current.key:
            best[package.name] = package
    return {name: p.deprecated for name, p in best.items() if p.deprecated is not None}


def _reusable(previous: Snapshot | None) -> dict[int, Indexed]:
    if previous is None:
        return {}
    return {id(item.package): item for _, items in previous.indexers for item in items}


def _indexed(
    package: Package, deprecated: dict[str, Any] | None, reuse: dict[int, Indexed], source: str
) -> Indexed:
    old = reuse.get(id(package))
    if old is not None and old.package is package and old.deprecated == deprecated and old.source == source:
        return old
    return Indexed(package, deprecated, render_entry(package, deprecated), source)
