"""Routing and the HTTP layer common to every endpoint (spec §3, §4.1-§4.3), over real HTTP.

Path cleaning, strict-slash redirects, the fallback 404, CORS, methods, Cache-Control per
endpoint, and path traversal attempts against a copy of the test packages with secrets
planted around it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from eprd.config import CacheTimes
from tests.conftest import TESTDATA
from tests.httpcheck import NO_CACHE, Reply, fetch
from tests.rawhttp import request_bytes, send

INDEX_BODY = b'{\n  "service.name": "package-registry",\n  "service.version": "1.40.1"\n}\n'


def assert_fallback_404(reply: Reply) -> None:
    assert reply.status == 404
    assert reply.body == b"404 page not found\n"
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.cache == NO_CACHE
    assert "Access-Control-Allow-Origin" not in reply.headers


# --- path cleaning (§3.1) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("//search", "/search"),
        ("/search//", "/search/"),  # a trailing slash of the original is kept
        ("/./search", "/search"),
        ("/categories/.", "/categories"),
        ("/..", "/"),
        ("/x/../search?all=true", "/search?all=true"),
        ("/package//widget_metrics/1.0.0/", "/package/widget_metrics/1.0.0/"),
        ("/package/widget_metrics/1.0.0/docs/../manifest.yml", "/package/widget_metrics/1.0.0/manifest.yml"),
        (
            "/package/widget_metrics/1.0.0/docs/%2e%2e/manifest.yml",
            "/package/widget_metrics/1.0.0/manifest.yml",
        ),
        (
            "/package/widget_metrics/1.0.0/docs/%2E%2E/manifest.yml",
            "/package/widget_metrics/1.0.0/manifest.yml",
        ),
        (
            "/package/widget_metrics/1.0.0/docs%2F..%2Fmanifest.yml",
            "/package/widget_metrics/1.0.0/manifest.yml",
        ),
        ("/package/widget_metrics/1.0.0/%2Fetc%2Fpasswd", "/package/widget_metrics/1.0.0/etc/passwd"),
        (
            "/package/widget_metrics/1.0.0/./docs/README.md?a=1&b=2",
            "/package/widget_metrics/1.0.0/docs/README.md?a=1&b=2",
        ),
        ("/epr/x/../widget_metrics/widget_metrics-1.0.0.zip", "/epr/widget_metrics/widget_metrics-1.0.0.zip"),
    ],
)
async def test_non_canonical_paths_are_redirected_to_their_clean_form(serve, http, path, location):
    _, base = await serve()
    reply = await fetch(http, base, path)
    assert reply.status == 301
    assert reply.headers["Location"] == location
    assert reply.body == b""
    assert "Access-Control-Allow-Origin" not in reply.headers


async def test_clean_redirect_target_is_served(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/package/widget_metrics/1.0.0/docs/%2e%2e/manifest.yml")
    target = await fetch(http, base, reply.headers["Location"])
    assert target.status == 200
    assert target.body == (TESTDATA / "packages" / "widget_metrics" / "1.0.0" / "manifest.yml").read_bytes()


# --- strict slash (§3.1) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/search/", "/search"),
        ("/search/?package=acme_logs", "/search?package=acme_logs"),
        ("/categories/", "/categories"),
        ("/health/", "/health"),
        ("/index.json/", "/index.json"),
        ("/favicon.ico/", "/favicon.ico"),
        ("/package/acme_logs/1.2.0", "/package/acme_logs/1.2.0/"),
        ("/package/acme_logs/not-a-version", "/package/acme_logs/not-a-version/"),  # before validation
        ("/package/widget_metrics/1.0.0/docs/", "/package/widget_metrics/1.0.0/docs"),
        ("/package/widget_metrics/1.0.0/docs/README.md/", "/package/widget_metrics/1.0.0/docs/README.md"),
        ("/epr/x/widget_metrics-1.0.0.zip/", "/epr/x/widget_metrics-1.0.0.zip"),
        ("/epr/x/widget_metrics-1.0.0.zip.sig/", "/epr/x/widget_metrics-1.0.0.zip.sig"),
        # An upper-case name does not match the document route but the static route with an
        # empty file part, whose slash is removed.
        ("/package/Acme_Logs/1.2.0/", "/package/Acme_Logs/1.2.0"),
    ],
)
async def test_trailing_slash_is_toggled_with_a_redirect(serve, http, path, location):
    _, base = await serve()
    reply = await fetch(http, base, path)
    assert reply.status == 301
    assert reply.headers["Location"] == location
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert reply.body == f'<a href="{location}">Moved Permanently</a>.\n\n'.encode()
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


async def test_strict_slash_redirect_escapes_the_html_body(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/categories/?prerelease=true&include_policy_templates=true")
    assert reply.headers["Location"] == "/categories?prerelease=true&include_policy_templates=true"
    assert reply.body == (
        b'<a href="/categories?prerelease=true&amp;include_policy_templates=true">Moved Permanently</a>.\n\n'
    )


async def test_redirect_then_validation(serve, http):
    _, base = await serve()
    first = await fetch(http, base, "/package/acme_logs/a.b.c")
    assert first.status == 301
    second = await fetch(http, base, first.headers["Location"])
    assert second.status == 400 and second.body == b"invalid package version\n"
    first = await fetch(http, base, "/package/Acme_Logs/1.2.0/")
    assert_fallback_404(await fetch(http, base, first.headers["Location"]))


# --- fallback 404 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/package",
        "/package/acme_logs",
        "/package/Acme_Logs/1.2.0",
        "/epr/x/Widget_Metrics-1.0.0.zip",  # the name in the file name must be [a-z0-9_]+
        "/epr/widget_metrics/widget_metrics-1.0.0.tgz",
        "/epr/widget_metrics-1.0.0.zip",
        "/epr/a/b/widget_metrics-1.0.0.zip",
        "/search/more",
        "/index.html",
        "/health/ready",
    ],
)
async def test_unmatched_paths_get_the_bare_404(serve, http, path):
    _, base = await serve()
    assert_fallback_404(await fetch(http, base, path))


# --- CORS and methods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/index.json",
        "/search",
        "/search?all=maybe",  # 400
        "/categories",
        "/categories?include_policy_templates=maybe",  # 400
        "/health",
        "/favicon.ico",
        "/package/widget_metrics/1.0.0/",
        "/package/widget_metrics/9.9.9/",  # 404
        "/package/widget_metrics/1.0.0/docs/README.md",
        "/package/widget_metrics/1.0.0/docs/nothing.md",  # 404
        "/epr/widget_metrics/widget_metrics-1.0.0.zip",
        "/epr/widget_metrics/widget_metrics-a.zip",  # 400
        "/epr/widget_metrics/widget_metrics-1.0.0.zip.sig",
        "/epr/acme_logs/acme_logs-1.2.0.zip.sig",  # 500
    ],
)
async def test_cors_header_on_every_matched_route(serve, http, path):
    _, base = await serve()
    reply = await fetch(http, base, path, headers={"Origin": "https://kibana.example"})
    assert reply.headers.getall("Access-Control-Allow-Origin") == ["*"]
    others = [
        k
        for k in reply.headers
        if k.lower().startswith("access-control-") and k.lower() != "access-control-allow-origin"
    ]
    assert others == []


async def test_options_is_not_special_cased(serve, http):
    _, base = await serve()
    preflight = {
        "Origin": "https://kibana.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "kbn-xsrf",
    }
    reply = await fetch(http, base, "/search?package=acme_logs", preflight, "OPTIONS")
    plain = await fetch(http, base, "/search?package=acme_logs")
    assert reply.status == 200
    assert reply.body == plain.body
    assert "Access-Control-Allow-Methods" not in reply.headers
    assert "Access-Control-Allow-Headers" not in reply.headers


@pytest.mark.parametrize(
    "path",
    [
        "/search",
        "/categories",
        "/package/widget_metrics/1.0.0/",
        "/package/widget_metrics/1.0.0/docs/README.md",
        "/epr/zipped_probe/zipped_probe-1.0.0.zip",
        "/nowhere",
        "/search/",
    ],
)
async def test_no_server_header_as_from_go(serve, path):
    _, base = await serve()
    reply = await send(base, request_bytes("GET", path))
    assert reply.status in (200, 301, 404)
    assert reply.header("Server") is None  # Go's server names no software; aiohttp would


async def test_options_star_is_answered_as_go_answers_it(serve):
    _, base = await serve()
    reply = await send(base, request_bytes("OPTIONS", "*"))
    assert (reply.status, reply.body, reply.header("Content-Length")) == (200, b"", "0")
    assert reply.header("Access-Control-Allow-Origin") is None  # (no handler of the registry ran)


async def test_expect_continue_gets_the_answer_without_an_interim_reply(serve):
    _, base = await serve()
    reply = await send(base, request_bytes("GET", "/categories", [("Expect", "100-continue")]))
    assert reply.status == 200  # no "100 Continue" first: the registry never reads a request body
    assert reply.head.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize(
    "path",
    [
        "/search?package=widget_metrics",
        "/categories",
        "/index.json",
        "/package/widget_metrics/1.0.0/",
        "/package/widget_metrics/1.0.0/docs/README.md",
        "/epr/widget_metrics/widget_metrics-1.0.0.zip.sig",
        "/epr/zipped_probe/zipped_probe-1.0.0.zip",
    ],
)
async def test_every_method_behaves_like_get(serve, http, method, path):
    _, base = await serve()
    expected = await fetch(http, base, path)
    reply = await fetch(http, base, path, method=method)
    assert reply.status == expected.status == 200
    assert reply.body == expected.body
    assert reply.headers["Content-Type"] == expected.headers["Content-Type"]


async def test_errors_are_the_same_for_every_method(serve, http):
    _, base = await serve()
    for method in ("GET", "POST", "DELETE"):
        reply = await fetch(http, base, "/search?all=maybe", method=method)
        assert reply.status == 400 and reply.body == b"invalid 'all' query param: 'maybe'\n"
        assert_fallback_404(await fetch(http, base, "/nowhere", method=method))


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/search", 200),
        ("/package/widget_metrics/1.0.0/", 200),
        ("/package/widget_metrics/1.0.0/img/widget.png", 200),
        ("/package/zipped_probe/1.0.0/docs/README.md", 200),
        ("/epr/zipped_probe/zipped_probe-1.0.0.zip", 200),
        ("/search/", 301),
        ("/nowhere", 404),
        ("/search?all=maybe", 400),
    ],
)
async def test_head_has_no_body(serve, http, path, status):
    _, base = await serve()
    get = await fetch(http, base, path)
    head = await fetch(http, base, path, method="HEAD")
    assert head.status == get.status == status
    assert head.body == b""
    assert head.headers.get("Content-Type") == get.headers.get("Content-Type")
    assert head.cache == get.cache


async def test_head_of_a_file_announces_its_length(serve, http):
    _, base = await serve()
    png = TESTDATA / "packages" / "widget_metrics" / "1.0.0" / "img" / "widget.png"
    head = await fetch(http, base, "/package/widget_metrics/1.0.0/img/widget.png", method="HEAD")
    assert head.headers["Content-Length"] == str(png.stat().st_size)
    assert head.headers["Content-Type"] == "image/png"


# --- index, health, favicon (§4.1-§4.3) -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/index.json", "/?all=true", "/index.json?whatever=1"])
async def test_index(serve, http, monkeypatch, path):
    monkeypatch.delenv("ELASTIC_APM_SERVICE_NAME", raising=False)
    _, base = await serve(allow_unknown=False)  # query parameters are ignored here
    reply = await fetch(http, base, path)
    assert reply.status == 200
    assert reply.body == INDEX_BODY
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.cache == ["max-age=10", "public"]
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


async def test_index_service_name_from_the_environment(serve, http, monkeypatch):
    monkeypatch.setenv("ELASTIC_APM_SERVICE_NAME", "acme-registry")
    _, base = await serve()
    assert json.loads((await fetch(http, base, "/")).body) == {
        "service.name": "acme-registry",
        "service.version": "1.40.1",
    }
    monkeypatch.setenv("ELASTIC_APM_SERVICE_NAME", "")
    _, base = await serve()
    assert (await fetch(http, base, "/index.json")).body == INDEX_BODY


@pytest.mark.parametrize("path", ["/health", "/health?ready=true", "/health?ready=nonsense"])
async def test_health(serve, http, path):
    _, base = await serve()
    reply = await fetch(http, base, path)
    assert reply.status == 200
    assert reply.body == b""
    assert "Content-Type" not in reply.headers
    assert "Cache-Control" not in reply.headers
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


async def test_favicon(serve, http):
    registry, base = await serve(cache_time=CacheTimes(catch_all=77))
    reply = await fetch(http, base, "/favicon.ico")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "image/x-icon"
    assert reply.cache == ["max-age=77", "public"]
    assert reply.body == registry.favicon
    assert reply.body[:4] == b"\x00\x00\x01\x00"  # ICO header
    assert "Last-Modified" not in reply.headers
    ranged = await fetch(http, base, "/favicon.ico", headers={"Range": "bytes=0-3"})
    assert ranged.status == 200 and ranged.body == reply.body


# --- Cache-Control per endpoint (§3.2) ------------------------------------------------------------

TIMES = CacheTimes(index=12, search=2.5, categories=3.5, catch_all=45)


@pytest.mark.parametrize(
    ("path", "lines"),
    [
        ("/", ["max-age=12", "public"]),
        ("/index.json", ["max-age=12", "public"]),
        ("/package/widget_metrics/1.0.0/", ["max-age=12", "public"]),  # index time, not catch_all
        ("/search", ["max-age=2", "public"]),  # 2.5 rounds half to even
        ("/categories", ["max-age=4", "public"]),  # 3.5 rounds half to even
        ("/package/widget_metrics/1.0.0/docs/README.md", ["max-age=45", "public"]),
        ("/package/zipped_probe/1.0.0/docs/README.md", ["max-age=45", "public"]),
        ("/epr/widget_metrics/widget_metrics-1.0.0.zip", ["max-age=45", "public"]),
        ("/epr/zipped_probe/zipped_probe-1.0.0.zip", ["max-age=45", "public"]),
        ("/epr/widget_metrics/widget_metrics-1.0.0.tar.gz", ["max-age=45", "public"]),
        ("/epr/widget_metrics/widget_metrics-1.0.0.zip.sig", ["max-age=45", "public"]),
        ("/favicon.ico", ["max-age=45", "public"]),
        ("/health", []),
        # handler errors
        ("/search?prerelease=maybe", NO_CACHE),
        ("/categories?include_policy_templates=maybe", NO_CACHE),
        ("/package/widget_metrics/9.9.9/", NO_CACHE),
        ("/package/widget_metrics/x/", NO_CACHE),
        ("/package/nothing/1.0.0/docs/README.md", NO_CACHE),
        ("/epr/nothing/nothing-1.0.0.zip", NO_CACHE),
        ("/epr/nothing/nothing-1.0.0.zip.sig", NO_CACHE),
        # errors after the package resource was resolved keep the public lines
        ("/package/widget_metrics/1.0.0/docs/nothing.md", ["max-age=45", "public"]),
        ("/epr/acme_logs/acme_logs-1.2.0.zip.sig", ["max-age=45", "public"]),
        # router-level answers
        ("/nowhere", NO_CACHE),
        ("/search/", []),
        ("//search", []),
    ],
)
async def test_cache_control_lines_per_endpoint(serve, http, path, lines):
    _, base = await serve(cache_time=TIMES)
    assert (await fetch(http, base, path)).cache == lines


@pytest.mark.parametrize(
    ("seconds", "value"),
    [(0.5, "0"), (1.5, "2"), (2.5, "2"), (10.4, "10"), (10.6, "11"), (600, "600"), (86400, "86400")],
)
async def test_max_age_rounding(serve, http, seconds, value):
    _, base = await serve(cache_time=CacheTimes(index=seconds))
    assert (await fetch(http, base, "/")).cache == [f"max-age={value}", "public"]


# --- path traversal -------------------------------------------------------------------------------

SECRET = "TOP-SECRET-5f1c0e-must-never-be-served"


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Copies of the test packages with a secret file at every level around them."""
    root = tmp_path / "srv"
    packages = root / "packages"
    zips = root / "zips"
    shutil.copytree(TESTDATA / "packages", packages)
    shutil.copytree(TESTDATA / "zips", zips)
    secret = root / "secret.txt"
    for place in (
        secret,
        packages / "secret.txt",
        zips / "secret.txt",
        packages / "widget_metrics" / "secret.txt",
    ):
        place.write_text(SECRET + "\n")
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    return packages, zips, secret


def traversal_paths(secret: Path) -> list[str]:
    absolute = quote(str(secret), safe="")
    paths = []
    for prefix in ("/package/widget_metrics/1.0.0/", "/package/zipped_probe/1.0.0/"):
        paths += [
            prefix + "../secret.txt",
            prefix + "../../secret.txt",
            prefix + "../../../secret.txt",
            prefix + "../../../../secret.txt",
            prefix + "%2e%2e/secret.txt",
            prefix + "%2e%2e/%2e%2e/%2e%2e/secret.txt",
            prefix + ".%2e/.%2e/secret.txt",
            prefix + "..%2fsecret.txt",
            prefix + "..%2F..%2F..%2Fsecret.txt",
            prefix + "docs%2F..%2F..%2F..%2Fsecret.txt",
            prefix + "%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
            prefix + "%252e%252e/%252e%252e/secret.txt",
            prefix + "..%5csecret.txt",
            prefix + "..%5C..%5C..%5Csecret.txt",
            prefix + "..\\..\\..\\secret.txt",
            prefix + "docs\\..\\..\\secret.txt",
            prefix + "%00../../secret.txt",
            prefix + "manifest.yml%00/../../../secret.txt",
            prefix + "..%00/secret.txt",
            prefix + absolute,
            prefix + "%2F" + absolute,
            prefix + "/" + str(secret).lstrip("/"),
            prefix + str(secret).lstrip("/"),
            prefix + "file:" + absolute,
        ]
    paths += [
        "/package/widget_metrics/%2e%2e/secret.txt",
        "/package/widget_metrics/..%2F..%2Fsecret.txt/x",
        "/package/..%2Fsecret.txt/1.0.0/x",
        "/package/%2e%2e/%2e%2e/secret.txt",
        "/epr/x/..%2F..%2Fsecret-1.0.0.zip",
        "/epr/x/widget_metrics-..%2F..%2Fsecret.zip",
        "/epr/..%2F..%2F/widget_metrics-1.0.0.zip.sig",
        "/../../secret.txt",
        "/%2e%2e/%2e%2e/secret.txt",
        "/" + absolute,
    ]
    return paths


async def follow(http: aiohttp.ClientSession, base: str, path: str) -> list[Reply]:
    """Every reply along the redirect chain of ``path`` (at most 5 hops)."""
    replies = [await fetch(http, base, path)]
    while replies[-1].status in (301, 302, 307, 308) and len(replies) < 6:
        location = replies[-1].headers["Location"]
        assert location.startswith("/"), location  # never redirected off-site
        replies.append(await fetch(http, base, location))
    return replies


async def test_traversal_never_serves_a_byte_from_outside_the_package(serve, http, planted):
    packages, zips, secret = planted
    registry, base = await serve([packages, zips])
    assert registry.snapshot.rejected == ()
    checked = 0
    for path in traversal_paths(secret):
        for reply in await follow(http, base, path):
            assert reply.status < 500, (path, reply.status, reply.body)
            assert SECRET.encode() not in reply.body, path
            checked += 1
    assert checked > len(traversal_paths(secret))  # redirects were followed
    # The same server does serve the files that are inside the package.
    inside = await fetch(http, base, "/package/widget_metrics/1.0.0/docs/README.md")
    assert inside.status == 200


async def test_traversal_requests_are_refused_not_served(serve, http, planted):
    packages, zips, secret = planted
    _, base = await serve([packages, zips])
    for path in traversal_paths(secret):
        final = (await follow(http, base, path))[-1]
        assert final.status in (400, 404), (path, final.status)


async def test_symlink_out_of_a_package_is_never_followed(serve, http, planted):
    packages, zips, secret = planted
    docs = packages / "widget_metrics" / "1.0.0" / "docs"
    os.symlink(secret, docs / "leak.md")
    os.symlink("../../../secret.txt", docs / "relative_leak.md")
    _, base = await serve([packages, zips])
    for path in (
        "/package/widget_metrics/1.0.0/docs/leak.md",
        "/package/widget_metrics/1.0.0/docs/relative_leak.md",
        "/package/widget_metrics/1.0.0/",
        "/epr/widget_metrics/widget_metrics-1.0.0.zip",
        "/epr/widget_metrics/widget_metrics-1.0.0.tar.gz",
    ):
        reply = await fetch(http, base, path)
        assert reply.status < 500, path
        assert SECRET.encode() not in reply.body, path
        assert SECRET.encode() not in b"".join(archive_contents(path, reply)), path


def archive_contents(path: str, reply: Reply) -> list[bytes]:
    """The uncompressed files of a downloaded archive (nothing for other replies)."""
    if reply.status != 200:
        return []
    if path.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
            return [archive.read(info) for info in archive.infolist()]
    if path.endswith(".tar.gz"):
        with tarfile.open(fileobj=io.BytesIO(reply.body), mode="r:gz") as archive:
            return [archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()]
    return []
