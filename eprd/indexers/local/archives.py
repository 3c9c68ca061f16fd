"""Download archives of packages, built once per package content and kept on disk.

Directory packages are zipped (and every package tarred) on first request into
a content-addressed cache folder: the file name is the package's content key,
so an archive built for old content is never served for new content. The HTTP
layer then sends the file with sendfile, Content-Length and Range support.

The cache folder may be shared by several tasks, threads and eprd processes, and
may stop being writable at any time, so:

* every file in it may vanish or appear between any two system calls: a listing
  is a hint, an archive is used only once it is open, and a vanished file is
  normal, never an error of the download that met it;
* a download never fails because of the cache: when the folder cannot be made,
  written or filled, the archive is built in memory for that request and the
  problem is logged once (until the cache works again);
* an archive is only stored under a content key when the package's files did not
  change while it was built (a folder being copied in is re-read).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO

from eprd.indexers.local.archivewrite import (
    TAR_GZ,
    ZIP,
    ArchiveError,
    FilesChanged,
    content_key,
    top_folder,
    write,
    write_tar_gz,
    write_zip,
)
from eprd.model.files import PackageFileError, ZipFiles
from eprd.model.package import Package

# (re-exported: what other modules and tests took from here before the writers had their own module)
__all__ = [
    "TAR_GZ",
    "ZIP",
    "Archive",
    "ArchiveError",
    "ArchiveStore",
    "content_key",
    "top_folder",
    "write_tar_gz",
    "write_zip",
]

log = logging.getLogger("eprd.archives")

_BUILDING = ".building-"  # prefix of archives being written (temporary files)
# What eviction may delete: built archives, and proxy mode's pulled files (eprd.indexers.proxy.pulled).
# Anything else in the folder is not eprd's and is left alone.
_CACHED_NAME = re.compile(r"[0-9a-f]{32}\.(?:zip|tar\.gz)|remote-[0-9a-f]{64}(?:\.[^/]*)?")
# A file another process is writing is touched with every write; one untouched this long was
# left by a build that died (a killed process) and is deleted by eviction.
_ABANDONED_S = 3600.0
_BUILD_ATTEMPTS = 3  # builds of a folder that keeps changing while it is read, before giving up caching


@dataclass(frozen=True, slots=True)
class Archive:
    """A download archive ready to send: an open file (in the cache or the package zip), or bytes."""

    file: BinaryIO | None = None  # the caller closes it
    body: bytes | None = None  # built on the fly when the cache cannot be used
    etag: str | None = None  # for ``body``: the content key and size


@dataclass(frozen=True, slots=True)
class _Built:
    key: str
    path: str | None  # in the cache
    body: bytes | None = None  # when it could not be cached


class ArchiveStore:
    """Builds archives into ``folder`` on demand, one build per content key at a time."""

    recent_s = 60.0  # an archive used this recently is never evicted: a download may be opening it
    cache_retry_s = 30.0  # after a cache failure, builds skip the cache this long (built in memory)

    def __init__(self, folder: str, max_bytes: int = 2 * 1024**3) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._building: dict[tuple[str, str], asyncio.Future[_Built]] = {}
        # Content key per loaded package. A package object is replaced when the watcher sees its
        # files change, so the key is worked out once per package object, not per download.
        self._keys: OrderedDict[int, tuple[Package, str]] = OrderedDict()
        self._state = threading.Lock()  # the fields below, written from build threads
        self._cache_broken = False  # a cache problem was logged and has not cleared since
        self._skip_cache_until = 0.0
        self._evict_broken = False
        self._evicting = threading.Lock()
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            self._cache_failed(err)  # downloads are built in memory until the folder can be made

    async def _key(self, package: Package) -> str:
        known = self._keys.get(id(package))
        if known is not None and known[0] is package:
            self._keys.move_to_end(id(package))
            return known[1]
        key = await asyncio.get_running_loop().run_in_executor(None, self._content_key, package)
        self._remember(package, key)
        return key

    def _remember(self, package: Package, key: str) -> None:
        self._keys[id(package)] = (package, key)
        self._keys.move_to_end(id(package))
        if len(self._keys) > 4096:
            self._keys.popitem(last=False)

    async def get(self, package: Package, fmt: str) -> str:
        """The path of the ``fmt`` archive of ``package`` in the cache, building it if needed.

        OSError when it cannot be cached (use :meth:`fetch` to serve it regardless).
        """
        archive = await self.fetch(package, fmt)
        if archive.file is None:
            raise OSError(f"the archive cache {self.folder} cannot be used")
        with archive.file:
            return archive.file.name  # type: ignore[no-any-return]

    async def fetch(self, package: Package, fmt: str) -> Archive:
        """The ``fmt`` archive of ``package``, to send: from the cache, built into it, or built in memory.

        ArchiveError when the package's own files cannot be read; never an error of the cache.
        """
        loop = asyncio.get_running_loop()
        if fmt == ZIP and isinstance(package.files, ZipFiles):
            try:
                return Archive(file=await loop.run_in_executor(None, open, package.files.location, "rb"))
            except OSError as err:
                raise ArchiveError(f"cannot open {package.files.location}: {err.strerror}") from err
        for _ in range(_BUILD_ATTEMPTS):
            key = await self._key(package)
            path = os.path.join(self.folder, f"{key}.{fmt}")
            opened = await loop.run_in_executor(None, self.open_cached, path)
            if opened is not None:
                return Archive(file=opened)
            built = await self._build_once(package, fmt, path)
            if built.key != key:
                self._remember(package, built.key)  # the files changed since the key was taken
            if built.body is not None:
                return Archive(body=built.body, etag=f'"{built.key}-{len(built.body):x}"')
            # (else loop: open what was just stored; gone again only if another process evicted it)
        built = await loop.run_in_executor(None, self._build_in_memory, package, fmt)
        return Archive(body=built.body, etag=f'"{built.key}-{len(built.body or b""):x}"')

    def open_cached(self, path: str) -> BinaryIO | None:
        """The cached file at ``path``, open (so eviction can no longer take it) and marked used, or None.

        For any file kept in the folder (proxy mode's pulled files too): checking that it exists
        and then opening it later would race with eviction by another thread or process.
        """
        try:
            fh = open(path, "rb")  # noqa: SIM115 (handed to the response, which closes it)
        except OSError:
            return None  # not built yet, evicted, or no cache folder: build it
        with contextlib.suppress(OSError):
            # Recently used: evicted last. The access time only, so the file's modification
            # time (its ETag and Last-Modified) stays as it was built.
            st = os.fstat(fh.fileno())
            os.utime(fh.fileno(), ns=(time.time_ns(), st.st_mtime_ns))
        return fh

    async def _build_once(self, package: Package, fmt: str, path: str) -> _Built:
        """One build per cache path at a time: concurrent first downloads wait for the same build."""
        job = (path, fmt)
        pending = self._building.get(job)
        if pending is None:
            pending = asyncio.get_running_loop().run_in_executor(None, self._build, package, fmt)
            self._building[job] = pending
            pending.add_done_callback(lambda _: self._building.pop(job, None))
        return await asyncio.shield(pending)

    def _build(self, package: Package, fmt: str) -> _Built:
        """Build into the cache (in a thread); in memory when the cache cannot be used."""
        started = time.monotonic()
        for _ in range(_BUILD_ATTEMPTS):
            if time.monotonic() < self._skip_cache_until:
                break
            key = self._content_key(package)
            try:
                stored = self._build_cached(package, fmt, key)
            except FilesChanged:
                continue
            except ArchiveError:
                raise
            except OSError as err:
                self._cache_failed(err)
                break
            if stored is None:
                continue  # the files changed while they were read: read them again
            path, size = stored
            self._cache_works()
            self._evict(keep=path)
            self._log_built(package, fmt, size, started)
            return _Built(key, path)
        built = self._build_in_memory(package, fmt)
        self._log_built(package, fmt, len(built.body or b""), started)
        return built

    def _content_key(self, package: Package) -> str:
        """The package's content key; ArchiveError if its files cannot be listed (or keep changing)."""
        for attempt in range(_BUILD_ATTEMPTS):
            try:
                return content_key(package.files)
            except FilesChanged as err:
                if attempt == _BUILD_ATTEMPTS - 1:
                    raise ArchiveError(f"package files keep changing: {package.files.location}") from err
            except (OSError, PackageFileError) as err:
                raise ArchiveError(f"cannot read package {package.files.location}: {err}") from err
        raise AssertionError("unreachable")

    def _build_cached(self, package: Package, fmt: str, key: str) -> tuple[str, int] | None:
        """Write the archive into the cache as ``<key>.<fmt>`` (path, size); None if the files changed."""
        os.makedirs(self.folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=_BUILDING)
        try:
            with os.fdopen(fd, "wb") as out:
                write(package, fmt, out)
                out.flush()
                size = os.fstat(out.fileno()).st_size
            if self._content_key(package) != key:
                os.unlink(tmp)
                return None
            path = os.path.join(self.folder, f"{key}.{fmt}")
            os.replace(tmp, path)  # atomic: a reader opens the old file or the whole new one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path, size

    def _build_in_memory(self, package: Package, fmt: str) -> _Built:
        """The archive as bytes, for this download only; the package as it is now, changing or not."""
        for attempt in range(_BUILD_ATTEMPTS):
            key = self._content_key(package)
            out = io.BytesIO()
            try:
                # The last try leaves out files that vanish as they are read: a folder that never
                # stops changing (a sync tool at work) still gets a valid archive of whole files.
                write(package, fmt, out, skip_vanished=attempt == _BUILD_ATTEMPTS - 1)  # type: ignore[arg-type]
            except FilesChanged as err:  # (on the last try: a folder removed while it was walked)
                if attempt == _BUILD_ATTEMPTS - 1:
                    raise ArchiveError(f"package files keep changing: {err}") from err
                continue
            return _Built(key, None, out.getvalue())
        raise AssertionError("unreachable")

    def _log_built(self, package: Package, fmt: str, size: int, started: float) -> None:
        log.info(
            "archive built",
            extra={
                "package": package.name,
                "version": package.version,
                "format": fmt,
                "bytes": size,
                "event.duration": int((time.monotonic() - started) * 1e9),
            },
        )

    def _cache_failed(self, err: OSError) -> None:
        with self._state:
            self._skip_cache_until = time.monotonic() + self.cache_retry_s
            first, self._cache_broken = not self._cache_broken, True
        if first:
            log.warning(
                "archive cache cannot be used, downloads are built in memory until it can",
                extra={"file.path": self.folder, "error.message": str(err)},
            )

    def _cache_works(self) -> None:
        with self._state:
            recovered, self._cache_broken = self._cache_broken, False
        if recovered:
            log.info("archive cache can be used again", extra={"file.path": self.folder})

    def make_room(self, keep: str) -> None:
        """After a file was added to the folder by someone else (proxy mode's pulled files)."""
        self._evict(keep)

    def _evict(self, keep: str) -> None:
        """Delete the least recently used archives while the folder holds more than ``max_bytes``.

        Archives of replaced package content are never asked for again; this is what removes them.
        One used in the last ``recent_s`` seconds is kept, as a download may be about to open it.
        Never raises: the archive that triggered it is built and stays served.
        """
        if not self._evicting.acquire(blocking=False):
            return  # another thread is evicting: it sees this archive too, or the next build does
        try:
            self._evict_locked(keep)
        except OSError as err:
            with self._state:
                first, self._evict_broken = not self._evict_broken, True
            if first:
                log.warning(
                    "cannot evict archives from the cache",
                    extra={"file.path": self.folder, "error.message": str(err)},
                )
        else:
            self._evict_broken = False
        finally:
            self._evicting.release()

    def _evict_locked(self, keep: str) -> None:
        now = time.time()
        found: list[tuple[float, int, str]] = []
        with os.scandir(self.folder) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished since listed (renamed into place, or evicted by another)
                if entry.name.startswith(_BUILDING):
                    if now - st.st_mtime > _ABANDONED_S:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                        continue
                    found.append((now, st.st_size, ""))  # counts, never evicted: being written
                elif _CACHED_NAME.fullmatch(entry.name):
                    found.append((max(st.st_atime, st.st_mtime), st.st_size, entry.path))
        total = sum(size for _, size, _ in found)
        recent = now - self.recent_s
        for used, size, path in sorted(found):
            if total <= self.max_bytes:
                break
            if not path or path == keep or used > recent:
                continue
            try:
                current = os.stat(path)
                if max(current.st_atime, current.st_mtime) > recent:
                    continue  # used since listed (by another process)
                os.unlink(path)
            except FileNotFoundError:
                pass  # another process evicted it first
            total -= size
