"""Reading the files of one package, safely: a version folder or a zip archive.

A package is either a directory ``<path>/<any>/<version>/`` or a zip archive
``<name>-<version>.zip`` whose first top-level folder holding ``manifest.yml``
is the package root. Both are read through :class:`PackageFiles`, which never
hands out a byte from outside the package: entries are listed once, names with
``..`` or absolute paths and symlinks leaving the package make it invalid, and
request-time lookups re-check the resolved path.
"""

from __future__ import annotations

import calendar
import functools
import operator
import os
import stat
import struct
import threading
import zipfile
from collections import OrderedDict
from typing import NamedTuple

from eprd.model import limits, zipcheck


class PackageFileError(ValueError):
    """A package whose files cannot be served safely or read at all."""


class Entry(NamedTuple):
    """One file or folder of a package, relative to the package root."""

    path: str
    is_dir: bool


class FileInfo(NamedTuple):
    """Size and modification time of a file (tuples: a cached index holds very many)."""

    size: int
    mtime: float  # seconds since the epoch; 0 when unknown
    crc: int = 0  # CRC-32 of the content, for files inside zips


def signature_path(location: str) -> str | None:
    """The detached signature beside a package (``<dir>.sig`` or ``<zip>.sig``), if any."""
    candidate = location.rstrip("/") + ".sig"
    return candidate if os.path.isfile(candidate) else None


class PackageFiles:
    """Read access to the files of one package."""

    kind: str
    location: str

    def entries(self) -> list[Entry]:
        """Every file and folder, directories first-walk sorted (dirs) or in archive order (zips)."""
        raise NotImplementedError

    def read(self, path: str) -> bytes:
        """The content of a file; FileNotFoundError if there is none."""
        raise NotImplementedError

    def info(self, path: str) -> FileInfo | None:
        """Size and modification time of a file, None if it is not a file of the package."""
        raise NotImplementedError

    def read_listed(self, path: str) -> bytes:
        """Read a file :meth:`entries` listed; the loader's fast path."""
        return self.read(path)

    def loaded(self) -> None:
        """The load is over: drop what it kept for :meth:`read_listed` (before the files are pickled)."""


def _safe_relative(path: str) -> str | None:
    """Normalise a request path relative to a package root; None if it could leave it."""
    if not path or "\x00" in path or "\\" in path or path.startswith("/"):
        return None
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return path


_NAME = operator.attrgetter("name")
# Entry(path, is_dir) runs the named tuple's __new__, a Python function; a load makes an entry for
# every file and folder of every version, and tuple.__new__ builds the same in half the time.
_entry = tuple.__new__


class DirFiles(PackageFiles):
    """A package stored as a folder."""

    kind = "dir"

    def __init__(self, location: str) -> None:
        self.location = location
        self.reads: set[str] = set()  # files read by the loader, for the index cache

    @functools.cached_property
    def root(self) -> str:
        """The folder's real path, which files served from it must lie in.

        Resolved when first needed (a symlink, a file served): a load needs it for few versions,
        and resolving costs a system call per component of the path.
        """
        return os.path.realpath(self.location)

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        self._walk("", out, 1)
        return out

    def _walk(self, prefix: str, out: list[Entry], depth: int) -> None:
        # Names and types only (from the directory listing itself): no stat per file.
        if depth > limits.MAX_FOLDER_DEPTH:
            raise PackageFileError(f"folders nested deeper than {limits.MAX_FOLDER_DEPTH} levels: {prefix}")
        # (Joined by hand, as in read_listed: os.path.join costs more than the rest of a short walk step.)
        folder = f"{self.location}/{prefix}" if prefix else self.location
        with os.scandir(folder) as it:
            items = sorted(it, key=_NAME)
        if len(out) + len(items) > limits.MAX_ENTRIES:
            raise PackageFileError(f"more than {limits.MAX_ENTRIES} files and folders in the package")
        for item in items:
            name = item.name
            rel = prefix + name
            if not name.isascii():
                _check_name(rel)
            # (Without following links, neither test holds for a symlink: it is told apart last.)
            if item.is_file(follow_symlinks=False):
                out.append(_entry(Entry, (rel, False)))
            elif item.is_dir(follow_symlinks=False):
                out.append(_entry(Entry, (rel, True)))
                self._walk(rel + "/", out, depth + 1)
            elif item.is_symlink():
                self._check_link(rel)
                out.append(Entry(rel, False))

    def _check_link(self, rel: str) -> None:
        """Symlinks may only point at files inside the package."""
        target = os.path.realpath(os.path.join(self.root, rel))
        if not _inside(target, self.root):
            raise PackageFileError(f"symlink {rel} points outside the package")
        try:
            st = os.stat(target)
        except OSError as err:
            raise PackageFileError(f"broken symlink {rel}") from err
        if stat.S_ISDIR(st.st_mode):
            raise PackageFileError(f"symlinked folder {rel} is not supported")

    def resolve(self, path: str) -> str | None:
        """The real path of a package file, or None if it is missing or outside the package."""
        rel = _safe_relative(path)
        if rel is None:
            return None
        real = os.path.realpath(os.path.join(self.root, rel))
        if not _inside(real, self.root) or not os.path.isfile(real):
            return None
        return real

    def read(self, path: str) -> bytes:
        real = self.resolve(path)
        if real is None:
            raise FileNotFoundError(path)
        return _read_whole(real)

    def read_listed(self, path: str) -> bytes:
        """Read a file :meth:`entries` just listed (and checked), without resolving it again."""
        self.reads.add(path)
        return _read_whole(f"{self.location}/{path}", limits.MAX_FILE_BYTES, path)

    def info(self, path: str) -> FileInfo | None:
        real = self.resolve(path)
        if real is None:
            return None
        st = os.stat(real)
        return FileInfo(st.st_size, st.st_mtime)


# Below glibc's mmap threshold (128 KiB): a larger buffer is mapped, shrunk and unmapped for every
# file, three system calls more per file than the reads themselves.
_READ_SIZE = 1 << 16


def _read_whole(path: str, limit: int | None = None, name: str = "") -> bytes:
    """A file's content, with plain system calls (half the cost of ``open().read()``).

    With a ``limit``, a file longer than that many bytes is a PackageFileError (read no further).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, _READ_SIZE)]
        # A short read of a regular file is its end: no second call to be told so.
        read = len(chunks[0])
        while len(chunks[-1]) == _READ_SIZE:
            if limit is not None and read > limit:
                raise PackageFileError(f"file {name} is larger than {limit} bytes")
            chunks.append(os.read(fd, _READ_SIZE))
            read += len(chunks[-1])
    finally:
        os.close(fd)
    if limit is not None and read > limit:
        raise PackageFileError(f"file {name} is larger than {limit} bytes")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _check_name(rel: str) -> None:
    """File names must be UTF-8: every document, log line and archive carries them as text."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
        raise PackageFileError(f"file name is not valid UTF-8: {shown}") from None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class ZipFiles(PackageFiles):
    """A package stored as a zip archive, read in place (never unpacked to disk)."""

    kind = "zip"

    def __init__(self, location: str) -> None:
        self.location = location
        # Kept open in the cache of open archives: loading reads several files from it next.
        archive = _ZIP_CACHE.archive(location)
        infos = archive.infolist()
        for info in infos:
            name = info.filename.rstrip("/")
            if name and _safe_relative(name) is None:
                raise PackageFileError(f"unsafe entry name in zip archive: {info.filename!r}")
        self.prefix = _zip_root(infos, location)
        # The check decompresses every entry anyway: the loader's reads of manifests, fields files
        # and pipelines take what it kept instead of decompressing them a second time (no more
        # than one file's read limit in all, so that a hostile archive costs no more memory).
        try:
            self._checked = zipcheck.check_zip(
                archive, keep=functools.partial(_parsed_entry, self.prefix), keep_bytes=limits.MAX_FILE_BYTES
            )
        except zipcheck.ZipDamaged as err:
            raise PackageFileError(str(err)) from None
        # Plain tuples rather than Entry and FileInfo: packages travel from loader processes and
        # through the index cache pickled, and a named tuple costs a Python call to unpickle.
        self._entries: list[tuple[str, bool]] = []
        # name -> (size, mtime, crc); kept because zip listings are small and this avoids
        # re-reading the central directory for every static-file request.
        self._files: dict[str, tuple[int, float, int]] = {}
        for info in infos:
            name = info.filename
            if not name.startswith(self.prefix):
                continue
            rel = name[len(self.prefix) :]
            is_dir = rel.endswith("/")
            rel = rel.rstrip("/")
            if not rel:
                continue
            self._entries.append((rel, is_dir))
            if not is_dir:
                self._files[rel] = (info.file_size, _zip_mtime(info), info.CRC)

    def entries(self) -> list[Entry]:
        return [_entry(Entry, entry) for entry in self._entries]

    def info(self, path: str) -> FileInfo | None:
        found = self._files.get(path)
        return None if found is None else FileInfo(*found)

    def read(self, path: str) -> bytes:
        """The content of a file; PackageFileError if the archive changed and cannot give it."""
        if path not in self._files:
            raise FileNotFoundError(path)
        return _ZIP_CACHE.read(self.location, self.prefix + path)

    def read_listed(self, path: str) -> bytes:
        """Read a file to parse it (within :data:`eprd.model.limits.MAX_FILE_BYTES`)."""
        found = self._files.get(path)
        if found is not None and found[0] > limits.MAX_FILE_BYTES:
            raise PackageFileError(f"file {path} is larger than {limits.MAX_FILE_BYTES} bytes")
        checked = self._checked.pop(self.prefix + path, None)
        return checked if checked is not None else self.read(path)

    def loaded(self) -> None:
        self._checked.clear()


def _open_zip(location: str) -> zipfile.ZipFile:
    try:
        with open(location, "rb") as fh:
            # The entry count from the end record, before zipfile builds an object per entry: a
            # small archive can declare millions of them.
            end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
        if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > limits.MAX_ENTRIES:  # type: ignore[attr-defined]
            raise PackageFileError(f"more than {limits.MAX_ENTRIES} entries in zip archive")
        return zipfile.ZipFile(location)
    except PackageFileError:
        raise
    except Exception as err:  # zipfile raises many types for damaged archives (struct.error, EOFError...)
        raise PackageFileError(f"invalid zip file: {type(err).__name__}: {err}") from err


_PARSED_SUFFIXES = (".yml", ".yaml", ".json")


def _parsed_entry(prefix: str, info: zipfile.ZipInfo) -> bool:
    """Whether a loader reads this entry of a package under ``prefix``: its manifest, or a YAML or
    JSON file of a data stream (manifests, fields files, ingest pipelines)."""
    name = info.filename
    if not name.startswith(prefix) or not name.endswith(_PARSED_SUFFIXES):
        return False
    rel = name[len(prefix) :]
    return rel == "manifest.yml" or rel.startswith("data_stream/")


def _zip_root(infos: list[zipfile.ZipInfo], location: str) -> str:
    names = {info.filename for info in infos}
    for info in infos:
        top = info.filename.split("/", 1)[0]
        if "/" in info.filename and f"{top}/manifest.yml" in names:
            return f"{top}/"
    raise PackageFileError(f"failed to determine root directory in package (path: {location})")


def _zip_mtime(info: zipfile.ZipInfo) -> float:
    """Modification time as Go's archive/zip reads it: extended timestamp, else DOS time as UTC."""
    extra = info.extra
    while len(extra) >= 4:
        tag, size = struct.unpack("<HH", extra[:4])
        body = extra[4 : 4 + size]
        if tag == 0x5455 and size >= 5 and body[0] & 1:
            return float(struct.unpack("<i", body[1:5])[0])
        extra = extra[4 + size :]
    try:
        return float(calendar.timegm((*info.date_time, 0, 0, 0)))
    except (OverflowError, ValueError):
        return 0.0


class _ZipCache:
    """A few open archives, so static files inside zips don't re-parse the central directory."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._open: OrderedDict[tuple[str, int, int], zipfile.ZipFile] = OrderedDict()
        self._lock = threading.Lock()

    def archive(self, location: str) -> zipfile.ZipFile:
        """The archive at ``location`` as it is now, opened or from the cache."""
        try:
            st = os.stat(location)
        except OSError as err:
            raise PackageFileError(f"invalid zip file: {err}") from err
        key = (location, st.st_mtime_ns, st.st_size)
        with self._lock:
            archive = self._open.get(key)
            if archive is None:
                archive = _open_zip(location)
                self._open[key] = archive
                while len(self._open) > self._size:
                    self._open.popitem(last=False)[1].close()
            else:
                self._open.move_to_end(key)
            return archive

    def read(self, location: str, name: str) -> bytes:
        """An entry of the archive at ``location``: FileNotFoundError, or PackageFileError if damaged."""
        archive = self.archive(location)
        try:
            return archive.read(name)
        except KeyError as err:
            raise FileNotFoundError(name) from err
        except Exception as err:  # the archive was replaced by a damaged one since it was checked
            raise PackageFileError(f"cannot read zip entry {name}: {zipcheck.describe(err)}") from err


_ZIP_CACHE = _ZipCache()


def open_package(location: str) -> PackageFiles:
    """File access for a package candidate found by :func:`scan`."""
    # (A stat only for names that may be zips: a version folder may end in ".zip", 1.0.0-a.zip.)
    if not location.endswith(".zip") or os.path.isdir(location):
        return DirFiles(location)
    return ZipFiles(location)
