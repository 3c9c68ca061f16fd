"""``-workers N``: N serving processes on one port, loaded once, fed by one watcher.

The parent process (the supervisor) binds the listening sockets, loads the packages
and builds the first snapshot, then forks the workers: they share what was loaded
copy-on-write (the loaded objects are moved out of the collector's reach with
``gc.freeze`` first, so that a collection does not touch, and copy, their pages).
Every worker accepts on the same inherited socket and serves as a single eprd would.

The parent stays single-threaded (it forks again to replace a crashed worker) and
runs one loop: the watch process's batches of changed paths go to every worker,
which re-reads them into its own collection and swaps its own snapshot; a worker
that exits unexpectedly is logged and replaced (a replacement first compares stamps,
so it catches up with what changed since the parent loaded); ``/metrics`` is served
by the parent with the sum of the workers' series; SIGTERM is passed to every worker,
each drains its requests, and the parent exits 0 once all have.
"""

from __future__ import annotations

import contextlib
import gc
import http.server
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from eprd.cli import flags
from eprd.cli.member import METRICS_REQUEST, Member
from eprd.config import Config
from eprd.indexers.local import watchproc
from eprd.indexers.local.collection import Collection

if TYPE_CHECKING:
    from eprd.catalog.snapshot import Snapshot

log = logging.getLogger("eprd")

# A worker that dies within this long of its start is replaced only after this long (no fork loop).
RESTART_BACKOFF = 1.0
SCRAPE_TIMEOUT = 5.0
INIT_FAILED = 3  # a worker's exit code when it could not start serving (the group stops, exit 1)


def bind(address: str, flag: str) -> socket.socket | None:
    """A listening socket for ``address`` (Go's host:port, as -address), None after logging why not."""
    from eprd.http.server import split_address

    host, port = split_address(address)
    try:
        if host is None:
            if socket.has_dualstack_ipv6():
                return socket.create_server(
                    ("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=1024
                )
            return socket.create_server(("", port), backlog=1024)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as err:
        log.critical("Init failed: cannot listen on %s (-%s): %s", address, flag, err.strerror or err)
        return None


class _Worker:
    """One worker process as the supervisor sees it."""

    def __init__(self, index: int, process: BaseProcess, feed: Connection, control: Connection) -> None:
        self.index = index
        self.process = process
        self.feed = feed
        self.control = control
        self.started = time.monotonic()


class WorkerGroup:
    """The parent of ``-workers N``: forks, feeds, replaces and stops the workers."""

    def __init__(self, config: Config, options: flags.Options, collection: Collection) -> None:
        self.config = config
        self.options = options
        self.collection = collection
        self.count = options["workers"]
        self.sockets: dict[str, socket.socket] = {}
        self.metrics_socket: socket.socket | None = None
        self.workers: dict[int, _Worker] = {}
        self.snapshot: Snapshot | None = None
        self.watch_ready = False
        self.watch_refused = False
        self.watch: tuple[BaseProcess, Connection] | None = None
        self.stopping = False
        self.failed = False
        self._fork = multiprocessing.get_context("fork")
        self._wake_r, self._wake_w = os.pipe()

    # --- start -------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit code."""
        for flag in ("address", "httpprof"):
            if self.options[flag]:
                sock = bind(self.options[flag], flag)
                if sock is None:
                    return 1
                self.sockets[flag] = sock
        started = time.monotonic()
        self.collection.load_all()
        from eprd.indexers.combined import build
        from eprd.indexers.local.indexer import local_indexers, log_loaded

        # (Downloads are built by the workers' own indexers; this one only lists the packages.)
        self.snapshot = build(local_indexers(self.collection, None))
        log_loaded(log, self.snapshot, self.collection, started)
        if len(self.snapshot) == 0 and not self.options["package-paths-enable-watcher"]:
            log.critical("Init failed: No local packages found.")
            return 1
        self.collection.save_cache()
        if self.options["metrics-address"]:
            self.metrics_socket = bind(self.options["metrics-address"], "metrics-address")
            if self.metrics_socket is None:
                return 1
        from eprd.cli import serve  # noqa: F401  (aiohttp imported once, shared by every worker)

        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if threading.active_count() > 1:  # a fork copies only this thread: say so if others run
            log.warning("forking workers while %d threads run", threading.active_count())
        gc.freeze()  # what was loaded stays shared: the collector no longer writes to its pages
        for index in range(self.count):
            self._start_worker(index)
        log.info("workers started", extra={"eprd.workers": self.count})
        self.watch = self._start_watch()
        try:
            self._loop()
        finally:
            signal.set_wakeup_fd(-1)
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _start_watch(self) -> tuple[BaseProcess, Connection] | None:
        if not self.options["package-paths-enable-watcher"]:
            return None
        paths = list(self.collection.paths)  # (the watch process waits for missing ones to appear)
        from eprd.indexers.local.watcher import DEBOUNCE_MS, STEP_MS

        receive, send = multiprocessing.Pipe(duplex=False)
        process = multiprocessing.get_context("spawn").Process(
            target=watchproc.watch,
            args=(paths, STEP_MS, DEBOUNCE_MS, self.options["package-paths-watcher-poll"], send),
            name="eprd-watcher",
            daemon=True,
        )
        process.start()
        send.close()
        return process, receive

    def _start_worker(self, index: int) -> None:
        feed_r, feed_w = multiprocessing.Pipe(duplex=False)
        control_parent, control_child = multiprocessing.Pipe()
        assert self.snapshot is not None
        member = Member(index, self.snapshot, self.sockets, feed_r, control_child)
        process = self._fork.Process(
            target=_worker_main,
            args=(
                self.config,
                self.options,
                self.collection,
                member,
                self._wake_r,
                self._wake_w,
                os.getpid(),
            ),
            name=f"eprd-worker-{index}",
        )
        process.start()
        feed_r.close()
        control_child.close()
        worker = _Worker(index, process, feed_w, control_parent)
        self.workers[index] = worker
        if self.watch_ready:
            # It was forked from what the parent loaded: compare stamps to catch up.
            self._send(worker, watchproc.READY)

    # --- loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        watch_conn = self.watch[1] if self.watch else None
        pending_restart: dict[int, float] = {}
        watch_restart: float | None = None
        while True:
            if self.stopping:
                break
            waitables: list[Any] = [self._wake_r]
            waitables += [w.process.sentinel for w in self.workers.values()]
            if watch_conn is not None:
                waitables.append(watch_conn)
            if self.metrics_socket is not None:
                waitables.append(self.metrics_socket)
            timeout = None
            if pending_restart or watch_restart is not None:
                soonest = min([*pending_restart.values(), *([watch_restart] if watch_restart else [])])
                timeout = max(0.0, soonest - time.monotonic())
            ready = wait(waitables, timeout)
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            for worker in list(self.workers.values()):
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    self._lost(worker, pending_restart)
            now = time.monotonic()
            for index, when in list(pending_restart.items()):
                if when <= now and not self.stopping:
                    del pending_restart[index]
                    self._start_worker(index)
            if watch_conn is not None and watch_conn in ready:
                watch_conn = self._relay(watch_conn)
                if watch_conn is None and not self.stopping and not self.watch_refused:
                    log.error("the watch process ended unexpectedly; starting it again in 1 s")
                    watch_restart = time.monotonic() + RESTART_BACKOFF
            if watch_restart is not None and watch_restart <= time.monotonic() and not self.stopping:
                watch_restart = None
                self.watch = self._start_watch()  # its READY makes every worker compare stamps
                watch_conn = self.watch[1] if self.watch else None
            if self.metrics_socket is not None and self.metrics_socket in ready:
                self._answer_scrape()
        self._stop(self.watch)

    def _lost(self, worker: _Worker, pending_restart: dict[int, float]) -> None:
        worker.process.join(0)
        code = worker.process.exitcode
        if code is None:
            return
        del self.workers[worker.index]
        worker.feed.close()
        worker.control.close()
        if self.stopping:
            return
        if code == INIT_FAILED:
            # It said why (an "Init failed" line): a replacement would fail the same way.
            log.critical("worker %d could not start; stopping every worker", worker.index)
            self.failed = True
            self.stopping = True
            return
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        log.error(
            "worker %d (pid %d) exited unexpectedly (%s); starting a replacement",
            worker.index,
            worker.process.pid,
            how,
            extra={
                "eprd.worker.index": worker.index,
                "eprd.worker.pid": worker.process.pid,
                "eprd.worker.exit_code": code,
            },
        )
        soon = time.monotonic() - worker.started < RESTART_BACKOFF
        pending_restart[worker.index] = time.monotonic() + (RESTART_BACKOFF if soon else 0.0)

    def _relay(self, conn: Connection) -> Connection | None:
        """Hand what the watch process sent to every worker; None once it is gone."""
        try:
            item = conn.recv()
        except (EOFError, OSError):
            conn.close()
            return None
        if item == watchproc.READY:
            self.watch_ready = True
        if isinstance(item, tuple) and len(item) > 2 and item[2]:
            self.watch_refused = True  # the system refuses the watches: restarting would not help
        for worker in self.workers.values():
            self._send(worker, item)
        return conn

    def _send(self, worker: _Worker, item: object) -> None:
        with contextlib.suppress(OSError):  # it is exiting: its sentinel says so next
            worker.feed.send(item)

    # --- metrics -----------------------------------------------------------------------------

    def _answer_scrape(self) -> None:
        assert self.metrics_socket is not None
        self.metrics_socket.settimeout(0)
        try:
            conn, address = self.metrics_socket.accept()
        except (BlockingIOError, OSError):
            return
        conn.settimeout(SCRAPE_TIMEOUT)  # a slow client may hold the supervisor this long at most
        supervisor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                from eprd.ops.metrics import NOT_FOUND

                if self.path.partition("?")[0] != "/metrics":
                    self._reply(404, NOT_FOUND, "text/plain; charset=utf-8")
                    return
                self._reply(200, supervisor.exposition(), "text/plain; version=0.0.4; charset=utf-8")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass  # (the metrics listener has no access log, as without -workers)

        try:
            Handler(conn, address, None)  # type: ignore[arg-type]
        except OSError:
            pass
        finally:
            conn.close()

    def exposition(self) -> bytes:
        """The workers' metrics as one process group's (see :func:`merge_expositions`)."""
        asked = []
        for worker in self.workers.values():
            try:
                worker.control.send(METRICS_REQUEST)
                asked.append(worker)
            except OSError:
                pass
        texts = []
        deadline = time.monotonic() + SCRAPE_TIMEOUT
        for worker in asked:
            try:
                if worker.control.poll(max(0.0, deadline - time.monotonic())):
                    texts.append(worker.control.recv_bytes().decode())
            except (EOFError, OSError):
                pass
        from eprd.cli.metricsgroup import merge_expositions

        return merge_expositions(texts)

    # --- stop --------------------------------------------------------------------------------

    def _stop(self, watch: tuple[BaseProcess, Connection] | None) -> None:
        log.info("shutting down: stopping every worker", extra={"eprd.workers": len(self.workers)})
        for worker in self.workers.values():
            if worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
        # The workers hold their own copies of the listening sockets; the parent's go now, so
        # that nothing is accepted into a backlog once the workers have closed theirs.
        for sock in self.sockets.values():
            sock.close()
        if watch is not None:
            watch[0].terminate()
        # Each worker bounds its own drain by -shutdown-timeout; one that overruns it by far is stuck.
        deadline = time.monotonic() + self.options["shutdown-timeout"] + 10.0
        for worker in list(self.workers.values()):
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.join()
            if worker.process.exitcode != 0:
                log.error("worker %d exited with %s during shutdown", worker.index, worker.process.exitcode)
                self.failed = True
        if self.metrics_socket is not None:
            self.metrics_socket.close()
        log.info("stopped")


def _stop_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this worker when the supervisor dies (even killed).

    A worker left behind would keep serving stale data, and hold the supervisor's stdout and
    stderr open (Linux only: elsewhere the worker outlives a killed supervisor).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(
    config: Config,
    options: flags.Options,
    collection: Collection,
    member: Member,
    wake_r: int,
    wake_w: int,
    parent: int,
) -> None:
    """A forked worker: serve as one eprd would, on the inherited sockets."""
    import asyncio

    from eprd.cli import serve

    signal.set_wakeup_fd(-1)
    os.close(wake_r)
    os.close(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    _stop_with_parent(parent)
    if member.index != 0:
        collection.cache_file = None  # the first worker keeps the index cache up to date, alone
    code = asyncio.run(serve.serve(config, options, collection, None, member))
    # serve returns 1 only before it serves (an "Init failed" it logged): tell a crash from that.
    # (os._exit, not multiprocessing's exit: no atexit handlers of the parent's, no flushing twice.)
    os._exit(INIT_FAILED if code == 1 else code)
