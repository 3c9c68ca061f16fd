"""Fixtures of the proxy mode tests: a real upstream eprd process and local proxies in front of it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eprd.config import CacheTimes, Config
from eprd.http.server import Registry
from eprd.indexers.local.archives import ArchiveStore
from eprd.indexers.local.collection import Collection
from eprd.indexers.proxy.cache import UpstreamCache
from eprd.indexers.proxy.proxy import ProxyMode
from eprd.indexers.proxy.pulled import PulledFiles
from eprd.model.package import LoadOptions
from eprd.upstream.client import Upstream
from tests import pkgfactory as pf
from tests.conftest import TESTDATA, EprdProcess, child_env, local_registry


class Process(EprdProcess):
    """``python -m eprd`` on a loopback port, for module-scoped fixtures (``eprd_process`` is per test)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(args, child_env(env), cwd)

    def wait_healthy(self, timeout: float = 60.0) -> Process:
        super().wait_healthy(timeout)
        return self


def write_config(folder: Path, package_paths: list[Path]) -> Path:
    path = folder / "config.yml"
    lines = ["package_paths:"] + [f"  - {p}" for p in package_paths]
    if not package_paths:
        lines = ["package_paths: []"]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_upstream(folder: Path) -> Process:
    """A second eprd serving eprd's own testdata: the proxy tests' upstream registry."""
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, [TESTDATA / "packages", TESTDATA / "zips"])
    return Process(
        [
            "-config",
            str(config),
            "-require-package-signatures=false",
            "-package-paths-enable-watcher=false",
            "-cache-dir",
            str(folder / "cache"),
        ],
        cwd=folder,
    ).wait_healthy()


def upstream_eprd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A module fixture (``pytest.fixture(scope="module")(upstream_eprd)`` in a test file)."""
    process = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield process
    process.stop()


def local_packages(root: Path) -> Path:
    """The proxy's own packages: a different acme_logs 1.2.0 and a package only it has."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(TESTDATA / "packages_overrides" / "acme_logs", root / "acme_logs")
    pf.write_dir(root, "local_only", "1.0.0", manifest={"categories": ["custom", "security"]})
    return root


def proxy_registry(
    packages: list[Path],
    proxy_to: str,
    cache_folder: Path | None,
    scratch: Path,
    upstream: Upstream | None = None,
    pull: bool = False,
    **cache_args: Any,
) -> tuple[Registry, Upstream, UpstreamCache]:
    """A Registry of ``packages`` in proxy mode towards ``proxy_to``, as cli/serve wires it.

    Its archives go under ``cache_folder``, or ``scratch`` when the upstream cache is in memory only.
    """
    paths = tuple(str(p) for p in packages)
    config = Config(package_paths=paths, cache_time=CacheTimes())
    collection = Collection(paths, LoadOptions(validate=True, require_signature=False))
    collection.load_all()
    folder = cache_folder or scratch
    registry = local_registry(collection, config, folder / "archives")
    client = upstream or Upstream(timeout=2, attempts=3, deadline=5, backoff=0.05, max_backoff=0.2)
    cache = UpstreamCache(client, str(cache_folder / "proxy") if cache_folder else None, **cache_args)
    pulled = PulledFiles(client, ArchiveStore(str(folder / "archives"))) if pull else None
    registry.fallback = ProxyMode(proxy_to, cache, pulled)
    return registry, client, cache


async def proxies() -> AsyncIterator[Callable[..., tuple[Registry, Upstream, UpstreamCache]]]:
    """A fixture: ``proxy_registry`` whose upstream clients are closed after the test."""
    made: list[Upstream] = []
    with tempfile.TemporaryDirectory(prefix="eprd-proxy-test-") as scratch:

        def make(*args: Any, **kwargs: Any) -> tuple[Registry, Upstream, UpstreamCache]:
            out = proxy_registry(*args, scratch=Path(scratch) / str(len(made)), **kwargs)
            made.append(out[1])
            return out

        yield make
        for client in made:
            await client.close()
