"""From package paths to snapshots: the working set of loaded packages.

A :class:`Collection` knows every package candidate under ``package_paths``
and the last good :class:`Package` of each. It is loaded once at start-up and
then updated by the watcher with :meth:`Collection.apply`, which re-reads only
the candidates a batch of file changes touched. The local indexers
(:mod:`eprd.indexers.local.indexer`) serve what it holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from eprd.indexers.base import Changes
from eprd.indexers.local import indexcache
from eprd.indexers.local.scan import Candidate, candidate_at, scan, scan_within
from eprd.model.files import Entry, FileInfo
from eprd.model.package import LoadOptions, Package, PackageError, load_package
from eprd.model.versions import is_strict

log = logging.getLogger("eprd.loader")

T = TypeVar("T")


# Below this many versions, starting worker processes costs more than it saves.
PARALLEL_MIN = 64
# Loads go out in guided chunks (see load_many), stamp checks in this many shares per process.
CHUNKS_PER_WORKER = 32
CHUNK_MIN = 16

# The fields of what the index cache stores: a change of layout makes a new cache file.
_SCHEMA = ",".join(
    f"{cls.__name__}:{'/'.join(getattr(cls, '_fields', None) or (f.name for f in dataclasses.fields(cls)))}"
    for cls in (Package, Entry, FileInfo)
)

# A candidate's location, what loading it gave, and what to stamp for the index cache (None: nothing).
Loaded = tuple[str, Package | PackageError, indexcache.Pending | None]


def _log_rejection(err: PackageError) -> None:
    log.error(
        "invalid package version, not served: %s",
        err.reason,
        extra={"file.path": err.location, "error.message": err.reason},
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a load allocates: packages are trees, not cycles.

    A load creates millions of objects and keeps most of them, so the collector would walk an
    ever larger heap again and again (a fifth of the loading time) and find nothing to free.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_gc_paused()
def _load_chunk(locations: list[str], options: LoadOptions) -> list[Loaded]:
    """Load candidates in a worker process (or in this one)."""
    out = []
    for location in locations:
        started = time.time_ns()
        result, inputs = load_package(location, options)  # (never raises: see load_package)
        try:
            pending = indexcache.pending(location, inputs, started, result)
        except Exception:  # not cached, so read again next time: never a reason to fail the load
            pending = None
        out.append((location, result, pending))
    return out


def _nothing() -> None:
    pass


def load_many(
    locations: list[str],
    options: LoadOptions,
    workers: int,
    pool: ProcessPoolExecutor | None = None,
    dispatched: Callable[[], None] = _nothing,
) -> list[Loaded]:
    """Load candidates, in ``workers`` processes (``pool``'s, if given) when there are enough of them.

    ``dispatched`` is called once every process has its work (at once when this process loads).
    """
    if workers <= 1 or len(locations) < PARALLEL_MIN:
        dispatched()
        return _load_chunk(locations, options)
    # Neighbouring versions share most files: a chunk holds whole packages, so a process's YAML
    # memo keeps hitting. The chunks are guided, each a share of what is left when it starts (down
    # to CHUNK_MIN): large ones first (less handing over), small ones last (the processes finish
    # together); this process takes in the results of one while the next ones are loaded.
    chunks: list[list[str]] = []
    size = 0
    for index, location in enumerate(locations):
        if not chunks or (len(chunks[-1]) >= size and _package_of(chunks[-1][-1]) != _package_of(location)):
            chunks.append([])
            size = max(CHUNK_MIN, (len(locations) - index) // (2 * workers))
        chunks[-1].append(location)
    with contextlib.nullcontext(pool) if pool is not None else _worker_pool(workers) as loaders:
        futures = [(chunk, loaders.submit(_load_chunk, chunk, options)) for chunk in chunks if chunk]
        dispatched()
        out: list[Loaded] = []
        for chunk, future in futures:
            try:
                out.extend(future.result())
            except Exception as err:  # the process died, or a result could not be sent back
                log.warning(
                    "a loader process failed (%s: %s), loading its %d versions in this process",
                    type(err).__name__,
                    err,
                    len(chunk),
                )
                out.extend(_load_chunk(chunk, options))
        return out


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    # Spawned, not forked: the serving process has threads (the event loop's executor).
    return _loader_pool(workers, "spawn")


def _loader_pool(workers: int, method: str) -> ProcessPoolExecutor:
    # No cyclic garbage collection in a loader process at all: it lives for one load, and what it
    # builds is sent away and freed by reference counting. Re-enabled after each chunk, the
    # collector would walk every object the chunk allocated once more, and find nothing.
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=gc.disable
    )


def forked_pool(workers: int) -> ProcessPoolExecutor | None:
    """``workers`` loader processes forked now, while this process has one thread; else None.

    For the first load: a forked process starts with eprd imported, where a spawned one first
    imports it again (about 0.25 s of CPU each; a cold start of 2,000 versions on two cores took
    5.18 s instead of 6.07). Once threads run (the event loop's executor, the watcher), forking
    could copy a lock another thread holds, so later loads spawn (:func:`_worker_pool`).
    """
    if workers <= 1 or threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    pool = _loader_pool(workers, "fork")
    pool.submit(int)  # the processes are forked at the first submit
    return pool


def _chunk_size(count: int, workers: int) -> int:
    return max(CHUNK_MIN, -(-count // (workers * CHUNKS_PER_WORKER)))


def _package_of(location: str) -> tuple[str, str]:
    """Which package a candidate is a version of: its folder, and for a zip its name."""
    folder, base = os.path.split(location)
    # Package names have no "-" (they are [a-z0-9_]+): a zip is <name>-<version>.zip.
    return folder, base.split("-", 1)[0] if base.endswith(".zip") else ""


def check_stamps(
    stamps: list[tuple[str, str, bytes]],
    pool: ProcessPoolExecutor | None,
    meanwhile: Callable[[], T],
) -> tuple[set[str], T]:
    """The locations whose ``(location, inputs, stamp)`` still match the disk, and ``meanwhile()``.

    A warm start stats every input of every version (half a million at 10,000 versions). With a
    pool, its processes start on shares from the front while this process runs ``meanwhile``
    (unpickling the cached packages), then takes shares from the back until they meet.
    """
    if pool is None or len(stamps) < PARALLEL_MIN:
        return _fresh_locations(stamps), meanwhile()
    size = _chunk_size(len(stamps), 2)
    shares = [stamps[i : i + size] for i in range(0, len(stamps), size)]
    futures = [pool.submit(_fresh_locations, share) for share in shares]
    done = meanwhile()
    fresh: set[str] = set()
    for share, future in zip(reversed(shares), reversed(futures), strict=True):
        if not future.cancel():
            break  # a worker has it, and every share before it
        fresh.update(_fresh_locations(share))
    for future in futures:
        if not future.cancelled():
            fresh.update(future.result())
    return fresh, done


def _fresh_locations(share: list[tuple[str, str, bytes]]) -> set[str]:
    return {location for location, inputs, stamp in share if indexcache.is_fresh(location, inputs, stamp)}


class Collection:
    """The candidates under the package paths and the last good package of each."""

    def __init__(
        self,
        package_paths: Sequence[str],
        options: LoadOptions,
        *,
        workers: int = 1,
        cache_folder: str | None = None,
    ) -> None:
        self.paths = tuple(os.path.abspath(p) for p in package_paths)
        self.options = options
        self.workers = workers
        self.cache_file = (
            indexcache.cache_file(cache_folder, self.paths, options, _SCHEMA) if cache_folder else None
        )
        self.candidates: dict[str, Candidate] = {}
        self.packages: dict[str, Package] = {}  # location -> last good package
        self.rejected: dict[str, PackageError] = {}  # location -> why its current content is not served
        # location -> its index cache entry, or what to stamp to make one
        self.cached: dict[str, indexcache.Cached | indexcache.Pending] = {}
        self.reused = 0  # versions taken from the index cache by the last load_all
        self.cache_outdated = False  # whether the cache file differs from what is loaded

    def load_all(
        self, pool: ProcessPoolExecutor | None = None, dispatched: Callable[[], None] = _nothing
    ) -> Changes:
        """Scan every package path and load every candidate, reusing index cache entries still fresh.

        ``pool``: processes forked for this load (:func:`forked_pool`), shut down when it ends;
        by default forked here if this process has one thread. ``dispatched`` is called once the
        loader processes have their work, or a warm start has begun reading the index cache (and
        at the latest when the load ends).
        """
        pool = pool or forked_pool(self.workers)
        try:
            return self._load_all(pool, dispatched)
        finally:
            dispatched()
            if pool is not None:
                pool.shutdown(cancel_futures=True)  # (waits: its threads are gone before a fork)

    @_gc_paused()
    def _load_all(self, pool: ProcessPoolExecutor | None, dispatched: Callable[[], None]) -> Changes:
        found = scan(self.paths)
        self.candidates = {c.location: c for c in found}
        if self.cache_file and os.path.exists(self.cache_file):
            dispatched()  # a warm start: reading the cache is this process's work, not the loaders'

        spawned = None
        if (
            pool is None
            and self.workers > 1
            and len(found) >= PARALLEL_MIN
            and self.cache_file
            and os.path.exists(self.cache_file)
        ):
            # Processes to help check the stamps of cached versions, started before the cache
            # is read so that they are up when the checks begin.
            spawned = _worker_pool(self.workers - 1)
            spawned.submit(int)
        stored = indexcache.Stored(self.cache_file)
        known = [(c.location, *stored.stamps[c.location]) for c in found if c.location in stored.stamps]
        with spawned or contextlib.nullcontext():
            unchanged, results = check_stamps(known, pool or spawned, stored.results)
        fresh = {
            location: indexcache.Cached(location, inputs, stamp, results[location])
            for location, inputs, stamp in known
            if location in unchanged and location in results
        }
        self.reused = len(fresh)
        self.cached.update(fresh)
        for location, entry in fresh.items():
            self._accept(location, entry.result, Changes())
        changes = self._reload([c.location for c in found if c.location not in fresh], pool, dispatched)
        changes.added.extend(loc for loc, e in fresh.items() if not isinstance(e.result, PackageError))
        changes.rejected.extend(loc for loc, e in fresh.items() if isinstance(e.result, PackageError))
        self.cache_outdated = len(fresh) != len(stored.stamps) or len(fresh) != len(found)
        return changes

    def refresh(self) -> Changes:
        """Re-read whatever changed since it was loaded: new, removed and re-stamped candidates."""
        found = {c.location for c in scan(self.paths)}
        stale = (found ^ self.candidates.keys()) | {
            location for location in found & self.candidates.keys() if not self._fresh(location)
        }
        return self._reload(sorted(stale))

    def _fresh(self, location: str) -> bool:
        """Whether the loaded content of a candidate is what is on disk now."""
        if isinstance(self.cached.get(location), indexcache.Pending):
            return self._stamped(location) is not None  # stamped now: fresh unless it changed while loading
        entry = self.cached.get(location)
        return entry is not None and entry.is_fresh()

    def _stamped(self, location: str) -> indexcache.Cached | None:
        """A candidate's cache entry, stamping a pending one now (None: none, or changed while loaded)."""
        entry = self.cached.get(location)
        if isinstance(entry, indexcache.Pending):
            entry = entry.stamped()
            if entry is None:
                del self.cached[location]
            else:
                self.cached[location] = entry
        return entry

    def folder_count(self) -> int:
        """Folders under the package paths: package folders, their versions and everything inside."""
        parents = {os.path.dirname(c.location) for c in self.candidates.values()}
        return len(self.paths) + len(parents) + sum(p.folders for p in self.packages.values())

    def save_cache(self) -> None:
        """Write what is loaded now to the index cache, if that differs from the file (stamping new loads)."""
        if self.cache_file is None or not self.cache_outdated:
            return
        # (A version that changed while it was loaded is left out: the watcher reloads it.)
        entries = {loc: entry for loc in self.candidates if (entry := self._stamped(loc)) is not None}
        try:
            indexcache.write(self.cache_file, entries)
        except (OSError, pickle.PicklingError, AttributeError, TypeError) as err:
            log.warning("cannot write the index cache %s: %s", self.cache_file, err)
        else:
            self.cache_outdated = False

    def packages_of(self, kind: str) -> list[Package]:
        """The last good packages of one kind of candidate (``zip`` or ``dir``), in discovery order."""
        ordered = sorted(self.candidates.values(), key=lambda c: c.order)
        return [self.packages[c.location] for c in ordered if c.kind == kind and c.location in self.packages]

    def rejected_of(self, kind: str) -> list[PackageError]:
        """Why candidates of one kind are not served (or serve their last good content)."""
        return [
            err
            for location, err in self.rejected.items()
            if (c := self.candidates.get(location)) is not None and c.kind == kind
        ]

    def apply(self, changed_paths: Iterable[str]) -> Changes:
        """Re-read what a batch of changed file paths touched; returns what happened."""
        touched: set[str] = set()
        for path in changed_paths:
            touched.update(self._affected(os.path.abspath(path)))
        return self._reload(sorted(touched))

    def _affected(self, path: str) -> set[str]:
        """Candidate locations a changed path may have added, changed or removed."""
        affected: set[str] = set()
        for index, root in enumerate(self.paths):
            if path != root and not path.startswith(root + os.sep):
                continue
            parts = tuple(p for p in path[len(root) :].split(os.sep) if p)
            if parts and parts[0].startswith("."):
                # A hidden entry the scan skips, such as a ConfigMap volume's ..data link or its
                # ..<timestamp> folders: the links beside it may point elsewhere now.
                affected.update(self._stale_under(index))
                continue
            scope = self._candidate_scope(index, parts)
            if isinstance(scope, str):
                affected.add(scope)
                continue
            # A folder of package names changed: compare its candidates with what we know.
            folder = os.path.join(root, *scope)
            before = {
                loc for loc, c in self.candidates.items() if c.order[0] == index and _under(loc, folder)
            }
            now = scan_within(self.paths, index, scope)
            affected.update(before - {c.location for c in now})
            affected.update(c.location for c in now if c.location not in self.candidates)
        return affected

    def _stale_under(self, index: int) -> set[str]:
        """Candidates of package path ``index`` that appeared, disappeared or changed on disk."""
        before = {loc for loc, c in self.candidates.items() if c.order[0] == index}
        now = {c.location for c in scan_within(self.paths, index, ())}
        return (before ^ now) | {loc for loc in before & now if not self._fresh(loc)}

    def _candidate_scope(self, index: int, parts: tuple[str, ...]) -> str | tuple[str, ...]:
        """The candidate location a path belongs to, or the folder to rescan when it is none."""
        root = self.paths[index]
        if len(parts) >= 2 and is_strict(parts[1]):
            return os.path.join(root, *parts[:2])  # inside (or being) a version folder
        if len(parts) == 2 and parts[1].endswith(".sig") and is_strict(parts[1][:-4]):
            return os.path.join(root, parts[0], parts[1][:-4])  # a folder package's signature
        if parts and parts[-1].endswith(".zip.sig"):
            return os.path.join(root, *parts)[: -len(".sig")]
        if parts and parts[-1].endswith(".zip"):
            return os.path.join(root, *parts)
        return parts[:1]

    @_gc_paused()
    def _reload(
        self,
        locations: list[str],
        pool: ProcessPoolExecutor | None = None,
        dispatched: Callable[[], None] = _nothing,
    ) -> Changes:
        changes = Changes()
        present = []
        for location in locations:
            candidate = self._current_candidate(location)
            if candidate is None:
                if self.candidates.pop(location, None) is not None or location in self.packages:
                    changes.removed.append(location)
                self.packages.pop(location, None)
                self.rejected.pop(location, None)
                self.cached.pop(location, None)
                continue
            self.candidates[location] = candidate
            present.append(location)
        for location, result, pending in load_many(present, self.options, self.workers, pool, dispatched):
            if pending is None:
                self.cached.pop(location, None)
            else:
                self.cached[location] = pending
            self.cache_outdated = True
            self._accept(location, result, changes)
        return changes

    def _accept(self, location: str, result: Package | PackageError, changes: Changes) -> None:
        """Serve a loaded package from the next snapshot, or log why it is rejected."""
        if isinstance(result, PackageError):
            _log_rejection(result)
            self.rejected[location] = result  # the last good version, if any, stays served
            changes.rejected.append(location)
            return
        self.rejected.pop(location, None)
        previous = self.packages.get(location)
        self.packages[location] = result  # even when equal: its files may live in a new folder now
        if previous is None:
            changes.added.append(location)
        else:
            (changes.moved if _same_content(previous, result) else changes.changed).append(location)

    def _current_candidate(self, location: str) -> Candidate | None:
        for index, root in enumerate(self.paths):
            if location.startswith(root + os.sep):
                parts = tuple(location[len(root) + 1 :].split(os.sep))
                found = candidate_at(self.paths, index, parts)
                if found is not None:
                    return found
        return None


@dataclass(frozen=True, slots=True)
class Loading:
    """A :meth:`Collection.load_all` running in a thread of its own."""

    future: Future[Changes]
    started: float  # time.monotonic() when it started

    @classmethod
    def start(cls, collection: Collection) -> Loading:
        """Start loading ``collection`` in the background; return once its loader processes have work.

        (The caller imports the HTTP stack next. Until the scan is done and the chunks are sent,
        that import would hold the interpreter lock most of the time, and the loader processes
        would wait: 0.14 s of a 2.2 s cold start on two cores.)
        """
        started = time.monotonic()
        pool = forked_pool(collection.workers)  # before the thread: see forked_pool
        background = ThreadPoolExecutor(1, thread_name_prefix="eprd-load")
        dispatched = threading.Event()
        future = background.submit(collection.load_all, pool, dispatched.set)
        background.shutdown(wait=False)  # (its thread ends when the load is done)
        dispatched.wait()  # (set at the latest when load_all ends, however it ends)
        return cls(future, started)


def _same_content(a: Package, b: Package) -> bool:
    """Whether two loads of a version serve the same documents (e.g. the same files in a new folder)."""
    return (
        a.entry_parts == b.entry_parts
        and a.doc_head == b.doc_head
        and a.doc_tail == b.doc_tail
        and (a.signature is None) == (b.signature is None)
    )


def _under(location: str, folder: str) -> bool:
    return location.startswith(folder.rstrip(os.sep) + os.sep)
