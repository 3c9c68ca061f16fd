"""Proxy mode against a real upstream: a second eprd process serving eprd's testdata.

The proxy under test runs in this process (its Registry wired as cli/serve wires it) so that
each test can look at its cache; tests/test_proxy_process.py runs it as a process too.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from tests import proxyfixtures
from tests.httpcheck import fetch
from tests.proxyfixtures import Process, local_packages

upstream_eprd = pytest.fixture(scope="module")(proxyfixtures.upstream_eprd)
proxies = pytest.fixture(proxyfixtures.proxies)


async def _proxy(tmp_path: Path, serve, proxies, upstream: Process):  # type: ignore[no-untyped-def]
    registry, _client, cache = proxies(
        [local_packages(tmp_path / "local")], upstream.base, tmp_path / "cache"
    )
    _, base = await serve(registry=registry)
    return base, cache


def _names(entries: list[dict]) -> list[tuple[str, str]]:
    return [(e["name"], e["version"]) for e in entries]


async def test_search_merges_local_and_remote(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, upstream_eprd: Process
) -> None:
    base, cache = await _proxy(tmp_path, serve, proxies, upstream_eprd)
    remote = (await fetch(http, upstream_eprd.base, "/search?all=true")).json
    reply = await fetch(http, base, "/search?all=true")
    assert reply.status == 200
    merged = reply.json
    names = _names(merged)
    # Every remote version, plus the local-only package, once each.
    assert set(names) == set(_names(remote)) | {("local_only", "1.0.0")}
    assert len(names) == len(set(names))
    # Local wins a name+version clash.
    acme = next(e for e in merged if e["name"] == "acme_logs" and e["version"] == "1.2.0")
    assert acme["title"] == "Acme Logs (override copy)"
    # Sorted by name, then by version precedence (1.10.0 after 1.2.0).
    acme_versions = [v for n, v in names if n == "acme_logs"]
    assert acme_versions == ["0.9.0", "1.2.0", "1.10.0"]
    assert names == sorted(names, key=lambda nv: nv[0])
    # Remote entries are re-serialised in the same shape, key order included.
    by_key = {(e["name"], e["version"]): e for e in remote}
    widget = next(e for e in merged if e["name"] == "widget_metrics")
    assert list(widget.items()) == list(by_key[("widget_metrics", "1.0.0")].items())
    # The upstream was asked once; the second request is answered from the cache.
    calls = cache.upstream_calls
    again = await fetch(http, base, "/search?all=true")
    assert again.body == reply.body
    assert cache.upstream_calls == calls
    assert "X-Eprd-Stale" not in again.headers


async def test_search_latest_after_merge(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, upstream_eprd: Process
) -> None:
    base, _ = await _proxy(tmp_path, serve, proxies, upstream_eprd)
    latest = dict(_names((await fetch(http, base, "/search")).json))
    # The upstream's acme_logs 1.10.0 hides the local 1.2.0.
    assert latest["acme_logs"] == "1.10.0"
    assert latest["local_only"] == "1.0.0"
    assert latest["old_gadget"] == "2.0.0"
    # The full raw query is forwarded: the upstream filtered by package and prerelease.
    only = (await fetch(http, base, "/search?package=acme_logs&prerelease=true")).json
    assert _names(only) == [("acme_logs", "2.0.0-rc1")]


async def test_categories_counts_added(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, upstream_eprd: Process
) -> None:
    base, _ = await _proxy(tmp_path, serve, proxies, upstream_eprd)
    remote = {c["id"]: c for c in (await fetch(http, upstream_eprd.base, "/categories")).json}
    reply = await fetch(http, base, "/categories")
    assert reply.status == 200
    merged = {c["id"]: c for c in reply.json}
    # local: acme_logs 1.2.0 (override copy: security) and local_only (custom, security)
    assert merged["custom"]["count"] == remote["custom"]["count"] + 1
    assert merged["security"]["count"] == remote["security"]["count"] + 2
    assert merged["observability"] == remote["observability"]  # remote-only, as the upstream says
    assert [c["id"] for c in reply.json] == sorted(merged)
    assert reply.body.endswith(b"}\n]\n")


async def test_package_document_fallback(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, upstream_eprd: Process
) -> None:
    base, _ = await _proxy(tmp_path, serve, proxies, upstream_eprd)
    remote = await fetch(http, upstream_eprd.base, "/package/widget_metrics/1.0.0/")
    reply = await fetch(http, base, "/package/widget_metrics/1.0.0/")
    assert reply.status == 200
    assert reply.body == remote.body  # re-serialised in the §2.8 shape: byte for byte the same
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.cache == ["max-age=10", "public"]
    # Local precedence.
    local = await fetch(http, base, "/package/acme_logs/1.2.0/")
    assert local.json["title"] == "Acme Logs (override copy)"
    # Unknown on both sides: the normal local 404.
    missing = await fetch(http, base, "/package/nothing_here/1.0.0/")
    assert (missing.status, missing.text) == (404, "package revision not found\n")
    bad = await fetch(http, base, "/package/widget_metrics/not-a-version/")
    assert (bad.status, bad.text) == (400, "invalid package version\n")


async def test_files_of_remote_packages_redirect(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, upstream_eprd: Process
) -> None:
    base, _ = await _proxy(tmp_path, serve, proxies, upstream_eprd)
    up = upstream_eprd.base
    for path, target in (
        ("/package/widget_metrics/1.0.0/docs/README.md", f"{up}/package/widget_metrics/1.0.0/docs/README.md"),
        ("/epr/widget_metrics/widget_metrics-1.0.0.zip", f"{up}/epr/package/widget_metrics-1.0.0.zip"),
        ("/epr/any/zipped_probe-1.0.0.zip.sig", f"{up}/epr/package/zipped_probe-1.0.0.zip.sig"),
    ):
        reply = await fetch(http, base, path)
        assert reply.status == 301, path
        assert reply.headers["Location"] == target
        assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
        assert reply.text == f'<a href="{target}">Moved Permanently</a>.\n\n'
        assert reply.cache == ["max-age=600", "public"]
        # The target answers (the upstream ignores the literal "package" segment).
        followed = await fetch(http, target, "")
        assert followed.status == 200, target
    head = await fetch(http, base, "/epr/widget_metrics/widget_metrics-1.0.0.zip", method="HEAD")
    assert head.status == 301 and head.body == b""
    # Unknown everywhere: the local 404 texts.
    for path, text in (
        ("/package/nothing_here/1.0.0/docs/README.md", "package revision not found\n"),
        ("/epr/nothing_here/nothing_here-1.0.0.zip", "artifact not found\n"),
        ("/epr/nothing_here/nothing_here-1.0.0.zip.sig", "signature file not found\n"),
    ):
        reply = await fetch(http, base, path)
        assert (reply.status, reply.text) == (404, text), path
    # Local packages are served locally.
    local = await fetch(http, base, "/package/local_only/1.0.0/docs/README.md")
    assert local.status == 200 and local.text.startswith("# local_only")
    local_zip = await fetch(http, base, "/epr/local_only/local_only-1.0.0.zip")
    assert local_zip.status == 200 and local_zip.headers["Content-Type"] == "application/zip"


async def test_zero_local_packages(
    tmp_path: Path, serve, proxies, http: aiohttp.ClientSession, upstream_eprd: Process
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    registry, _, _ = proxies([empty], upstream_eprd.base, tmp_path / "cache")
    _, base = await serve(registry=registry)
    remote = await fetch(http, upstream_eprd.base, "/search?all=true")
    reply = await fetch(http, base, "/search?all=true")
    assert reply.body == remote.body
    categories = await fetch(http, base, "/categories?include_policy_templates=true")
    assert (
        categories.body
        == (await fetch(http, upstream_eprd.base, "/categories?include_policy_templates=true")).body
    )
    assert json.loads(categories.body)
