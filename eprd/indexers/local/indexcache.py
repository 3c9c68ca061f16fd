"""The on-disk index cache: a restart re-reads only the package versions that changed.

Each loaded package version is stored with the list of paths its content was
derived from (the version folder, every sub-folder, the files that were read,
the signature) and a stamp of those paths: the size and modification time of
each file, the modification time of each folder. Any file added, removed or
renamed changes its folder's mtime; any file written changes its own.

Inodes and change times are left out on purpose: a copy that keeps sizes and
mtimes (``cp -a``, ``tar``, the layers of a container image) gives new ones,
and the index built before the copy (``eprd -dry-run -cache-dir DIR``, for
example during ``docker build``) must stay valid after it. Archives that keep
whole seconds only (GNU tar's default format, image layers) are accepted too:
a file whose mtime has no sub-second part matches a stamp with the same second.
The residual risk: an edit that keeps both the size and the mtime of a file
(a tool that restores mtimes, such as ``cp -p`` or ``rsync -a``, copying
same-size content) is not seen at start-up. Delete the ``index`` folder in the
cache dir to force a full re-read (live reload still sees such an edit).

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
from stat import S_ISDIR
from typing import Any

from eprd import __version__

log = logging.getLogger("eprd.indexcache")

FORMAT = 12  # bump when what is stored changes meaning
_MISSING = (-1, -1)
_FOLDER = -2  # the size stamped for a folder: its st_size depends on the filesystem, not the content
_SECOND = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Cached:
    """One package version as loaded: what it was read from and what came out.

    Paths and stamps are kept flat (one string, one bytes) because a cache holds tens of
    thousands of entries and unpickling time grows with the number of objects.
    """

    location: str
    inputs: str  # paths relative to the folder holding ``location``, joined by NUL
    stamp: bytes  # size (-2: a folder) and mtime of each input as int64s; -1s for a missing one
    result: Any  # a Package or a PackageError

    def is_fresh(self) -> bool:
        """Whether every input is still as it was when the entry was made."""
        return is_fresh(self.location, self.inputs, self.stamp)


def is_fresh(location: str, inputs: str, stamp_value: bytes) -> bool:
    """Whether the inputs of ``location`` (as in :class:`Cached`) still have the stamp ``stamp_value``."""
    now = stamp(os.path.dirname(location), inputs.split("\0"))
    return now == stamp_value or _same_to_the_second(now, stamp_value)


def _same_to_the_second(now_value: bytes, stamp_value: bytes) -> bool:
    """Whether ``now_value`` is ``stamp_value`` after a copy that kept mtimes in whole seconds only."""
    if len(now_value) != len(stamp_value):
        return False
    now, then = array("q", now_value), array("q", stamp_value)
    if now[0::2] != then[0::2]:
        return False  # a size differs (or an input appeared or went missing)
    for mtime, stamped in zip(now[1::2], then[1::2], strict=True):
        if mtime != stamped and (mtime % _SECOND or mtime != stamped - stamped % _SECOND):
            return False
    return True


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
        value, changed_ns = _stamp(os.path.dirname(self.location), self.inputs.split("\0"))
        if changed_ns >= self.started_ns - CLOCK_SLACK_NS:
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
    """The identity of ``names`` inside ``folder`` now: size and mtime of each, as int64s."""
    return _stamp(folder, names)[0]


# File times come from the kernel's coarse clock, up to a tick behind the clock a load start
# is read from: a change just after the start may carry a ctime just before it.
CLOCK_SLACK_NS = 10_000_000


def _stamp(folder: str, names: list[str]) -> tuple[bytes, int]:
    """:func:`stamp`, and the latest change time (ctime) among the inputs.

    The ctime is not stored (a copy changes it) but tells whether an input changed while it
    was being loaded: mtimes can be set to the past, ctimes cannot.
    """
    try:
        # Relative to an open folder: at a warm start this runs for every input of every version
        # (hundreds of thousands), and the kernel then resolves a few components instead of all.
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return array("q", _MISSING * len(names)).tobytes(), 0
    out = []
    latest = 0
    append, stat, is_dir = out.append, os.stat, S_ISDIR  # (a tight loop: tuples, then one array)
    try:
        for name in names:
            try:
                st = stat(name, dir_fd=fd)
            except OSError:
                append(_MISSING)
                continue
            append((_FOLDER if is_dir(st.st_mode) else st.st_size, st.st_mtime_ns))
            if st.st_ctime_ns > latest:
                latest = st.st_ctime_ns
    finally:
        os.close(fd)
    return array("q", chain.from_iterable(out)).tobytes(), latest


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
    # Not compressed: documents inside are compressed already, and decompressing the whole file took
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
