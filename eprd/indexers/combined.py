"""Indexers combined into the one snapshot the server answers from, kept current.

:func:`build` joins what each indexer holds, in precedence order, into an
immutable :class:`~eprd.catalog.snapshot.Snapshot`. :class:`Combined` runs every
indexer's background task; when one reports a change it builds the next snapshot
off the event loop and hands it to ``swap`` (one assignment in the server).

Building a snapshot reads each indexer's ``packages()``; the snapshot then holds
those package objects, so a later change in an indexer never alters a snapshot
already served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from eprd.catalog.snapshot import Snapshot, build_snapshot
from eprd.indexers.base import Changes, Indexer

log = logging.getLogger("eprd.watcher")

# How a build is run: plainly, or inside an APM transaction (eprd.ops.apm).
BuildRunner = Callable[[Callable[[], Snapshot]], Snapshot]


def build(indexers: Sequence[Indexer], generation: int = 1, previous: Snapshot | None = None) -> Snapshot:
    """A snapshot of what ``indexers`` hold now; earlier indexers win a name and version."""
    return build_snapshot(
        ((indexer.name, indexer.packages()) for indexer in indexers),
        rejected=[error for indexer in indexers for error in indexer.rejected()],
        generation=generation,
        previous=previous,
    )


class Combined:
    """The indexers of one registry and the swap that publishes each new snapshot."""

    def __init__(self, indexers: Sequence[Indexer], runner: BuildRunner | None = None) -> None:
        self.indexers = tuple(indexers)
        self._get: Callable[[], Snapshot] | None = None
        self._swap: Callable[[Snapshot], None] | None = None
        self._runner: BuildRunner = runner or (lambda fn: fn())
        # One rebuild at a time, so that a slower build never replaces a newer snapshot. Only the
        # background tasks take it; requests never wait for it.
        self._lock = asyncio.Lock()
        self.on_rebuild: list[Callable[[Changes, float], None]] = []

    def by_name(self) -> dict[str, Indexer]:
        return {indexer.name: indexer for indexer in self.indexers}

    def is_ready(self) -> bool:
        return all(indexer.is_ready() for indexer in self.indexers)

    def first(self) -> Snapshot:
        """The first snapshot, from what the indexers loaded at start-up."""
        return self._runner(lambda: build(self.indexers))

    async def run(self, get: Callable[[], Snapshot], swap: Callable[[Snapshot], None]) -> None:
        """Run every indexer's background task; each change swaps a new snapshot in after ``get()``."""
        self._get, self._swap = get, swap
        tasks = [
            asyncio.create_task(indexer.run(self.changed), name=f"eprd-{indexer.task}")
            for indexer in self.indexers
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def changed(self, changes: Changes, started: float) -> None:
        """Build the next snapshot after ``changes`` and swap it in."""
        if self._get is None or self._swap is None:
            return  # not serving yet
        async with self._lock:
            previous = self._get()
            snapshot = await asyncio.to_thread(
                self._runner, lambda: build(self.indexers, previous.generation + 1, previous)
            )
            self._swap(snapshot)
        duration = time.monotonic() - started
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

    async def close(self) -> None:
        for indexer in self.indexers:
            await indexer.close()
