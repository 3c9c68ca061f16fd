"""Serving with ``-feature-storage-indexer``: the storage indexer built from the flags."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from eprd.cli import flags

if TYPE_CHECKING:
    from eprd.indexers.storage.indexer import StorageIndexer
    from eprd.ops.metrics import Metrics

log = logging.getLogger("eprd.storage")


def enabled(options: flags.Options) -> bool:
    """Either storage flag: eprd's one storage indexer serves both (same answers, same memory)."""
    return bool(options["feature-storage-indexer"] or options["feature-sql-storage-indexer"])


async def start(options: flags.Options, metrics: Metrics | None) -> StorageIndexer:
    """Build the indexer and load its first index; a failure is logged and serving starts not ready."""
    # Imported here, not at the top: eprd.cli.main imports this module, every process eprd spawns
    # (loaders, the stamp checker) imports eprd.cli.main again, and the storage indexer brings
    # aiohttp's client, which only storage mode needs.
    from eprd.indexers.storage.indexer import StorageIndexer

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
    await indexer.poll()
    if not indexer.loaded:
        log.warning(
            "no storage index loaded yet: not ready, retrying every %ss",
            indexer.interval or 60,
            extra={"storage.bucket": indexer.store.url, "error.message": indexer.last_error},
        )
    return indexer
