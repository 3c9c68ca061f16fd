"""Shared fixtures: real eprd servers on loopback ports, real package folders on disk."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import BaseTestServer

from eprd.catalog.snapshot import Snapshot
from eprd.config import CacheTimes, Config
from eprd.http.registry import Registry
from eprd.http.server import ApiRunner, make_server
from eprd.indexers.combined import build
from eprd.indexers.local.archives import ArchiveStore
from eprd.indexers.local.collection import Collection
from eprd.indexers.local.indexer import local_indexers
from eprd.indexers.local.watcher import Watcher
from eprd.model.package import LoadOptions

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "testdata"


@pytest.fixture
def make_registry(tmp_path: Path) -> Callable[..., Registry]:
    """Load ``package_paths`` into a Registry, as the CLI would."""

    def build(
        package_paths: list[str | Path] | None = None,
        *,
        validate: bool = True,
        require_signature: bool = False,
        allow_unknown: bool = True,
        cache_time: CacheTimes | None = None,
    ) -> Registry:
        paths = tuple(str(p) for p in (package_paths if package_paths is not None else default_paths()))
        config = Config(package_paths=paths, cache_time=cache_time or CacheTimes())
        collection = Collection(paths, LoadOptions(validate=validate, require_signature=require_signature))
        collection.load_all()
        return local_registry(collection, config, tmp_path / "archives", allow_unknown=allow_unknown)

    return build


def local_registry(
    collection: Collection,
    config: Config,
    archives: Path,
    watcher: Watcher | None = None,
    allow_unknown: bool = True,
) -> Registry:
    """A Registry serving a loaded collection through the two local indexers, as eprd serves it."""
    indexers = local_indexers(collection, ArchiveStore(str(archives)), watcher)
    registry = Registry(config, build(indexers), indexers, allow_unknown)
    registry.watcher = watcher
    return registry


def snapshot_of(collection: Collection) -> Snapshot:
    """The snapshot eprd would serve from a loaded collection."""
    return build(local_indexers(collection, None))


def default_paths() -> list[Path]:
    return [TESTDATA / "packages", TESTDATA / "zips"]


class ApiTestServer(BaseTestServer):
    """aiohttp's test server around the API server eprd serves (``eprd.http.server.make_server``)."""

    def __init__(self, registry: Registry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = registry

    async def _make_runner(self, **kwargs: Any) -> ApiRunner:
        return ApiRunner(make_server(self.registry))


@pytest.fixture
async def serve(
    make_registry: Callable[..., Registry],
) -> Callable[..., Awaitable[tuple[Registry, str]]]:
    """Start a real aiohttp server on a loopback port; returns (registry, base URL)."""
    servers: list[ApiTestServer] = []

    async def start(*args: Any, **kwargs: Any) -> tuple[Registry, str]:
        registry = kwargs.pop("registry", None) or make_registry(*args, **kwargs)
        server = ApiTestServer(registry, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return registry, str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def http() -> Iterator[aiohttp.ClientSession]:
    """A client that does not follow redirects and does not normalise paths."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EprdProcess:
    """The ``eprd`` command running as a child process.

    Its output is read as it comes (by two threads), so a child that logs a lot never blocks
    on a full pipe; ``stderr_text()`` gives what it wrote so far, ``stop()`` all of it.
    """

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eprd", "-address", f"127.0.0.1:{self.port}", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=_drain, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"eprd exited with {self.proc.returncode}: {self.stderr_text()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("eprd did not become healthy")

    def stderr_text(self) -> str:
        """What eprd wrote to stderr so far; all of it once it has exited."""
        if self.proc.poll() is not None:
            self._finish_reading()
        return "".join(self._err)

    def wait_exit(self, timeout: float = 60.0) -> tuple[int, str, str]:
        """Wait for eprd to exit by itself; the exit code, stdout and stderr."""
        self.proc.wait(timeout=timeout)
        self._finish_reading()
        return self.proc.returncode, "".join(self._out), "".join(self._err)

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM (SIGKILL after 30 s); the exit code, stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._finish_reading()
        return self.proc.returncode, "".join(self._out), "".join(self._err)

    def kill(self) -> None:
        """SIGKILL if still running (a test's teardown), then collect its output."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._finish_reading()

    def _finish_reading(self) -> None:
        # A grandchild (the watch process) may hold the pipes a little longer: bounded waits.
        for reader in self._readers:
            reader.join(timeout=5)


def _drain(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an eprd child: this one without EPR_* and ELASTIC_APM_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPR_", "ELASTIC_APM_"))}
    env.setdefault("PYTHONPATH", str(ROOT))
    env.update(extra or {})
    return env


@pytest.fixture
def eprd_process(tmp_path: Path) -> Iterator[Callable[..., EprdProcess]]:
    """Start ``python -m eprd`` with extra args/env; stopped at the end of the test."""
    started: list[EprdProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> EprdProcess:
        process = EprdProcess(
            args, child_env({"EPR_CACHE_DIR": str(tmp_path / "cache"), **(env or {})}), cwd or tmp_path
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def write_config(path: Path, package_paths: list[Path], **extra: str) -> Path:
    lines = ["package_paths:"] + [f"  - {p}" for p in package_paths]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
