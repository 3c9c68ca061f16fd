"""Real object-storage servers for the storage tests: a GCS emulator and an S3 server on loopback.

``gcp-storage-emulator`` (GCS JSON API) and ``moto_server`` (S3) run as child processes
started here and killed at the end of the session. Each test gets its own bucket.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
_names = itertools.count()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"object-storage server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("object-storage server did not start listening")


@dataclass
class Server:
    """One running object-storage server."""

    kind: str  # "gs" or "s3"
    port: int
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)  # what a client needs to reach it

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_bucket(self) -> str:
        name = f"bucket{os.getpid()}x{next(_names)}"
        if self.kind == "gs":
            request = urllib.request.Request(
                f"{self.base}/storage/v1/b?project=test",
                data=json.dumps({"name": name}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
        else:
            request = urllib.request.Request(f"{self.base}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        return name

    def url(self, bucket: str) -> str:
        """The bucket's storage URL (for -storage-indexer-bucket-internal and publish -to)."""
        return f"{self.kind}://{bucket}"

    def endpoint(self, bucket: str) -> str:
        """The bucket's public HTTP URL (-storage-endpoint)."""
        return f"{self.base}/{bucket}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def start_gcs() -> Server:
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port, proc)
    return Server("gs", port, proc, {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"})


def start_s3() -> Server:
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port, proc)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return Server("s3", port, proc, env)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Server]:
    server = start_gcs()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Server]:
    server = start_s3()
    yield server
    server.stop()


@dataclass
class Bucket:
    """A fresh bucket: where eprd reads the index, where it fetches artifacts, and client env."""

    url: str
    endpoint: str
    env: dict[str, str]


@pytest.fixture(name="bucket", params=["file", "gs", "s3"])
def bucket_fixture(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """One empty bucket of each kind; the client environment is also set in this process."""
    if request.param == "file":
        folder = tmp_path / "bucket"
        folder.mkdir()
        return Bucket(folder.as_uri(), folder.as_uri() + "/", {})
    server: Server = request.getfixturevalue("gcs_server" if request.param == "gs" else "s3_server")
    name = server.new_bucket()
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    return Bucket(server.url(name), server.endpoint(name), dict(server.env))
