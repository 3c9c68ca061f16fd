"""The on-disk index cache: a restart re-reads only the package versions that changed.

Each loaded package version is stored with the list of paths its content was
derived from (the version folder, every sub-folder, the files that were read,
the signature) and a stamp of those paths (inode, size, mtime, ctime). Any
file added, removed or renamed changes a folder's stamp; any file read
changes its own. ctime cannot be set from user space, so tools that restore
modification times (``cp -p``, ``rsync -a``) still invalidate the entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import zlib
from array import array
from dataclasses import dataclass
from typing import Any

from eprd import __version__

log = logging.getLogger("eprd.indexcache")

FORMAT = 7  # bump when what is stored changes meaning
_MISSING = (-1, -1, -1, -1)


@dataclass(frozen=True, slots=True)
class Cached:
    """One package version as loaded: what it was read from and what came out.

    Paths and stamps are kept flat (one string, one tuple of ints) because a cache holds tens
    of thousands of entries and unpickling time grows with the number of objects.
    """

    location: str
    inputs: str  # paths relative to the folder holding ``location``, joined by NUL
    stamp: bytes  # inode, size, mtime, ctime of each input as int64s; -1s for a missing one
    result: Any  # a Package or a PackageError

    @classmethod
    def make(cls, location: str, paths: tuple[str, ...], stamp: bytes, result: Any) -> Cached:
        parent = os.path.dirname(location)
        return cls(location, "\0".join(os.path.relpath(p, parent) for p in paths), stamp, result)

    def paths(self) -> tuple[str, ...]:
        parent = os.path.dirname(self.location)
        return tuple(os.path.join(parent, rel) for rel in self.inputs.split("\0"))


def stamp(paths: tuple[str, ...]) -> bytes:
    """The identity of ``paths`` now: inode, size, mtime and ctime of each, as packed int64s."""
    out = array("q")
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.extend(_MISSING)
            continue
        out.extend((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out.tobytes()


def changed_since(stamp_value: bytes, started_ns: int) -> bool:
    """Whether any input of a stamp changed (its ctime) at or after ``started_ns``."""
    values = array("q", stamp_value)
    return any(ctime >= started_ns for ctime in values[3::4])


def is_fresh(entry: Cached) -> bool:
    return stamp(entry.paths()) == entry.stamp


def cache_file(folder: str, package_paths: tuple[str, ...], options: Any, schema: str) -> str:
    """One cache file per package paths, load options, eprd version and layout of what is stored."""
    key = hashlib.blake2b(
        repr((FORMAT, __version__, package_paths, options, schema)).encode(), digest_size=10
    )
    return os.path.join(folder, f"index-{key.hexdigest()}.bin")


def read(path: str) -> dict[str, Cached]:
    """The cached entries by location; empty when there is no usable cache."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        entries = pickle.loads(zlib.decompress(data))  # written by this module only, in eprd's cache dir
    except FileNotFoundError:
        return {}
    except Exception as err:
        log.warning("ignoring unreadable index cache %s: %s", path, err)
        return {}
    return entries if isinstance(entries, dict) else {}


def write(path: str, entries: dict[str, Cached]) -> None:
    """Replace the cache file atomically."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    data = zlib.compress(pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL), 1)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".index-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
