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


class WatchError(RuntimeError):
    """The watch process failed or ended while watching: the supervisor starts the watcher again."""


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
        feed: Connection | None = None,
    ) -> None:
        """``feed``: batches as the watch process sends them, from elsewhere (a ``-workers``
        supervisor runs one watch process for all); no watch process is started then."""
        self.collection = collection
        self.poll = poll
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.stats = WatchStats()
        self.ready = asyncio.Event()  # set once every folder is watched and missed changes are applied
        self._process: BaseProcess | None = None
        self._stopped = False  # stop() may come before run() has started (SIGTERM at start-up)
        self._changed: Changed | None = None
        self._feed = feed
        self._batches: asyncio.Queue[Any] | None = None

    async def run(self, changed: Changed) -> None:
        """Watch until :meth:`stop`, awaiting ``changed`` after each update that changed something.

        A watcher that cannot start leaves the registry serving. Anything that goes wrong once
        watching (a rebuild that raises, the watch process gone) raises out of here, for the
        supervisor to log and start the watcher again: the next run compares stamps, so the
        changes of a failed batch are picked up then.
        """
        self._changed = changed
        if self._stopped:
            return
        paths = list(self.collection.paths)
        if not any(os.path.isdir(p) for p in paths):
            log.warning("no package path exists yet; packages are loaded when one appears")
        if not self.poll and self._feed is None:
            self._check_watch_limit()
        loop = asyncio.get_running_loop()
        if self._feed is not None:
            batches = self._feed_batches(loop)
        else:
            batches = asyncio.Queue()
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
                    # Changes made between loading (or the last run) and now were not seen:
                    # compare stamps once.
                    await self._rebuild(self.collection.refresh)
                    self.ready.set()
                    continue
                if item == watchproc.RELINKED:
                    # A link along a package path points elsewhere now (a ConfigMap's ..data, a
                    # git-sync worktree): compare everything.
                    await self._rebuild(self.collection.refresh)
                    continue
                if isinstance(item, tuple):
                    if item[2]:
                        self._failed(item[1])  # the system refuses the watches: live reload is off
                        return
                    self.stats.error = item[1]
                    raise WatchError(f"the watch process failed: {item[1]}")
                changed = set(item)
                while not batches.empty():  # batches that queued up during a rebuild are one batch
                    more = batches.get_nowait()
                    if not isinstance(more, list):
                        batches.put_nowait(more)
                        break
                    changed |= set(more)
                await self._rebuild(self.collection.apply, sorted(changed))
            if not self._stopped:
                raise WatchError("the watch process ended unexpectedly")
        finally:
            self.stats.running = False
            self._end_process()

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
        """End :meth:`run` (after the rebuild in progress, if any); it is not started again."""
        self._stopped = True
        self._end_process()
        if self._batches is not None:
            self._batches.put_nowait(None)  # a feed stays open (the supervisor's): end the loop here

    def _feed_batches(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[Any]:
        """The queue fed from ``feed``: one relay thread for every run, so that none loses a batch.

        A run after a failed one starts with a comparison of stamps (as a new watch process's
        READY would make it), which picks up the batch that failed.
        """
        if self._batches is None:
            self._batches = asyncio.Queue()
            threading.Thread(
                target=_relay, args=(self._feed, loop, self._batches), name="eprd-watch-relay", daemon=True
            ).start()
        else:
            self._batches.put_nowait(watchproc.READY)
        return self._batches

    def _end_process(self) -> None:
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
