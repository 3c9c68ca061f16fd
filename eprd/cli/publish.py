"""``eprd publish -to URL [-public-to URL] PATH...``: write a Package Storage v2 bucket.

The package folders and zips under each PATH are loaded and validated exactly as
serving loads them; if any version is invalid, every invalid one is listed and nothing
is uploaded (exit 1). Otherwise, in this order:

1. each version's zip (+ ``.sig``) and its files go to the public side (``-public-to``,
   default ``-to``) under ``artifacts/``, with their real content types, skipping every
   object whose MD5 already matches (re-publishing unchanged content uploads nothing);
2. the full index and the delta against the current cursor go under a new cursor folder
   of the internal side (``-to``);
3. ``cursor.json`` is written last, so a reader never sees a cursor whose files are
   incomplete. If the index did not change, no new cursor is written.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from eprd.indexers.local.archives import top_folder, write_zip
from eprd.indexers.local.indexer import load_snapshot
from eprd.indexers.storage import layout
from eprd.indexers.storage.objectstore import ObjectNotFound, ObjectStore, StorageError, open_store, split_url
from eprd.model.files import ZipFiles
from eprd.model.mediatypes import content_type
from eprd.model.package import LoadOptions, Package, render_document
from eprd.ops import logs

log = logging.getLogger("eprd.publish")

SIGNATURE_TYPE = "application/pgp-signature"
METADATA_CACHE = "no-cache, max-age=0"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eprd publish",
        description="Publish package folders and zips to a Package Storage v2 bucket.",
        prefix_chars="-",
        allow_abbrev=False,
    )
    parser.add_argument("-to", "--to", required=True, help="internal bucket: gs://, s3:// or file:// URL")
    parser.add_argument(
        "-public-to", "--public-to", default="", help="public bucket for artifacts (default -to)"
    )
    parser.add_argument(
        "-public-read",
        "--public-read",
        action="store_true",
        help="give artifacts a public-read ACL (when no bucket policy makes them public)",
    )
    parser.add_argument("-parallel", "--parallel", type=int, default=16, help="concurrent uploads")
    parser.add_argument(
        "-package-paths-workers", "--package-paths-workers", type=int, default=os.cpu_count() or 1
    )
    parser.add_argument("-disable-package-validation", "--disable-package-validation", action="store_true")
    parser.add_argument(
        "-require-package-signatures",
        "--require-package-signatures",
        nargs="?",
        const="true",
        default="false",
        help="refuse versions without a signature file (default false)",
    )
    parser.add_argument("-cursor", "--cursor", default="", help="the new cursor (default: Unix seconds)")
    parser.add_argument("-log-level", "--log-level", default="warn")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="package paths, as in package_paths")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``eprd publish``; the return value is the exit code."""
    args = _parser().parse_args(list(argv))
    logs.setup(args.log_level if args.log_level in logs.LEVELS else "warn", "dev", logs.service_fields())
    try:
        split_url(args.to)
        if args.public_to:
            split_url(args.public_to)
    except ValueError as err:
        print(f"eprd publish: {err}", file=sys.stderr)
        return 2
    options = LoadOptions(
        validate=not args.disable_package_validation,
        require_signature=args.require_package_signatures in ("1", "t", "T", "TRUE", "true", "True"),
    )
    snapshot = load_snapshot(args.paths, options, max(1, args.package_paths_workers))
    if snapshot.rejected:
        for error in snapshot.rejected:
            print(f"invalid package {error.location}: {error.reason}", file=sys.stderr)
        print(f"{len(snapshot.rejected)} invalid package versions: nothing published", file=sys.stderr)
        return 1
    if not len(snapshot):
        print("eprd publish: no packages found", file=sys.stderr)
        return 1
    packages = [item.package for item in snapshot.packages.values()]
    try:
        report = asyncio.run(
            publish(
                packages, args.to, args.public_to or args.to, args.parallel, args.cursor, args.public_read
            )
        )
    except StorageError as err:
        print(f"eprd publish: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


@dataclass
class Report:
    """What one publish did."""

    versions: int = 0
    uploaded: int = 0
    unchanged: int = 0
    cursor: str | None = None  # the new cursor, None if the index did not change
    added: int = 0
    updated: int = 0
    removed: int = 0

    def summary(self) -> str:
        index = (
            f"cursor {self.cursor} (added {self.added}, updated {self.updated}, removed {self.removed})"
            if self.cursor
            else "index unchanged"
        )
        return (
            f"{self.versions} package versions: {self.uploaded} objects uploaded, "
            f"{self.unchanged} unchanged; {index}"
        )


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.tty:
            width = 30
            filled = width * self.done // max(1, self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} versions")
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _objects(package: Package) -> list[tuple[str, bytes, str]]:
    """(key, content, content type) of every public object of one version (runs in a thread)."""
    files = package.files
    assert files is not None
    out = []
    if isinstance(files, ZipFiles):
        with open(files.location, "rb") as fh:
            archive = fh.read()
    else:
        buffer = io.BytesIO()
        write_zip(files, top_folder(package), buffer)
        archive = buffer.getvalue()
    out.append((layout.artifact_key(package.name, package.version), archive, "application/zip"))
    if package.signature and os.path.isfile(package.signature):
        with open(package.signature, "rb") as fh:
            out.append((layout.artifact_key(package.name, package.version, True), fh.read(), SIGNATURE_TYPE))
    for entry in files.entries():
        if entry.is_dir:
            continue
        data = files.read(entry.path)
        ctype = content_type(entry.path, data[:512])
        out.append((layout.static_key(package.name, package.version, entry.path), data, ctype))
    return out


def compact_document(package: Package) -> bytes:
    """The version's /package/{n}/{v}/ document (its own deprecation), compact for the index."""
    return orjson.dumps(orjson.loads(render_document(package, package.deprecated)))


async def _upload_if_changed(
    store: ObjectStore, key: str, data: bytes, ctype: str, report: Report, cache_control: str = ""
) -> None:
    if await store.md5(key) == hashlib.md5(data).hexdigest():
        report.unchanged += 1
        return
    await store.put(key, data, ctype, cache_control)
    report.uploaded += 1


async def _current(store: ObjectStore) -> tuple[str | None, dict[tuple[str, str], bytes]]:
    """The bucket's cursor and its documents by (name, version); (None, {}) for a new bucket."""
    try:
        cursor = layout.parse_cursor(await store.get(layout.CURSOR))
    except ObjectNotFound:
        return None, {}
    except layout.StorageIndexError as err:
        log.warning("ignoring the bucket's unusable cursor: %s", err)
        return None, {}
    try:
        data = await store.get(layout.index_key(cursor, layout.INDEX_ALL))
        doc = orjson.loads(data)
    except (ObjectNotFound, orjson.JSONDecodeError) as err:
        log.warning("the current cursor %s has no readable index (%s): publishing a full index", cursor, err)
        return cursor, {}
    documents = {}
    for entry in doc.get("packages") or ():
        manifest = entry.get("package_manifest") if isinstance(entry, dict) else None
        if isinstance(manifest, dict) and "name" in manifest and "version" in manifest:
            documents[(manifest["name"], manifest["version"])] = orjson.dumps(manifest)
    return cursor, documents


def _next_cursor(previous: str | None, wanted: str) -> str:
    """A cursor that sorts after ``previous`` as a string (readers apply cursors in string order)."""
    cursor = wanted or str(int(time.time()))
    if previous is not None and cursor <= previous:
        if previous.isdigit():
            cursor = str(int(previous) + 1).zfill(len(previous))
        else:
            cursor = previous + "-" + str(int(time.time()))
    return cursor


async def publish(
    packages: list[Package],
    to: str,
    public_to: str,
    parallel: int = 16,
    cursor: str = "",
    public_read: bool = False,
) -> Report:
    """Upload ``packages`` and index them under a new cursor of ``to``; see the module docstring."""
    internal = open_store(to)
    public = open_store(public_to, public_read)
    report = Report(versions=len(packages))
    try:
        limit = asyncio.Semaphore(max(1, parallel))
        # A few versions' objects in memory at a time, not the whole collection's zips.
        versions = asyncio.Semaphore(max(2, parallel // 4))
        progress = _Progress(len(packages))

        async def one(key: str, data: bytes, ctype: str) -> None:
            async with limit:
                await _upload_if_changed(public, key, data, ctype, report)

        async def version(package: Package) -> None:
            async with versions:
                objects = await asyncio.to_thread(_objects, package)
                await asyncio.gather(*(one(*o) for o in objects))
            progress.step()

        await asyncio.gather(*(version(p) for p in packages))

        previous, old = await _current(internal)
        new = {(p.name, p.version): compact_document(p) for p in packages}
        added = [doc for key, doc in new.items() if key not in old]
        updated = [doc for key, doc in new.items() if key in old and old[key] != doc]
        removed = [key for key in old if key not in new]
        if previous is not None and old and not (added or updated or removed):
            return report
        report.cursor = _next_cursor(previous, cursor)
        report.added, report.updated, report.removed = len(added), len(updated), len(removed)
        folder = report.cursor
        await internal.put(
            layout.index_key(folder, layout.INDEX_ALL),
            layout.index_document(list(new.values())),
            "application/json",
            METADATA_CACHE,
        )
        if previous is not None:
            await internal.put(
                layout.index_key(folder, layout.INDEX_DELTA),
                layout.delta_document(added, updated, removed),
                "application/json",
                METADATA_CACHE,
            )
        # Last: readers only ever see a cursor whose index files are all written.
        await internal.put(layout.CURSOR, layout.cursor_document(folder), "application/json", METADATA_CACHE)
        report.uploaded += 3 if previous is not None else 2
        return report
    finally:
        await internal.close()
        await public.close()
