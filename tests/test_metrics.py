"""Prometheus metrics (§7): requests against a real server, then a real scrape of ``/metrics``.

The in-process tests serve the test packages with a Metrics object attached, as the CLI
does with ``-metrics-address``, and scrape the metrics listener's app over HTTP; the
process test runs ``eprd -metrics-address`` with live reload and follows a rebuild.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pkgfactory as pf
import pytest
from aiohttp.test_utils import TestServer
from conftest import write_config
from prometheus_client.parser import text_string_to_metric_families

from eprd import __version__
from eprd.http.registry import Registry
from eprd.ops.metrics import Metrics, make_metrics_app

IDENTITY = {"Accept-Encoding": "identity"}
SEARCH = "/search"
DOCUMENT = "/package/{packageName:[a-z0-9_]+}/{packageVersion}/"
STATIC = "/package/{packageName}/{packageVersion}/{name:.*}"
ARTIFACT = "/epr/{packageName}/{packageName:[a-z0-9_]+}-{packageVersion}.zip"
SIGNATURE = "/epr/{packageName}/{packageName:[a-z0-9_]+}-{packageVersion}.zip.sig"
GO_BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"]
SIZE_BUCKETS = ["16.0", "32.0", "64.0", "128.0", "256.0", "512.0", "1024.0", "65536.0", "262144.0", "+Inf"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def labelled(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample_name, labels in samples if sample_name == name]


class Scraped:
    """A registry served with metrics on, and its metrics listener."""

    def __init__(self, registry: Registry, metrics: Metrics, base: str, metrics_base: str) -> None:
        self.registry = registry
        self.metrics = metrics
        self.base = base
        self.metrics_base = metrics_base

    async def scrape(self, http: aiohttp.ClientSession) -> Samples:
        async with http.get(self.metrics_base + "/metrics", headers=IDENTITY) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return parse(await response.text())


@pytest.fixture
async def with_metrics(make_registry, serve) -> AsyncIterator[Callable[..., Awaitable[Scraped]]]:
    servers: list[TestServer] = []

    async def start(*args, **kwargs) -> Scraped:
        registry = make_registry(*args, **kwargs)
        metrics = Metrics(instance="test-host")
        registry.metrics = metrics  # as the CLI does for -metrics-address, before make_server
        metrics.bind(registry)
        _, base = await serve(registry=registry)
        server = TestServer(make_metrics_app(metrics), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Scraped(registry, metrics, base, str(server.make_url("")).rstrip("/"))

    yield start
    for server in servers:
        await server.close()


async def fetch(http: aiohttp.ClientSession, method: str, url: str) -> tuple[int, bytes]:
    async with http.request(method, url, headers=IDENTITY, allow_redirects=False) as response:
        return response.status, await response.read()


async def test_requests_are_counted_by_route_template_method_and_code(with_metrics, http):
    env = await with_metrics()
    sizes: dict[tuple[str, str, int], list[int]] = {}

    async def request(method: str, path: str, template: str | None) -> int:
        status, body = await fetch(http, method, env.base + path)
        if template is not None:
            sizes.setdefault((template, method.lower(), status), []).append(len(body))
        return status

    for _ in range(3):
        assert await request("GET", "/search", SEARCH) == 200
    assert await request("GET", "/search?package=acme_logs&all=true", SEARCH) == 200
    assert await request("HEAD", "/search", SEARCH) == 200
    assert await request("GET", "/search/", SEARCH) == 301  # the route's trailing-slash redirect
    assert await request("GET", "/package/acme_logs/1.10.0/", DOCUMENT) == 200
    assert await request("GET", "/package/acme_logs/1.10.0/docs/README.md", STATIC) == 200
    assert await request("GET", "/package/acme_logs/9.9.9/", DOCUMENT) == 404
    # Not measured: no route matched, or the path was cleaned before routing.
    assert await request("GET", "/no/such/route", None) == 404
    assert await request("GET", "//search", None) == 301

    samples = await env.scrape(http)
    assert value(samples, "epr_http_requests_total", code="200", method="get", path=SEARCH) == 4
    assert value(samples, "epr_http_requests_total", code="200", method="head", path=SEARCH) == 1
    assert value(samples, "epr_http_requests_total", code="301", method="get", path=SEARCH) == 1
    assert value(samples, "epr_http_requests_total", code="200", method="get", path=DOCUMENT) == 1
    assert value(samples, "epr_http_requests_total", code="404", method="get", path=DOCUMENT) == 1
    assert value(samples, "epr_http_requests_total", code="200", method="get", path=STATIC) == 1
    # Exactly these series: the path label is always a template, never a URL.
    series = {(s["code"], s["method"], s["path"]) for s in labelled(samples, "epr_http_requests_total")}
    assert series == {(str(code), method, path) for path, method, code in sizes}
    # Every histogram has a series for each of them, with the reference's buckets.
    for name, buckets in (
        ("epr_http_request_duration_seconds", GO_BUCKETS),
        ("epr_http_request_size_bytes", SIZE_BUCKETS),
        ("epr_http_response_size_bytes", SIZE_BUCKETS),
    ):
        for path, method, code in sizes:
            labels = {"code": str(code), "method": method, "path": path}
            count = value(samples, f"{name}_count", **labels)
            assert count == len(sizes[(path, method, code)]), (name, labels)
            found = sorted(
                (b["le"] for b in labelled(samples, f"{name}_bucket") if b.items() >= labels.items()),
                key=lambda le: float(le),
            )
            assert found == buckets
            assert value(samples, f"{name}_bucket", le="+Inf", **labels) == count
    # Response sizes are the bytes the client received (HEAD: what GET would send, as Go counts).
    for (path, method, code), received in sizes.items():
        total = value(samples, "epr_http_response_size_bytes_sum", code=str(code), method=method, path=path)
        if method == "get":
            assert total == sum(received), (path, code)
    assert value(samples, "epr_in_flight_requests") == 0


async def test_unknown_methods_share_one_label(with_metrics, http):
    env = await with_metrics()
    # (non-standard methods that aiohttp's parser knows; it answers 400 to others itself)
    for method in ("POST", "PURGE", "MKCOL"):
        assert (await fetch(http, method, env.base + "/search"))[0] == 200
    samples = await env.scrape(http)
    methods = {s["method"] for s in labelled(samples, "epr_http_requests_total")}
    assert methods == {"post", "unknown"}
    codes = [s["code"] for s in labelled(samples, "epr_http_requests_total") if s["method"] == "unknown"]
    assert len(codes) == len(set(codes))  # one series per code, whatever the method was
    unknown = sum(
        v
        for (n, labels), v in samples.items()
        if n == "epr_http_requests_total" and ("method", "unknown") in labels
    )
    assert unknown == 2


async def test_downloads_are_measured_whole_and_storage_requests_counted(with_metrics, http):
    env = await with_metrics()
    downloads = [
        "/epr/acme_logs/acme_logs-1.10.0.zip",  # a folder package, zipped on first request
        "/epr/zipped_probe/zipped_probe-1.0.0.zip",
        "/epr/zipped_probe/zipped_probe-1.0.0.zip",
    ]
    received = 0
    for path in downloads:
        status, body = await fetch(http, "GET", env.base + path)
        assert status == 200
        received += len(body)
    assert (await fetch(http, "GET", env.base + "/epr/nope/nope-1.0.0.zip"))[0] == 404
    assert (await fetch(http, "GET", env.base + "/epr/x/widget_metrics-1.0.0.zip.sig"))[0] == 200
    assert (await fetch(http, "GET", env.base + "/epr/x/zipped_probe-1.1.0.zip.sig"))[0] == 500
    assert (await fetch(http, "GET", env.base + "/epr/x/nope-1.0.0.zip.sig"))[0] == 404
    assert (await fetch(http, "GET", env.base + "/package/acme_logs/1.10.0/docs/README.md"))[0] == 200
    assert (await fetch(http, "GET", env.base + "/package/zipped_probe/1.0.0/manifest.yml"))[0] == 200
    assert (await fetch(http, "GET", env.base + "/package/acme_logs/1.10.0/docs/missing.md"))[0] == 404

    samples = await env.scrape(http)
    ok = {"code": "200", "method": "get", "path": ARTIFACT}
    assert value(samples, "epr_http_requests_total", **ok) == 3
    assert value(samples, "epr_http_response_size_bytes_sum", **ok) == received
    # Statics count successful serves only; artifacts and signatures every found package.
    storage = {
        s["component"]: value(samples, "epr_storage_requests_total", **s)
        for s in labelled(samples, "epr_storage_requests_total")
    }
    assert storage == {"artifacts": 3, "signatures": 2, "statics": 2}
    assert {s["location"] for s in labelled(samples, "epr_storage_requests_total")} == {"local"}
    assert value(samples, "epr_http_requests_total", code="500", method="get", path=SIGNATURE) == 1


async def test_indexer_timing_service_info_and_snapshot_gauges(with_metrics, http):
    env = await with_metrics()
    snapshot = env.registry.snapshot
    # Uncached selections run once per indexer (responses are cached per snapshot afterwards).
    for query in ("kibana.version=8.15.0", "category=security", "all=true&prerelease=true"):
        assert (await fetch(http, "GET", f"{env.base}/search?{query}"))[0] == 200
    assert (await fetch(http, "GET", f"{env.base}/categories?prerelease=true"))[0] == 200
    samples = await env.scrape(http)
    for indexer in ("ZipFileSystemIndexer", "FileSystemIndexer"):
        assert value(samples, "epr_indexer_get_duration_seconds_count", indexer=indexer) == 4
    assert value(samples, "epr_service_info", version=__version__, instance="test-host") == 1
    assert value(samples, "epr_number_indexed_packages") == len(snapshot)
    assert value(samples, "eprd_packages_served") == len(snapshot)
    assert value(samples, "eprd_rejected_package_versions") == 0
    assert value(samples, "eprd_package_rejections_total") == 0
    assert value(samples, "eprd_snapshot_generation") == snapshot.generation
    assert value(samples, "eprd_snapshot_build_timestamp_seconds") == pytest.approx(snapshot.built_at)
    assert value(samples, "eprd_snapshot_rebuilds_total") == 0
    # prometheus-client's process and platform collectors, in the private registry.
    assert value(samples, "process_cpu_seconds_total") is not None
    assert labelled(samples, "python_info")
    assert not any(name.endswith("_created") for name, _ in samples)


async def test_metrics_listener_serves_only_slash_metrics(with_metrics, http):
    env = await with_metrics()
    for path in ("/", "/metrics/", "/metricsx", "/search", "/debug/pprof/"):
        async with http.get(env.metrics_base + path) as response:
            assert (response.status, await response.read()) == (404, b"404 page not found\n"), path
    openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0", **IDENTITY}
    async with http.get(env.metrics_base + "/metrics", headers=openmetrics) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).endswith("# EOF\n")
    async with (
        aiohttp.ClientSession() as decompressing,
        decompressing.get(env.metrics_base + "/metrics") as got,
    ):
        assert got.headers.get("Content-Encoding") == "gzip"
        assert "epr_service_info" in await got.text()


# --- the process --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_process_metrics_follow_live_reload(eprd_process, tmp_path: Path):
    root = tmp_path / "packages"
    pf.write_dir(root, "first", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    port = free_port()
    process = eprd_process(
        ["-config", str(config), "-require-package-signatures=false", "-metrics-address", f"127.0.0.1:{port}"]
    )
    process.wait_healthy()
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as http:

        async def scrape() -> Samples:
            async with http.get(url) as response:
                return parse(await response.text())

        # The metrics listener starts just after the API listener that wait_healthy saw.
        for _ in range(200):
            try:
                await scrape()
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        assert (await fetch(http, "GET", process.base + "/search"))[0] == 200
        samples = await scrape()
        assert value(samples, "epr_number_indexed_packages") == 1
        assert value(samples, "eprd_packages_served") == 1
        assert value(samples, "epr_http_requests_total", code="200", method="get", path=SEARCH) == 1
        # The health checks wait_healthy made are measured too (the access log skips them).
        assert value(samples, "epr_http_requests_total", code="200", method="get", path="/health") >= 1

        pf.write_dir(root, "second", "1.0.0")
        pf.write_dir(root, "broken", "1.0.0", manifest={"title": pf.DROP})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline:
            samples = await scrape()
            if value(samples, "eprd_packages_served") == 2 and value(
                samples, "eprd_rejected_package_versions"
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the rebuild never showed in the metrics: {samples}")
        assert value(samples, "epr_number_indexed_packages") == 1  # start-up only, as the reference
        assert value(samples, "eprd_rejected_package_versions") == 1
        # (at least once: the watcher may also have read the broken version while it was written)
        assert value(samples, "eprd_package_rejections_total") >= 1
        assert value(samples, "eprd_snapshot_rebuilds_total") >= 1
        assert value(samples, "eprd_snapshot_rebuild_duration_seconds_count") >= 1
        assert value(samples, "eprd_snapshot_generation") >= 2
    code, _, err = process.stop()
    assert code == 0, err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
