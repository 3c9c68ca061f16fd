"""Live reload through the real watcher: real files, a real server, real HTTP requests.

Each test edits packages on disk and polls the API until the change is visible (or a
generous deadline passes, which fails the test); no test asserts how fast that was.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eprd.config import Config
from eprd.http.registry import Registry
from eprd.indexers.base import Changes
from eprd.indexers.combined import Combined
from eprd.indexers.local.collection import Collection
from eprd.indexers.local.watcher import Watcher
from eprd.model.package import LoadOptions
from tests import pkgfactory as pf
from tests.conftest import local_registry

DEADLINE = 15.0


class Live:
    """A registry with a running watcher over ``root``, served on a loopback port."""

    def __init__(self, registry: Registry, watcher: Watcher, base: str, http: aiohttp.ClientSession) -> None:
        self.registry = registry
        self.watcher = watcher
        self.base = base
        self.http = http

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.base + path, headers={"Accept-Encoding": "identity"}) as response:
            body = await response.read()
            if response.content_type == "application/json" and response.status == 200:
                return response.status, json.loads(body)
            return response.status, body

    async def until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while loop.time() < deadline:
            if await check():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not visible through the API within {DEADLINE}s: {what}")

    async def title(self, name: str, version: str) -> str | None:
        status, doc = await self.get(f"/package/{name}/{version}/")
        return doc.get("title") if status == 200 else None

    async def versions(self, name: str) -> list[str]:
        _, found = await self.get(f"/search?package={name}&all=true&prerelease=true")
        return [p["version"] for p in found] if isinstance(found, list) else []


@pytest.fixture
async def live(tmp_path: Path, serve, http) -> Callable[[Path], Awaitable[Live]]:
    tasks: list[tuple[Watcher, asyncio.Task[None]]] = []

    async def start(root: Path) -> Live:
        collection = Collection([str(root)], LoadOptions(validate=True, require_signature=False))
        collection.load_all()
        watcher = Watcher(collection)
        registry = local_registry(collection, Config(package_paths=(str(root),)), tmp_path / "arc", watcher)
        combined = Combined(list(registry.indexers.values()))
        run = combined.run(lambda: registry.snapshot, lambda s: setattr(registry, "snapshot", s))
        tasks.append((watcher, asyncio.create_task(run)))
        _, base = await serve(registry=registry)
        env = Live(registry, watcher, base, http)
        # A version added before the watcher is ready is picked up by its first refresh.
        probe = pf.write_dir(root, "probe", "0.0.1")
        await asyncio.wait_for(watcher.ready.wait(), DEADLINE)
        await env.until(lambda: _has(env, "probe", "0.0.1"), "the probe package")
        shutil.rmtree(probe.parent)
        await env.until(lambda: _gone(env, "probe", "0.0.1"), "the probe package removed")
        return env

    yield start
    for watcher, task in tasks:
        watcher.stop()
        await asyncio.wait_for(task, 10)


async def _has(env: Live, name: str, version: str) -> bool:
    return version in await env.versions(name)


async def _gone(env: Live, name: str, version: str) -> bool:
    return version not in await env.versions(name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    pf.write_dir(root, "alpha", "1.1.0", manifest={"categories": ["security"]})
    return root


async def test_editing_a_top_level_manifest(live, root: Path) -> None:
    env = await live(root)
    manifest = root / "alpha" / "1.1.0" / "manifest.yml"
    manifest.write_text(manifest.read_text().replace("Alpha package", "Alpha, edited"))
    await env.until(lambda: _title_is(env, "alpha", "1.1.0", "Alpha, edited"), "the new title")
    _, found = await env.get("/search?package=alpha")
    assert found[0]["title"] == "Alpha, edited"


async def _title_is(env: Live, name: str, version: str, title: str) -> bool:
    return await env.title(name, version) == title


async def test_editing_a_nested_data_stream_manifest(live, root: Path) -> None:
    env = await live(root)
    ds = root / "alpha" / "1.0.0" / "data_stream" / "log" / "manifest.yml"
    ds.write_text(ds.read_text().replace("title: Logs", "title: Renamed logs"))

    async def renamed() -> bool:
        _, doc = await env.get("/package/alpha/1.0.0/")
        return doc["data_streams"][0]["title"] == "Renamed logs"

    await env.until(renamed, "the data stream title")


async def test_adding_and_removing_a_version_folder(live, root: Path) -> None:
    env = await live(root)
    staged = pf.write_dir(root.parent / "staging", "alpha", "2.0.0", manifest={"categories": ["web"]})
    shutil.copytree(staged, root / "alpha" / "2.0.0")  # a `cp -r` of a whole version folder
    await env.until(lambda: _has(env, "alpha", "2.0.0"), "the new version")
    _, latest = await env.get("/search?package=alpha")
    assert [p["version"] for p in latest] == ["2.0.0"]
    _, categories = await env.get("/categories")
    assert {c["id"] for c in categories} >= {"web"}

    shutil.rmtree(root / "alpha" / "2.0.0")
    await env.until(lambda: _gone(env, "alpha", "2.0.0"), "the version removed")
    _, latest = await env.get("/search?package=alpha")
    assert [p["version"] for p in latest] == ["1.1.0"]
    status, _ = await env.get("/package/alpha/2.0.0/")
    assert status == 404
    _, categories = await env.get("/categories")
    assert "web" not in {c["id"] for c in categories}


async def test_adding_a_zip_package(live, root: Path) -> None:
    env = await live(root)
    staged = pf.write_zip(root.parent / "staging", "zeta", "3.0.0")
    os.replace(staged, root / "zeta-3.0.0.zip")
    await env.until(lambda: _has(env, "zeta", "3.0.0"), "the zip package")
    status, body = await env.get("/epr/zeta/zeta-3.0.0.zip")
    assert status == 200 and body == (root / "zeta-3.0.0.zip").read_bytes()


async def test_an_atomic_rename_save_is_one_change(live, root: Path) -> None:
    env = await live(root)
    manifest = root / "alpha" / "1.0.0" / "manifest.yml"
    temp = manifest.with_name(".manifest.yml.swp")
    temp.write_text(manifest.read_text().replace("Alpha package", "Alpha, saved"))
    os.replace(temp, manifest)  # what editors do on save
    await env.until(lambda: _title_is(env, "alpha", "1.0.0", "Alpha, saved"), "the saved title")
    assert env.registry.snapshot.rejected == ()


async def test_a_broken_manifest_keeps_the_last_good_version_until_repaired(live, root: Path) -> None:
    env = await live(root)
    manifest = root / "alpha" / "1.1.0" / "manifest.yml"
    good = manifest.read_text()
    rebuilds = env.watcher.stats.rebuilds
    manifest.write_text(good + "broken: [\n")

    async def rejected() -> bool:
        return any(str(root / "alpha" / "1.1.0") == e.location for e in env.registry.snapshot.rejected)

    await env.until(rejected, "the rejection")
    assert env.watcher.stats.rebuilds > rebuilds
    assert env.watcher.stats.rejected_total >= 1
    assert await env.title("alpha", "1.1.0") == "Alpha package"  # still the last good content
    assert await env.versions("alpha") == ["1.0.0", "1.1.0"]

    manifest.write_text(good.replace("Alpha package", "Alpha, repaired"))
    await env.until(lambda: _title_is(env, "alpha", "1.1.0", "Alpha, repaired"), "the repaired title")
    assert env.registry.snapshot.rejected == ()


async def test_deprecation_is_recomputed_after_a_swap(live, root: Path) -> None:
    env = await live(root)
    manifest = root / "alpha" / "1.1.0" / "manifest.yml"
    manifest.write_text(manifest.read_text() + "deprecated:\n  since: 1.1.0\n  description: Use beta.\n")

    async def inherited() -> bool:
        _, doc = await env.get("/package/alpha/1.0.0/")
        return doc.get("deprecated", {}).get("description") == "Use beta."

    await env.until(inherited, "the deprecation copied to 1.0.0")


async def test_a_burst_of_200_writes_gives_few_rebuilds(live, root: Path) -> None:
    env = await live(root)
    before = env.watcher.stats.rebuilds
    readme = root / "alpha" / "1.0.0" / "docs" / "README.md"
    for i in range(200):
        readme.write_text(f"# Alpha\n\nRevision {i}.\n")
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the server breathe, as a real burst would
    manifest = root / "alpha" / "1.0.0" / "manifest.yml"
    manifest.write_text(manifest.read_text().replace("Alpha package", "Alpha, after the burst"))
    await env.until(lambda: _title_is(env, "alpha", "1.0.0", "Alpha, after the burst"), "the last write")
    await asyncio.sleep(0.5)  # nothing else is pending
    assert env.watcher.stats.rebuilds - before <= 10
    status, body = await env.get("/package/alpha/1.0.0/docs/README.md")
    assert status == 200 and body == b"# Alpha\n\nRevision 199.\n"


async def test_a_watcher_stopped_before_it_runs_does_not_start(tmp_path: Path) -> None:
    # SIGTERM can arrive while the server is still starting, before the watcher task has run.
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    collection = Collection([str(root)], LoadOptions(validate=True, require_signature=False))
    collection.load_all()
    watcher = Watcher(collection)

    async def changed(changes: Changes, started: float) -> None:
        raise AssertionError("a stopped watcher reports nothing")

    task = asyncio.create_task(watcher.run(changed))
    watcher.stop()
    await asyncio.wait_for(task, 5)
    assert watcher._process is None
    assert not watcher.ready.is_set()
