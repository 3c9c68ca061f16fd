"""The HTTP client the mirror downloads through: the swap point for eprd's shared upstream client.

The shared client (``eprd.upstream.client.Upstream``, issue 13: one pooled session, retries,
timeouts) is built on another branch. Until it is merged this module offers the same small
interface - ``await get_json(url, component=...) -> (value, headers)``, ``async with
stream(url, headers=..., component=...) as resp``, ``await close()`` - and :func:`make_client`
is the one place to change when it lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

USER_AGENT = "eprd-mirror"


class UpstreamError(Exception):
    """The upstream gave no usable answer (after the retries)."""


def _retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status != 501)


class _Client:
    """One pooled session; attempts are retried only until the response headers arrive."""

    def __init__(self, timeout: float, attempts: int, limit: int) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _open(self, url: str, headers: Mapping[str, str] | None) -> aiohttp.ClientResponse:
        reason = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(min(0.2 * 2**attempt, 4.0))
            try:
                resp = await self.session().get(url, headers=headers, allow_redirects=True)
            except (TimeoutError, aiohttp.ClientError) as err:
                reason = str(err) or type(err).__name__
                continue
            if _retryable(resp.status):
                reason = f"status {resp.status}"
                resp.release()
                continue
            return resp
        raise UpstreamError(f"GET {url}: {reason} (after {self.attempts} attempts)")

    async def get_json(self, url: str, *, component: str = "json") -> tuple[Any, Mapping[str, str]]:
        """GET and decode a JSON document; a non-2xx answer is an UpstreamError with its body."""
        for attempt in range(self.attempts):
            resp = await self._open(url, None)
            try:
                body = await resp.read()
            except aiohttp.ClientError as err:
                if attempt + 1 == self.attempts:
                    raise UpstreamError(f"GET {url}: {err}") from None
                continue
            finally:
                resp.release()
            if resp.status != 200:
                text = body.decode("utf-8", "replace").strip()
                raise UpstreamError(f"GET {url}: status {resp.status}: {text}")
            try:
                return orjson.loads(body), resp.headers
            except orjson.JSONDecodeError:
                if attempt + 1 == self.attempts:
                    raise UpstreamError(f"GET {url}: the answer is not JSON") from None
        raise UpstreamError(f"GET {url}: no answer")

    @asynccontextmanager
    async def stream(
        self, url: str, *, headers: Mapping[str, str] | None = None, component: str = "stream"
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response once its headers are in; the caller reads (and checks) the body."""
        resp = await self._open(url, headers)
        try:
            yield resp
        finally:
            resp.release()


def make_client(timeout: float, attempts: int, limit: int) -> _Client:
    """The client of a mirror run (``limit``: pooled connections, at least ``-parallel``)."""
    return _Client(timeout, attempts, limit)
