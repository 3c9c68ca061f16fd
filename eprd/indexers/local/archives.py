"""Download archives of packages, built once per package content and kept on disk.

Directory packages are zipped (and every package tarred) on first request into
a content-addressed cache folder: the file name is the package's content key,
so an archive built for old content is never served for new content. The HTTP
layer then sends the file with sendfile, Content-Length and Range support.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import tarfile
import tempfile
import time
import zipfile
from collections import OrderedDict

from eprd.model.files import PackageFiles, ZipFiles
from eprd.model.package import Package

log = logging.getLogger("eprd.archives")

ZIP = "zip"
TAR_GZ = "tar.gz"


def top_folder(package: Package) -> str:
    """The folder all archive entries live in: the zip's own root, else ``<name>-<version>``."""
    if isinstance(package.files, ZipFiles):
        return package.files.prefix.rstrip("/")
    return f"{package.name}-{package.version}"


def _dos_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    # Zip timestamps cannot go before 1980; clamp rather than fail the download.
    stamp = time.gmtime(max(mtime, 315532800))
    return stamp[:6]


def _mtime(files: PackageFiles, path: str) -> float:
    info = files.info(path)
    if info is not None:
        return info.mtime
    try:  # folders
        return os.stat(os.path.join(files.location, path)).st_mtime
    except OSError:
        return 0.0


def content_key(files: PackageFiles) -> str:
    """A digest of the package's current files: names, sizes and modification times."""
    digest = hashlib.blake2b(digest_size=16)
    st = os.stat(files.location)
    digest.update(f"{files.kind}\0{files.location}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if files.kind == "dir":
        for entry in files.entries():
            info = None if entry.is_dir else files.info(entry.path)
            size, mtime = (info.size, info.mtime) if info else (0, 0.0)
            digest.update(f"{entry.path}\0{entry.is_dir:d}\0{size}\0{mtime!r}\n".encode())
    return digest.hexdigest()


def write_zip(files: PackageFiles, top: str, out: io.BufferedIOBase) -> None:
    """Zip a package folder as the reference does: depth-first, folders as entries, deflated."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in files.entries():
            info = zipfile.ZipInfo(
                f"{top}/{entry.path}" + ("/" if entry.is_dir else ""), _dos_time(_mtime(files, entry.path))
            )
            if entry.is_dir:
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
                continue
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            archive.writestr(info, files.read(entry.path))


def write_tar_gz(files: PackageFiles, top: str, out: io.BufferedIOBase) -> None:
    """The same folder and files as the zip, as a gzip'd tar."""
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for entry in files.entries():
            info = tarfile.TarInfo(f"{top}/{entry.path}")
            info.mtime = int(_mtime(files, entry.path))
            if entry.is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
                continue
            body = files.read(entry.path)
            info.size = len(body)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(body))


class ArchiveStore:
    """Builds archives into ``folder`` on demand, one build per content key at a time."""

    def __init__(self, folder: str, max_bytes: int = 2 * 1024**3) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        os.makedirs(folder, exist_ok=True)
        self._building: dict[str, asyncio.Future[str]] = {}
        # Content key per loaded package. A package object is replaced when the watcher sees its
        # files change, so the key is worked out once per package object, not per download.
        self._keys: OrderedDict[int, tuple[Package, str]] = OrderedDict()

    async def _key(self, package: Package) -> str:
        known = self._keys.get(id(package))
        if known is not None and known[0] is package:
            self._keys.move_to_end(id(package))
            return known[1]
        key = await asyncio.get_running_loop().run_in_executor(None, content_key, package.files)
        self._keys[id(package)] = (package, key)
        if len(self._keys) > 4096:
            self._keys.popitem(last=False)
        return key

    async def get(self, package: Package, fmt: str) -> str:
        """The path of the ``fmt`` archive of ``package``, building it if needed."""
        if fmt == ZIP and isinstance(package.files, ZipFiles):
            return package.files.location
        key = await self._key(package)
        path = os.path.join(self.folder, f"{key}.{fmt}")
        if os.path.exists(path):
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: the last to be evicted
            return path
        pending = self._building.get(path)
        if pending is None:
            pending = asyncio.get_running_loop().run_in_executor(None, self._build, package, fmt, path)
            self._building[path] = pending
            pending.add_done_callback(lambda _: self._building.pop(path, None))
        return await asyncio.shield(pending)

    def _build(self, package: Package, fmt: str, path: str) -> str:
        started = time.monotonic()
        writer = write_zip if fmt == ZIP else write_tar_gz
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".building-")
        try:
            with os.fdopen(fd, "wb") as out:
                writer(package.files, top_folder(package), out)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        self._evict(keep=path)
        log.info(
            "archive built",
            extra={
                "package": package.name,
                "version": package.version,
                "format": fmt,
                "bytes": os.path.getsize(path),
                "event.duration": int((time.monotonic() - started) * 1e9),
            },
        )
        return path

    def make_room(self, keep: str) -> None:
        """After a file was added to the folder by someone else (proxy mode's pulled files)."""
        self._evict(keep)

    def _evict(self, keep: str) -> None:
        """Delete the least recently used archives while the folder holds more than ``max_bytes``.

        Archives of replaced package content are never asked for again; this is what removes them.
        One modified in the last minute is kept, as a download may be about to open it.
        """
        with os.scandir(self.folder) as it:
            found = [(e.stat().st_mtime, e.stat().st_size, e.path) for e in it if e.is_file()]
        total = sum(size for _, size, _ in found)
        recent = time.time() - 60
        for mtime, size, path in sorted(found):
            if total <= self.max_bytes:
                break
            if path == keep or mtime > recent or os.path.basename(path).startswith(".building-"):
                continue
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= size
