"""``-httpprof ADDRESS``: the Python counterpart of Go's pprof, on a listener of its own.

Everything is under ``/debug/pprof/``:

* ``/debug/pprof/``: an index of what is here;
* ``tasks`` (alias ``goroutine``): every asyncio task with its await chain and every
  thread with its stack, as text;
* ``profile?seconds=N``: a CPU profile of the running server, made by a sampling
  thread reading every thread's Python stack (``sys._current_frames()``) ``hz``
  times a second for N seconds; the answer is *collapsed stacks*
  (``root;caller;callee count`` lines), which speedscope, flamegraph.pl and inferno
  open. Threads parked in the event loop's selector or waiting on a lock or queue
  are idle and left out unless ``idle=true``;
* ``heap``: the top allocations traced by tracemalloc, which runs only when
  ``-httpprof`` is set (started before packages are loaded);
* ``snapshot``: JSON describing what the current snapshot holds: counts,
  generation, build time, rejected package versions with their reasons, and the
  watcher's statistics;
* ``cmdline``: the command line, NUL-separated like Go's.

Anything else answers 404 ``404 page not found``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import html
import linecache
import os
import sys
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

import orjson
from aiohttp import web

from eprd import API_VERSION, __version__


class Registry(Protocol):
    """What the snapshot report reads of the registry (eprd.http.registry.Registry)."""

    snapshot: Any
    watcher: Any
    shutting_down: bool

    def is_ready(self) -> bool: ...


PREFIX = "/debug/pprof/"
MAX_SECONDS = 3600.0
DEFAULT_SECONDS = 30.0
DEFAULT_HZ = 100
# Innermost frames of threads that wait rather than run: (file name suffix, function).
IDLE_FRAMES = frozenset(
    {
        ("selectors.py", "select"),
        ("threading.py", "wait"),
        ("threading.py", "_wait_for_tstate_lock"),
        ("queue.py", "get"),
        (os.path.join("concurrent", "futures", "thread.py"), "_worker"),
        (os.path.join("watchfiles", "main.py"), "watch"),  # the watcher thread, parked in Rust
        ("diagnostics.py", "_sample"),
    }
)

INDEX = """<html>
<head><title>/debug/pprof/</title></head>
<body>
<p>eprd {version} diagnostics, the Python counterpart of Go's pprof (process {pid}).</p>
<table>
<tr><td><a href="tasks">tasks</a></td>
<td>Every asyncio task with its await chain, and every thread with its stack (text).
<code>goroutine</code> is an alias.</td></tr>
<tr><td><a href="profile?seconds=30">profile</a></td>
<td>CPU profile of the running server: a sampling thread reads every thread's Python stack
(<code>sys._current_frames()</code>) <code>hz</code> times a second (default {hz}) for
<code>seconds</code> (default 30, at most 3600) and answers <b>collapsed stacks</b>, one
<code>thread;caller;...;callee count</code> line per distinct stack (text/plain), which <a href="https://www.speedscope.app/">speedscope</a>,
flamegraph.pl and inferno open. Idle threads (in the selector, a lock or a queue wait) are left out
unless <code>idle=true</code>.</td></tr>
<tr><td><a href="heap">heap</a></td>
<td>Top allocations traced by tracemalloc (running since start-up because -httpprof is set):
<code>limit</code> (default 50) lines grouped by <code>key</code> = lineno, filename or traceback (text).
Set PYTHONTRACEMALLOC=N before start for N frames per allocation.</td></tr>
<tr><td><a href="snapshot">snapshot</a></td>
<td>What the current snapshot holds: package counts, generation, build time, rejected package
versions with their reasons, response cache entries, watcher statistics (JSON).</td></tr>
<tr><td><a href="cmdline">cmdline</a></td><td>The command line, NUL-separated.</td></tr>
</table>
</body>
</html>
"""


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=body.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


def _not_found() -> web.Response:
    return _text("404 page not found\n", 404)


def _bad_request(message: str) -> web.Response:
    return _text(message + "\n", 400)


# --- tasks and threads ----------------------------------------------------------------------


def _await_chain(task: asyncio.Task[Any]) -> tuple[list[FrameType], Any]:
    """The frames of a task's coroutine and of everything it awaits, and what it waits on last."""
    frames: list[FrameType] = []
    awaitable: Any = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None and not hasattr(awaitable, "cr_await") and not hasattr(awaitable, "gi_yieldfrom"):
            return frames, awaitable  # a future or another awaitable object
        if frame is not None:
            frames.append(frame)
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return frames, None


def _format_frames(frames: Sequence[FrameType]) -> str:
    summary = traceback.StackSummary.extract(((f, f.f_lineno) for f in frames), lookup_lines=True)
    return "".join(summary.format())


def dump_tasks_and_threads(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every asyncio task of ``loop`` and every thread, with their stacks, as text."""
    loop = loop or asyncio.get_running_loop()
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    current_frames = sys._current_frames()
    threads = {t.ident: t for t in threading.enumerate()}
    out = [
        f"eprd {__version__} (API {API_VERSION}), pid {os.getpid()}: "
        f"{len(tasks)} asyncio tasks, {len(current_frames)} threads\n"
    ]
    current = asyncio.current_task(loop)
    for task in tasks:
        state = "done" if task.done() else "running (this request)" if task is current else "pending"
        out.append(f"\n--- task {task.get_name()!r} [{state}] {task.get_coro()!r}\n")
        frames, waiting_on = _await_chain(task)
        out.append(_format_frames(frames))
        if waiting_on is not None:
            out.append(f"  awaiting {waiting_on!r}\n")
    for ident, frame in sorted(current_frames.items()):
        thread = threads.get(ident)
        name = thread.name if thread is not None else "?"
        daemon = " daemon" if thread is not None and thread.daemon else ""
        out.append(f"\n--- thread {name!r} [ident {ident}{daemon}]\n")
        out.append("".join(traceback.format_stack(frame)))
    return "".join(out)


# --- CPU profile ----------------------------------------------------------------------------


_SOURCE_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)  # the folder holding eprd/


@functools.lru_cache(maxsize=8192)
def _short_path(filename: str) -> str:
    """A file name relative to the longest sys.path entry (or eprd's source root) containing it."""
    best = ""
    for entry in (*sys.path, _SOURCE_ROOT):
        if entry and filename.startswith(entry.rstrip(os.sep) + os.sep) and len(entry) > len(best):
            best = entry.rstrip(os.sep) + os.sep
    return filename[len(best) :] if best else filename


@functools.lru_cache(maxsize=65536)
def _frame_label(code: Any) -> str:
    name = getattr(code, "co_qualname", code.co_name)
    label = f"{name} ({_short_path(code.co_filename)}:{code.co_firstlineno})"
    return label.replace(";", ":").replace("\n", " ")


def _is_idle(frame: FrameType) -> bool:
    code = frame.f_code
    return any(code.co_name == func and code.co_filename.endswith(suffix) for suffix, func in IDLE_FRAMES)


class Sampler:
    """Collects collapsed stacks of every thread but its own, ``hz`` times a second."""

    def __init__(self, seconds: float, hz: int, idle: bool, stop: threading.Event) -> None:
        self.seconds = seconds
        self.hz = hz
        self.idle = idle
        self.stop = stop
        self.samples = 0
        self.counts: collections.Counter[str] = collections.Counter()

    def run(self) -> str:
        me = threading.get_ident()
        interval = 1.0 / self.hz
        deadline = time.monotonic() + self.seconds
        next_at = time.monotonic()
        while not self.stop.is_set():
            self._sample(me)
            next_at += interval
            delay = next_at - time.monotonic()
            if time.monotonic() >= deadline:
                break
            if delay > 0:
                self.stop.wait(min(delay, max(deadline - time.monotonic(), 0)))
            else:
                next_at = time.monotonic()  # fell behind: do not burst
        return "".join(f"{stack} {count}\n" for stack, count in self.counts.most_common())

    def _sample(self, me: int) -> None:
        names = {t.ident: t.name for t in threading.enumerate()}
        self.samples += 1
        for ident, frame in sys._current_frames().items():
            if ident == me or (not self.idle and _is_idle(frame)):
                continue
            labels = []
            f: FrameType | None = frame
            while f is not None:
                labels.append(_frame_label(f.f_code))
                f = f.f_back
            labels.append(f"thread {names.get(ident, ident)}".replace(";", ":"))
            labels.reverse()
            self.counts[";".join(labels)] += 1


# --- heap -----------------------------------------------------------------------------------

HEAP_KEYS = ("lineno", "filename", "traceback")


def heap_report(limit: int, key: str) -> str:
    """The top ``limit`` allocation sites tracemalloc knows of, grouped by ``key``."""
    if not tracemalloc.is_tracing():
        return "tracemalloc is not tracing (it runs only when -httpprof is set)\n"
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            tracemalloc.Filter(False, "<unknown>"),
        )
    )
    stats = snapshot.statistics(key)
    current, peak = tracemalloc.get_traced_memory()
    out = [
        f"# tracemalloc: {current} bytes traced now, {peak} at peak, "
        f"{tracemalloc.get_traceback_limit()} frame(s) per allocation\n",
        f"# top {min(limit, len(stats))} of {len(stats)} allocation sites by {key}, "
        f"{sum(s.size for s in stats)} bytes in {sum(s.count for s in stats)} blocks\n",
    ]
    for stat in stats[:limit]:
        frame = stat.traceback[0]
        where = frame.filename if key == "filename" else f"{frame.filename}:{frame.lineno}"
        out.append(f"{stat.size} B in {stat.count} blocks: {where}\n")
        if key == "traceback":
            out.extend(f"    {line}\n" for line in stat.traceback.format(most_recent_first=True))
        elif key == "lineno":
            line = linecache.getline(frame.filename, frame.lineno).strip()
            if line:
                out.append(f"    {line}\n")
    return "".join(out)


# --- snapshot -------------------------------------------------------------------------------


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def snapshot_report(registry: Registry) -> dict[str, Any]:
    snap = registry.snapshot
    watcher = registry.watcher
    cache = getattr(snap, "cache", None)
    return {
        "generation": snap.generation,
        "built_at": _iso(snap.built_at),
        "age_seconds": round(time.time() - snap.built_at, 3),
        "package_versions": len(snap),
        "package_names": len({name for name, _ in snap.packages}),
        "indexers": {name: len(items) for name, items in snap.indexers},
        "rejected": [{"location": err.location, "reason": err.reason} for err in snap.rejected],
        "response_cache_entries": len(cache) if cache is not None else None,
        "ready": registry.is_ready(),
        "shutting_down": registry.shutting_down,
        "watcher": dataclasses.asdict(watcher.stats) if watcher is not None else None,
    }


# --- the listener ---------------------------------------------------------------------------


class Diagnostics:
    """State of the ``-httpprof`` listener; ``registry`` is set once packages are loaded."""

    def __init__(self, argv: Sequence[str] | None = None) -> None:
        self.argv = list(sys.argv if argv is None else argv)
        self.registry: Registry | None = None
        self.stop = threading.Event()
        self._started_tracemalloc = False

    def trace_memory(self) -> None:
        """Start tracemalloc (once, and only for -httpprof) so ``heap`` can report."""
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            self._started_tracemalloc = True

    def close(self) -> None:
        """End profiles in progress; stop tracemalloc if this started it."""
        self.stop.set()
        if self._started_tracemalloc and tracemalloc.is_tracing():
            tracemalloc.stop()
            self._started_tracemalloc = False

    def app(self) -> web.Application:
        routes: dict[str, Callable[[web.Request], Any]] = {
            "": self.index,
            "tasks": self.tasks,
            "goroutine": self.tasks,
            "profile": self.profile,
            "heap": self.heap,
            "snapshot": self.snapshot,
            "cmdline": self.cmdline,
        }

        async def handle(request: web.Request) -> web.StreamResponse:
            path = request.path
            if path == PREFIX.rstrip("/"):
                raise web.HTTPMovedPermanently(PREFIX)
            if not path.startswith(PREFIX):
                return _not_found()
            handler = routes.get(path[len(PREFIX) :])
            if handler is None:
                return _not_found()
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    async def index(self, request: web.Request) -> web.Response:
        body = INDEX.format(version=html.escape(__version__), pid=os.getpid(), hz=DEFAULT_HZ)
        return web.Response(text=body, content_type="text/html")

    async def tasks(self, request: web.Request) -> web.Response:
        return _text(dump_tasks_and_threads())

    async def cmdline(self, request: web.Request) -> web.Response:
        return _text("\x00".join(self.argv))

    async def profile(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        try:
            seconds = float(query.get("seconds", DEFAULT_SECONDS))
            hz = int(query.get("hz", DEFAULT_HZ))
        except ValueError:
            return _bad_request("seconds must be a number and hz an integer")
        if not 0 < seconds <= MAX_SECONDS or not 1 <= hz <= 1000:
            return _bad_request(f"seconds must be in (0, {MAX_SECONDS:.0f}] and hz in [1, 1000]")
        idle = query.get("idle", "") in ("1", "t", "true", "True")
        sampler = Sampler(seconds, hz, idle, self.stop)
        body = await asyncio.to_thread(sampler.run)
        return web.Response(
            body=body.encode(),
            headers={
                "Content-Type": "text/plain; charset=utf-8",
                "Content-Disposition": 'attachment; filename="eprd-profile.collapsed"',
                "X-Eprd-Samples": str(sampler.samples),
            },
        )

    async def heap(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        key = query.get("key", "lineno")
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            return _bad_request("limit must be an integer")
        if key not in HEAP_KEYS or limit < 1:
            return _bad_request(f"key must be one of {', '.join(HEAP_KEYS)} and limit positive")
        return _text(await asyncio.to_thread(heap_report, limit, key))

    async def snapshot(self, request: web.Request) -> web.Response:
        if self.registry is None:
            body, status = {"loading": True, "message": "packages are still being loaded"}, 503
        else:
            body, status = snapshot_report(self.registry), 200
        return web.Response(
            status=status,
            body=orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n",
            content_type="application/json",
        )
