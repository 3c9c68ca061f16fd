"""Helpers of the storage tests: publishing a bucket, starting eprd on it, comparing answers."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eprd.cli.publish import Report, publish
from eprd.indexers.local.indexer import load_snapshot
from eprd.model.package import LoadOptions
from tests.conftest import EprdProcess, write_config
from tests.storage_servers import Bucket


async def publish_paths(bucket: Bucket, paths: Sequence[Path], cursor: str = "") -> Report:
    """Publish the packages under ``paths`` to ``bucket`` (the ``eprd publish`` code, in process)."""
    snapshot = await asyncio.to_thread(load_snapshot, [str(p) for p in paths], LoadOptions())
    assert not snapshot.rejected, snapshot.rejected
    packages = [item.package for item in snapshot.packages.values()]
    # S3 (moto) objects need an ACL to be read anonymously; GCS emulator objects are public.
    return await publish(packages, bucket.url, bucket.url, 8, cursor, bucket.url.startswith("s3:"))


def start_storage_eprd(
    eprd_process: Callable[..., EprdProcess],
    tmp_path: Path,
    bucket: Bucket,
    *extra: str,
    package_paths: Sequence[Path] = (),
    interval: str = "1s",
    wait_ready: bool = True,
    name: str = "storage",
) -> EprdProcess:
    """An eprd process serving ``bucket`` (and ``package_paths``), polling every ``interval``."""
    folder = tmp_path / f"eprd-{name}"
    folder.mkdir(exist_ok=True)
    config = folder / "config.yml"
    if package_paths:
        write_config(config, list(package_paths))
    else:
        config.write_text("package_paths: []\n")
    args = [
        "-config",
        str(config),
        "-feature-storage-indexer",
        "-storage-indexer-bucket-internal",
        bucket.url,
        "-storage-endpoint",
        bucket.endpoint,
        "-storage-indexer-watch-interval",
        interval,
        "-require-package-signatures=false",
        "-log-level",
        "warn",  # the test never reads the process's output: no access log to fill the pipe
        *extra,
    ]
    process = eprd_process(args, env=bucket.env, cwd=folder)
    if wait_ready:
        wait_until(lambda: get(process.base + "/health?ready=true")[0] == 200, process)
    return process


def start_local_eprd(
    eprd_process: Callable[..., EprdProcess],
    tmp_path: Path,
    paths: Sequence[Path],
    *extra: str,
    name: str = "local",
) -> EprdProcess:
    folder = tmp_path / f"eprd-{name}"
    folder.mkdir(exist_ok=True)
    config = write_config(folder / "config.yml", list(paths))
    process = eprd_process(
        ["-config", str(config), "-require-package-signatures=false", "-log-level", "warn", *extra],
        cwd=folder,
    )
    process.wait_healthy()
    return process


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET, without raising for error statuses."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()
    except OSError:
        return 0, {}, b""


def wait_until(check: Callable[[], bool], process: EprdProcess | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.proc.poll() is not None:
            raise AssertionError(f"eprd exited with {process.proc.returncode}: {process.stderr_text()}")
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def endpoint_urls(base: str) -> list[str]:
    """Every answer a registry gives for its packages: queries, documents, files, downloads."""
    paths = [
        "/",
        "/search",
        "/search?all=true",
        "/search?prerelease=true",
        "/search?all=true&prerelease=true",
        "/search?experimental=true",
        "/search?kibana.version=8.12.0",
        "/search?type=input&prerelease=true",
        "/search?category=observability",
        "/search?capabilities=none",
        "/search?spec.max=3.0",
        "/categories",
        "/categories?prerelease=true",
        "/categories?include_policy_templates=true",
    ]
    _, _, body = get(base + "/search?all=true&prerelease=true")
    for entry in json.loads(body):
        name, version = entry["name"], entry["version"]
        paths.append(f"/search?package={name}&all=true&prerelease=true")
        paths.append(f"/package/{name}/{version}/")
        _, _, doc = get(f"{base}/package/{name}/{version}/")
        document: dict[str, Any] = json.loads(doc)
        paths.extend(asset for asset in document.get("assets", []))
        paths.append(f"/package/{name}/{version}/missing.txt")
        paths.append(f"/epr/{name}/{name}-{version}.zip")
        if "signature_path" in document:
            paths.append(document["signature_path"])
    return paths


COMPARED_HEADERS = ("Content-Type", "Cache-Control", "Access-Control-Allow-Origin")


def answer(base: str, path: str) -> tuple[int, dict[str, str | None], bytes]:
    status, headers, body = get(base + path)
    return status, {h: headers.get(h) for h in COMPARED_HEADERS}, body
