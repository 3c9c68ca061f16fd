"""Graceful shutdown and TLS, through the real ``eprd`` process.

Shutdown: a client downloads a big package file slowly (a small receive buffer, reading
only when told); SIGTERM arrives mid-download. New connections are then refused, the
download completes byte for byte, the metrics and diagnostics listeners answer until it
has, and the process exits 0. TLS: a self-signed certificate made by the ``openssl``
command for the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pkgfactory as pf
import pytest
from conftest import write_config

DEADLINE = 20.0
BIG = 24 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    }


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def eventually(check, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


class SlowDownload:
    """An HTTP/1.1 GET on a socket with a small receive buffer, read only when asked."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket()
        # A receive buffer small next to the file, but above loopback's 64 KiB segments (smaller
        # ones make TCP crawl through zero-window probes); the server's send buffer, 4 MiB at
        # most, fills up and the rest of the file waits for the client to read.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: identity\r\n\r\n".encode()
        )
        self.data = b""
        while b"\r\n\r\n" not in self.data:
            self.data += self.sock.recv(4096)
        head, _, rest = self.data.partition(b"\r\n\r\n")
        self.body = bytearray(rest)
        self.status = int(head.split()[1])
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        self.length = int(headers["Content-Length"])

    def read(self, count: int) -> None:
        while len(self.body) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {len(self.body)} of {self.length} bytes")
            self.body += chunk

    def finish(self) -> bytes:
        self.read(self.length)
        self.sock.settimeout(10)
        assert self.sock.recv(1) == b""  # then the server closes the connection (shutting down)
        self.sock.close()
        return bytes(self.body)


def test_sigterm_lets_a_slow_download_finish_then_exits_zero(eprd_process, tmp_path: Path):
    content = os.urandom(BIG)
    root = tmp_path / "packages"
    pf.write_dir(root, "big", "1.0.0", files={"docs/big.bin": content})
    config = write_config(tmp_path / "config.yml", [root])
    metrics_port, pprof_port = free_port(), free_port()
    process = eprd_process(
        [
            "-config",
            str(config),
            "-require-package-signatures=false",
            "-metrics-address",
            f"127.0.0.1:{metrics_port}",
            "-httpprof",
            f"127.0.0.1:{pprof_port}",
            "-shutdown-timeout",
            "2m",
        ]
    )
    process.wait_healthy()
    api_port = process.port

    download = SlowDownload(api_port, "/package/big/1.0.0/docs/big.bin")
    assert (download.status, download.length) == (200, BIG)
    download.read(64 * 1024)  # it has started; the rest waits in the server, the client reads nothing
    assert scrape(metrics_port)["epr_in_flight_requests"] == 1

    process.proc.terminate()  # SIGTERM
    eventually(lambda: refused(api_port), "the API listener refusing new connections")
    # Draining: the process is still there, its other listeners answer and report the state.
    assert process.proc.poll() is None
    assert scrape(metrics_port)["epr_in_flight_requests"] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{pprof_port}/debug/pprof/snapshot", timeout=5) as response:
        state = json.load(response)
    assert (state["shutting_down"], state["ready"]) == (True, False)

    body = download.finish()
    assert len(body) == BIG
    assert hashlib.sha256(body).digest() == hashlib.sha256(content).digest()
    code = process.proc.wait(timeout=DEADLINE)  # by itself: the one SIGTERM was enough
    err = process.stderr_text()
    assert code == 0, err
    for port in (api_port, metrics_port, pprof_port):
        assert refused(port), port

    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    messages = [r["message"] for r in records]
    assert messages.index(
        "shutting down: no new connections, waiting for requests in flight"
    ) < messages.index("stopped")
    access = [r for r in records if r["log"]["logger"] == "eprd.access" and "big.bin" in r["url"]["path"]]
    assert len(access) == 1
    assert access[0]["http"]["response"]["body"]["bytes"] == BIG  # logged once sent, whole


def test_a_stalled_download_is_cut_after_the_shutdown_timeout(eprd_process, tmp_path: Path):
    root = tmp_path / "packages"
    pf.write_dir(root, "big", "1.0.0", files={"docs/big.bin": os.urandom(BIG)})
    config = write_config(tmp_path / "config.yml", [root])
    args = ["-config", str(config), "-require-package-signatures=false", "-shutdown-timeout", "1s"]
    process = eprd_process(args)
    process.wait_healthy()
    download = SlowDownload(process.port, "/package/big/1.0.0/docs/big.bin")
    download.read(64 * 1024)
    process.proc.terminate()
    code = process.proc.wait(timeout=DEADLINE)  # while the client reads nothing
    assert code == 0, process.stderr_text()
    with pytest.raises(AssertionError, match="connection closed after"):
        download.read(BIG)
    assert len(download.body) < BIG
    download.sock.close()


def test_sigterm_when_idle_exits_zero_at_once(eprd_process, tmp_path: Path):
    root = tmp_path / "packages"
    pf.write_dir(root, "small", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    process = eprd_process(["-config", str(config), "-require-package-signatures=false"])
    process.wait_healthy()
    idle = socket.create_connection(("127.0.0.1", process.port))  # an idle keep-alive connection
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    code, _, err = process.stop()
    assert code == 0, err
    idle.settimeout(10)
    assert idle.recv(4096) == b""  # closed by the server, not left hanging
    idle.close()


async def test_ready_health_check_fails_while_shutting_down(serve, http):
    registry, base = await serve()
    for path, status in (("/health?ready=true", 200), ("/health", 200)):
        async with http.get(base + path) as response:
            assert response.status == status
    registry.shutting_down = True  # what SIGTERM does first
    for path, status in (("/health?ready=true", 503), ("/health?ready=1", 503), ("/health", 200)):
        async with http.get(base + path) as response:
            assert response.status == status, path


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made by the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def client_context(cert: Path, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    if maximum is not None:
        context.maximum_version = maximum
    return context


def https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes, str]:
    """GET over TLS; returns the status, the body and the TLS version that was negotiated."""
    status, _, body, version = https_exchange(port, path, context)
    return status, body, version


def https_exchange(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes, bytes, str]:
    """GET over TLS on a fresh connection: the status, the raw header block, the body, the TLS version."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        version = sock.version()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body, version


def wait_https(process, context: ssl.SSLContext) -> None:
    def healthy() -> bool:
        if process.proc.poll() is not None:
            raise AssertionError(f"eprd exited with {process.proc.returncode}: {process.stderr_text()}")
        try:
            return https_get(process.port, "/health", context)[0] == 200
        except OSError:
            return False

    eventually(healthy, "eprd answering over HTTPS")


def start_tls(eprd_process, tmp_path: Path, cert: Path, key: Path, *extra: str):
    """eprd serving one package over HTTPS with ``cert`` and ``key``, answering."""
    root = tmp_path / "packages"
    pf.write_dir(root, "secure", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    args = ["-config", str(config), "-require-package-signatures=false", "-tls-cert", str(cert)]
    process = eprd_process([*args, "-tls-key", str(key), *extra])
    wait_https(process, client_context(cert))
    return process


def test_https_with_a_self_signed_certificate(eprd_process, tmp_path: Path, certificate):
    cert, key = certificate
    process = start_tls(eprd_process, tmp_path, cert, key)
    status, body, _ = https_get(process.port, "/search", client_context(cert))
    assert status == 200
    assert [p["name"] for p in json.loads(body)] == ["secure"]
    # Without -tls-min-version, TLS 1.2 clients are served too.
    status, _, version = https_get(process.port, "/search", client_context(cert, ssl.TLSVersion.TLSv1_2))
    assert (status, version) == (200, "TLSv1.2")
    # A client that does not trust the certificate refuses it.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(process.port, "/search", ssl.create_default_context())
    code, _, err = process.stop()
    assert code == 0, err
    listening = [json.loads(line) for line in err.splitlines() if '"listening"' in line]
    assert listening and listening[0]["tls"] is True


def test_tls_min_version_13_refuses_a_tls12_client(eprd_process, tmp_path: Path, certificate):
    cert, key = certificate
    process = start_tls(eprd_process, tmp_path, cert, key, "-tls-min-version", "1.3")
    status, _, version = https_get(process.port, "/search", client_context(cert))
    assert (status, version) == (200, "TLSv1.3")
    with pytest.raises(ssl.SSLError):
        https_get(process.port, "/search", client_context(cert, ssl.TLSVersion.TLSv1_2))
    code, _, err = process.stop()
    assert code == 0, err


def test_every_worker_serves_tls_and_survives_broken_handshakes(eprd_process, tmp_path: Path, certificate):
    cert, key = certificate
    process = start_tls(eprd_process, tmp_path, cert, key, "-workers", "2")
    context = client_context(cert)
    # Clients that leave in the middle of a handshake, or speak plain HTTP to the TLS port.
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as raw:
            raw.sendall(b"\x16\x03\x01\x00\xa5\x01")  # the start of a ClientHello, then gone
    workers: set[bytes] = set()
    deadline = time.monotonic() + 60
    while len(workers) < 2:
        assert time.monotonic() < deadline, f"only workers {workers} answered over TLS"
        status, head, body, _ = https_exchange(process.port, "/search", context)
        assert status == 200 and [p["name"] for p in json.loads(body)] == ["secure"]
        workers.update(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-eprd-worker:")
        )
    code, _, err = process.stop()
    assert code == 0, err
    assert "Traceback" not in err and "exception was never retrieved" not in err, err
