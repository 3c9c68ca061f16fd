"""Live reload: watch the package paths and swap in a new snapshot when packages change.

One background task owns the :class:`~eprd.loader.Collection`. For each batch
of file changes watchfiles reports, it re-reads only the touched package
versions (in a worker thread, so requests keep being served), builds the next
snapshot from the previous one and replaces ``registry.snapshot`` in a single
assignment. Requests in flight keep the snapshot they started with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import watchfiles

from eprd.loader import Changes, Collection
from eprd.snapshot import Snapshot

log = logging.getLogger("eprd.watcher")

# watchfiles yields a batch once no new event arrived for STEP_MS (an editor's
# write-then-rename or a `cp -r` of a version folder is one burst), and at the
# latest after DEBOUNCE_MS while events keep coming, which bounds the rebuilds
# a long burst causes.
STEP_MS = 100
DEBOUNCE_MS = 1000


@dataclass(slots=True)
class WatchStats:
    """Counters the metrics and diagnostics endpoints report."""

    rebuilds: int = 0
    rejected_total: int = 0
    last_duration: float = 0.0
    running: bool = False
    error: str = ""


class Watcher:
    """Keeps ``get()`` up to date with the package paths of ``collection``."""

    def __init__(
        self,
        collection: Collection,
        get: Callable[[], Snapshot],
        swap: Callable[[Snapshot], None],
        *,
        poll: bool = False,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.collection = collection
        self._get = get
        self._swap = swap
        self.poll = poll
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.stats = WatchStats()
        self.stop_event = asyncio.Event()
        self.on_rebuild: list[Callable[[Changes, float], None]] = []

    async def run(self) -> None:
        """Watch until :meth:`stop`; a watcher that cannot start leaves the registry serving."""
        paths = [p for p in self.collection.paths if os.path.isdir(p)]
        if not paths:
            log.warning("no existing package path to watch; live reload is off")
            return
        self.stats.running = True
        try:
            async for batch in watchfiles.awatch(
                *paths,
                debounce=self.debounce_ms,
                step=self.step_ms,
                stop_event=self.stop_event,
                force_polling=self.poll,
                poll_delay_ms=300,
                ignore_permission_denied=True,
            ):
                await self._rebuild(sorted({path for _, path in batch}))
        except Exception as err:
            self.stats.error = str(err)
            log.warning(
                "cannot watch package paths, live reload is off: %s. If the inotify watch limit is reached, "
                "raise fs.inotify.max_user_watches (sysctl) or start eprd with -package-paths-watcher-poll",
                err,
                extra={"error.message": str(err)},
            )
        finally:
            self.stats.running = False

    def stop(self) -> None:
        self.stop_event.set()

    async def _rebuild(self, paths: list[str]) -> None:
        started = time.monotonic()
        changes = await asyncio.to_thread(self.collection.apply, paths)
        if not changes:
            return
        previous = self._get()
        snapshot = await asyncio.to_thread(self.collection.snapshot, previous.generation + 1, previous)
        self._swap(snapshot)
        duration = time.monotonic() - started
        self.stats.rebuilds += 1
        self.stats.rejected_total += len(changes.rejected)
        self.stats.last_duration = duration
        log.info(
            "snapshot swapped",
            extra={
                "snapshot.generation": snapshot.generation,
                "packages.added": len(changes.added),
                "packages.changed": len(changes.changed),
                "packages.removed": len(changes.removed),
                "packages.rejected": len(changes.rejected),
                "packages.served": len(snapshot),
                "event.duration": int(duration * 1e9),
            },
        )
        for callback in self.on_rebuild:
            callback(changes, duration)
