"""The reference's two local indexers over one :class:`Collection`: zips, then folders.

Both see the same package paths (one scan, one index cache, one watcher) and
differ in which candidates they hold: ``ZipFileSystemIndexer`` the ``.zip``
files, ``FileSystemIndexer`` the version folders. Files are served from disk:
folders with sendfile, zip entries from memory, downloads from the archive cache.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Sequence

from eprd.catalog.snapshot import Snapshot
from eprd.indexers.base import ZIP, Changed, DiskFile, Failed, Indexer, MemoryFile, NotFound, Resource
from eprd.indexers.combined import build
from eprd.indexers.local.archives import ArchiveError, ArchiveStore
from eprd.indexers.local.collection import Collection
from eprd.indexers.local.watcher import Watcher
from eprd.model.files import DirFiles, PackageFileError
from eprd.model.mediatypes import content_type, content_type_by_name, sniff
from eprd.model.package import LoadOptions, Package, PackageError

log = logging.getLogger("eprd.loader")

ZIP_INDEXER = "ZipFileSystemIndexer"
DIR_INDEXER = "FileSystemIndexer"


class LocalIndexer(Indexer):
    """The packages of one kind of candidate (``zip`` or ``dir``) in a :class:`Collection`."""

    def __init__(
        self,
        collection: Collection,
        kind: str,
        archives: ArchiveStore | None,
        watcher: Watcher | None = None,
    ) -> None:
        self.name = ZIP_INDEXER if kind == "zip" else DIR_INDEXER
        self.collection = collection
        self.kind = kind
        self.archives = archives
        self.watcher = watcher
        self.task = "watcher" if watcher is not None else f"indexer-{kind}"

    def packages(self) -> Sequence[Package]:
        return self.collection.packages_of(self.kind)

    def rejected(self) -> Sequence[PackageError]:
        return self.collection.rejected_of(self.kind)

    async def run(self, changed: Changed) -> None:
        if self.watcher is not None:
            await self.watcher.run(changed)

    async def static(self, package: Package, path: str) -> Resource:
        files = package.files
        if isinstance(files, DirFiles):
            real = files.resolve(path)
            if real is None:
                return NotFound("resource not found")
            return DiskFile(real, _disk_content_type(real))
        info = files.info(path)
        if info is None:
            return NotFound("resource not found")
        try:
            body = await asyncio.to_thread(files.read, path)
        except PackageFileError as err:  # the zip was replaced by a damaged one since it was loaded
            log.warning("package file cannot be read: %s", err, extra={"file.path": files.location})
            return NotFound("resource not found")
        except Exception as err:
            # Whatever else a damaged entry raises (zlib.error, NotImplementedError for an unknown
            # method, RuntimeError for encryption, EOFError, OSError): this file cannot be served,
            # the package and the server stay up.
            reason = f"cannot read package file {files.location}:{path}: {type(err).__name__}: {err}"
            return Failed(reason, 404, "resource not found", err)
        return MemoryFile(
            body,
            content_type(path, body[:512]),
            info.mtime,
            f'"{info.crc:08x}-{info.size:x}-{int(info.mtime):x}"',
        )

    async def artifact(self, package: Package, fmt: str) -> Resource:
        if self.archives is None:
            return Failed(f"no archive cache to build the download of {package.location}")
        try:
            # (never an error of the archive cache: built in memory when the cache cannot be used)
            found = await self.archives.fetch(package, fmt)
        except (ArchiveError, PackageFileError) as err:  # a file of the package cannot be read any more
            log.warning("package archive cannot be built: %s", err, extra={"file.path": package.location})
            return NotFound("artifact not found")
        except Exception as err:
            # Any other failure to read the package's files (a file removed or renamed since loading,
            # a damaged entry): no archive to send, rather than a 500 or a cut-off body.
            reason = f"cannot build archive of {package.location}: {type(err).__name__}: {err}"
            return Failed(reason, 404, "artifact not found", err)
        ctype = "application/zip" if fmt == ZIP else "application/gzip"
        if found.file is not None:
            return DiskFile(found.file.name, ctype, opened=found.file)
        return MemoryFile(found.body or b"", ctype, 0.0, found.etag or "")

    async def signature(self, package: Package) -> Resource:
        sig = package.signature
        if sig is None or not os.path.isfile(sig):
            return Failed(f"no signature file for {package.location}")
        return DiskFile(sig, content_type(sig))

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()


def local_indexers(
    collection: Collection, archives: ArchiveStore | None, watcher: Watcher | None = None
) -> list[LocalIndexer]:
    """The zip indexer, then the folder indexer (the reference's precedence); the latter runs the watcher.

    Without ``archives`` (``-dry-run``) downloads of folder packages cannot be built.
    """
    return [LocalIndexer(collection, "zip", archives), LocalIndexer(collection, "dir", archives, watcher)]


def load_snapshot(package_paths: Iterable[str], options: LoadOptions, workers: int = 1) -> Snapshot:
    """Scan ``package_paths`` and load everything into a first snapshot (no index cache, no downloads)."""
    started = time.monotonic()
    collection = Collection(list(package_paths), options, workers=workers)
    collection.load_all()
    snapshot = build(local_indexers(collection, None))
    log_loaded(log, snapshot, collection, started)
    return snapshot


def log_loaded(logger: logging.Logger, snapshot: Snapshot, collection: Collection, started: float) -> None:
    """The ``packages loaded`` line of a start-up (``started``: time.monotonic() when loading began)."""
    logger.info(
        "packages loaded",
        extra={
            "packages.served": len(snapshot),
            "packages.rejected": len(collection.rejected),
            "packages.from_cache": collection.reused,
            "event.duration": int((time.monotonic() - started) * 1e9),
        },
    )


def _disk_content_type(path: str) -> str:
    known = content_type_by_name(path)
    if known is not None:
        return known
    try:
        with open(path, "rb") as fh:
            return sniff(fh.read(512))
    except OSError:  # gone since it was resolved: the response answers 404 when it opens it
        return sniff(b"")
