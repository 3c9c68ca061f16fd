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
import sys
import time
from typing import TYPE_CHECKING

from aiohttp import web

from eprd.cli import flags, storage
from eprd.config import Config
from eprd.http import piping
from eprd.http.registry import Registry
from eprd.http.server import ApiRunner, make_server, split_address, tls_context
from eprd.http.sharedsite import SharedSocketSite
from eprd.indexers.base import Indexer
from eprd.indexers.combined import BuildRunner, Combined
from eprd.indexers.local.archives import ArchiveStore
from eprd.indexers.local.collection import Collection, Loading
from eprd.indexers.local.indexer import local_indexers, log_loaded
from eprd.indexers.local.watcher import Watcher
from eprd.ops import logs
from eprd.ops.accesslog import AccessLog
from eprd.ops.apm import Apm, TracedCollection
from eprd.ops.diagnostics import Diagnostics
from eprd.ops.supervise import Supervisor
from eprd.upstream.observe import OpsObserver

if TYPE_CHECKING:
    from eprd.cli.member import Member
    from eprd.indexers.proxy.proxy import ProxyMode
    from eprd.ops.metrics import Metrics
    from eprd.upstream.client import Upstream

log = logging.getLogger("eprd")


async def serve(
    config: Config,
    options: flags.Options,
    collection: Collection,
    loading: Loading | None,
    member: Member | None = None,
) -> int:
    """Serve ``collection`` until SIGTERM/SIGINT; the return value is the process exit code.

    ``loading`` is its load if already started (see :func:`eprd.cli.main`), else it is loaded here.
    ``member``: this process is a worker of ``-workers N`` (see :mod:`eprd.cli.workers`), with the
    collection loaded, the listening sockets bound and the watch batches fed by the supervisor.
    """
    ops = _Operations(options, member)
    try:
        return await _serve_registry(config, options, collection, loading, ops, member)
    finally:
        await ops.close()
        sys.stderr.flush()


async def _serve_registry(
    config: Config,
    options: flags.Options,
    collection: Collection,
    loading: Loading | None,
    ops: _Operations,
    member: Member | None,
) -> int:
    if not await ops.start_diagnostics():  # -httpprof: before loading, to see the load too
        return 1
    # The storage index loads while the package paths do.
    remote = asyncio.create_task(storage.start(options, ops.metrics)) if storage.enabled(options) else None
    started = time.monotonic()
    if member is not None:
        pass  # loaded (and logged) by the supervisor before it forked
    elif loading is None:
        collection = ops.traced(collection)  # APM transactions around loads and snapshot builds
        await asyncio.to_thread(collection.load_all)
    else:
        started = loading.started
        await asyncio.wrap_future(loading.future)
    watcher = None
    if options["package-paths-enable-watcher"]:
        watcher = Watcher(
            collection,
            poll=options["package-paths-watcher-poll"],
            feed=member.feed if member is not None else None,
        )
    archives = ArchiveStore(os.path.join(flags.cache_dir(options), "archives"), options["archive-cache-size"])
    indexers: list[Indexer] = list(local_indexers(collection, archives, watcher))
    if remote is not None:  # storage packages win over local ones (§1.2)
        indexers.insert(0, await remote)
        piping.observe(OpsObserver(ops.metrics, ops.apm))  # eprd_upstream_* metrics, APM spans
    combined = Combined(indexers, ops.build_runner())
    if member is not None:
        snapshot = member.snapshot  # built before the fork: shared by every worker
    else:
        snapshot = await asyncio.to_thread(combined.first)
        log_loaded(log, snapshot, collection, started)
    if len(snapshot) == 0 and member is None and not storage.enabled(options):
        if options["feature-proxy-mode"]:
            log.info("No local packages found, serving the packages of -proxy-to")
        elif not options["package-paths-enable-watcher"]:
            log.critical("Init failed: No local packages found.")
            return 1
        else:
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
        ui=options["ui"],
    )
    registry.watcher = watcher
    ops.attach(registry)  # metrics, APM and diagnostics follow the registry (before make_server)
    if options["feature-proxy-mode"]:
        registry.fallback = ops.proxy_mode(options, archives)
    if logs.LEVELS[options["log-level"]] <= logging.INFO:
        registry.access_log = AccessLog(options["log-type"], extra=logs.service_fields())
    server = make_server(registry, worker_pid=str(os.getpid()) if member is not None else None)
    runner = ApiRunner(
        server,
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
    site: web.BaseSite
    if member is not None:
        site = SharedSocketSite(runner, member.sockets["address"], ssl_context=ssl_context)
    else:
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
    if member is not None:
        member.start_control(loop, ops.metrics)  # the supervisor serves the group's /metrics
    # Written (and stamped, see Collection.save_cache) once serving, before the watcher can
    # change what is loaded.
    await asyncio.to_thread(collection.save_cache)
    # Each indexer's background task (the watcher) runs supervised: restarted when it fails.
    watch_task = asyncio.create_task(
        combined.run(lambda: registry.snapshot, registry.swap, start=ops.supervisor.start),
        name="eprd-indexers",
    )

    await stop.wait()
    log.info("shutting down: no new connections, waiting for requests in flight")
    registry.shutting_down = True
    await _stop(combined, watch_task, collection, runner, ops, options["shutdown-timeout"])
    log.info("stopped")
    return 0


async def _stop(
    combined: Combined,
    watch_task: asyncio.Task[None],
    collection: Collection,
    runner: web.BaseRunner,
    ops: _Operations,
    timeout: float,
) -> None:
    """The graceful stop: each step runs whatever happened before it (SIGTERM always exits 0)."""

    async def tasks() -> None:
        await combined.close()  # stops the watcher, which ends its task
        await ops.supervisor.stop(max(timeout, 1.0))
        await watch_task

    steps = (
        ("background tasks", tasks),
        ("index cache", lambda: asyncio.to_thread(collection.save_cache)),  # keeps the next start warm
        ("listener", runner.cleanup),
        ("storage client", piping.close),
    )
    for what, step in steps:
        try:
            await step()
        except Exception:
            log.error("shutting down: stopping the %s failed", what, exc_info=True)


# --- operations: metrics, APM and diagnostics around the API (eprd.metrics, eprd.apm, eprd.diagnostics)


def _metrics() -> Metrics:
    # Imported only with -metrics-address: prometheus-client is not needed otherwise.
    from eprd.ops.metrics import Metrics

    return Metrics()


class _Operations:
    """The -metrics-address and -httpprof listeners and the APM agent of one ``_serve``."""

    def __init__(self, options: flags.Options, member: Member | None = None) -> None:
        self.options = options
        self.member = member
        self.apm = Apm.from_environment(os.environ)
        self.metrics = _metrics() if options["metrics-address"] else None
        self.diagnostics = Diagnostics() if options["httpprof"] else None
        self.runners: list[web.AppRunner] = []
        self.upstream: Upstream | None = None  # the shared outgoing client (proxy mode)
        self._traced: TracedCollection | None = None
        # Every background task (the watcher, ...): failures are logged, counted and restarted.
        self.supervisor = Supervisor()

    async def _listen(self, app: web.Application, flag: str, shutdown_timeout: float) -> bool:
        if self.member is not None:
            app.on_response_prepare.append(self.member.pid_header())
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        host, port = split_address(self.options[flag])
        shared = self.member.sockets.get(flag) if self.member is not None else None
        try:
            if shared is not None:
                await SharedSocketSite(runner, shared).start()
            else:
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
            self.supervisor.on_restart.append(self.metrics.on_task_restart)
        if self.diagnostics is not None:
            self.diagnostics.registry = registry
            self.diagnostics.tasks_state = self.supervisor.states

    async def start_metrics(self, registry: Registry, combined: Combined) -> bool:
        if self.metrics is None:
            return True
        combined.on_rebuild.append(self.metrics.on_rebuild)
        if self.member is not None:
            return True  # the supervisor listens, and asks each worker (see Member.start_control)
        from eprd.ops.metrics import make_metrics_app

        return await self._listen(make_metrics_app(self.metrics), "metrics-address", 5.0)

    def proxy_mode(self, options: flags.Options, archives: ArchiveStore) -> ProxyMode:
        """-feature-proxy-mode: the shared upstream client, the upstream cache, the merge."""
        from eprd.indexers.proxy.cache import UpstreamCache
        from eprd.indexers.proxy.proxy import ProxyMode
        from eprd.indexers.proxy.pulled import PulledFiles
        from eprd.upstream.client import Upstream
        from eprd.upstream.observe import OpsObserver

        self.upstream = Upstream(
            timeout=options["proxy-timeout"],
            attempts=5,
            deadline=3 * options["proxy-timeout"],
            observer=OpsObserver(self.metrics, self.apm),
        )
        cache = UpstreamCache(
            self.upstream,
            os.path.join(flags.cache_dir(options), "proxy"),
            cache_time=options["proxy-cache-time"],
            stale_if_error=options["proxy-stale-if-error"],
            on_stale=self.metrics.proxy_stale if self.metrics is not None else None,
        )
        pulled = PulledFiles(self.upstream, archives) if options["proxy-cache-artifacts"] else None
        log.info("proxy mode", extra={"url.full": options["proxy-to"], "pull_through": pulled is not None})
        return ProxyMode(options["proxy-to"], cache, pulled)

    async def close(self) -> None:
        """After the API listener has drained: close the side listeners, flush APM."""
        if self.upstream is not None:
            await self.upstream.close()
        if self.diagnostics is not None:
            self.diagnostics.close()
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()
        if self.apm is not None:
            await asyncio.to_thread(self.apm.close)
