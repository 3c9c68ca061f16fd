"""The shared upstream HTTP client: one pooled aiohttp session, bounded retries, deadlines.

Every part of eprd that talks to another server (proxy mode, storage artifacts, mirrors)
uses one :class:`Upstream`, so there is one connection pool, one retry policy and one place
where outgoing calls are measured and traced.

API::

    upstream = Upstream(timeout=10, attempts=5, deadline=30, observer=...)
    reply = await upstream.get_json(url, component="search")   # JsonReply(value, headers)
    value, headers = reply                                      # (it is a NamedTuple)
    async with upstream.stream(url, headers={"Range": "bytes=0-9"}, component="artifacts") as resp:
        async for chunk in resp.content.iter_chunked(65536): ...
    await upstream.close()

Retry policy (both calls): an attempt is retried, with exponential backoff and jitter
(``backoff`` s doubling up to ``max_backoff`` s), after a connection error, a timeout of the
attempt (``timeout`` s), a ``429`` (waiting its ``Retry-After`` when the deadline allows it,
else giving up at once), any ``5xx`` but ``501``, and - for :meth:`Upstream.get_json` - a
``2xx`` whose ``Content-Type`` is not JSON, a body that is cut short or that is not valid
JSON. At most ``attempts`` attempts are made and the whole call, waits included, ends by
``deadline`` s: a call never takes longer than its budget. Other statuses (``404``, ``501``,
...) are final at once: :meth:`get_json` raises :class:`UpstreamStatus`, :meth:`stream` hands
the response over (callers pipe statuses through). When all attempts fail
:class:`UpstreamUnavailable` is raised. Both are :class:`UpstreamError`.

:meth:`stream` retries only until response headers arrive; once the body is being read
nothing is retried (bytes may already have gone downstream), and each read may wait
``timeout`` s.

Cancellation: if the caller's task is cancelled (the downstream request went away), the
attempt in flight is aborted and its connection closed; nothing is retried.

Measurement goes through an :class:`Observer` (see :mod:`eprd.upstream.observe` for the one
that feeds eprd's Prometheus metrics and APM spans), so this module imports nothing from
the metrics or the APM agent.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Any, NamedTuple, Protocol, TypeVar

import aiohttp
import orjson
import tenacity
from multidict import CIMultiDictProxy

log = logging.getLogger("eprd.upstream")

T = TypeVar("T")

# Outcome labels of Observer.request, one per attempt (a bounded set: they become metric labels).
OK = "ok"  # a final answer (any status the caller takes, 404 included)
CANCELLED = "cancelled"  # the caller went away (or the call's deadline passed)
ERROR_STATUS = "error_status"  # 429 or a retryable 5xx
ERROR_CONNECTION = "error_connection"  # refused, reset, cut short
ERROR_TIMEOUT = "error_timeout"  # no (whole) answer within the attempt's timeout
ERROR_BODY = "error_body"  # a 2xx that is not JSON, or not valid JSON
ERROR_OTHER = "error_other"  # anything else (a bad URL, say): not retried

USER_AGENT = "eprd"


class Observer(Protocol):
    """What the client reports about each attempt; implemented in :mod:`eprd.upstream.observe`."""

    def request(self, component: str, outcome: str, seconds: float) -> None:
        """One attempt of a call for ``component`` ended with ``outcome`` after ``seconds``."""

    def span(self, component: str, method: str, url: str) -> AbstractContextManager[Any]:
        """A context around one attempt (an APM span when tracing is on)."""


class NullObserver:
    """Reports nothing (tests, tools)."""

    def request(self, component: str, outcome: str, seconds: float) -> None:
        pass

    def span(self, component: str, method: str, url: str) -> AbstractContextManager[Any]:
        return nullcontext()


class UpstreamError(Exception):
    """A call to the upstream did not give a usable answer."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class UpstreamStatus(UpstreamError):
    """A final, non-retryable status (404, 403, 501...) where a JSON document was expected."""


class UpstreamUnavailable(UpstreamError):
    """Every attempt failed, or the deadline passed."""


class JsonReply(NamedTuple):
    """A decoded JSON answer and the headers it came with."""

    value: Any
    headers: CIMultiDictProxy[str]


class _Retryable(Exception):
    """One failed attempt worth another one; ``retry_after`` is the server's wish, if any."""

    def __init__(
        self, kind: str, reason: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def retryable_status(status: int) -> bool:
    """429 and 5xx but 501 (Not Implemented will not change by asking again)."""
    return status == 429 or (500 <= status <= 599 and status != 501)


def is_json(content_type: str) -> bool:
    """``application/json`` and its ``+json``/parameters variants."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Upstream:
    """One pooled session and the retry policy of the module docstring."""

    def __init__(
        self,
        timeout: float = 10.0,
        attempts: int = 5,
        deadline: float | None = None,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        observer: Observer | None = None,
        limit: int = 100,
        user_agent: str = USER_AGENT,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.timeout = timeout
        self.attempts = attempts
        # Without an explicit deadline: every attempt may time out once, waits not included.
        self.deadline = deadline if deadline is not None else timeout * attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.observer: Observer = observer or NullObserver()
        self._limit = limit
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    # --- session ------------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use (it must be made inside the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=90),
                headers={"User-Agent": self._user_agent},
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # --- retry policy -------------------------------------------------------------------------

    def _retrying(self, started: float, deadline: float) -> tenacity.AsyncRetrying:
        def wait(state: tenacity.RetryCallState) -> float:
            err = state.outcome.exception() if state.outcome else None
            left = deadline - (time.monotonic() - started)
            if isinstance(err, _Retryable) and err.retry_after is not None:
                return err.retry_after
            exp = min(self.max_backoff, self.backoff * (2 ** (state.attempt_number - 1)))
            return min(max(0.0, left), exp * (0.5 + random.random() / 2))

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= self.attempts:
                return True
            left = deadline - (time.monotonic() - started)
            # Give up now rather than wait past the deadline (a long Retry-After, say).
            return left <= 0 or wait(state) >= left

        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=wait,
            stop=stop,
            reraise=True,
        )

    def _timeout(self, started: float, deadline: float, total: bool) -> aiohttp.ClientTimeout:
        left = max(0.001, deadline - (time.monotonic() - started))
        per_attempt = min(self.timeout, left)
        if total:
            return aiohttp.ClientTimeout(total=per_attempt)
        # Streams: connecting and waiting for the headers are bounded by the deadline, every
        # later read by the attempt timeout (a big download may take longer than both).
        return aiohttp.ClientTimeout(total=None, sock_connect=per_attempt, sock_read=self.timeout)

    # --- calls --------------------------------------------------------------------------------

    async def _call(
        self, url: str, deadline: float | None, attempt: Callable[[float, float], Awaitable[T]]
    ) -> T:
        """``attempt(started, budget)`` until one succeeds or the policy gives up."""
        budget = self.deadline if deadline is None else deadline
        started = time.monotonic()
        try:
            async with asyncio.timeout(budget):
                async for state in self._retrying(started, budget):
                    with state:
                        return await attempt(started, budget)
        except _Retryable as err:
            raise UpstreamUnavailable(url, err.reason, err.status) from None
        except TimeoutError:
            raise UpstreamUnavailable(url, f"no answer within {budget:g}s") from None
        raise AssertionError("unreachable")  # tenacity either returns or reraises

    async def get_json(
        self,
        url: str,
        *,
        component: str = "json",
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> JsonReply:
        """GET ``url`` and decode its JSON body, retrying as the module docstring says."""
        session = self.session()
        return await self._call(
            url,
            deadline,
            lambda started, budget: self._json_attempt(session, url, component, headers, started, budget),
        )

    async def _json_attempt(
        self,
        session: aiohttp.ClientSession,
        url: str,
        component: str,
        headers: Mapping[str, str] | None,
        started: float,
        budget: float,
    ) -> JsonReply:
        with (
            _Attempt(self.observer, component, self.timeout) as attempt,
            self.observer.span(component, "GET", url),
        ):
            async with session.get(
                url,
                headers={"Accept": "application/json", **(headers or {})},
                timeout=self._timeout(started, budget, total=True),
                allow_redirects=True,
            ) as resp:
                status = resp.status
                if retryable_status(status):
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    raise _Retryable(ERROR_STATUS, f"status {status}", status, retry_after)
                if not 200 <= status <= 299:
                    attempt.outcome = OK
                    raise UpstreamStatus(url, f"status {status}", status)
                if not is_json(resp.headers.get("Content-Type", "")):
                    raise _Retryable(
                        ERROR_BODY, f"not JSON ({resp.headers.get('Content-Type', 'no type')})", status
                    )
                body = await resp.read()
                try:
                    value = orjson.loads(body)
                except orjson.JSONDecodeError as err:
                    raise _Retryable(ERROR_BODY, f"invalid JSON: {err}", status) from None
                attempt.outcome = OK
                return JsonReply(value, resp.headers)

    @asynccontextmanager
    async def stream(
        self,
        url: str,
        *,
        component: str = "stream",
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response of ``GET url`` once its headers are in; its body is the caller's to read.

        Retries (connection errors, 429, 5xx but 501) happen only before the response is
        handed over. Any other status is handed over as it is.
        """
        session = self.session()
        resp = await self._call(
            url,
            deadline,
            lambda started, budget: self._stream_attempt(session, url, component, headers, started, budget),
        )
        try:
            yield resp
        finally:
            if resp.content.at_eof():
                resp.release()  # back to the pool
            else:
                resp.close()  # unread bytes: the connection cannot be reused

    async def _stream_attempt(
        self,
        session: aiohttp.ClientSession,
        url: str,
        component: str,
        headers: Mapping[str, str] | None,
        started: float,
        budget: float,
    ) -> aiohttp.ClientResponse:
        with _Attempt(self.observer, component, self.timeout) as attempt:
            with self.observer.span(component, "GET", url):
                resp = await session.get(
                    url,
                    # Bodies are passed on as they come, their Content-Length checkable: no gzip.
                    headers={"Accept-Encoding": "identity", **(headers or {})},
                    timeout=self._timeout(started, budget, total=False),
                    allow_redirects=True,
                    auto_decompress=False,
                )
            if retryable_status(resp.status):
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                resp.release()
                raise _Retryable(ERROR_STATUS, f"status {resp.status}", resp.status, retry_after)
            attempt.outcome = OK
            return resp


class _Attempt:
    """One attempt: its failure classified (worth retrying or final) and its outcome reported once."""

    def __init__(self, observer: Observer, component: str, timeout: float) -> None:
        self.observer = observer
        self.component = component
        self.timeout = timeout
        self.outcome = ERROR_OTHER  # what an exception not classified below reports

    def __enter__(self) -> _Attempt:
        self.began = time.monotonic()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: object) -> None:
        try:
            if isinstance(err, _Retryable):
                self.outcome = err.kind
            elif isinstance(err, asyncio.CancelledError):
                self.outcome = CANCELLED
            elif isinstance(err, TimeoutError):
                self.outcome = ERROR_TIMEOUT
                raise _Retryable(ERROR_TIMEOUT, f"no answer within {self.timeout:g}s") from None
            elif isinstance(err, aiohttp.ClientError):
                self.outcome = ERROR_CONNECTION
                # Refused or reset connections, truncated bodies (ClientPayloadError), bad answers.
                raise _Retryable(ERROR_CONNECTION, f"{type(err).__name__}: {err}") from None
        finally:
            self.observer.request(self.component, self.outcome, time.monotonic() - self.began)


async def read_exactly(resp: aiohttp.ClientResponse, limit: int | None = None) -> bytes:
    """The whole body of a streamed response, checked against its ``Content-Length``.

    Raises :class:`UpstreamError` when the body is shorter or longer than announced (or
    than ``limit``), so a cut-short download is never taken for a whole one.
    """
    expected = resp.content_length
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if limit is not None and size > limit:
                raise UpstreamError(str(resp.url), f"body larger than {limit} bytes")
            chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise UpstreamError(str(resp.url), f"body cut short: {type(err).__name__}") from None
    if expected is not None and size != expected:
        raise UpstreamError(str(resp.url), f"body of {size} bytes, Content-Length {expected}")
    return b"".join(chunks)
