"""Live reload: watch the package paths and report what changed in them.

One background task owns the :class:`~eprd.indexers.local.collection.Collection`.
For each batch of file changes watchfiles reports, it re-reads only the touched
package versions (in a worker thread, so requests keep being served) and reports
the changes (:data:`~eprd.indexers.base.Changed`), after which the next snapshot
is built and swapped in. Requests in flight keep the snapshot they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from eprd.indexers.base import Changed, Changes
from eprd.indexers.local import watchproc
from eprd.indexers.local.collection import Collection

log = logging.getLogger("eprd.watcher")


def _relay(conn: Connection, loop: asyncio.AbstractEventLoop, batches: asyncio.Queue[Any]) -> None:
    """Hand what the watch process sends to the event loop; None once it is gone."""

    def hand_over(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
            loop.call_soon_threadsafe(batches.put_nowait, item)

    try:
        while True:
            hand_over(conn.recv())
    except (EOFError, OSError):
        pass
    finally:
        conn.close()
        hand_over(None)


def _inotify_limit() -> int | None:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


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
    """Keeps ``collection`` up to date with its package paths."""

    def __init__(
        self,
        collection: Collection,
        *,
        poll: bool = False,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.collection = collection
        self.poll = poll
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.stats = WatchStats()
        self.ready = asyncio.Event()  # set once every folder is watched and missed changes are applied
        self._process: BaseProcess | None = None
        self._stopped = False  # stop() may come before run() has started (SIGTERM at start-up)
        self._changed: Changed | None = None

    async def run(self, changed: Changed) -> None:
        """Watch until :meth:`stop`, awaiting ``changed`` after each update that changed something.

        A watcher that cannot start leaves the registry serving.
        """
        self._changed = changed
        if self._stopped:
            return
        paths = [p for p in self.collection.paths if os.path.isdir(p)]
        if not paths:
            log.warning("no existing package path to watch; live reload is off")
            return
        if not self.poll:
            self._check_watch_limit()
        loop = asyncio.get_running_loop()
        batches: asyncio.Queue[list[str] | tuple[str, str] | None] = asyncio.Queue()
        receive, send = multiprocessing.Pipe(duplex=False)
        self._process = multiprocessing.get_context("spawn").Process(
            target=watchproc.watch,
            args=(paths, self.step_ms, self.debounce_ms, self.poll, send),
            name="eprd-watcher",
            daemon=True,
        )
        self._process.start()
        send.close()
        reader = threading.Thread(
            target=_relay, args=(receive, loop, batches), name="eprd-watch-relay", daemon=True
        )
        reader.start()
        self.stats.running = True
        try:
            while (item := await batches.get()) is not None:
                if item == watchproc.READY:
                    # Changes made between loading and now were not seen: compare stamps once.
                    await self._rebuild(self.collection.refresh)
                    self.ready.set()
                    continue
                if isinstance(item, tuple):
                    self._failed(item[1])
                    break
                changed = set(item)
                while not batches.empty():  # batches that queued up during a rebuild are one batch
                    more = batches.get_nowait()
                    if not isinstance(more, list):
                        batches.put_nowait(more)
                        break
                    changed |= set(more)
                await self._rebuild(self.collection.apply, sorted(changed))
        finally:
            self.stats.running = False
            self.stop()

    def _check_watch_limit(self) -> None:
        """Warn when the package paths hold more folders than inotify may watch."""
        limit = _inotify_limit()
        needed = self.collection.folder_count()
        if limit is not None and needed > limit * 0.9:
            self.stats.error = f"{needed} folders to watch, inotify allows {limit}"
            log.error(
                "live reload cannot cover the package paths: they hold %d folders and inotify allows %d "
                "watches per user, so changes in some packages will be missed. Raise the limit "
                "(sysctl -w fs.inotify.max_user_watches=%d) or start eprd with -package-paths-watcher-poll",
                needed,
                limit,
                needed * 2,
                extra={"watch.folders": needed, "watch.limit": limit},
            )

    def _failed(self, message: str) -> None:
        self.stats.error = message
        log.warning(
            "cannot watch package paths, live reload is off: %s. If the inotify watch limit is reached, "
            "raise fs.inotify.max_user_watches (sysctl) or start eprd with -package-paths-watcher-poll",
            message,
            extra={"error.message": message},
        )

    def stop(self) -> None:
        self._stopped = True
        process, self._process = self._process, None
        if process is not None and process.is_alive():
            process.terminate()  # it holds no state; the reader sees the pipe close and ends the loop

    async def _rebuild(self, update: Callable[..., Changes], *args: Any) -> None:
        started = time.monotonic()
        changes = await asyncio.to_thread(update, *args)
        if not changes or self._changed is None:
            return
        await self._changed(changes, started)
        self.stats.rebuilds += 1
        self.stats.rejected_total += len(changes.rejected)
        self.stats.last_duration = time.monotonic() - started
