"""The storage indexer: packages from a Package Storage v2 index, polled for new cursors.

Every replica reads the same bucket and keeps nothing another replica needs: the
served cursor and the packages it names. Each poll reads ``cursor.json``; when it
moved, the next package list is built off the event loop (the full index, or with
``-feature-incremental-updates`` the delta of every cursor folder after the served
one, in cursor order) and replaces the current one in one assignment. Anything that
goes wrong (network, bad JSON, a cursor that points nowhere) keeps the last good list,
logs one error and is counted; a broken delta falls back to that cursor's full index,
and a broken cursor folder is skipped once a later good one exists, so one bad upload
never blocks later ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote

from eprd.indexers.base import ZIP, Changed, Changes, Indexer, NotFound, Piped, Resource
from eprd.indexers.storage import layout
from eprd.indexers.storage.layout import StorageIndexError
from eprd.indexers.storage.objectstore import ObjectNotFound, ObjectStore, StorageError, open_store
from eprd.model.package import Package, PackageError

log = logging.getLogger("eprd.storage")

UpdateObserver = Callable[[bool, float], None]


class StorageIndexer(Indexer):
    """Packages of one storage bucket (``-storage-indexer-bucket-internal``)."""

    name = "StorageIndexer"
    task = "storage-indexer"

    def __init__(
        self,
        internal: str | ObjectStore,
        endpoint: str,
        *,
        interval: float = 60.0,
        incremental: bool = False,
        name: str = "StorageIndexer",
    ) -> None:
        self.store = open_store(internal) if isinstance(internal, str) else internal
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.interval = interval
        self.incremental = incremental
        self.name = name
        self.cursor: str | None = None
        self._packages: dict[tuple[str, str], Package] = {}
        self._rejected: list[PackageError] = []
        self.on_update: list[UpdateObserver] = []  # (success, seconds) of every poll that read an index
        self.last_error: str | None = None
        self._stopped = asyncio.Event()

    # --- what the snapshot needs --------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether a first index was loaded."""
        return self.cursor is not None

    def is_ready(self) -> bool:
        """Not ready until a first index is loaded (``/health?ready=true``)."""
        return self.loaded

    def packages(self) -> Sequence[Package]:
        """The packages of the served cursor, in index order."""
        return list(self._packages.values())

    def rejected(self) -> Sequence[PackageError]:
        """Index entries of the served cursor that could not be used."""
        return list(self._rejected)

    # --- resources: fetched from -storage-endpoint -------------------------------------------

    def _url(self, key: str) -> str:
        return self.endpoint + quote(key, safe="/$&+,:;=@")

    async def static(self, package: Package, path: str) -> Resource:
        """Fetched from the bucket whether or not it exists there: its status is passed through."""
        return Piped(self._url(layout.static_key(package.name, package.version, path)))

    async def artifact(self, package: Package, fmt: str = ZIP) -> Resource:
        if fmt != ZIP:
            return NotFound("artifact not found")  # the bucket holds zips only
        return Piped(self._url(layout.artifact_key(package.name, package.version)))

    async def signature(self, package: Package) -> Resource:
        return Piped(self._url(layout.artifact_key(package.name, package.version, signature=True)))

    # --- polling ------------------------------------------------------------------------------

    async def poll(self) -> bool:
        """Read the cursor and load what changed; True if the package list changed.

        Never raises for a bad bucket: the error is logged, observed and the list kept.
        """
        started = time.monotonic()
        try:
            changed = await self._update()
        except (StorageError, StorageIndexError) as err:
            self.last_error = str(err)
            log.error(
                "storage index update failed, keeping the last good index: %s",
                err,
                extra={"cursor.current": self.cursor, "storage.bucket": self.store.url},
            )
            self._observe(False, time.monotonic() - started)
            return False
        self.last_error = None
        if changed:
            self._observe(True, time.monotonic() - started)
        return changed

    def _observe(self, success: bool, seconds: float) -> None:
        for observer in self.on_update:
            observer(success, seconds)

    async def _update(self) -> bool:
        try:
            latest = layout.parse_cursor(await self.store.get(layout.CURSOR))
        except ObjectNotFound:
            raise StorageIndexError(f"no cursor at {self.store.url}/{layout.CURSOR}") from None
        if latest == self.cursor:
            log.debug("cursor is up-to-date", extra={"cursor.current": latest})
            return False
        log.info("cursor will be updated", extra={"cursor.current": self.cursor, "cursor.next": latest})
        if self.incremental and self.cursor is not None:
            return await self._apply_deltas(latest)
        packages, rejected = await self._full(latest)
        self._swap(latest, packages, rejected)
        return True

    async def _full(self, cursor: str) -> tuple[dict[tuple[str, str], Package], list[PackageError]]:
        key = layout.index_key(cursor, layout.INDEX_ALL)
        try:
            data = await self.store.get(key)
        except ObjectNotFound:
            raise StorageIndexError(f"cursor {cursor} points nowhere: no {key}") from None
        parsed = await asyncio.to_thread(layout.parse_index, data, key)
        packages: dict[tuple[str, str], Package] = {}
        for package in parsed.packages:
            packages.setdefault((package.name, package.version), package)
        if not packages:
            raise StorageIndexError(f"{key} holds no usable package")
        return packages, parsed.rejected

    async def _apply_deltas(self, latest: str) -> bool:
        assert self.cursor is not None
        served = self.cursor
        pending = sorted(c for c in await self.store.folders(layout.METADATA) if served < c <= latest)
        if latest not in pending:
            pending.append(latest)  # listed or not, the cursor file names it
        packages = dict(self._packages)
        rejected = list(self._rejected)
        applied: str | None = None
        failure: Exception | None = None
        for cursor in pending:
            try:
                packages, rejected = await self._next(cursor, packages, rejected)
            except (StorageError, StorageIndexError) as err:
                log.warning(
                    "skipping unusable cursor folder %s: %s", cursor, err, extra={"cursor.current": cursor}
                )
                failure = err
                continue
            applied = cursor
            failure = None
        if applied is None or failure is not None:
            if applied is not None:
                self._swap(applied, packages, rejected)  # progress up to the last good cursor
            raise failure or StorageIndexError(f"no usable cursor after {served}")
        self._swap(applied, packages, rejected)
        return True

    async def _next(
        self, cursor: str, packages: dict[tuple[str, str], Package], rejected: list[PackageError]
    ) -> tuple[dict[tuple[str, str], Package], list[PackageError]]:
        """The package list after ``cursor``: its delta applied, else its full index."""
        key = layout.index_key(cursor, layout.INDEX_DELTA)
        try:
            delta = await asyncio.to_thread(layout.parse_delta, await self.store.get(key), key)
        except (StorageError, StorageIndexError) as err:
            log.warning("cannot use delta %s, loading the full index of that cursor: %s", key, err)
            return await self._full(cursor)
        updated = dict(packages)
        for name_version in delta.removed:
            updated.pop(name_version, None)
        for package in delta.changed.packages:
            updated[(package.name, package.version)] = package
        if not updated:
            raise StorageIndexError(f"{key} leaves no package")
        return updated, rejected + delta.changed.rejected

    def _swap(
        self, cursor: str, packages: dict[tuple[str, str], Package], rejected: list[PackageError]
    ) -> None:
        for err in rejected:
            if err not in self._rejected:
                log.error(
                    "invalid package in the storage index: %s", err.reason, extra={"file.path": err.location}
                )
        self._packages = packages
        self._rejected = rejected
        self.cursor = cursor
        log.info("storage index loaded", extra={"cursor.current": cursor, "packages.served": len(packages)})

    async def run(self, changed: Changed) -> None:
        """Poll every ``interval`` seconds until stopped, awaiting ``changed`` after each new cursor.

        Before the first index is loaded it retries at that interval (serving, not ready);
        with interval 0 the index is loaded once (retried every minute until it is).
        """
        while not self._stopped.is_set():
            if self.interval > 0:
                wait = self.interval
            elif not self.loaded:
                wait = 60.0
            else:
                await self._stopped.wait()
                return
            try:
                await asyncio.wait_for(self._stopped.wait(), wait)
                return
            except TimeoutError:
                pass
            started = time.monotonic()
            before = self._packages
            if await self.poll():
                await changed(_changes(before, self._packages), started)

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        """Stop polling (``run`` returns) and close the bucket's connections."""
        self.stop()
        await self.store.close()


def _changes(before: dict[tuple[str, str], Package], after: dict[tuple[str, str], Package]) -> Changes:
    """What a new cursor changed, by ``name-version``."""
    changes = Changes()
    for key, package in after.items():
        old = before.get(key)
        if old is None:
            changes.added.append(f"{key[0]}-{key[1]}")
        elif old is not package:
            changes.changed.append(f"{key[0]}-{key[1]}")
    changes.removed.extend(f"{n}-{v}" for n, v in before.keys() - after.keys())
    return changes
