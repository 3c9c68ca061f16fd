"""-proxy-cache-artifacts: zips, signatures and static files of remote packages pulled through."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests import proxyfixtures
from tests.httpcheck import fetch
from tests.proxyfixtures import Process, local_packages

upstream_eprd = pytest.fixture(scope="module")(proxyfixtures.upstream_eprd)
proxies = pytest.fixture(proxyfixtures.proxies)


def _remote_files(folder: Path) -> list[Path]:
    return sorted((folder / "archives").glob("remote-*"))


async def test_pull_through_from_a_real_upstream(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, upstream_eprd: Process
) -> None:
    registry, _, _ = proxies(
        [local_packages(tmp_path / "local")], upstream_eprd.base, tmp_path / "cache", pull=True
    )
    _, base = await serve(registry=registry)
    pulled = registry.fallback.pulled
    for path, upstream_path in (
        ("/epr/widget_metrics/widget_metrics-1.0.0.zip", "/epr/widget_metrics/widget_metrics-1.0.0.zip"),
        ("/epr/zipped_probe/zipped_probe-1.0.0.zip.sig", "/epr/zipped_probe/zipped_probe-1.0.0.zip.sig"),
        ("/package/widget_metrics/1.0.0/docs/README.md", "/package/widget_metrics/1.0.0/docs/README.md"),
    ):
        expected = await fetch(http, upstream_eprd.base, upstream_path)
        reply = await fetch(http, base, path)
        assert reply.status == 200, path
        assert reply.body == expected.body, path
        assert reply.headers["Content-Length"] == str(len(expected.body))
        assert reply.cache == ["max-age=600", "public"]
    zipped = await fetch(http, base, "/epr/widget_metrics/widget_metrics-1.0.0.zip")
    assert zipped.headers["Content-Type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(zipped.body)).testzip() is None
    ranged = await fetch(http, base, "/epr/widget_metrics/widget_metrics-1.0.0.zip", {"Range": "bytes=0-9"})
    assert ranged.status == 206
    assert ranged.body == zipped.body[:10]
    assert pulled.downloads == 3  # each file fetched once, then served from the archive folder
    assert len(_remote_files(tmp_path / "cache")) == 3
    missing = await fetch(http, base, "/package/widget_metrics/1.0.0/no/such/file.txt")
    assert (missing.status, missing.text) == (404, "resource not found\n")


class Artifacts:
    """An upstream whose one remote package's zip misbehaves as told."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits: Counter[str] = Counter()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("remote_pkg-1.0.0/manifest.yml", "name: remote_pkg\n" * 50)
        self.zip = buffer.getvalue()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/package/remote_pkg/1.0.0/", self.document)
        app.router.add_get("/epr/package/remote_pkg-1.0.0.zip", self.artifact)
        return app

    async def document(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "remote_pkg", "version": "1.0.0"})

    async def artifact(self, request: web.Request) -> web.StreamResponse:
        self.hits[self.mode] += 1
        if self.mode == "truncated":
            resp = web.StreamResponse(
                headers={"Content-Type": "application/zip", "Content-Length": str(len(self.zip))}
            )
            await resp.prepare(request)
            await resp.write(self.zip[:40])
            assert request.transport is not None
            request.transport.close()
            return resp
        if self.mode == "notzip":
            return web.Response(body=b"PK but not really a zip" * 10, content_type="application/zip")
        if self.mode == "corrupt":  # a zip whose member's bytes were altered: the CRC check fails
            data = bytearray(self.zip)
            data[data.index(b"name: remote_pkg") + 3] ^= 0xFF
            return web.Response(body=bytes(data), content_type="application/zip")
        return web.Response(body=self.zip, content_type="application/zip")


@pytest.fixture
async def artifacts() -> AsyncIterator[tuple[Artifacts, str]]:
    upstream = Artifacts()
    server = TestServer(upstream.app(), host="127.0.0.1")
    await server.start_server()
    yield upstream, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.mark.parametrize("fault", ["truncated", "notzip", "corrupt"])
async def test_bad_downloads_are_never_cached_or_served(
    fault: str, tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, artifacts: tuple[Artifacts, str]
) -> None:
    upstream, url = artifacts
    registry, _, _ = proxies([local_packages(tmp_path / "local")], url, tmp_path / "cache", pull=True)
    _, base = await serve(registry=registry)
    upstream.mode = fault
    reply = await fetch(http, base, "/epr/remote_pkg/remote_pkg-1.0.0.zip")
    assert (reply.status, reply.text) == (500, "internal server error\n")
    assert _remote_files(tmp_path / "cache") == []
    upstream.mode = "ok"
    reply = await fetch(http, base, "/epr/remote_pkg/remote_pkg-1.0.0.zip")
    assert reply.status == 200 and reply.body == upstream.zip
    assert len(_remote_files(tmp_path / "cache")) == 1
