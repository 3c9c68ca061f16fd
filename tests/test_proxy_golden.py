"""The reference's proxy golden cases, on eprd's own data.

As the reference's own tests do, the upstream is a small server answering a fixed /search
(and /categories) list whatever the query; the local side is two packages of the test's own.
Expected bodies are written out in full: the merge rules (local wins a clash, latest version
per name after the merge, remote entries not filtered again and re-serialised in the
/search shape with unknown keys dropped) and the categories rules (counts added, remote-only
ids keep their remote title and parent unless their *title* is a known category id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eprd.model import gojson
from tests import pkgfactory as pf
from tests import proxyfixtures
from tests.httpcheck import fetch

proxies = pytest.fixture(proxyfixtures.proxies)

FIXED_SEARCH = [
    {
        "name": "demo",
        "title": "Remote copy of demo",
        "version": "1.0.0",
        "description": "The upstream's demo 1.0.0: the local one wins.",
        "type": "integration",
        "download": "/epr/demo/demo-1.0.0.zip",
        "path": "/package/demo/1.0.0",
    },
    {
        "name": "demo",
        "title": "Demo",
        "version": "2.0.0",
        "release": "ga",
        "description": "A newer demo, only upstream.",
        "type": "integration",
        "download": "/epr/demo/demo-2.0.0.zip",
        "path": "/package/demo/2.0.0",
        "categories": ["custom"],
        "format_version": "3.0.0",  # not a /search key: dropped
    },
    {
        "name": "remote_only",
        "version": "0.1.0",
        "description": "No title, an unknown key and a template.",
        "type": "integration",
        "download": "/epr/remote_only/remote_only-0.1.0.zip",
        "path": "/package/remote_only/0.1.0",
        "unknown_key": {"dropped": True},
        "policy_templates": [
            {"name": "t", "title": "T", "description": "D", "inputs": [{"type": "logfile"}], "multiple": True}
        ],
        "conditions": {"kibana": {"version": "^7.0.0"}},
        "owner": {"github": "someone"},
    },
    {
        "name": "remote_only",
        "version": "0.0.9",
        "description": "Older",
        "type": "integration",
        "download": "/epr/remote_only/remote_only-0.0.9.zip",
        "path": "/package/remote_only/0.0.9",
    },
]
FIXED_CATEGORIES = [
    {"id": "custom", "title": "Custom", "count": 3},
    {
        "id": "web",
        "title": "Web (remote)",
        "count": 2,
        "parent_id": "observability",
        "parent_title": "Observ.",
    },
    {"id": "kiosks", "title": "kiosks", "count": 1},
    {"id": "sec", "title": "security", "count": 4, "parent_id": "x", "parent_title": "X"},
]

REMOTE_DEMO_2 = b"""{
  "name": "demo",
  "title": "Demo",
  "version": "2.0.0",
  "release": "ga",
  "description": "A newer demo, only upstream.",
  "type": "integration",
  "download": "/epr/demo/demo-2.0.0.zip",
  "path": "/package/demo/2.0.0",
  "categories": [
    "custom"
  ]
}"""
REMOTE_ONLY_1 = b"""{
  "name": "remote_only",
  "version": "0.1.0",
  "description": "No title, an unknown key and a template.",
  "type": "integration",
  "download": "/epr/remote_only/remote_only-0.1.0.zip",
  "path": "/package/remote_only/0.1.0",
  "policy_templates": [
    {
      "name": "t",
      "title": "T",
      "description": "D"
    }
  ],
  "conditions": {
    "kibana": {
      "version": "^7.0.0"
    }
  },
  "owner": {
    "github": "someone"
  }
}"""
REMOTE_ONLY_0 = b"""{
  "name": "remote_only",
  "version": "0.0.9",
  "description": "Older",
  "type": "integration",
  "download": "/epr/remote_only/remote_only-0.0.9.zip",
  "path": "/package/remote_only/0.0.9"
}"""


class Fixed:
    def __init__(self) -> None:
        self.queries: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/search", self.search)
        app.router.add_get("/categories", self.categories)
        return app

    async def search(self, request: web.Request) -> web.Response:
        self.queries.append(request.raw_path)
        return web.json_response(FIXED_SEARCH)

    async def categories(self, request: web.Request) -> web.Response:
        self.queries.append(request.raw_path)
        return web.json_response(FIXED_CATEGORIES)


@pytest.fixture
async def fixed() -> AsyncIterator[tuple[Fixed, str]]:
    upstream = Fixed()
    server = TestServer(upstream.app(), host="127.0.0.1")
    await server.start_server()
    yield upstream, str(server.make_url("")).rstrip("/")
    await server.close()


async def _servers(tmp_path: Path, serve, proxies, url: str):  # type: ignore[no-untyped-def]
    root = tmp_path / "local"
    pf.write_dir(root, "demo", "1.0.0", manifest={"categories": ["custom", "web"]})
    pf.write_dir(root, "zeta", "1.0.0", manifest={"categories": ["security"]})
    registry, _, _ = proxies([root], url, None)
    _, proxy = await serve(registry=registry)
    _, plain = await serve([root])  # the same packages without proxy mode
    return proxy, plain


def _local_entries(body: bytes) -> dict[tuple[str, str], bytes]:
    """The encoded entries of a local /search body, by name and version."""
    import json

    out = {}
    for entry in json.loads(body):
        encoded = gojson.encode(entry)
        out[(entry["name"], entry["version"])] = encoded
    return out


async def test_search_all_proxy(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, fixed: tuple[Fixed, str]
) -> None:
    upstream, url = fixed
    proxy, plain = await _servers(tmp_path, serve, proxies, url)
    local = _local_entries((await fetch(http, plain, "/search?all=true")).body)
    reply = await fetch(http, proxy, "/search?all=true")
    expected = gojson.json_list(
        [local[("demo", "1.0.0")], REMOTE_DEMO_2, REMOTE_ONLY_0, REMOTE_ONLY_1, local[("zeta", "1.0.0")]]
    )
    assert reply.body == expected + b"\n"
    assert upstream.queries == ["/search?all=true"]


async def test_search_just_latest_proxy(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, fixed: tuple[Fixed, str]
) -> None:
    upstream, url = fixed
    proxy, plain = await _servers(tmp_path, serve, proxies, url)
    local = _local_entries((await fetch(http, plain, "/search")).body)
    reply = await fetch(http, proxy, "/search")
    # demo 2.0.0 (remote) hides the local 1.0.0; remote entries are not filtered again.
    assert reply.body == gojson.json_list([REMOTE_DEMO_2, REMOTE_ONLY_1, local[("zeta", "1.0.0")]]) + b"\n"
    # A query the local side filters everything out of: the remote list is still merged.
    reply = await fetch(http, proxy, "/search?kibana.version=7.10.0&package=none")
    assert reply.body == gojson.json_list([REMOTE_DEMO_2, REMOTE_ONLY_1]) + b"\n"
    assert upstream.queries[-1] == "/search?kibana.version=7.10.0&package=none"  # forwarded as it came


CATEGORIES_PROXY = b"""[
  {
    "id": "custom",
    "title": "Custom",
    "count": 4
  },
  {
    "id": "kiosks",
    "title": "kiosks",
    "count": 1
  },
  {
    "id": "sec",
    "title": "Security",
    "count": 4,
    "parent_id": "x",
    "parent_title": "X"
  },
  {
    "id": "security",
    "title": "Security",
    "count": 1
  },
  {
    "id": "web",
    "title": "Web Server",
    "count": 3,
    "parent_id": "observability",
    "parent_title": "Observability"
  }
]
"""

CATEGORIES_KIBANA_PROXY = b"""[
  {
    "id": "custom",
    "title": "Custom",
    "count": 3
  },
  {
    "id": "kiosks",
    "title": "kiosks",
    "count": 1
  },
  {
    "id": "sec",
    "title": "Security",
    "count": 4,
    "parent_id": "x",
    "parent_title": "X"
  },
  {
    "id": "web",
    "title": "Web (remote)",
    "count": 2,
    "parent_id": "observability",
    "parent_title": "Observ."
  }
]
"""


async def test_categories_proxy(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, fixed: tuple[Fixed, str]
) -> None:
    upstream, url = fixed
    proxy, _ = await _servers(tmp_path, serve, proxies, url)
    reply = await fetch(http, proxy, "/categories")
    assert reply.status == 200
    assert reply.body == CATEGORIES_PROXY
    # Kibana-filtered: the local packages need ^8.0.0, so only the upstream's counts remain,
    # with the upstream's own titles for ids the local side did not have.
    reply = await fetch(http, proxy, "/categories?kibana.version=7.17.0")
    assert reply.body == CATEGORIES_KIBANA_PROXY
    assert upstream.queries == ["/categories", "/categories?kibana.version=7.17.0"]
