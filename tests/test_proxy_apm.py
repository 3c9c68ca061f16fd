"""APM spans of upstream requests in proxy mode, through a real eprd process and a fake APM Server."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from test_apm import apm_env, start_receiver, stop, until, wait_healthy

from tests import proxyfixtures
from tests.proxyfixtures import Process, write_config

upstream_eprd = pytest.fixture(scope="module")(proxyfixtures.upstream_eprd)


async def test_upstream_calls_are_spans_of_the_request(eprd_process, tmp_path: Path, upstream_eprd: Process):
    config = write_config(tmp_path, [])
    receiver, server = await start_receiver()
    try:
        process = eprd_process(
            [
                "-config",
                str(config),
                "-feature-proxy-mode",
                "-proxy-allow-insecure",
                "-proxy-to",
                upstream_eprd.base,
            ],
            env=apm_env(server),
        )
        async with aiohttp.ClientSession() as http:
            await wait_healthy(process, http)
            async with http.get(process.base + "/search") as response:
                assert response.status == 200
            await until(lambda: receiver.transaction("GET /search") is not None, "the /search transaction")
            await until(lambda: any(s["name"] == "upstream search" for s in receiver.of("span")), "its span")
        code, stderr = await stop(process)
    finally:
        await server.close()
    assert code == 0, stderr
    search = receiver.transaction("GET /search")
    spans = receiver.of("span")
    upstream = next(s for s in spans if s["name"] == "upstream search")
    assert upstream["transaction_id"] == search["id"]
    assert upstream["type"] == "external" and upstream["subtype"] == "upstream"
    # The agent's aiohttp client instrumentation: the HTTP request itself, inside it.
    http_span = next(s for s in spans if s.get("subtype") == "http" and s["parent_id"] == upstream["id"])
    assert http_span["context"]["http"]["url"].startswith(upstream_eprd.base + "/search")
    assert http_span["context"]["http"]["status_code"] == 200
