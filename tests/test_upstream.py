"""The shared upstream client against a faulty upstream of the test's own, on loopback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eprd.upstream.client import (
    CANCELLED,
    ERROR_BODY,
    ERROR_CONNECTION,
    ERROR_STATUS,
    ERROR_TIMEOUT,
    OK,
    Upstream,
    UpstreamError,
    UpstreamStatus,
    UpstreamUnavailable,
    parse_retry_after,
    read_exactly,
)
from tests.conftest import free_port


class Recorder:
    """An Observer that keeps what it is told."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []
        self.spans: list[tuple[str, str, str]] = []

    def request(self, component: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.outcomes.append((component, outcome))

    def span(self, component: str, method: str, url: str) -> Any:
        self.spans.append((component, method, url))
        return nullcontext()


class Faulty:
    """An upstream whose paths each misbehave in one way; ``hits`` counts requests per path."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.hang_cancelled = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{what}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        what = request.match_info["what"]
        self.hits[what] += 1
        n = self.hits[what]
        if what == "json":
            return web.json_response({"n": n}, headers={"Cache-Control": "max-age=60"})
        if what == "fail2":  # two 500s, then good
            return web.json_response({"n": n}) if n > 2 else web.Response(status=500, text="boom")
        if what == "always500":
            return web.Response(status=503, text="down")
        if what == "e501":
            return web.Response(status=501, text="no")
        if what == "missing":
            return web.Response(status=404, text="404 page not found\n")
        if what == "busy":  # 429 asking for 1 s, then good
            if n == 1:
                return web.Response(status=429, headers={"Retry-After": "1"})
            return web.json_response({"n": n})
        if what == "busylong":
            return web.Response(status=429, headers={"Retry-After": "3600"})
        if what == "html":  # a captive portal's 200
            return web.Response(text="<html>login</html>", content_type="text/html")
        if what == "htmlonce":
            if n == 1:
                return web.Response(text="<html>login</html>", content_type="text/html")
            return web.json_response({"n": n})
        if what == "badjsononce":
            if n == 1:
                return web.Response(body=b'{"n": ', content_type="application/json")
            return web.json_response({"n": n})
        if what == "hang":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.hang_cancelled.set()
                raise
        if what == "truncatedonce" and n > 1:
            return web.json_response({"n": n})
        if what in ("truncated", "truncatedonce"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "100"})
            await resp.prepare(request)
            await resp.write(b'{"n": 1, "padding": "')
            assert request.transport is not None
            request.transport.close()  # cut short: 21 of 100 bytes
            return resp
        if what == "blob":
            data = bytes(range(256)) * 4
            rng = request.headers.get("Range")
            if rng:
                start, end = (int(x) for x in rng.removeprefix("bytes=").split("-"))
                return web.Response(
                    status=206,
                    body=data[start : end + 1],
                    headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"},
                )
            return web.Response(body=data, content_type="application/zip")
        if what == "blobfail1":  # 502 first, then the body
            if n == 1:
                return web.Response(status=502)
            return web.Response(body=b"x" * 1000, content_type="application/zip")
        return web.Response(status=400)


@pytest.fixture
async def faulty() -> AsyncIterator[tuple[Faulty, str]]:
    upstream = Faulty()
    server = TestServer(upstream.app(), host="127.0.0.1")
    await server.start_server()
    yield upstream, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def client() -> AsyncIterator[tuple[Upstream, Recorder]]:
    recorder = Recorder()
    upstream = Upstream(timeout=2, attempts=4, deadline=10, backoff=0.01, max_backoff=0.05, observer=recorder)
    yield upstream, recorder
    await upstream.close()


async def test_json_and_headers(faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]) -> None:
    _server, base = faulty
    upstream, recorder = client
    value, headers = await upstream.get_json(base + "/json", component="search")
    assert value == {"n": 1}
    assert headers["Cache-Control"] == "max-age=60"
    assert recorder.outcomes == [("search", OK)]
    assert recorder.spans == [("search", "GET", base + "/json")]
    # One pooled session: a second call reuses it.
    session = upstream.session()
    await upstream.get_json(base + "/json")
    assert upstream.session() is session


async def test_500s_then_200(faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]) -> None:
    server, base = faulty
    upstream, recorder = client
    value, _ = await upstream.get_json(base + "/fail2", component="search")
    assert value == {"n": 3}
    assert server.hits["fail2"] == 3
    assert [o for _, o in recorder.outcomes] == [ERROR_STATUS, ERROR_STATUS, OK]


async def test_5xx_bounded_attempts(faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]) -> None:
    server, base = faulty
    upstream, recorder = client
    with pytest.raises(UpstreamUnavailable) as err:
        await upstream.get_json(base + "/always500")
    assert err.value.status == 503
    assert server.hits["always500"] == 4  # attempts=4
    assert recorder.outcomes[-1] == ("json", ERROR_STATUS)


async def test_final_statuses_are_not_retried(
    faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]
) -> None:
    server, base = faulty
    upstream, _ = client
    with pytest.raises(UpstreamStatus) as err:
        await upstream.get_json(base + "/missing")
    assert err.value.status == 404
    with pytest.raises(UpstreamStatus) as err:
        await upstream.get_json(base + "/e501")
    assert err.value.status == 501
    assert server.hits["missing"] == 1
    assert server.hits["e501"] == 1


async def test_429_honours_retry_after(faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]) -> None:
    _server, base = faulty
    upstream, _ = client
    started = time.monotonic()
    value, _ = await upstream.get_json(base + "/busy")
    assert value == {"n": 2}
    assert time.monotonic() - started >= 0.9  # waited the asked second, not the 10 ms backoff


async def test_429_beyond_deadline_gives_up_at_once(
    faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]
) -> None:
    server, base = faulty
    upstream, _ = client
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as err:
        await upstream.get_json(base + "/busylong")
    assert err.value.status == 429
    assert server.hits["busylong"] == 1
    assert time.monotonic() - started < 9  # did not sleep an hour, nor till the deadline


async def test_non_json_200_is_retried(faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]) -> None:
    server, base = faulty
    upstream, recorder = client
    value, _ = await upstream.get_json(base + "/htmlonce")
    assert value == {"n": 2}
    with pytest.raises(UpstreamUnavailable) as err:
        await upstream.get_json(base + "/html")
    assert "not JSON" in err.value.reason
    assert server.hits["html"] == 4
    assert recorder.outcomes[-1] == ("json", ERROR_BODY)
    value, _ = await upstream.get_json(base + "/badjsononce")
    assert value == {"n": 2}


async def test_truncated_body_is_retried(
    faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]
) -> None:
    server, base = faulty
    upstream, _ = client
    value, _ = await upstream.get_json(base + "/truncatedonce")
    assert value == {"n": 2}
    with pytest.raises(UpstreamUnavailable):
        await upstream.get_json(base + "/truncated")
    assert server.hits["truncated"] == 4


async def test_refused_connection(client: tuple[Upstream, Recorder]) -> None:
    upstream, recorder = client
    with pytest.raises(UpstreamUnavailable) as err:
        await upstream.get_json(f"http://127.0.0.1:{free_port()}/json", component="search")
    assert "Connect" in err.value.reason
    assert len(recorder.outcomes) == 4
    assert all(o == ERROR_CONNECTION for _, o in recorder.outcomes)


async def test_hang_is_bounded_by_the_deadline(faulty: tuple[Faulty, str]) -> None:
    server, base = faulty
    recorder = Recorder()
    upstream = Upstream(timeout=0.5, attempts=10, deadline=1.5, backoff=0.01, observer=recorder)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable):
            await upstream.get_json(base + "/hang")
        elapsed = time.monotonic() - started
        # 1.5 s budget; generous slack for a loaded machine, but far from 10 x 0.5 s + waits.
        assert elapsed < 4.5
        assert 2 <= server.hits["hang"] <= 3
        assert recorder.outcomes[0] == ("json", ERROR_TIMEOUT)
    finally:
        await upstream.close()


async def test_cancelled_caller_aborts_the_request(
    faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]
) -> None:
    server, base = faulty
    upstream, recorder = client
    task = asyncio.create_task(upstream.get_json(base + "/hang", component="search"))
    async with asyncio.timeout(10):
        while server.hits["hang"] == 0:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.outcomes == [("search", CANCELLED)]
    async with asyncio.timeout(10):  # the connection was closed, so the upstream handler stops
        await server.hang_cancelled.wait()
    assert server.hits["hang"] == 1


async def test_stream_range_and_statuses(
    faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]
) -> None:
    server, base = faulty
    upstream, recorder = client
    async with upstream.stream(
        base + "/blob", headers={"Range": "bytes=10-19"}, component="artifacts"
    ) as resp:
        assert resp.status == 206
        assert await read_exactly(resp) == bytes(range(10, 20))
    async with upstream.stream(base + "/blob", component="artifacts") as resp:
        assert resp.status == 200
        assert len(await read_exactly(resp)) == 1024
    async with upstream.stream(base + "/missing", component="statics") as resp:
        assert resp.status == 404  # handed over, not retried
    assert server.hits["missing"] == 1
    async with upstream.stream(base + "/blobfail1", component="artifacts") as resp:
        assert resp.status == 200  # the 502 before the headers was retried
        assert await read_exactly(resp) == b"x" * 1000
    assert recorder.outcomes[-2:] == [("artifacts", ERROR_STATUS), ("artifacts", OK)]
    with pytest.raises(UpstreamUnavailable):
        async with upstream.stream(base + "/always500"):
            pass


async def test_stream_truncated_body_is_an_error_not_retried(
    faulty: tuple[Faulty, str], client: tuple[Upstream, Recorder]
) -> None:
    server, base = faulty
    upstream, _ = client
    async with upstream.stream(base + "/truncated") as resp:
        assert resp.status == 200
        with pytest.raises(UpstreamError, match=r"cut short|Content-Length"):
            await read_exactly(resp)
    assert server.hits["truncated"] == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


async def test_metrics_observer(faulty: tuple[Faulty, str]) -> None:
    """Attempts feed eprd_upstream_* and, for artifacts/statics/signatures, the reference's counter."""
    from eprd.ops.metrics import Metrics
    from eprd.upstream.observe import OpsObserver

    _server, base = faulty
    metrics = Metrics(instance="test")
    upstream = Upstream(timeout=2, attempts=3, backoff=0.01, observer=OpsObserver(metrics))
    try:
        await upstream.get_json(base + "/fail2", component="search")
        async with upstream.stream(base + "/blob", component="artifacts") as resp:
            await read_exactly(resp)
    finally:
        await upstream.close()
    text = metrics.exposition()[0].decode()
    assert 'eprd_upstream_requests_total{component="search",outcome="error_status"} 2.0' in text
    assert 'eprd_upstream_requests_total{component="search",outcome="ok"} 1.0' in text
    assert 'eprd_upstream_request_duration_seconds_count{component="search"} 3.0' in text
    assert 'epr_storage_requests_total{component="artifacts",location="remote"} 1.0' in text
