"""Writing download archives of packages: the zip (as the reference builds it) and the tar.gz.

Names go into archives as the package listing gave them (``\\``, ``%2e``, ``?``...), and
reads tell the package's own errors (:class:`ArchiveError`, :class:`FilesChanged`) apart from
errors of the output, so that the archive cache (:mod:`eprd.indexers.local.archives`) knows a
cache problem, which never fails a download, from a package problem.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from eprd.model.files import DirFiles, Entry, PackageFileError, PackageFiles, ZipFiles
from eprd.model.package import Package

ZIP = "zip"
TAR_GZ = "tar.gz"

# Zip (DOS) timestamps hold 1980-01-01 to 2107-12-31; clamp rather than fail the download.
_DOS_MIN, _DOS_MAX = 315532800, 4354819198


class ArchiveError(OSError):
    """A package whose archive cannot be built: its files cannot be read (not a cache problem)."""


class FilesChanged(Exception):
    """A file the build listed vanished before it was read: the package is changing on disk."""


def top_folder(package: Package) -> str:
    """The folder all archive entries live in: the zip's own root, else ``<name>-<version>``."""
    if isinstance(package.files, ZipFiles):
        return package.files.prefix.rstrip("/")
    return f"{package.name}-{package.version}"


def _dos_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    stamp = time.gmtime(min(max(mtime, _DOS_MIN), _DOS_MAX))
    return stamp[:6]


def _disk_path(files: PackageFiles, path: str) -> str:
    """Where a listed entry of a folder package is on disk, checked to be inside the package.

    The listing already refused symlinks that leave the package; this re-checks at read time,
    as a link may change after it was listed. Unlike a request path, any name the listing gave
    is taken as it is (``\\``, ``%2e``, ``?``, spaces, any bytes): it names a real file.
    """
    assert isinstance(files, DirFiles)
    full = os.path.join(files.root, path)
    real = os.path.realpath(full)
    root = files.root.rstrip("/") + "/"
    if real != files.root and not real.startswith(root):
        raise PackageFileError(f"symlink {path} points outside the package")
    return full


def _mtime(files: PackageFiles, path: str) -> float:
    if isinstance(files, DirFiles):
        try:
            return os.stat(_disk_path(files, path)).st_mtime
        except (OSError, PackageFileError):  # changed since listed: the content check after the build notices
            return 0.0
    info = files.info(path)
    return info.mtime if info is not None else 0.0


def _entries(files: PackageFiles) -> list[Entry]:
    try:
        return files.entries()
    except (FileNotFoundError, NotADirectoryError) as err:
        raise FilesChanged(str(err)) from err  # a folder removed while it was walked
    except (OSError, PackageFileError) as err:
        raise ArchiveError(f"cannot list {files.location}: {err}") from err


def _read(files: PackageFiles, path: str) -> bytes:
    """A package file's content. Errors of the package, never of the output, are raised from here.

    FilesChanged when a listed file of a folder vanished since it was listed.
    """
    try:
        if not isinstance(files, DirFiles):
            return files.read(path)
        with open(_disk_path(files, path), "rb") as fh:
            return fh.read()
    except (FileNotFoundError, NotADirectoryError) as err:
        if isinstance(files, DirFiles):
            raise FilesChanged(path) from err
        raise ArchiveError(f"cannot read {files.location}:{path}: {err}") from err
    except Exception as err:  # damaged zip entries: BadZipFile, zlib.error, NotImplementedError...
        raise ArchiveError(f"cannot read {files.location}:{path}: {err}") from err


def content_key(files: PackageFiles) -> str:
    """A digest of the package's current files: names, sizes and modification times."""
    digest = hashlib.blake2b(digest_size=16)
    st = os.stat(files.location)
    digest.update(f"{files.kind}\0{files.location}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if isinstance(files, DirFiles):
        for entry in _entries(files):
            size, mtime = 0, 0
            if not entry.is_dir:
                try:
                    found = os.stat(_disk_path(files, entry.path))
                    size, mtime = found.st_size, found.st_mtime_ns
                except OSError:
                    size = -1  # vanished since listed: differs from any later listing
            # (surrogateescape: a name that is not UTF-8 still gives distinct bytes)
            digest.update(
                f"{entry.path}\0{entry.is_dir:d}\0{size}\0{mtime}\n".encode(errors="surrogateescape")
            )
    return digest.hexdigest()


def _contents(files: PackageFiles, skip_vanished: bool) -> Iterator[tuple[Entry, bytes]]:
    """Each entry to archive, in order, with its content (b"" for a folder).

    ``skip_vanished`` leaves out a listed file that is gone when it is read, rather than raising.
    """
    for entry in _entries(files):
        if entry.is_dir:
            yield entry, b""
            continue
        try:
            body = _read(files, entry.path)
        except FilesChanged:
            if not skip_vanished:
                raise
            continue
        yield entry, body


def write_zip(files: PackageFiles, top: str, out: BinaryIO, *, skip_vanished: bool = False) -> None:
    """Zip a package folder as the reference does: depth-first, folders as entries, deflated.

    ``skip_vanished`` leaves out a listed file that is gone when it is read, rather than raising.
    """
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry, body in _contents(files, skip_vanished):
            info = zipfile.ZipInfo(
                f"{top}/{entry.path}" + ("/" if entry.is_dir else ""), _dos_time(_mtime(files, entry.path))
            )
            if entry.is_dir:
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
                continue
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            archive.writestr(info, body)


def write_tar_gz(files: PackageFiles, top: str, out: BinaryIO, *, skip_vanished: bool = False) -> None:
    """The same folder and files as the zip, as a gzip'd tar (``skip_vanished`` as for the zip)."""
    # gzip's header time is left 0 (as Go's gzip writer does), so equal content gives equal bytes.
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for entry, body in _contents(files, skip_vanished):
            info = tarfile.TarInfo(f"{top}/{entry.path}")
            info.mtime = int(_mtime(files, entry.path))
            if entry.is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
                continue
            info.size = len(body)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(body))


def write(package: Package, fmt: str, out: BinaryIO, skip_vanished: bool = False) -> None:
    """Write the ``fmt`` archive of ``package`` to ``out``.

    Raises FilesChanged when a listed file vanished, ArchiveError when the package cannot be read
    (both from the reads); any other OSError comes from ``out``.
    """
    writer = write_zip if fmt == ZIP else write_tar_gz
    writer(package.files, top_folder(package), out, skip_vanished=skip_vanished)
