"""The Package Storage v2 bucket layout (the reference's ``internal/storage`` format).

Internal side (``-storage-indexer-bucket-internal``)::

    v2/metadata/cursor.json                          {"current": "<cursor>"}
    v2/metadata/<cursor>/search-index-all.json       {"packages": [{"package_manifest": <doc>}, ...]}
    v2/metadata/<cursor>/search-index-delta.json     {"added": [...], "updated": [...],
                                                      "removed": [{"name", "version"}]}

Public side (``-storage-endpoint``)::

    artifacts/packages/<name>-<version>.zip[.sig]
    artifacts/static/<name>-<version>/<path>

Each ``<doc>`` is exactly the ``/package/{n}/{v}/`` document of that version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from eprd.model.document import package_from_document
from eprd.model.package import Package, PackageError

METADATA = "v2/metadata/"
CURSOR = METADATA + "cursor.json"
INDEX_ALL = "search-index-all.json"
INDEX_DELTA = "search-index-delta.json"
ARTIFACTS = "artifacts/packages/"
STATICS = "artifacts/static/"


class StorageIndexError(ValueError):
    """A cursor, index or delta file that cannot be used."""


def index_key(cursor: str, name: str) -> str:
    return f"{METADATA}{cursor}/{name}"


def artifact_key(name: str, version: str, signature: bool = False) -> str:
    return f"{ARTIFACTS}{name}-{version}.zip" + (".sig" if signature else "")


def static_key(name: str, version: str, path: str) -> str:
    return f"{STATICS}{name}-{version}/{path}"


def parse_cursor(data: bytes) -> str:
    """The ``current`` cursor of a ``cursor.json``."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise StorageIndexError(f"cursor.json is not valid JSON: {err}") from None
    current = doc.get("current") if isinstance(doc, dict) else None
    if not isinstance(current, str) or not current or "/" in current:
        raise StorageIndexError('cursor.json has no usable "current" cursor')
    return current


def cursor_document(cursor: str) -> bytes:
    return orjson.dumps({"current": cursor})


@dataclass(slots=True)
class Parsed:
    """Packages read from an index or delta file, and the entries that could not be used."""

    packages: list[Package] = field(default_factory=list)
    rejected: list[PackageError] = field(default_factory=list)


def _entries(entries: Any, where: str, parsed: Parsed) -> None:
    if entries is None:
        return
    if not isinstance(entries, list):
        raise StorageIndexError(f"{where}: expected a list of packages")
    for number, entry in enumerate(entries):
        location = f"{where}#{number}"
        manifest = entry.get("package_manifest") if isinstance(entry, dict) else None
        try:
            parsed.packages.append(package_from_document(manifest, location))
        except PackageError as err:
            parsed.rejected.append(err)


def parse_index(data: bytes, where: str) -> Parsed:
    """The packages of a ``search-index-all.json``, in index order (CPU-bound: run off the loop)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise StorageIndexError(f"{where} is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("packages"), list):
        raise StorageIndexError(f'{where} has no "packages" list')
    parsed = Parsed()
    _entries(doc["packages"], where, parsed)
    return parsed


@dataclass(slots=True)
class Delta:
    """A ``search-index-delta.json``: what changed from the previous cursor."""

    changed: Parsed  # added and updated versions, in file order
    removed: list[tuple[str, str]]


def parse_delta(data: bytes, where: str) -> Delta:
    """A delta file (CPU-bound: run off the loop)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise StorageIndexError(f"{where} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise StorageIndexError(f"{where} is not a JSON object")
    changed = Parsed()
    _entries(doc.get("added"), f"{where} added", changed)
    _entries(doc.get("updated"), f"{where} updated", changed)
    removed = []
    for entry in doc.get("removed") or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise StorageIndexError(f"{where}: bad removed entry {entry!r}")
        removed.append((entry["name"], str(entry.get("version", ""))))
    return Delta(changed, removed)


def index_document(documents: list[bytes]) -> bytes:
    """A ``search-index-all.json`` from encoded package documents, in order."""
    return b'{"packages":[' + b",".join(b'{"package_manifest":' + d + b"}" for d in documents) + b"]}"


def delta_document(added: list[bytes], updated: list[bytes], removed: list[tuple[str, str]]) -> bytes:
    """A ``search-index-delta.json`` from encoded documents and removed (name, version) pairs."""

    def wrap(documents: list[bytes]) -> bytes:
        return b"[" + b",".join(b'{"package_manifest":' + d + b"}" for d in documents) + b"]"

    removed_doc = orjson.dumps([{"name": n, "version": v} for n, v in removed])
    return b'{"added":' + wrap(added) + b',"updated":' + wrap(updated) + b',"removed":' + removed_doc + b"}"
