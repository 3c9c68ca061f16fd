"""The pre-formatted ECS access line (``AccessLog._ecs_line``) is the line the dict path builds."""

from __future__ import annotations

import json
import os

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from eprd.ops import logs
from eprd.ops.accesslog import AccessLog

CASES = [
    ("GET", "/search", {"Host": "127.0.0.1:8080", "User-Agent": "wrk"}),
    ("HEAD", "/package/a/1.0.0/?x=1&y=%20", {"Host": "example.com", "Referer": 'https://k/"q"'}),
    ("GET", "/epr/a/a-1.0.0.zip", {"Host": "[::1]:9000"}),
    ("GET", "/categories", {"Host": "[::1]"}),
    ("GET", "/caf\u00e9/\u2603", {"Host": "h:0", "User-Agent": "agent\n\\ with \u00fc"}),
    ("GET", "/", {}),
]


@pytest.mark.parametrize(("method", "path", "headers"), CASES)
async def test_the_fast_line_is_the_dict_line(method: str, path: str, headers: dict[str, str]) -> None:
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        fast = AccessLog("ecs", fd=fd, extra=logs.service_fields())
        slow = AccessLog("ecs", fd=fd, extra=logs.service_fields())
        slow._ecs_line = lambda *args: None  # type: ignore[method-assign]  # the dict path only
        request = make_mocked_request(method, path, headers=headers)
        response = web.Response(body=b"x" * 123, status=206)
        fast.write(request, response, 0.0, {})
        slow.write(request, response, 0.0, {})
        a, b = (json.loads(log._pending[0]) for log in (fast, slow))
        assert fast._pending[0].endswith(b"\n")
        for doc in (a, b):
            doc.pop("@timestamp")
            doc["event"]["duration"] = 0
        assert a == b
        assert list(a) == list(b)  # the same key order too
    finally:
        os.close(fd)


async def test_the_timestamp_is_ecs_millisecond_utc() -> None:
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        fast = AccessLog("ecs", fd=fd)
        fast.write(make_mocked_request("GET", "/"), web.Response(), 0.0, {})
        stamp = json.loads(fast._pending[0])["@timestamp"]
        assert len(stamp) == len("2026-01-02T03:04:05.678Z") and stamp.endswith("Z") and stamp[19] == "."
    finally:
        os.close(fd)
