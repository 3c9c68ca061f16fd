"""Live reload: watch the package paths and swap in a new snapshot when packages change.

One background task owns the :class:`~eprd.loader.Collection`. For each batch
of file changes watchfiles reports, it re-reads only the touched package
versions (in a worker thread, so requests keep being served), builds the next
snapshot from the previous one and replaces ``registry.snapshot`` in a single
assignment. Requests in flight keep the snapshot they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
        self._stop = threading.Event()
        self.on_rebuild: list[Callable[[Changes, float], None]] = []

    async def run(self) -> None:
        """Watch until :meth:`stop`; a watcher that cannot start leaves the registry serving."""
        paths = [p for p in self.collection.paths if os.path.isdir(p)]
        if not paths:
            log.warning("no existing package path to watch; live reload is off")
            return
        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[set[str] | BaseException | None] = asyncio.Queue()
        # Setting up inotify watches on a large tree takes seconds: it runs in its own thread so
        # the event loop keeps answering requests meanwhile.
        thread = threading.Thread(
            target=self._produce, args=(paths, loop, batches), name="eprd-watcher", daemon=True
        )
        thread.start()
        self.stats.running = True
        try:
            while (item := await batches.get()) is not None:
                if isinstance(item, BaseException):
                    self._failed(item)
                    break
                changed = set(item)
                while not batches.empty():  # batches that queued up during a rebuild are one batch
                    more = batches.get_nowait()
                    if not isinstance(more, set):
                        batches.put_nowait(more)
                        break
                    changed |= more
                await self._rebuild(sorted(changed))
        finally:
            self.stats.running = False
            self._stop.set()
            await asyncio.to_thread(thread.join, 10)

    def _produce(
        self, paths: list[str], loop: asyncio.AbstractEventLoop, batches: asyncio.Queue[Any]
    ) -> None:
        """The watch thread: hands each batch of changed paths to the event loop."""

        def hand_over(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
                loop.call_soon_threadsafe(batches.put_nowait, item)

        try:
            for batch in watchfiles.watch(
                *paths,
                debounce=self.debounce_ms,
                step=self.step_ms,
                stop_event=self._stop,
                rust_timeout=500,
                force_polling=self.poll,
                poll_delay_ms=300,
                ignore_permission_denied=True,
                raise_interrupt=False,
            ):
                hand_over({path for _, path in batch})
        except Exception as err:  # reported on the loop; the registry keeps serving
            hand_over(err)
        finally:
            hand_over(None)

    def _failed(self, err: BaseException) -> None:
        self.stats.error = str(err)
        log.warning(
            "cannot watch package paths, live reload is off: %s. If the inotify watch limit is reached, "
            "raise fs.inotify.max_user_watches (sysctl) or start eprd with -package-paths-watcher-poll",
            err,
            extra={"error.message": str(err)},
        )

    def stop(self) -> None:
        self._stop.set()

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
