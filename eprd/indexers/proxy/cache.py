"""The upstream answer cache of proxy mode: memory, then ``-cache-dir``, then the upstream.

An answer (decoded JSON, or "not found" for a package the upstream does not have) is
*fresh* for the upstream's ``Cache-Control: max-age`` or ``-proxy-cache-time`` when that is
set; while fresh no upstream call is made. Once it is stale the next request asks the
upstream again; if the upstream fails, the stale answer is served (``stale=True``) for up to
``-proxy-stale-if-error`` after it went stale, a warning is logged once per outage, and the
observer counts it. After a failure the upstream is left alone for ``retry_interval``
seconds: requests with a stale answer get it at once instead of waiting for a timeout
again. Without any answer the error is raised (the handlers answer 500, as the reference).

Concurrent identical misses share one upstream call (single flight); the call goes on
when one of its callers goes away, and is cancelled only when all of them have.

Answers are written to ``<cache-dir>/proxy/<sha256 of the URL>.json`` so that a restart
with the upstream unreachable still serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from eprd.upstream.client import Upstream, UpstreamError, UpstreamStatus

log = logging.getLogger("eprd.proxy")

_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-maxage|max-age)\s*=\s*(\d+)", re.IGNORECASE)
FORMAT = 1  # of the files under <cache-dir>/proxy

Check = Callable[[Any], bool] | None


@dataclass(eq=False)
class Entry:
    """One upstream answer. Compared by identity: merged responses are memoised per entry."""

    url: str
    value: Any  # decoded JSON; None when ``missing``
    fetched_at: float  # wall clock
    fresh_until: float  # wall clock
    missing: bool = False  # the upstream answered 404
    memo: dict[Any, Any] = field(default_factory=dict)  # what was derived from it (rendered bodies)

    def fresh(self, now: float) -> bool:
        return now < self.fresh_until


@dataclass(frozen=True, slots=True)
class Answer:
    entry: Entry
    stale: bool  # served because the upstream failed


def max_age(cache_control: list[str]) -> float:
    """Seconds of ``max-age`` (or ``s-maxage``) in the Cache-Control lines; 0 without."""
    best = 0.0
    for line in cache_control:
        for found in _MAX_AGE.finditer(line):
            best = max(best, float(found.group(1)))
    return best


class UpstreamCache:
    """See the module docstring."""

    def __init__(
        self,
        upstream: Upstream,
        folder: str | None,
        cache_time: float = 0.0,
        stale_if_error: float = 24 * 3600.0,
        retry_interval: float = 5.0,
        stale_budget: float = 3.0,
        size: int = 4096,
        on_stale: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream = upstream
        self.folder = folder
        self.cache_time = cache_time  # 0: the upstream's max-age
        self.stale_if_error = stale_if_error
        self.retry_interval = retry_interval
        self.stale_budget = stale_budget
        self.on_stale = on_stale
        self.clock = clock
        self._size = size
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._flights: dict[str, tuple[asyncio.Task[Entry], list[int]]] = {}
        self._down_until = 0.0  # monotonic: no upstream calls before, when a stale answer exists
        self._outage = False
        self.stale_served = 0
        self.upstream_calls = 0
        if folder:
            os.makedirs(folder, exist_ok=True)

    # --- lookup -------------------------------------------------------------------------------

    async def get(self, url: str, component: str, check: Check = None) -> Answer:
        """The answer for ``url``: fresh from the cache, else from the upstream, else stale.

        ``check`` vets a decoded answer before it is kept: one it refuses counts as an upstream
        failure, so a wrongly shaped answer never replaces a good one.
        """
        now = self.clock()
        entry = self._memory.get(url)
        if entry is None and self.folder:
            entry = await asyncio.to_thread(self._read, url)
            if entry is not None:
                self._remember(entry)
        if entry is not None:
            self._memory.move_to_end(url)
            if entry.fresh(now):
                return Answer(entry, False)
            if not self._usable_stale(entry, now):
                entry = None
        if entry is not None and time.monotonic() < self._down_until:
            return self._stale(entry, component, "upstream failed moments ago")
        try:
            fresh = await self._flight(url, component, entry is not None, check)
        except UpstreamError as err:
            self._down_until = time.monotonic() + self.retry_interval
            if entry is not None:
                return self._stale(entry, component, str(err))
            log.error("proxy mode: upstream failed: %s", err, extra={"url.full": url})
            raise
        if self._outage:
            self._outage = False
            log.info("proxy mode: upstream answers again", extra={"url.full": url})
        return Answer(fresh, False)

    def _usable_stale(self, entry: Entry, now: float) -> bool:
        return now < entry.fresh_until + self.stale_if_error

    def _stale(self, entry: Entry, component: str, reason: str) -> Answer:
        self.stale_served += 1
        if self.on_stale is not None:
            self.on_stale(component)
        if not self._outage:
            self._outage = True
            log.warning(
                "proxy mode: upstream unavailable, serving cached answers (%s)",
                reason,
                extra={"url.full": entry.url},
            )
        return Answer(entry, True)

    # --- single flight ------------------------------------------------------------------------

    async def _flight(self, url: str, component: str, have_stale: bool, check: Check) -> Entry:
        flight = self._flights.get(url)
        if flight is None:
            task = asyncio.create_task(
                self._fetch(url, component, have_stale, check), name=f"eprd-proxy {url}"
            )
            flight = self._flights[url] = (task, [0])
            task.add_done_callback(lambda _t: self._flights.pop(url, None))
        task, waiters = flight
        waiters[0] += 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if waiters[0] == 1 and not task.done():
                task.cancel()  # the last caller went away
            raise
        finally:
            waiters[0] -= 1

    async def _fetch(self, url: str, component: str, have_stale: bool, check: Check) -> Entry:
        self.upstream_calls += 1
        # With a stale answer in hand, the caller should not wait the whole retry budget.
        deadline = min(self.stale_budget, self.upstream.deadline) if have_stale else None
        now = self.clock()
        try:
            value, headers = await self.upstream.get_json(url, component=component, deadline=deadline)
        except UpstreamStatus as err:
            if err.status != 404:
                raise
            entry = Entry(url, None, now, now + self._freshness([]), missing=True)
        else:
            if check is not None and not check(value):
                raise UpstreamError(url, "answer of an unexpected shape")
            entry = Entry(url, value, now, now + self._freshness(headers.getall("Cache-Control", [])))
        self._remember(entry)
        if self.folder:
            await asyncio.to_thread(self._write, entry)
        return entry

    def _freshness(self, cache_control: list[str]) -> float:
        return self.cache_time if self.cache_time > 0 else max_age(cache_control)

    def _remember(self, entry: Entry) -> None:
        self._memory[entry.url] = entry
        self._memory.move_to_end(entry.url)
        while len(self._memory) > self._size:
            self._memory.popitem(last=False)

    # --- disk ---------------------------------------------------------------------------------

    def _path(self, url: str) -> str:
        assert self.folder
        return os.path.join(self.folder, hashlib.sha256(url.encode()).hexdigest() + ".json")

    def _write(self, entry: Entry) -> None:
        data = orjson.dumps(
            {
                "format": FORMAT,
                "url": entry.url,
                "fetched_at": entry.fetched_at,
                "fresh_until": entry.fresh_until,
                "missing": entry.missing,
                "value": entry.value,
            }
        )
        path = self._path(entry.url)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # readers see the old file or the new one, never half of one
        except OSError as err:
            log.warning("proxy mode: cannot write the upstream cache: %s", err, extra={"file.path": path})
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)

    def _read(self, url: str) -> Entry | None:
        path = self._path(url)
        try:
            with open(path, "rb") as fh:
                doc = orjson.loads(fh.read())
            if doc.get("format") != FORMAT or doc.get("url") != url:
                return None
            return Entry(
                url,
                doc.get("value"),
                float(doc["fetched_at"]),
                float(doc["fresh_until"]),
                missing=bool(doc.get("missing")),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("proxy mode: ignoring a bad upstream cache file: %s", err, extra={"file.path": path})
            return None
