"""Which versions a mirror holds, asked of the upstream's own ``/search`` (reference, eprd or epr.elastic.co).

Each ``-kibana.version`` and each ``-package`` is one query (their product when both are given),
the selection is the union of the answers; ``-latest N`` asks for every version and keeps the
newest N of each package per query, so it also is "what each Kibana version would see".
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from eprd.model.versions import VersionError, parse_loose, sort_key

# Names and versions become file names in DIR: nothing that could climb out of it or hide.
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True, slots=True)
class Filters:
    """The selection flags of ``eprd mirror``."""

    kibana_versions: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    category: str = ""
    prerelease: bool = False
    all: bool = False
    spec_max: str = ""
    latest: int = 0  # 0: not set


@dataclass(frozen=True, slots=True)
class Version:
    """One selected package version and where the upstream serves its files."""

    name: str
    version: str
    download: str  # URL of the zip
    signature: str | None  # URL of the .zip.sig; None when the upstream has no signature_path

    @property
    def key(self) -> str:
        """``<name>-<version>``: the stem of its files in DIR."""
        return f"{self.name}-{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.key}.zip"


class SelectionError(Exception):
    """The upstream's answer cannot be used (not a list, entries without name/version/download)."""


def queries(filters: Filters) -> list[str]:
    """The ``/search`` query strings, one per combination of ``-kibana.version`` and ``-package``."""
    common: list[tuple[str, str]] = []
    if filters.category:
        common.append(("category", filters.category))
    if filters.prerelease:
        common.append(("prerelease", "true"))
    if filters.all or filters.latest:
        common.append(("all", "true"))
    if filters.spec_max:
        common.append(("spec.max", filters.spec_max))
    kibanas: Iterable[str | None] = filters.kibana_versions or (None,)
    packages: Iterable[str | None] = filters.packages or (None,)
    out = []
    for kibana, package in itertools.product(kibanas, packages):
        params = list(common)
        if kibana is not None:
            params.append(("kibana.version", kibana))
        if package is not None:
            params.append(("package", package))
        out.append(urlencode(params))
    return out


def _version_key(text: str) -> tuple:
    try:
        return (1, sort_key(parse_loose(text)))
    except VersionError:
        return (0, ())  # not a version: sorts oldest, so -latest never prefers it


def newest(versions: list[Version], count: int) -> list[Version]:
    """The newest ``count`` versions of each package among ``versions``."""
    by_name: dict[str, list[Version]] = {}
    for version in versions:
        by_name.setdefault(version.name, []).append(version)
    out = []
    for group in by_name.values():
        group.sort(key=lambda v: _version_key(v.version), reverse=True)
        out.extend(group[:count])
    return out


def _url(base: str, path: str) -> str:
    if path.startswith(("http://", "https://")):
        return path
    return base.rstrip("/") + "/" + path.lstrip("/")


def to_version(base: str, entry: Any) -> Version:
    """A ``/search`` entry as a Version; SelectionError if it lacks what a mirror needs."""
    if not isinstance(entry, dict):
        raise SelectionError(f"a /search entry is not an object: {entry!r}")
    name, version, download = entry.get("name"), entry.get("version"), entry.get("download")
    if not (isinstance(name, str) and isinstance(version, str) and isinstance(download, str)):
        raise SelectionError(f"a /search entry has no name, version or download: {entry!r}")
    if not (_SAFE.fullmatch(name) and _SAFE.fullmatch(version)):
        raise SelectionError(f"unsafe package name or version for a file name: {name!r} {version!r}")
    signature = entry.get("signature_path")
    return Version(name, version, _url(base, download), _url(base, signature) if signature else None)


async def select(base: str, filters: Filters, get_json: Callable[[str], Awaitable[Any]]) -> list[Version]:
    """Ask the upstream at ``base`` and return the selection, sorted by name then version."""
    chosen: dict[tuple[str, str], Version] = {}
    for query in queries(filters):
        url = _url(base, "/search") + (f"?{query}" if query else "")
        answer = await get_json(url)
        if not isinstance(answer, list):
            raise SelectionError(f"{url} did not answer a list")
        found = [to_version(base, entry) for entry in answer]
        if filters.latest:
            found = newest(found, filters.latest)
        for version in found:
            chosen.setdefault((version.name, version.version), version)
    return sorted(chosen.values(), key=lambda v: (v.name, _version_key(v.version)))
