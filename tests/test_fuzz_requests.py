"""Request fuzzing (issue 10): generated requests against a real eprd process serving testdata/.

Hypothesis builds requests from the route templates with mutated segments (``..``,
``%2e%2e``, ``%2F``, NUL, bytes that are not UTF-8, unicode, long segments), query strings
of known and unknown parameters with junk values, and headers (Range, If-*, Accept-Encoding,
User-Agent, Referer, Host) holding random bytes. They go byte for byte over raw sockets,
mostly on one keep-alive connection. For every reply: no 5xx (but the reference's own 500
for the signature of an unsigned package), nothing of the sentinel files planted beside and
between the package folders in any body (archives are opened and read too), the process
alive. At the end: the good packages are still served byte for byte, the process exits 0
on SIGTERM, and its log holds no error, no traceback and no "Error handling request".

The default run is bounded for CI; ``EPRD_FUZZ_REQUESTS=20000`` makes the long run.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TESTDATA, child_env, free_port, write_config
from tests.rawhttp import RawReply, SyncConnection, request_bytes

REQUESTS = int(os.environ.get("EPRD_FUZZ_REQUESTS", "1000"))
SENTINEL_NAME = "SENTINEL.txt"


# --- the server -----------------------------------------------------------------------------------


class Server:
    """eprd as a child process; its log goes to a file, so a long run never blocks on a pipe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sentinel = f"eprd-fuzz-sentinel-{uuid.uuid4().hex}".encode()
        packages = shutil.copytree(TESTDATA / "packages", root / "packages")
        zips = shutil.copytree(TESTDATA / "zips", root / "zips")
        # Beside the package paths, inside a package path between package folders, and beside
        # the version folders of a package: none of them is a file of any package.
        for folder in (root, packages, packages / "acme_logs", zips):
            (folder / SENTINEL_NAME).write_bytes(self.sentinel + b"\n")
        config = write_config(root / "config.yml", [packages, zips])
        self.log_path = root / "eprd.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = child_env({"EPR_CACHE_DIR": str(root / "cache")})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "eprd", "-address", f"127.0.0.1:{self.port}", "-config", str(config),
                "-require-package-signatures=false", "-package-paths-enable-watcher=false",
            ],
            env=env, cwd=root, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("eprd did not become healthy:\n" + self.log())

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=60) as reply:
            return reply.read()

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    running = Server(tmp_path_factory.mktemp("fuzz"))
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


def catalog(server: Server) -> dict[str, Any]:
    """What the server holds: packages, their assets, the good files and the unsigned versions."""
    packages = json.loads(server.get("/search?all=true&prerelease=true"))
    names = sorted({p["name"] for p in packages})
    versions = sorted({p["version"] for p in packages})
    unsigned = {(p["name"], p["version"]) for p in packages if "signature_path" not in p}
    assets: list[str] = []
    for p in packages:
        document = json.loads(server.get(f"/package/{p['name']}/{p['version']}/"))
        assets += document.get("assets", [])
    good = {path: server.get(path) for path in assets[:: max(1, len(assets) // 12)]}
    return {"names": names, "versions": versions, "unsigned": unsigned, "assets": assets, "good": good}


# --- what a request is made of ----------------------------------------------------------------------

JUNK_SEGMENTS = [
    "..", ".", "%2e%2e", "%2E%2e", "%2e", "%2F", "%2f..%2f", "..%2F..%2F", "%5c", "\\", "%00", "a%00b",
    "%ff", "%fe%ff", "%c0%ae%c0%ae", "%e2%80%ae", "%ef%bf%bd", "%ed%a0%80", "%25", "%252e%252e", "%3F",
    "%23", "~", "-", "_", "0", "1.0", "1.0.0", "01.0.0", "1.0.0-", "1.0.0+build", "v1.0.0", "latest",
    "9" * 40, "a" * 300, "%41", "%0a", "%0d%0a", "%09", "%20", "+", "%2B", ";", "=", "&", "@", ":",
    "%C3%A9", "%c2%b2", "%d9%a3", "%ef%bc%91", SENTINEL_NAME, "..%2F" + SENTINEL_NAME,
    "%2e%2e%2f%2e%2e%2f" + SENTINEL_NAME, "docs", "docs%2FREADME.md", "README.md", "manifest.yml",
]  # fmt: skip
METHODS = ["GET", "GET", "GET", "HEAD", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", "PATCH", "get", "FOO"]
QUERY_KEYS = [
    "kibana.version", "agent.version", "category", "package", "type", "capabilities", "spec.min",
    "spec.max", "all", "prerelease", "experimental", "discovery", "internal", "include_policy_templates",
    "ready", "x", "", "%ff", "a%00", "all%00",
]  # fmt: skip
QUERY_VALUES = [
    "", "true", "false", "1", "0", "t", "yes", "%ff", "%00", "%", "%2", "%zz", "+", "8.0.0", "7.17.0",
    "8.0.0-SNAPSHOT", "^8.0.0", "1.2", "2.10", "1.2.3", "9" * 30, "1." + "9" * 30, "9" * 5000, "fields:",
    "datasets:a,b", "fields:process.pid", "x:y", ":", ",,,", "observability", "security", "custom",
    "integration", "input", "%c2%b2", "²", "%e2%80%ae", ";",
]  # fmt: skip
DATES = [
    "Thu, 01 Jan 2099 00:00:00 GMT", "Mon, 01 Jan 2001 00:00:00 GMT", "Fri, 17 May 2024 10:30:00 GMT",
    "Thursday, 01-Jan-60 00:00:00 GMT", "Thu Jan  1 00:00:00 2099", "Thu, 01 Jan 2099 00:00:00 +0000",
    "Mon, 32 Jan 2001 00:00:00 GMT", "0", "-1", "", "Mon, 0² Jan 2001 00:00:00 GMT",
]  # fmt: skip
HEADER_NAMES = [
    "Range", "Range", "If-Range", "If-Modified-Since", "If-Unmodified-Since", "If-Match", "If-None-Match",
    "Accept-Encoding", "User-Agent", "Referer", "Host", "Connection", "Accept", "X-Forwarded-For",
]  # fmt: skip


# Bytes a header value may hold on the wire without breaking the framing (no CR, LF); NUL and
# other control bytes are still in, and make aiohttp refuse the request with a 400.
def _no_crlf(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


HEADER_BYTES = st.binary(max_size=40).map(_no_crlf)
DIGITS = st.one_of(
    st.integers(min_value=0, max_value=5000).map(str),
    st.sampled_from(["²", "٣", "\uff11", "1_0", "+1", "-1", "9" * 25, "0" * 30 + "7", " 3", "", "x"]),
)
RANGE_SPEC = st.builds(lambda a, b: f"{a}-{b}", DIGITS, DIGITS)
RANGE_VALUE = st.one_of(
    RANGE_SPEC.map(lambda spec: f"bytes={spec}".encode()),
    st.lists(RANGE_SPEC, min_size=1, max_size=5).map(lambda specs: ("bytes=" + ",".join(specs)).encode()),
    st.sampled_from([b"bytes=", b"bytes=5", b"bytes=-0", b"bytes=0-0,-1", b"items=0-1", b"BYTES=0-1"]),
    HEADER_BYTES.map(lambda b: b"bytes=" + b),
)
HEADER_VALUE = st.one_of(
    HEADER_BYTES,
    st.sampled_from(DATES).map(str.encode),
    st.sampled_from([b"*", b'"x"', b'W/"x"', b"gzip", b"gzip;q=0", b"*;q=0.5", b"br, deflate", b"close"]),
    st.text(max_size=30).map(_utf8).map(_no_crlf),
)
HEADERS = st.lists(
    st.sampled_from(HEADER_NAMES).flatmap(
        lambda name: st.tuples(st.just(name), RANGE_VALUE if name == "Range" else HEADER_VALUE)
    ),
    max_size=4,
    unique_by=lambda header: header[0],
)
# Any text, percent-encoded as a client would (raw bytes above 0x7f are refused by aiohttp);
# sometimes repeated into a long segment.
ENCODED_TEXT = st.tuples(st.text(max_size=12), st.sampled_from([1, 1, 1, 50, 400])).map(
    lambda pair: quote(_utf8(pair[0] * pair[1]), safe="")
)
JUNK = st.sampled_from(JUNK_SEGMENTS)
QUERY = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), st.sampled_from(QUERY_VALUES)), max_size=5).map(
    lambda pairs: b"?" + "&".join(f"{k}={quote(v, safe='%:,^+;')}" for k, v in pairs).encode()
)
FIXED = st.sampled_from(["/", "/index.json", "/search", "/categories", "/health", "/favicon.ico"])
SLASHES = st.sampled_from(["//", "/./", "/%2e/", "/../"])
METHOD = st.sampled_from(METHODS)


def segment(pool: list[str]) -> st.SearchStrategy[str]:
    """A path segment: one the server knows (4 in 10), junk (4 in 10) or any text (2 in 10)."""
    known = st.sampled_from(pool)
    return st.one_of(known, known, known, known, JUNK, JUNK, JUNK, JUNK, ENCODED_TEXT, ENCODED_TEXT)


def requests(known: dict[str, Any]) -> st.SearchStrategy[tuple[bytes, bool]]:
    """Whole requests, and whether each goes on a connection of its own."""
    names, versions, assets = known["names"], known["versions"], known["assets"]
    name, version, anything = segment(names), segment(versions), segment(names + versions)
    file_part = segment(["docs", "img", "data_stream", "README.md", "manifest.yml"])
    suffix = st.sampled_from([".zip", ".tar.gz", ".zip.sig"])

    def mutated_asset(draw: st.DrawFn) -> str:
        parts = draw(st.sampled_from(assets)).split("/")
        index = draw(st.integers(min_value=1, max_value=len(parts) - 1))
        parts[index] = draw(st.one_of(st.just(parts[index]), JUNK, ENCODED_TEXT))
        return "/".join(parts)

    path = st.one_of(
        FIXED,
        st.builds(lambda a, n, v, s: f"/epr/{a}/{n}-{v}{s}", name, name, version, suffix),
        st.builds(lambda a, n, v, s: f"/epr/{a}/{n}-{v}{s}", name, name, version, suffix),
        st.builds(lambda n, v: f"/package/{n}/{v}/", name, version),
        st.builds(
            lambda n, v, rest: f"/package/{n}/{v}/" + "/".join(rest),
            name,
            version,
            st.lists(file_part, max_size=4),
        ),
        st.builds(
            lambda n, v, rest: f"/package/{n}/{v}/" + "/".join(rest),
            name,
            version,
            st.lists(file_part, max_size=4),
        ),
        st.composite(mutated_asset)(),
        st.composite(mutated_asset)(),
        st.sampled_from(assets),
        st.lists(anything, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    )

    @st.composite
    def request(draw: st.DrawFn) -> tuple[bytes, bool]:
        text = draw(path)
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            text = text.replace("/", draw(SLASHES), 1)
        target = text.encode()
        if draw(st.integers(min_value=0, max_value=2)) == 0:
            target += draw(QUERY)
        if draw(st.integers(min_value=0, max_value=40)) == 0:
            target += draw(st.binary(min_size=1, max_size=4))  # raw bytes in the target: a 400 from aiohttp
        fresh = draw(st.integers(min_value=0, max_value=9)) == 0  # sometimes on a new connection
        return request_bytes(draw(METHOD), target, draw(HEADERS)), fresh

    return request()


# --- the checks -------------------------------------------------------------------------------------

_SIGNATURE = re.compile(rb"/epr/[^/]+/([a-z0-9_]+)-([^/]+)\.zip\.sig")


def _expected_500(raw: bytes, reply: RawReply, known: dict[str, Any]) -> bool:
    """The reference's 500: the signature of a package that has none (§4.9)."""
    if reply.status != 500 or reply.body not in (b"internal server error\n", b""):
        return False
    path = unquote_to_bytes(raw.split(b" ", 2)[1].split(b"?", 1)[0])
    found = _SIGNATURE.fullmatch(path)
    if found is None:
        return False
    return (found.group(1).decode(), found.group(2).decode("utf-8", "replace")) in known["unsigned"]


def _contents(reply: RawReply) -> list[bytes]:
    """The body, and for archives every file in them, uncompressed."""
    out = [reply.body]
    body = reply.body
    try:
        if body.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                out += [archive.read(info) for info in archive.infolist()]
        elif body.startswith(b"\x1f\x8b"):
            plain = gzip.decompress(body)
            out.append(plain)
            if plain[257:262] == b"ustar":
                with tarfile.open(fileobj=io.BytesIO(plain)) as archive:
                    out += [archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()]
    except (zipfile.BadZipFile, OSError, EOFError, tarfile.TarError):
        pass  # a range of an archive: the raw bytes were checked
    return out


def check_reply(raw: bytes, reply: RawReply, server: Server, known: dict[str, Any]) -> None:
    assert reply.status < 500 or _expected_500(raw, reply, known), (raw[:300], reply.status, reply.body[:300])
    for content in _contents(reply):
        assert server.sentinel not in content, (raw[:300], reply.status)


class Client:
    """One keep-alive connection, renewed when the server closes it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.conn: SyncConnection | None = None
        self.sent = 0
        self.last = b""  # the previous request on the current connection

    def send(self, raw: bytes, fresh: bool) -> RawReply:
        if fresh or self.conn is None:
            self.reset()
            self.conn = SyncConnection(self.base)
        try:
            reply = self.conn.exchange(raw)
        except ConnectionError as err:
            # Every request gets a reply, and a connection is only closed after one that says
            # so (or a request asking for it): a dropped keep-alive connection is a failure.
            self.reset()
            raise AssertionError(
                f"no reply to {raw[:300]!r}: {err}; the request before it on this connection: "
                f"{self.last[:300]!r}"
            ) from err
        self.last = raw
        self.sent += 1
        if reply.closed or _asks_to_close(raw):
            self.reset()
        return reply

    def reset(self) -> None:
        self.last = b""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _asks_to_close(raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    return any(line.startswith(b"connection:") and b"close" in line for line in head.split(b"\r\n"))


def check_good_packages(server: Server, known: dict[str, Any]) -> None:
    for path, body in known["good"].items():
        assert server.get(path) == body, path
    assert json.loads(server.get("/search?all=true&prerelease=true"))


def test_fuzzed_requests_never_fail_the_server(server):
    known = catalog(server)
    assert known["names"] and known["assets"] and known["unsigned"]
    client = Client(server.base)

    strategy = requests(known)

    def one(case: tuple[bytes, bool]) -> None:
        raw, fresh = case
        reply = client.send(raw, fresh)
        check_reply(raw, reply, server, known)
        assert server.proc.poll() is None, server.log()[-5000:]
        if client.sent % 1000 == 0:
            check_good_packages(server, known)

    try:
        # Hypothesis may end a run before max_examples (it skips what it already tried): run
        # again, with fresh randomness, until the asked number of requests went out.
        for _ in range(50):
            if client.sent >= REQUESTS:
                break
            run = settings(
                max_examples=REQUESTS - client.sent,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            )(given(strategy)(one))
            run()
    finally:
        client.reset()
    print(f"fuzzing: {client.sent} requests sent")
    assert client.sent >= REQUESTS
    check_good_packages(server, known)
    code = server.stop()
    log = server.log()
    assert code == 0, log[-5000:]
    assert "Traceback" not in log and "Error handling request" not in log, log[-5000:]
    # One JSON document per line, whatever the clients sent. (Lines end at "\n" only: orjson
    # writes U+2028 and U+0085 as they are, and str.splitlines would split at them.)
    lines = [line for line in log.split("\n") if line]
    # The one error a request may cause: the reference's 500 for a signature that does not exist.
    errors = [
        line
        for line in lines
        if ('"log.level":"error"' in line or '"critical"' in line) and "no signature file for" not in line
    ]
    assert not errors, errors[:5]
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line[:2000]!r}") from None
