"""Serving: load the packages, listen, watch, and stop gracefully on SIGTERM.

Imported by :mod:`eprd.cli` only when it serves, so that neither ``-dry-run`` nor the
processes that load packages (which import the entry point's module) pay for aiohttp,
the metrics and the APM agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from aiohttp import web

from eprd.cli import flags, storage
from eprd.config import Config
from eprd.http import piping
from eprd.http.registry import Registry
from eprd.http.server import make_app, split_address, tls_context
from eprd.indexers.base import Indexer
from eprd.indexers.combined import BuildRunner, Combined
from eprd.indexers.local.archives import ArchiveStore
from eprd.indexers.local.collection import Collection, Loading
from eprd.indexers.local.indexer import local_indexers
from eprd.indexers.local.watcher import Watcher
from eprd.ops import logs
from eprd.ops.accesslog import AccessLog
from eprd.ops.apm import Apm, TracedCollection
from eprd.ops.diagnostics import Diagnostics
from eprd.ops.metrics import Metrics, make_metrics_app
from eprd.upstream.observe import OpsObserver

log = logging.getLogger("eprd")


async def serve(
    config: Config, options: flags.Options, collection: Collection, loading: Loading | None
) -> int:
    """Serve ``collection`` until SIGTERM/SIGINT; the return value is the process exit code.

    ``loading`` is its load if already started (see :func:`eprd.cli.main`), else it is loaded here.
    """
    ops = _Operations(options)
    try:
        return await _serve_registry(config, options, collection, loading, ops)
    finally:
        await ops.close()


async def _serve_registry(
    config: Config,
    options: flags.Options,
    collection: Collection,
    loading: Loading | None,
    ops: _Operations,
) -> int:
    if not await ops.start_diagnostics():  # -httpprof: before loading, to see the load too
        return 1
    # The storage index loads while the package paths do.
    remote = asyncio.create_task(storage.start(options, ops.metrics)) if storage.enabled(options) else None
    if loading is None:
        started = time.monotonic()
        collection = ops.traced(collection)  # APM transactions around loads and snapshot builds
        await asyncio.to_thread(collection.load_all)
    else:
        started = loading.started
        await asyncio.wrap_future(loading.future)
    watcher = None
    if options["package-paths-enable-watcher"]:
        watcher = Watcher(collection, poll=options["package-paths-watcher-poll"])
    archives = ArchiveStore(os.path.join(flags.cache_dir(options), "archives"), options["archive-cache-size"])
    indexers: list[Indexer] = list(local_indexers(collection, archives, watcher))
    if remote is not None:  # storage packages win over local ones (§1.2)
        indexers.insert(0, await remote)
        piping.observe(OpsObserver(ops.metrics, ops.apm))  # eprd_upstream_* metrics, APM spans
    combined = Combined(indexers, ops.build_runner())
    snapshot = await asyncio.to_thread(combined.first)
    log.info(
        "packages loaded",
        extra={
            "packages.served": len(snapshot),
            "packages.rejected": len(collection.rejected),
            "packages.from_cache": collection.reused,
            "event.duration": int((time.monotonic() - started) * 1e9),
        },
    )
    if len(snapshot) == 0 and not storage.enabled(options):
        if not options["package-paths-enable-watcher"]:
            log.critical("Init failed: No local packages found.")
            return 1
        log.warning("No local packages found, waiting for packages to appear")
    favicon = None
    if options["favicon"]:
        try:
            with open(options["favicon"], "rb") as fh:
                favicon = fh.read()
        except OSError as err:
            log.critical("Init failed: cannot read -favicon %s: %s", options["favicon"], err.strerror)
            return 1
    registry = Registry(
        config,
        snapshot,
        indexers,
        allow_unknown_query_parameters=options["allow-unknown-query-parameters"],
        favicon=favicon,
    )
    registry.watcher = watcher
    ops.attach(registry)  # metrics, APM and diagnostics follow the registry (before make_app)
    if logs.LEVELS[options["log-level"]] <= logging.INFO:
        registry.access_log = AccessLog(options["log-type"], extra=logs.service_fields())
    runner = web.AppRunner(
        make_app(registry),
        access_log=None,
        handle_signals=False,
        # aiohttp waits this long for a request in flight, then as long again before it cancels
        # it: half makes -shutdown-timeout the whole bound (a request may use all of it).
        shutdown_timeout=options["shutdown-timeout"] / 2,
    )
    await runner.setup()
    host, port = split_address(options["address"])
    ssl_context = None
    if options["tls-cert"] and options["tls-key"]:
        ssl_context = tls_context(options["tls-cert"], options["tls-key"], options["tls-min-version"])
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    try:
        await site.start()
    except OSError as err:
        log.critical("Init failed: cannot listen on %s: %s", options["address"], err.strerror)
        await runner.cleanup()
        return 1
    log.info("listening", extra={"server.address": options["address"], "tls": ssl_context is not None})
    stop = asyncio.Event()  # from now on SIGTERM means a graceful stop, even during the steps below
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not await ops.start_metrics(registry, combined):  # -metrics-address, after the API listener
        return 1
    # Written (and stamped, see Collection.save_cache) once serving, before the watcher can
    # change what is loaded.
    await asyncio.to_thread(collection.save_cache)
    watch_task = asyncio.create_task(
        combined.run(lambda: registry.snapshot, lambda new: setattr(registry, "snapshot", new)),
        name="eprd-indexers",
    )

    await stop.wait()
    log.info("shutting down: no new connections, waiting for requests in flight")
    registry.shutting_down = True
    await combined.close()  # stops the watcher, which ends its task
    await watch_task
    await piping.close()
    await asyncio.to_thread(collection.save_cache)  # keep the next start warm (no-op if unchanged)
    await runner.cleanup()
    log.info("stopped")
    return 0


# --- operations: metrics, APM and diagnostics around the API (eprd.metrics, eprd.apm, eprd.diagnostics)


class _Operations:
    """The -metrics-address and -httpprof listeners and the APM agent of one ``_serve``."""

    def __init__(self, options: flags.Options) -> None:
        self.options = options
        self.apm = Apm.from_environment(os.environ)
        self.metrics = Metrics() if options["metrics-address"] else None
        self.diagnostics = Diagnostics() if options["httpprof"] else None
        self.runners: list[web.AppRunner] = []
        self._traced: TracedCollection | None = None

    async def _listen(self, app: web.Application, flag: str, shutdown_timeout: float) -> bool:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        host, port = split_address(self.options[flag])
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as err:
            log.critical("Init failed: cannot listen on %s (-%s): %s", self.options[flag], flag, err.strerror)
            await runner.cleanup()
            return False
        self.runners.append(runner)
        log.info(f"listening for -{flag}", extra={"server.address": self.options[flag]})
        return True

    async def start_diagnostics(self) -> bool:
        if self.diagnostics is None:
            return True
        self.diagnostics.trace_memory()
        return await self._listen(self.diagnostics.app(), "httpprof", 1.0)

    def traced(self, collection: Collection) -> Collection:
        if self.apm is None:
            return collection
        self._traced = self.apm.traced_collection(collection)
        return self._traced  # type: ignore[return-value]

    def build_runner(self) -> BuildRunner | None:
        """How snapshots are built: inside the APM transaction a load began, when APM is on."""
        return self._traced.build if self._traced is not None else None

    def attach(self, registry: Registry) -> None:
        registry.apm = self.apm
        registry.metrics = self.metrics
        if self.metrics is not None:
            self.metrics.bind(registry)
        if self.diagnostics is not None:
            self.diagnostics.registry = registry

    async def start_metrics(self, registry: Registry, combined: Combined) -> bool:
        if self.metrics is None:
            return True
        combined.on_rebuild.append(self.metrics.on_rebuild)
        return await self._listen(make_metrics_app(self.metrics), "metrics-address", 5.0)

    async def close(self) -> None:
        """After the API listener has drained: close the side listeners, flush APM."""
        if self.diagnostics is not None:
            self.diagnostics.close()
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()
        if self.apm is not None:
            await asyncio.to_thread(self.apm.close)
