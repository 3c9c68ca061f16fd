"""Live reload of Kubernetes-style volumes: ConfigMap atomic-writer updates and git-sync link swaps.

Each test reproduces the exact update sequence on disk against a real eprd process, with a load
generator asking for documents of a version that stays served throughout, and polls the API until
the change is visible (or a generous deadline passes, which fails the test).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests import pkgfactory as pf
from tests.conftest import EprdProcess, write_config

DEADLINE = 15.0


class AtomicWriter:
    """The kubelet's AtomicWriter for a ConfigMap/Secret/projected volume at ``mount``.

    Payload files live in ``..<timestamp>/``; ``..data`` links to the current one; each top-level
    entry of the payload is a user-visible symlink through ``..data``.
    """

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.count = 0
        mount.mkdir(parents=True)

    def write(self, payload: dict[str, bytes]) -> None:
        self.count += 1
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{self.count:09d}"
        folder = self.mount / stamp
        for rel, content in payload.items():  # 1. the new payload, in a new timestamped folder
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        data = self.mount / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.mount / "..data_tmp"
        os.symlink(stamp, tmp)  # 2. a temporary link to it
        os.rename(tmp, data)  # 3. renamed over ..data in one step
        for top in {rel.split("/")[0] for rel in payload}:  # 4. user-visible links through ..data
            link = self.mount / top
            if not link.is_symlink():
                os.symlink(f"..data/{top}", link)
        if old is not None:  # 5. the old folder removed
            shutil.rmtree(self.mount / old)


def zip_payload(versions: dict[str, str]) -> dict[str, bytes]:
    """``zips/<name>-<version>.zip`` for each name -> version (the title carries a marker)."""
    out = {}
    for spec, title in versions.items():
        name, version = spec.split("@")
        entries = pf.zip_entries(name, version, manifest={"title": title})
        out[f"zips/{name}-{version}.zip"] = pf.zip_bytes(entries)
    return out


class Load:
    """Clients asking for documents that must keep answering 200 while volumes are swapped."""

    def __init__(self, base: str, paths: list[str]) -> None:
        self.base = base
        self.paths = paths
        self.requests = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(4)]
        return self

    async def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            try:
                async with self._session.get(self.base + path) as response:
                    await response.read()
                    if response.status != 200:
                        self.failures.append(f"{path}: {response.status}")
            except aiohttp.ClientError as err:
                self.failures.append(f"{path}: {err!r}")
            self.requests += 1

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()


async def until(check: Callable[[], bool], what: str, base: str, query: str) -> float:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < DEADLINE:
            async with session.get(base + query) as response:
                body = await response.json(content_type=None)
            if check(body):
                return time.monotonic() - started
            await asyncio.sleep(0.05)
    raise AssertionError(f"not served within {DEADLINE}s: {what}; last answer {body}")


def versions(body: list[dict]) -> dict[str, str]:
    return {f"{p['name']}@{p['version']}": p["title"] for p in body}


def start(eprd_process, tmp_path: Path, package_path: Path, poll: bool, quiet: bool = True) -> EprdProcess:
    config = write_config(tmp_path / "config.yml", [package_path])
    args = ["-config", str(config), "-require-package-signatures=false"]
    if quiet:  # no access lines: the load would fill the pipe nobody reads until the end
        args += ["-log-level", "warn"]
    if poll:
        args.append("-package-paths-watcher-poll")
    process = eprd_process(args)
    process.wait_healthy()
    return process


async def wait_watching(process: EprdProcess) -> None:
    # The watcher is up once its catch-up refresh ran; a probe request is enough to know eprd serves.
    await asyncio.sleep(1.0)


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
async def test_configmap_updates_add_change_and_remove_versions(eprd_process, tmp_path: Path, poll: bool):
    mount = tmp_path / "volume"
    writer = AtomicWriter(mount)
    current = {"alpha@1.0.0": "Alpha one", "beta@1.0.0": "Beta one"}
    writer.write(zip_payload(current))
    process = start(eprd_process, tmp_path, mount / "zips", poll)
    await wait_watching(process)
    query = "/search?all=true&prerelease=true"
    async with Load(process.base, ["/search", "/package/alpha/1.0.0/", "/categories"]) as load:
        steps = [
            ("add gamma@1.0.0", {**current, "gamma@1.0.0": "Gamma one"}),
            ("change beta@1.0.0", {**current, "gamma@1.0.0": "Gamma one", "beta@1.0.0": "Beta two"}),
            ("remove gamma@1.0.0", {**current, "beta@1.0.0": "Beta two"}),
        ]
        for what, wanted in steps:
            writer.write(zip_payload(wanted))
            delay = await until(lambda body, w=wanted: versions(body) == w, what, process.base, query)
            print(f"{what}: served after {delay:.2f}s")
    assert load.requests > 0
    assert load.failures == []
    code, _, err = process.stop()
    assert code == 0, err


class GitSync:
    """git-sync's layout: worktrees under ``.worktrees/<hash>``, published by a link re-pointed atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.worktrees = root / ".worktrees"

    def checkout(self, sha: str, packages: dict[str, str]) -> Path:
        tree = self.worktrees / sha
        for spec, title in packages.items():
            name, version = spec.split("@")
            pf.write_dir(tree / "packages", name, version, manifest={"title": title})
        return tree

    def swap(self, sha: str) -> None:
        # A new symlink at a temporary name, renamed over the published link.
        tmp = self.root / "tmp-link"
        os.symlink(f".worktrees/{sha}", tmp)
        os.rename(tmp, self.root / "current")


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
async def test_git_sync_link_swap_between_worktrees(eprd_process, tmp_path: Path, poll: bool):
    root = tmp_path / "git"
    sync = GitSync(root)
    checkout, swap, worktrees = sync.checkout, sync.swap, sync.worktrees
    first = {"alpha@1.0.0": "Alpha one", "delta@1.0.0": "Delta one"}
    checkout("aaaa", first)
    swap("aaaa")
    process = start(eprd_process, tmp_path, root / "current" / "packages", poll)
    await wait_watching(process)
    second = {"alpha@1.0.0": "Alpha one", "delta@1.1.0": "Delta two", "epsilon@1.0.0": "Epsilon"}
    async with Load(process.base, ["/search", "/package/alpha/1.0.0/"]) as load:
        checkout("bbbb", second)
        swap("bbbb")
        shutil.rmtree(worktrees / "aaaa")  # git-sync removes the old worktree
        query = "/search?all=true&prerelease=true"
        delay = await until(lambda body: versions(body) == second, "git-sync swap", process.base, query)
        print(f"git-sync swap: served after {delay:.2f}s")
        # The new worktree is watched: an edit inside it is seen too.
        pf.write_dir(worktrees / "bbbb" / "packages", "zeta", "1.0.0", manifest={"title": "Zeta"})
        third = {**second, "zeta@1.0.0": "Zeta"}
        await until(lambda body: versions(body) == third, "edit after the swap", process.base, query)
    assert load.failures == []
    code, _, err = process.stop()
    assert code == 0, err


async def test_an_unchanged_version_is_not_reported_changed_by_a_swap(eprd_process, tmp_path: Path):
    mount = tmp_path / "volume"
    writer = AtomicWriter(mount)
    payload = zip_payload({"alpha@1.0.0": "Alpha one"})
    writer.write(payload)
    process = start(eprd_process, tmp_path, mount / "zips", False, quiet=False)
    await wait_watching(process)
    writer.write({**payload, **zip_payload({"beta@1.0.0": "Beta"})})
    await until(lambda body: "beta@1.0.0" in versions(body), "beta added", process.base, "/search")
    code, _, err = process.stop()
    assert code == 0, err
    swaps = [json.loads(line)["packages"] for line in err.splitlines() if '"snapshot swapped"' in line]
    # alpha was read again from the new folder, and reported as moved, not changed.
    assert sum(s["added"] for s in swaps) == 1 and sum(s["changed"] for s in swaps) == 0, swaps
    assert sum(s["moved"] for s in swaps) >= 1, swaps


async def test_a_package_path_that_appears_after_start_is_loaded(eprd_process, tmp_path: Path):
    # git-sync's first clone may finish after eprd started: the link does not exist yet.
    sync = GitSync(tmp_path / "git")
    process = start(eprd_process, tmp_path, sync.root / "current" / "packages", False)
    sync.checkout("aaaa", {"alpha@1.0.0": "Alpha one"})
    sync.swap("aaaa")
    await until(
        lambda body: versions(body) == {"alpha@1.0.0": "Alpha one"}, "first clone", process.base, "/search"
    )
    code, _, err = process.stop()
    assert code == 0, err
