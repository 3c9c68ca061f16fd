"""Serving with ``-feature-storage-indexer``: the storage indexer built from flags and wired in.

Until the Indexer seam builds snapshots from every indexer, the storage indexer joins the
local collection as a "remote" source (its packages first, §1.2), and each new cursor
rebuilds and swaps the snapshot as the package-path watcher does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from eprd.cli import flags
from eprd.indexers.storage.indexer import StorageIndexer

if TYPE_CHECKING:
    from eprd.http.server import Registry
    from eprd.indexers.local.collection import Collection
    from eprd.ops.metrics import Metrics

log = logging.getLogger("eprd.storage")


def enabled(options: flags.Options) -> bool:
    """Either storage flag: eprd's one storage indexer serves both (the SQL one bounds nothing more)."""
    return bool(options["feature-storage-indexer"] or options["feature-sql-storage-indexer"])


async def start(options: flags.Options, collection: Collection, metrics: Metrics | None) -> StorageIndexer:
    """Build the indexer and load its first index (a failure is logged: serving starts not ready)."""
    sql = options["feature-sql-storage-indexer"]
    indexer = StorageIndexer(
        options["storage-indexer-bucket-internal"],
        options["storage-endpoint"],
        interval=options["storage-indexer-watch-interval"],
        incremental=options["feature-incremental-updates"],
        name="SQLStorageIndexer" if sql else "StorageIndexer",
    )
    if metrics is not None:
        indexer.on_update.append(metrics.storage_update)
    collection.remote.append(indexer)
    await indexer.poll()
    if not indexer.loaded:
        log.warning(
            "no storage index loaded yet, not ready; retrying every %ss",
            indexer.interval or 60,
            extra={"storage.bucket": indexer.store.url, "error.message": indexer.last_error},
        )
    return indexer


def attach(registry: Registry, indexer: StorageIndexer) -> None:
    """Readiness waits for the first index; storage packages' resources come from its endpoint."""
    registry.storage = indexer
    registry.readiness.append(lambda: indexer.loaded)


def run(registry: Registry, indexer: StorageIndexer, collection: Collection) -> asyncio.Task[None]:
    """The polling task: every new cursor swaps in a new snapshot."""

    async def changed() -> None:
        previous = registry.snapshot
        registry.snapshot = await asyncio.to_thread(collection.snapshot, previous.generation + 1, previous)
        log.info(
            "snapshot swapped",
            extra={
                "snapshot.generation": registry.snapshot.generation,
                "cursor.current": indexer.cursor,
                "packages.served": len(registry.snapshot),
            },
        )

    return asyncio.create_task(indexer.run(changed), name="eprd-storage-indexer")


async def stop(indexer: StorageIndexer, task: asyncio.Task[None]) -> None:
    indexer.stop()
    await task
    await indexer.close()
    from eprd.http import piping

    await piping.close()
