"""Issue 10, HTTP side: no request makes eprd answer 5xx, log a traceback or drop a connection.

Every request goes over a real socket to a real server, most of them written byte for byte
(``tests/rawhttp.py``), because the inputs are what HTTP libraries refuse to send: header
values that are not ASCII, digits that are not ASCII digits, bytes that are not UTF-8.
Header rules follow Go's http.ServeContent (what the reference answers).
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from eprd.http import httpfiles
from eprd.indexers.local.indexer import LocalIndexer
from eprd.ops.accesslog import AccessLog
from tests import pkgfactory
from tests.conftest import TESTDATA, write_config
from tests.rawhttp import RawConnection, RawReply, request_bytes, send

PACKAGES = TESTDATA / "packages"
ZIPS = TESTDATA / "zips"
WIDGET_README = PACKAGES / "widget_metrics" / "1.0.0" / "docs" / "README.md"

DIR_FILE = "/package/widget_metrics/1.0.0/docs/README.md"
ZIP_FILE = "/package/zipped_probe/1.0.0/docs/README.md"
ZIP_DOWNLOAD = "/epr/zipped_probe/zipped_probe-1.0.0.zip"
DIR_DOWNLOAD = "/epr/widget_metrics/widget_metrics-1.0.0.zip"
TAR_DOWNLOAD = "/epr/zipped_probe/zipped_probe-1.0.0.tar.gz"
SIGNATURE = "/epr/zipped_probe/zipped_probe-1.0.0.zip.sig"
FILE_TARGETS = [DIR_FILE, ZIP_FILE, ZIP_DOWNLOAD, DIR_DOWNLOAD, TAR_DOWNLOAD, SIGNATURE]


def get(target: str | bytes, *headers: tuple[str | bytes, str | bytes], method: str = "GET") -> bytes:
    return request_bytes(method, target, list(headers))


def assert_no_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at ERROR or above, and aiohttp never got to log "Error handling request"."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or "Error handling" in r.getMessage()]
    assert not bad, [(r.name, r.getMessage(), r.exc_info) for r in bad]


def assert_text(reply: RawReply, status: int, text: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:200])
    assert reply.body == text.encode() + b"\n"
    assert reply.header("Content-Type") == "text/plain; charset=utf-8"
    assert reply.header("X-Content-Type-Options") == "nosniff"


# --- Range: ASCII digits only, Go's parseRange (§4.7) --------------------------------------------

MALFORMED_RANGES = [
    "bytes=1-²".encode(),  # superscript two: str.isdigit() says yes, int() says no
    "bytes=²-5".encode(),
    "bytes=-²".encode(),
    "bytes=1-٣".encode(),  # Arabic-Indic three
    "bytes=\uff11-2".encode(),  # fullwidth one
    b"bytes=1_0-20",  # int() takes underscores, Go does not
    b"bytes=0-" + b"9" * 5000,  # beyond int64; beyond int()'s 4,300 digits too
    b"bytes=" + b"9" * 30 + b"-",
    b"bytes=\xff-\xfe",  # not UTF-8 at all
    b"bytes=5",
    b"bytes=3-1",
    b"bytes=--5",
    b"bytes=0-1,x",
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("target", FILE_TARGETS)
async def test_malformed_range_is_416_invalid_range(serve, caplog, target, method):
    _, base = await serve()
    conn = await RawConnection.open(base)
    try:
        full = await conn.exchange(get(target, method=method))
        assert full.status == 200
        for value in MALFORMED_RANGES:
            reply = await conn.exchange(get(target, ("Range", value), method=method))
            assert reply.status == 416, (value, reply.status)
            assert reply.header("Content-Range") is None, value  # only "failed to overlap" has one
            assert reply.header("Content-Type") == "text/plain; charset=utf-8"
            if method == "GET":
                assert reply.body == b"invalid range\n", value
            assert not reply.closed, value
        # The connection is still good for the file itself.
        again = await conn.exchange(get(target, method=method))
        assert again.status == 200 and again.body == full.body
    finally:
        await conn.close()
    assert_no_error_logs(caplog)


async def test_ranges_as_go_reads_them(serve):
    _, base = await serve()
    full = WIDGET_README.read_bytes()
    size = len(full)
    # No range at all in "bytes=": the whole file.
    reply = await send(base, get(DIR_FILE, ("Range", "bytes=")))
    assert reply.status == 200 and reply.body == full
    # strconv.ParseInt takes a leading "+".
    reply = await send(base, get(DIR_FILE, ("Range", "bytes=+1-3")))
    assert reply.status == 206 and reply.body == full[1:4]
    assert reply.header("Content-Range") == f"bytes 1-3/{size}"
    # Only ASCII white space is trimmed: a no-break space makes the range invalid.
    reply = await send(base, get(DIR_FILE, ("Range", "bytes=\u00a01-3".encode())))
    assert_text(reply, 416, "invalid range")
    # Leading zeros are fine, however many.
    reply = await send(base, get(DIR_FILE, ("Range", "bytes=" + "0" * 40 + "2-" + "0" * 40 + "5")))
    assert reply.status == 206 and reply.body == full[2:6]
    # Well formed but past the end: Go's "failed to overlap", with the size.
    reply = await send(base, get(DIR_FILE, ("Range", f"bytes={size + 10}-")))
    assert_text(reply, 416, "invalid range: failed to overlap")
    assert reply.header("Content-Range") == f"bytes */{size}"


async def test_range_on_an_empty_file_is_ignored_unless_malformed(serve, tmp_path):
    root = tmp_path / "pkgs"
    pkgfactory.write_dir(root, "empty_file", files={"docs/empty.txt": b""})
    _, base = await serve([root])
    path = "/package/empty_file/1.0.0/docs/empty.txt"
    reply = await send(base, get(path, ("Range", "bytes=0-")))
    assert reply.status == 200 and reply.body == b""
    assert_text(await send(base, get(path, ("Range", "bytes=x-"))), 416, "invalid range")


# --- conditional requests: Go's checkPreconditions ------------------------------------------------


async def test_dates_in_other_formats_than_go_reads_are_ignored(serve, caplog):
    _, base = await serve()
    for target in (DIR_FILE, ZIP_FILE):
        # RFC 1123 with a numeric zone is not one of Go's three layouts: no precondition at all.
        for name, value in (
            ("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 +0000"),
            ("If-Modified-Since", "Thu, 01 Jan 2099 00:00:00 +0000"),
            ("If-Modified-Since", "Thu, 01 Jan 2099 00:00:00"),
            ("If-Modified-Since", "Thu, 1 Jan 2099 00:00:00 GMT"),  # Go wants two digits
            ("If-Modified-Since", "Thu, 31 Feb 2099 00:00:00 GMT"),  # no such day
            ("If-Modified-Since", "Thu, 01 Jan 2099 24:00:00 GMT"),
            ("If-Unmodified-Since", "Mon, 0² Jan 2001 00:00:00 GMT"),
            ("If-Modified-Since", b"\xff\xfe, 01 Jan 2099 00:00:00 GMT"),
            ("If-Modified-Since", "x" * 8000),
        ):
            reply = await send(base, get(target, (name, value)))
            assert reply.status == 200, (target, name, value, reply.status)
        # The three layouts Go reads do count.
        for value in (
            "Thu, 01 Jan 2099 00:00:00 GMT",
            "Thursday, 01-Jan-60 00:00:00 GMT",  # two-digit years below 69 are 20xx
            "Thu Jan  1 00:00:00 2099",
            "Thu, 01 Jan 2099 00:00:00.123 GMT",  # Go accepts a fraction after the seconds
        ):
            reply = await send(base, get(target, ("If-Modified-Since", value)))
            assert reply.status == 304, (target, value, reply.status)
        reply = await send(base, get(target, ("If-Unmodified-Since", "Mon Jan  1 00:00:00 2001")))
        assert reply.status == 412
    assert_no_error_logs(caplog)


async def test_entity_tag_lists_are_scanned_as_go_scans_them(serve):
    _, base = await serve()
    for target in (DIR_FILE, ZIP_FILE):
        etag = (await send(base, get(target))).header("ETag")
        assert etag
        assert (await send(base, get(target, ("If-None-Match", etag)))).status == 304
        assert (await send(base, get(target, ("If-None-Match", f'"other", {etag}')))).status == 304
        # Go stops at the first tag that is not a tag: nothing after it can match.
        assert (await send(base, get(target, ("If-None-Match", f"junk, {etag}")))).status == 200
        assert (await send(base, get(target, ("If-Match", f"junk, {etag}")))).status == 412
        assert (await send(base, get(target, ("If-Match", f'"other",{etag}')))).status == 200
        # An empty header is no header.
        assert (await send(base, get(target, ("If-Match", "")))).status == 200
        assert (await send(base, get(target, ("If-None-Match", "")))).status == 200
        # A weak tag never matches strongly, but does weakly.
        assert (await send(base, get(target, ("If-Match", f"W/{etag}")))).status == 412
        assert (await send(base, get(target, ("If-None-Match", f"W/{etag}")))).status == 304
        for junk in (b'"\xff\xfe"', b"\xff", '"²"'.encode(), b'"' + b"a" * 8000 + b'"', b'W/"', b","):
            reply = await send(base, get(target, ("If-None-Match", junk), ("If-Match", junk)))
            assert reply.status in (200, 412), (junk, reply.status)


async def test_if_range_only_applies_to_get_and_head(serve):
    _, base = await serve()
    full = WIDGET_README.read_bytes()
    stale = ("If-Range", "Mon, 01 Jan 2001 00:00:00 GMT")
    reply = await send(base, get(DIR_FILE, ("Range", "bytes=0-3"), stale))
    assert reply.status == 200 and reply.body == full
    # Go's checkIfRange does not look at other methods: the range is served.
    reply = await send(base, get(DIR_FILE, ("Range", "bytes=0-3"), stale, method="POST"))
    assert reply.status == 206 and reply.body == full[:4]
    for junk in (b"\xff", '"²"'.encode(), b"W/", b'"unterminated', "Mon, 0² Jan 2001 00:00:00 GMT".encode()):
        reply = await send(base, get(DIR_FILE, ("Range", "bytes=0-3"), ("If-Range", junk)))
        assert reply.status == 200 and reply.body == full, junk


# --- query strings (§3.3, §4.4) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "body"),
    [
        # Go's strings are bytes: the reference quotes the byte back as it came.
        ("kibana.version=%ff", b"invalid Kibana version '\xff': invalid semantic version"),
        ("prerelease=%ff%fe", b"invalid 'prerelease' query param: '\xff\xfe'"),
        ("discovery=%ff", b"invalid 'discovery' query param: '\xff': could not parse filter \"\\xff\""),
        ("discovery=a%00b", b"invalid 'discovery' query param: 'a\x00b': could not parse filter \"a\\x00b\""),
        ("%ff=1", b'unknown query parameter: "\\xff"'),
        ("%c2%85=1", b'unknown query parameter: "\\u0085"'),  # Go's %q: \u for runes above 0x7f
        ("a%00=1", b'unknown query parameter: "a\\x00"'),
        ("%e2%80%8b=1", b'unknown query parameter: "\\u200b"'),
        ("%f0%9f%98%80=1", 'unknown query parameter: "\U0001f600"'.encode()),  # printable: as is
        (
            "kibana.version=1.2.99999999999999999999999",
            b"invalid Kibana version '1.2.99999999999999999999999': error parsing version segment: "
            b'strconv.ParseUint: parsing "99999999999999999999999": value out of range',
        ),
    ],
)
async def test_query_bytes_are_quoted_back_as_the_reference_does(serve, caplog, query, body):
    _, base = await serve(allow_unknown=False)
    reply = await send(base, get("/search?" + query))
    assert reply.status == 400
    assert reply.body == body + b"\n"
    assert reply.all("Cache-Control") == ["max-age=0", "private, no-store"]
    assert_no_error_logs(caplog)


async def test_categories_query_bytes(serve):
    _, base = await serve()
    reply = await send(base, get("/categories?include_policy_templates=%ff"))
    assert reply.status == 400
    assert reply.body == b"invalid 'include_policy_templates' query param: '\xff'\n"


# --- the access log -------------------------------------------------------------------------------


async def _logged_server(make_registry, serve, tmp_path: Path, log_type: str = "ecs"):
    registry = make_registry()
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    registry.access_log = AccessLog(log_type, fd=fd)
    _, base = await serve(registry=registry)
    return base, path, fd


async def _lines(path: Path, count: int) -> list[bytes]:
    import asyncio

    for _ in range(600):  # lines are written on the next loop iteration
        lines = [line for line in path.read_bytes().split(b"\n") if line]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} access log lines expected, got {path.read_bytes()!r}")


async def test_access_log_fields_with_bytes_that_are_not_utf8(make_registry, serve, tmp_path, caplog):
    base, path, fd = await _logged_server(make_registry, serve, tmp_path)
    conn = await RawConnection.open(base)
    try:
        requests = [
            get("/search", ("User-Agent", b"agent \xff\xfe")),
            get("/search", ("Referer", b"http://x/\xc3\x28")),
            get("/search", ("User-Agent", b"\xed\xa0\x80 surrogate")),
            get("/search", ("Host", b"h\xffst:8080")),
            get("/search?q=%ff", ("User-Agent", b"ok")),
            get("/package/widget_metrics/1.0.0/docs/%ff.md"),
        ]
        for raw in requests:
            reply = await conn.exchange(raw)
            assert reply.status in (200, 404), raw
            assert not reply.closed, raw  # keep-alive kept: the log line did not fail the request
    finally:
        await conn.close()
        lines = await _lines(path, len(requests))
        os.close(fd)
    docs = [json.loads(line) for line in lines]  # every line is valid JSON
    assert docs[0]["user_agent"]["original"] == "agent \ufffd\ufffd"
    assert docs[1]["http"]["request"]["referer"] == "http://x/\ufffd("
    assert "surrogate" in docs[2]["user_agent"]["original"]
    assert "\ufffd" in docs[2]["user_agent"]["original"]
    assert docs[3]["url"]["domain"] == "h\ufffdst" and docs[3]["url"]["port"] == 8080
    assert docs[4]["url"]["query"] == "q=%ff"
    assert [d["http"]["response"]["code"] for d in docs] == [200, 200, 200, 200, 200, 404]
    assert_no_error_logs(caplog)


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("example:²", None),  # isdigit() is true, int() fails
        ("example:99999999999999999999999", None),  # beyond Go's int: Atoi fails, orjson would too
        ("example:" + "9" * 5000, None),
        ("example:0080", 80),
        ("example:0", None),
        ("example:+81", 81),  # strconv.Atoi takes a sign
    ],
)
async def test_access_log_port_is_read_as_go_reads_it(make_registry, serve, tmp_path, caplog, host, port):
    base, path, fd = await _logged_server(make_registry, serve, tmp_path)
    try:
        reply = await send(base, get("/", ("Host", host.encode())))
        assert reply.status == 200
        (line,) = await _lines(path, 1)
    finally:
        os.close(fd)
    doc = json.loads(line)
    assert doc["url"].get("port") == port
    assert_no_error_logs(caplog)


async def test_dev_access_log_keeps_one_line_per_request(make_registry, serve, tmp_path, caplog):
    base, path, fd = await _logged_server(make_registry, serve, tmp_path, log_type="dev")
    try:
        reply = await send(
            base, get("/package/widget_metrics/1.0.0/a%0aFAKE%0d%ff.md", ("User-Agent", b"\xff"))
        )
        assert reply.status == 404
        reply = await send(base, get("/x%e2%80%8b"))
        (first, second) = await _lines(path, 2)
    finally:
        os.close(fd)
    assert b"a\\x0aFAKE\\x0d%ff.md" in first
    first.decode()  # valid UTF-8
    assert "/x\u200b".encode() in second
    assert_no_error_logs(caplog)


async def test_access_log_of_the_process_survives_bytes_that_are_not_utf8(eprd_process, tmp_path):
    config = write_config(tmp_path / "config.yml", [PACKAGES, ZIPS])
    process = eprd_process(
        ["-config", str(config), "-package-paths-enable-watcher=false", "-require-package-signatures=false"]
    )
    process.wait_healthy()
    conn = await RawConnection.open(process.base)
    try:
        for agent in (b"\xff\xfe", b"caf\xe9", b"ok"):
            reply = await conn.exchange(get("/search", ("User-Agent", agent), ("Referer", agent)))
            assert reply.status == 200 and not reply.closed
    finally:
        await conn.close()
    code, _, err = process.stop()
    assert code == 0
    assert "Error handling request" not in err
    assert "Traceback" not in err
    agents = [
        doc["user_agent"]["original"]
        for doc in map(json.loads, filter(None, err.split("\n")))
        if doc.get("log", {}).get("logger") == "eprd.access"
    ]
    assert agents == ["\ufffd\ufffd", "caf\ufffd", "ok"]


# --- malformed requests: the client's error, not a traceback ---------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /search?q=\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"G\xffT / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
)
async def test_malformed_request_is_a_400_without_an_error_log(serve, caplog, raw):
    caplog.set_level(logging.DEBUG)
    _, base = await serve()
    conn = await RawConnection.open(base)
    try:
        reply = await conn.exchange(raw, head=False)
    finally:
        await conn.close()
    assert 400 <= reply.status < 500, reply.status
    assert_no_error_logs(caplog)
    # Still visible to whoever wants to see it, at debug level and without a traceback.
    refused = [r for r in caplog.records if r.getMessage() == "malformed request refused"]
    assert refused and all(r.levelno == logging.DEBUG and not r.exc_info for r in refused)
    # The server goes on serving.
    assert (await send(base, get("/health"))).status == 200


# --- files of a zip whose entries became unreadable ------------------------------------------------

_CENTRAL = b"PK\x01\x02"


def _entry_offsets(path: Path, name: str) -> tuple[int, int]:
    """(local header offset, central directory record offset) of entry ``name``."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        start = archive.start_dir
    pos = start
    while data[pos : pos + 4] == _CENTRAL:
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        if data[pos + 46 : pos + 46 + name_len].decode() == name:
            return info.header_offset, pos
        pos += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{name} not in the central directory")


def _patch(data: bytearray, offset: int, fmt: str, value: int) -> None:
    data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)


def damage(path: Path, name: str, how: str) -> None:
    """Damage entry ``name`` of the zip at ``path`` in place, as a bad copy or a bad tool would."""
    local, central = _entry_offsets(path, name)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[local + 26 : local + 30])
    body = local + 30 + name_len + extra_len
    if how == "crc":
        crc = struct.unpack("<I", data[central + 16 : central + 20])[0] ^ 0xFFFF
        _patch(data, central + 16, "<I", crc)
        _patch(data, local + 14, "<I", crc)
    elif how == "deflate":
        size = struct.unpack("<I", data[central + 20 : central + 24])[0]
        data[body : body + size] = b"\xff" * size  # not a valid deflate stream
    elif how in ("method-6", "method-99"):
        method = int(how.split("-")[1])
        _patch(data, central + 10, "<H", method)
        _patch(data, local + 8, "<H", method)
    elif how == "encrypted":
        flags = struct.unpack("<H", data[central + 8 : central + 10])[0] | 1
        _patch(data, central + 8, "<H", flags)
        _patch(data, local + 6, "<H", flags)
    elif how == "local-name":
        data[local + 30] ^= 0x20  # the local header now names another file than the directory
    elif how == "truncated-data":
        size = struct.unpack("<I", data[central + 20 : central + 24])[0]
        _patch(data, central + 20, "<I", size // 2)  # the deflate stream ends before its end
    else:
        raise ValueError(how)
    path.write_bytes(bytes(data))


DAMAGES = ["crc", "deflate", "method-6", "method-99", "encrypted", "local-name", "truncated-data"]


@pytest.mark.parametrize("how", DAMAGES)
async def test_unreadable_zip_entry_is_a_logged_404(serve, tmp_path, caplog, how):
    root = tmp_path / "zips"
    extra = "Other notes.\n" * 50
    archive = pkgfactory.write_zip(root, "broken_zip", files={"docs/notes.md": extra})
    registry, base = await serve([root])
    assert registry.snapshot.lookup("broken_zip", "1.0.0") is not None
    # Loaded whole; then the file on disk is damaged under the running server.
    damage(archive, "broken_zip-1.0.0/docs/notes.md", how)
    conn = await RawConnection.open(base)
    try:
        for method in ("GET", "HEAD"):
            reply = await conn.exchange(get("/package/broken_zip/1.0.0/docs/notes.md", method=method))
            assert reply.status == 404, (how, reply.status)
            assert not reply.closed
            if method == "GET":
                assert reply.body == b"resource not found\n"
        # The entries that are fine are still served.
        reply = await conn.exchange(get("/package/broken_zip/1.0.0/docs/README.md"))
        assert reply.status == 200 and reply.body == b"# broken_zip\n\nRead me.\n"
        # The .tar.gz needs every entry: no archive, a 404 rather than a 500 or a cut-off body.
        reply = await conn.exchange(get("/epr/broken_zip/broken_zip-1.0.0.tar.gz"))
        assert reply.status == 404 and reply.body == b"artifact not found\n"
        # The .zip is the file itself, as it is now.
        reply = await conn.exchange(get("/epr/broken_zip/broken_zip-1.0.0.zip"))
        assert reply.status == 200 and reply.body == archive.read_bytes()
    finally:
        await conn.close()
    # Each failure is logged with the archive's path: a warning when the zip check names the damage,
    # an ERROR (always with its traceback) for any other exception.
    logged = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and r.name.startswith("eprd")
        and (str(archive) in r.getMessage() or getattr(r, "file.path", "") == str(archive))
    ]
    assert len(logged) >= 3, [r.getMessage() for r in caplog.records]  # GET and HEAD of the file, the .tar.gz
    assert all(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)
    assert not [r for r in caplog.records if "Error handling" in r.getMessage()]


# --- folder packages with names that are odd in URLs and archives ----------------------------------

ODD_NAMES = ["%2e%2e.md", "\\x.md", "q?x.md", "a#b.md", "sp ace.md", "pl+us.md", "pc%25.md"]


async def test_odd_file_names_never_fail_a_download(serve, tmp_path, caplog):
    root = tmp_path / "pkgs"
    pkgfactory.write_dir(root, "odd_names", files={f"docs/{name}": f"{name}\n" for name in ODD_NAMES})
    registry, base = await serve([root])
    served = registry.snapshot.lookup("odd_names", "1.0.0") is not None
    for target in ("/epr/odd_names/odd_names-1.0.0.zip", "/epr/odd_names/odd_names-1.0.0.tar.gz"):
        reply = await send(base, get(target))
        assert reply.status < 500, (target, reply.status, reply.body[:200])
        if served and reply.status == 200:
            # Then every file is in it, with its own content.
            if target.endswith(".zip"):
                with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
                    names = {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
            else:
                with tarfile.open(fileobj=io.BytesIO(reply.body)) as archive:
                    names = {
                        m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()
                    }
            for name in ODD_NAMES:
                assert names[f"odd_names-1.0.0/docs/{name}"] == f"{name}\n".encode()
    if served:
        from urllib.parse import quote

        for name in ODD_NAMES:
            reply = await send(base, get("/package/odd_names/1.0.0/docs/" + quote(name, safe="")))
            assert reply.status in (200, 404), (name, reply.status)
            if reply.status == 200:
                assert reply.body == f"{name}\n".encode()
    assert not [r for r in caplog.records if "Error handling" in r.getMessage()]


# --- a file gone by the time its response is sent ------------------------------------------------


async def test_disk_file_gone_before_sending_is_a_404(tmp_path, caplog):
    gone = tmp_path / "gone.txt"

    async def handler(request: web.Request) -> web.StreamResponse:
        return httpfiles.DiskFileResponse(
            str(gone), {"Cache-Control": "public"}, "text/plain", "artifact not found"
        )

    app = web.Application()
    app.router.add_get("/", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        reply = await send(base, get("/"))
        assert_text(reply, 404, "artifact not found")
        gone.write_bytes(b"here now\n")
        reply = await send(base, get("/"))
        assert reply.status == 200 and reply.body == b"here now\n"
    finally:
        await server.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "cannot open file to send"
    ]


# --- the net below the handlers ---------------------------------------------------------------------


class ExplodingIndexer(LocalIndexer):
    """A local indexer with a bug in serving files: what the dispatcher's net is for."""

    async def static(self, package, path):
        raise RuntimeError("a bug in an indexer")


async def test_a_handler_bug_is_a_logged_500_on_a_kept_connection(make_registry, serve, caplog):
    registry = make_registry()
    registry.indexers = {
        name: ExplodingIndexer(indexer.collection, indexer.kind, indexer.archives)
        for name, indexer in registry.indexers.items()
    }
    _, base = await serve(registry=registry)
    conn = await RawConnection.open(base)
    try:
        reply = await conn.exchange(get(DIR_FILE))
        assert_text(reply, 500, "internal server error")
        assert reply.all("Cache-Control") == []
        assert reply.header("Access-Control-Allow-Origin") == "*"
        assert not reply.closed
        assert (await conn.exchange(get("/search"))).status == 200
    finally:
        await conn.close()
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failed] == ["request failed"]
    assert failed[0].exc_info and failed[0].name == "eprd.access"
    assert not [r for r in caplog.records if "Error handling" in r.getMessage()]
