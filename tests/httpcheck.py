"""HTTP helpers shared by the API tests: exact requests and what the reference's answers look like."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl
from multidict import CIMultiDictProxy

NO_CACHE = ["max-age=0", "private, no-store"]


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def cache(self) -> list[str]:
        return self.headers.getall("Cache-Control", [])


async def fetch(
    http: aiohttp.ClientSession,
    base: str,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Reply:
    """Send ``path`` byte for byte (no normalisation, no redirects followed, no compression)."""
    url = yarl.URL(base + path, encoded=True)
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    async with http.request(method, url, headers=sent, allow_redirects=False) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


def go_json(value: Any) -> bytes:
    """How the reference lays out JSON: 2-space indent, ``": "``, no HTML escaping, trailing newline."""
    return json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"


def assert_bad_request(reply: Reply, message: str) -> None:
    assert reply.status == 400
    assert reply.body == message.encode() + b"\n"
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers.getall("Cache-Control") == NO_CACHE
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
