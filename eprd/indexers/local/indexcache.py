"""The on-disk index cache: a restart re-reads only the package versions that changed.

Each loaded package version is stored with the list of paths its content was
derived from (the version folder, every sub-folder, the files that were read,
the signature) and a stamp of those paths (inode, size, mtime, ctime). Any
file added, removed or renamed changes a folder's stamp; any file read
changes its own. ctime cannot be set from user space, so tools that restore
modification times (``cp -p``, ``rsync -a``) still invalidate the entry.

A load records what it read and when it started (:class:`Pending`); the stamp is
taken later, when the cache is written, and a version whose inputs changed after
its load started is not cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import tempfile
from array import array
from dataclasses import dataclass
from itertools import chain
from typing import Any

from eprd import __version__

log = logging.getLogger("eprd.indexcache")

FORMAT = 10  # bump when what is stored changes meaning
_MISSING = (-1, -1, -1, -1)


@dataclass(frozen=True, slots=True)
class Cached:
    """One package version as loaded: what it was read from and what came out.

    Paths and stamps are kept flat (one string, one bytes) because a cache holds tens of
    thousands of entries and unpickling time grows with the number of objects.
    """

    location: str
    inputs: str  # paths relative to the folder holding ``location``, joined by NUL
    stamp: bytes  # inode, size, mtime, ctime of each input as int64s; -1s for a missing one
    result: Any  # a Package or a PackageError

    def is_fresh(self) -> bool:
        """Whether every input is still as it was when the entry was made."""
        return is_fresh(self.location, self.inputs, self.stamp)


def is_fresh(location: str, inputs: str, stamp_value: bytes) -> bool:
    """Whether the inputs of ``location`` (as in :class:`Cached`) still have the stamp ``stamp_value``."""
    return stamp(os.path.dirname(location), inputs.split("\0")) == stamp_value


@dataclass(frozen=True, slots=True)
class Pending:
    """A load whose inputs are not stamped yet.

    Stamping means a stat of every input (at 10,000 versions about half a million), so it is
    left until the cache is written, after the registry serves.
    """

    location: str
    inputs: str  # as in Cached
    started_ns: int  # when the load started
    result: Any

    def stamped(self) -> Cached | None:
        """The cache entry; None if an input changed after the load started (read it again)."""
        value = stamp(os.path.dirname(self.location), self.inputs.split("\0"))
        if changed_since(value, self.started_ns):
            return None
        return Cached(self.location, self.inputs, value, self.result)


def pending(location: str, paths: tuple[str, ...], started_ns: int, result: Any) -> Pending | None:
    """What to stamp for a load of ``location`` from ``paths``; None when there is nothing to cache.

    ``paths`` are all inside the folder holding ``location`` (the version folder or zip, its
    signature, what is inside the folder).
    """
    if not paths:
        return None
    cut = len(os.path.dirname(location)) + 1
    return Pending(location, "\0".join(p[cut:] for p in paths), started_ns, result)


def stamp(folder: str, names: list[str]) -> bytes:
    """The identity of ``names`` inside ``folder`` now: inode, size, mtime and ctime of each, as int64s."""
    try:
        # Relative to an open folder: at a warm start this runs for every input of every version
        # (hundreds of thousands), and the kernel then resolves a few components instead of all.
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return array("q", _MISSING * len(names)).tobytes()
    out = []
    append, stat = out.append, os.stat  # (a tight loop: tuples, then one array, is the cheapest)
    try:
        for name in names:
            try:
                st = stat(name, dir_fd=fd)
            except OSError:
                append(_MISSING)
                continue
            append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    finally:
        os.close(fd)
    return array("q", chain.from_iterable(out)).tobytes()


# File times come from the kernel's coarse clock, up to a tick behind the clock a load start
# is read from: a change just after the start may carry a ctime just before it.
CLOCK_SLACK_NS = 10_000_000


def changed_since(stamp_value: bytes, started_ns: int) -> bool:
    """Whether any input of a stamp changed (its ctime) at or after ``started_ns`` (less the slack)."""
    values = array("q", stamp_value)
    since = started_ns - CLOCK_SLACK_NS
    return any(ctime >= since for ctime in values[3::4])


def cache_file(folder: str, package_paths: tuple[str, ...], options: Any, schema: str) -> str:
    """One cache file per package paths, load options, eprd version and layout of what is stored."""
    key = hashlib.blake2b(
        repr((FORMAT, __version__, package_paths, options, schema)).encode(), digest_size=10
    )
    return os.path.join(folder, f"index-{key.hexdigest()}.bin")


class Stored:
    """An index cache file as read: the stamps at once, the loaded results when asked for.

    The file holds two pickles, the stamps first: a warm start checks them in a helper process
    while this one unpickles the results.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.stamps: dict[str, tuple[str, bytes]] = {}  # location -> (inputs, stamp) as in Cached
        self._stream: io.BytesIO | None = None
        if path is None:
            return
        try:
            with open(path, "rb") as fh:
                self._stream = io.BytesIO(fh.read())
            stamps = pickle.load(self._stream)  # written by this module only, in eprd's cache dir
            if not isinstance(stamps, dict):
                raise TypeError("not an index cache")
            self.stamps = stamps
        except FileNotFoundError:
            pass  # no cache yet: a cold start
        except Exception as err:
            log.warning("ignoring unreadable index cache %s: %s", path, err)
            self._stream = None

    def results(self) -> dict[str, Any]:
        """What loading each location gave (a Package or a PackageError); empty if unreadable."""
        if self._stream is None:
            return {}
        try:
            results = pickle.load(self._stream)
        except Exception as err:
            log.warning("ignoring unreadable index cache %s: %s", self.path, err)
            results = None
        self._stream = None
        return results if isinstance(results, dict) else {}


def write(path: str, entries: dict[str, Cached]) -> None:
    """Replace the cache file atomically."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    # Not compressed: documents inside are deflated already, and inflating the whole file took
    # longer than reading it uncompressed.
    stamps = {location: (entry.inputs, entry.stamp) for location, entry in entries.items()}
    results = {location: entry.result for location, entry in entries.items()}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".index-")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(stamps, fh, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(results, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)  # atomic: another eprd reading the file gets the old one or this one
    except BaseException:
        with contextlib.suppress(OSError):  # (the write's own error is the one to report)
            os.unlink(tmp)
        raise
