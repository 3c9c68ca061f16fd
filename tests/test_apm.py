"""Elastic APM and logs through the real ``eprd`` process.

A small aiohttp app in the test plays the APM Server: it answers the agent's server
information request at ``/`` and records every event the agent posts (gzip'd ndjson)
to ``/intake/v2/events``. The tests then read what arrived: a transaction per request
named after its route template, the start-up and live-reload transactions with their
spans, and the trace ids the access log lines carry.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pkgfactory as pf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import write_config

from eprd import __version__
from eprd.ops.apm import Apm

DEADLINE = 20.0
DOCUMENT = "/package/{packageName:[a-z0-9_]+}/{packageVersion}/"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Receiver:
    """Records what an APM agent sends."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.intake_requests = 0
        self.server_info_requests = 0

    def app(self) -> web.Application:
        async def server_info(request: web.Request) -> web.Response:
            self.server_info_requests += 1
            return web.json_response(
                {"build_date": "2024-01-01T00:00:00Z", "build_sha": "x", "version": "8.15.0"}
            )

        async def intake(request: web.Request) -> web.Response:
            body = await request.read()  # (aiohttp inflates Content-Encoding: gzip bodies itself)
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            elif request.headers.get("Content-Encoding") == "deflate" and body[:1] != b"{":
                body = zlib.decompress(body)
            self.intake_requests += 1
            self.events.extend(json.loads(line) for line in body.splitlines() if line.strip())
            return web.Response(status=202)

        async def agent_config(request: web.Request) -> web.Response:
            return web.json_response({})

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", server_info)
        app.router.add_post("/intake/v2/events", intake)
        app.router.add_route("*", "/config/v1/agents", agent_config)
        return app

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event[kind] for event in self.events if kind in event]

    def transaction(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.of("transaction") if t.get("name") == name), None)


async def start_receiver(host: str = "127.0.0.1", port: int | None = None) -> tuple[Receiver, TestServer]:
    receiver = Receiver()
    server = TestServer(receiver.app(), host=host, port=port)
    await server.start_server()
    return receiver, server


async def wait_healthy(process, http: aiohttp.ClientSession) -> None:
    """Like EprdProcess.wait_healthy, without blocking the event loop the receiver runs on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        if process.proc.poll() is not None:
            raise AssertionError(f"eprd exited with {process.proc.returncode}: {process.stderr_text()}")
        try:
            async with http.get(process.base + "/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("eprd did not become healthy")


async def until(check, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def stop(process) -> tuple[int, str]:
    """SIGTERM, then wait without blocking the loop (the agent flushes to the receiver on exit)."""
    process.proc.terminate()
    code = await asyncio.to_thread(process.proc.wait, 30)
    return code, process.stderr_text()


def apm_env(server: TestServer, **extra: str) -> dict[str, str]:
    return {
        "ELASTIC_APM_SERVER_URL": str(server.make_url("")).rstrip("/"),
        "ELASTIC_APM_API_REQUEST_TIME": "100ms",  # send every 100 ms instead of every 10 s
        "ELASTIC_APM_CLOUD_PROVIDER": "none",  # no cloud metadata probes from a test
        "ELASTIC_APM_CENTRAL_CONFIG": "false",
        "ELASTIC_APM_METRICS_INTERVAL": "0s",
        **extra,
    }


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


async def test_transactions_spans_and_log_correlation(eprd_process, tmp_path: Path):
    root = tmp_path / "packages"
    pf.write_dir(root, "first", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    receiver, server = await start_receiver()
    try:
        process = eprd_process(
            ["-config", str(config), "-require-package-signatures=false"],
            env=apm_env(server, ELASTIC_APM_ENVIRONMENT="testing"),
        )
        async with aiohttp.ClientSession() as http:
            await wait_healthy(process, http)
            async with http.get(process.base + "/search") as response:
                assert response.status == 200
            traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"  # W3C trace context from a caller
            async with http.get(process.base + "/package/first/1.0.0/", headers={"traceparent": traceparent}):
                pass
            async with http.get(process.base + "/no/such/route") as response:
                assert response.status == 404
            pf.write_dir(root, "second", "1.0.0")  # a live reload
            await until(lambda: receiver.transaction("reload packages") is not None, "a reload transaction")
            await until(lambda: receiver.transaction("GET /search") is not None, "the /search transaction")
        code, stderr = await stop(process)
    finally:
        await server.close()
    assert code == 0, stderr

    assert receiver.server_info_requests >= 1
    metadata = receiver.of("metadata")[0]
    assert metadata["service"]["name"] == "package-registry"
    assert metadata["service"]["version"] == __version__
    assert metadata["service"]["environment"] == "testing"
    assert metadata["service"]["framework"]["name"] == "aiohttp"

    search = receiver.transaction("GET /search")
    assert search["type"] == "request"
    assert search["result"] == "HTTP 2xx"
    assert search["outcome"] == "success"
    document = receiver.transaction(f"GET {DOCUMENT}")
    assert document is not None, [t["name"] for t in receiver.of("transaction")]
    assert document["trace_id"] == TRACE_ID  # continues the caller's trace
    assert document["parent_id"] == PARENT_ID
    unknown = receiver.transaction("GET unknown route")
    assert unknown is not None and unknown["result"] == "HTTP 4xx"

    # Start-up and live reload: a transaction each, with a span for loading and one for the snapshot.
    spans = receiver.of("span")
    for name, kind in (("load packages", "backend.init"), ("reload packages", "backend.watcher")):
        transaction = receiver.transaction(name)
        assert transaction is not None and transaction["type"] == kind, name
        assert transaction["result"] == "success"
        children = {s["name"] for s in spans if s["transaction_id"] == transaction["id"]}
        assert children == {"load package versions", "build snapshot"}, name
    assert receiver.transaction("reload packages")["context"]["tags"]["packages_added"] == 1

    # ECS log lines: the service fields on every line, trace ids on the access lines of traced requests.
    records = json_lines(stderr)
    for record in records:
        assert record["service"]["name"] == "package-registry", record
        assert record["service"]["version"] == __version__
        assert record["service"]["environment"] == "testing"
        assert record["ecs.version"] and record["log"]["logger"]
    access = {r["url"]["path"]: r for r in records if r["log"]["logger"] == "eprd.access"}
    assert "/health" not in access
    assert access["/search"]["trace"]["id"] == search["trace_id"]
    assert access["/search"]["transaction"]["id"] == search["id"]
    assert access["/package/first/1.0.0/"]["trace"]["id"] == TRACE_ID
    line = access["/search"]
    assert line["message"] == "GET /search HTTP/1.1"
    assert line["http"]["request"]["method"] == "GET"
    assert line["http"]["response"]["code"] == 200
    assert line["http"]["response"]["body"]["bytes"] > 0
    assert line["url"]["domain"] == "127.0.0.1"
    assert line["url"]["port"] == int(process.base.rsplit(":", 1)[1])
    assert line["source"]["ip"] == "127.0.0.1"
    assert line["event"]["duration"] > 0
    assert line["user_agent"]["original"].startswith("Python/")
    assert "query" not in line["url"]


async def test_dev_logs_are_readable_and_carry_trace_ids(eprd_process, tmp_path: Path):
    root = tmp_path / "packages"
    pf.write_dir(root, "first", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    receiver, server = await start_receiver()
    try:
        process = eprd_process(
            ["-config", str(config), "-require-package-signatures=false", "-log-type", "dev"],
            env=apm_env(server),
        )
        async with aiohttp.ClientSession() as http:
            await wait_healthy(process, http)
            async with http.get(process.base + "/search?package=first") as response:
                assert response.status == 200
        code, stderr = await stop(process)
        await until(lambda: receiver.transaction("GET /search") is not None, "the /search transaction")
    finally:
        await server.close()
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in lines:
        with pytest.raises(ValueError):
            json.loads(line)
    search = receiver.transaction("GET /search")
    access = [line for line in lines if "eprd.access: GET /search HTTP/1.1" in line]
    assert len(access) == 1
    assert "status=200" in access[0]
    assert f"trace.id={search['trace_id']} transaction.id={search['id']}" in access[0]
    assert not any("elasticapm_labels" in line for line in lines)


def test_no_agent_without_a_server_url():
    assert Apm.from_environment({}) is None
    assert Apm.from_environment({"ELASTIC_APM_SERVICE_NAME": "x", "ELASTIC_APM_SERVER_URL": " "}) is None


async def test_no_agent_talks_to_the_default_server_without_a_server_url(eprd_process, tmp_path: Path):
    """The Python agent's default server is 127.0.0.1:8200: listen there and expect silence."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8200))
        except OSError:
            pytest.skip("port 8200 is in use")
    root = tmp_path / "packages"
    pf.write_dir(root, "first", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    receiver, server = await start_receiver(port=8200)
    try:
        process = eprd_process(
            ["-config", str(config), "-require-package-signatures=false"],
            env={"ELASTIC_APM_SERVICE_NAME": "custom-name", "ELASTIC_APM_API_REQUEST_TIME": "100ms"},
        )
        async with aiohttp.ClientSession() as http:
            await wait_healthy(process, http)
            async with http.get(process.base + "/search") as response:
                assert response.status == 200
            async with http.get(process.base + "/") as response:
                assert (await response.json())["service.name"] == "custom-name"
        code, stderr = await stop(process)  # an agent would flush what it has on the way out
    finally:
        await server.close()
    assert code == 0, stderr
    assert (receiver.server_info_requests, receiver.intake_requests) == (0, 0)
    records = json_lines(stderr)
    assert not any(r["log"]["logger"].startswith("elasticapm") for r in records)
    assert all(r["service"]["name"] == "custom-name" and "environment" not in r["service"] for r in records)
    access = [r for r in records if r["log"]["logger"] == "eprd.access"]
    assert access and not any("trace" in r for r in access)
