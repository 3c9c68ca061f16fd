"""The storage indexer's polling: full loads, deltas in cursor order, fallbacks, broken buckets.

Each test publishes real packages into a real bucket (a local folder in the bucket layout,
or the GCS emulator) with ``eprd publish``'s code and polls a StorageIndexer on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eprd.indexers.storage import layout
from eprd.indexers.storage.indexer import StorageIndexer
from eprd.indexers.storage.objectstore import open_store
from tests import pkgfactory as pf
from tests.storage_helpers import publish_paths
from tests.storage_servers import Bucket, bucket_fixture, gcs_server, s3_server, start_gcs  # noqa: F401


@pytest.fixture
def folder_bucket(tmp_path: Path) -> Bucket:
    folder = tmp_path / "bucket"
    folder.mkdir()
    return Bucket(folder.as_uri(), folder.as_uri() + "/", {})


def versions(indexer: StorageIndexer) -> list[str]:
    return sorted(f"{p.name}-{p.version}" for p in indexer.packages())


def title(indexer: StorageIndexer, name: str, version: str) -> str:
    for package in indexer.packages():
        if (package.name, package.version) == (name, version):
            return json.loads(package.entry_parts[0].join((b"{", b"}")))["title"]
    raise KeyError(name)


class Source:
    """A package path the tests change between publishes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()

    def add(self, name: str, version: str, **kwargs: object) -> None:
        pf.write_dir(self.root, name, version, **kwargs)

    def remove(self, name: str, version: str) -> None:
        shutil.rmtree(self.root / name / version)


async def test_full_loads_see_adds_updates_and_removals(folder_bucket: Bucket, tmp_path: Path) -> None:
    await add_update_remove(folder_bucket, tmp_path, incremental=False)


async def test_deltas_add_update_and_remove(bucket: Bucket, tmp_path: Path) -> None:
    await add_update_remove(bucket, tmp_path, incremental=True)  # a folder, the GCS emulator, S3


async def add_update_remove(folder_bucket: Bucket, tmp_path: Path, incremental: bool) -> None:
    source = Source(tmp_path / "src")
    source.add("alpha", "1.0.0")
    source.add("beta", "1.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000001")
    indexer = StorageIndexer(folder_bucket.url, folder_bucket.endpoint, incremental=incremental)
    assert not indexer.is_ready()
    assert await indexer.poll()
    assert indexer.is_ready() and indexer.cursor == "1000000001"
    assert versions(indexer) == ["alpha-1.0.0", "beta-1.0.0"]
    assert not await indexer.poll()  # same cursor: nothing to do

    source.add("alpha", "1.1.0")
    source.add("beta", "1.0.0", manifest={"title": "Beta renamed"})
    source.add("gamma", "0.1.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000002")
    source.remove("alpha", "1.0.0")
    report = await publish_paths(folder_bucket, [source.root], cursor="1000000003")
    assert (report.added, report.updated, report.removed) == (0, 0, 1)
    assert await indexer.poll()
    assert indexer.cursor == "1000000003"
    assert versions(indexer) == ["alpha-1.1.0", "beta-1.0.0", "gamma-0.1.0"]
    assert title(indexer, "beta", "1.0.0") == "Beta renamed"
    await indexer.close()


async def test_deltas_are_applied_in_cursor_order(folder_bucket: Bucket, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    source.add("alpha", "1.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000001")
    indexer = StorageIndexer(folder_bucket.url, folder_bucket.endpoint, incremental=True)
    await indexer.poll()
    source.add("alpha", "1.0.0", manifest={"title": "Second"})
    await publish_paths(folder_bucket, [source.root], cursor="1000000002")
    source.add("alpha", "1.0.0", manifest={"title": "Third"})
    await publish_paths(folder_bucket, [source.root], cursor="1000000003")
    # Only the deltas are read: a full index that disagrees with them proves it.
    store = open_store(folder_bucket.url)
    full = layout.index_key("1000000003", layout.INDEX_ALL)
    await store.put(full, b'{"packages": []}', "application/json")
    assert await indexer.poll()
    assert title(indexer, "alpha", "1.0.0") == "Third"


async def test_broken_delta_falls_back_to_the_full_index(folder_bucket: Bucket, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    source.add("alpha", "1.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000001")
    indexer = StorageIndexer(folder_bucket.url, folder_bucket.endpoint, incremental=True)
    await indexer.poll()
    source.add("beta", "2.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000002")
    store = open_store(folder_bucket.url)
    await store.put(layout.index_key("1000000002", layout.INDEX_DELTA), b"{not json", "application/json")
    assert await indexer.poll()
    assert versions(indexer) == ["alpha-1.0.0", "beta-2.0.0"]
    # A missing delta too.
    source.add("gamma", "3.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000003")
    (
        Path(folder_bucket.url.removeprefix("file://")) / layout.index_key("1000000003", layout.INDEX_DELTA)
    ).unlink()
    assert await indexer.poll()
    assert versions(indexer) == ["alpha-1.0.0", "beta-2.0.0", "gamma-3.0.0"]


async def test_a_broken_cursor_folder_is_skipped_once_a_later_one_is_good(
    folder_bucket: Bucket, tmp_path: Path
) -> None:
    source = Source(tmp_path / "src")
    source.add("alpha", "1.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000001")
    indexer = StorageIndexer(folder_bucket.url, folder_bucket.endpoint, incremental=True)
    await indexer.poll()
    store = open_store(folder_bucket.url)
    # Cursor 2: both its files are garbage, and cursor.json names it.
    await store.put(layout.index_key("1000000002", layout.INDEX_ALL), b"garbage", "application/json")
    await store.put(layout.index_key("1000000002", layout.INDEX_DELTA), b"garbage", "application/json")
    await store.put(layout.CURSOR, layout.cursor_document("1000000002"), "application/json")
    assert not await indexer.poll()
    assert indexer.cursor == "1000000001" and versions(indexer) == ["alpha-1.0.0"]  # last good kept
    assert indexer.last_error
    source.add("beta", "1.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000003")
    assert await indexer.poll()
    assert indexer.cursor == "1000000003"
    assert versions(indexer) == ["alpha-1.0.0", "beta-1.0.0"]


@pytest.mark.parametrize(
    "breakage",
    ["bad cursor json", "cursor points nowhere", "bad index json", "empty index", "no cursor"],
)
async def test_a_broken_index_keeps_the_last_good_one(
    folder_bucket: Bucket, tmp_path: Path, breakage: str
) -> None:
    source = Source(tmp_path / "src")
    source.add("alpha", "1.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000001")
    outcomes: list[bool] = []
    indexer = StorageIndexer(folder_bucket.url, folder_bucket.endpoint)
    indexer.on_update.append(lambda ok, seconds: outcomes.append(ok))
    assert await indexer.poll()
    store = open_store(folder_bucket.url)
    root = Path(folder_bucket.url.removeprefix("file://"))
    if breakage == "bad cursor json":
        await store.put(layout.CURSOR, b'{"current": ', "application/json")
    elif breakage == "cursor points nowhere":
        await store.put(layout.CURSOR, layout.cursor_document("1999999999"), "application/json")
    elif breakage == "bad index json":
        await store.put(
            layout.index_key("1000000002", layout.INDEX_ALL), b'{"packages": [', "application/json"
        )
        await store.put(layout.CURSOR, layout.cursor_document("1000000002"), "application/json")
    elif breakage == "empty index":
        await store.put(
            layout.index_key("1000000002", layout.INDEX_ALL), b'{"packages": []}', "application/json"
        )
        await store.put(layout.CURSOR, layout.cursor_document("1000000002"), "application/json")
    else:
        (root / layout.CURSOR).unlink()
    assert not await indexer.poll()
    assert indexer.cursor == "1000000001" and versions(indexer) == ["alpha-1.0.0"]
    assert outcomes == [True, False]
    assert indexer.last_error


async def test_an_unusable_entry_is_rejected_and_the_rest_served(
    folder_bucket: Bucket, tmp_path: Path
) -> None:
    source = Source(tmp_path / "src")
    source.add("alpha", "1.0.0")
    await publish_paths(folder_bucket, [source.root], cursor="1000000001")
    store = open_store(folder_bucket.url)
    key = layout.index_key("1000000001", layout.INDEX_ALL)
    index = json.loads(await store.get(key))
    index["packages"].append({"package_manifest": {"name": "broken", "version": "not-semver"}})
    index["packages"].append(
        {"package_manifest": {"name": "broken", "version": "1.0.0", "policy_templates": 7}}
    )
    await store.put(key, json.dumps(index).encode(), "application/json")
    indexer = StorageIndexer(folder_bucket.url, folder_bucket.endpoint)
    assert await indexer.poll()
    assert versions(indexer) == ["alpha-1.0.0"]
    assert len(indexer.rejected()) == 2
    assert "invalid package version" in indexer.rejected()[0].reason


async def test_network_errors_keep_the_last_good_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_gcs()  # its own emulator: this test stops it
    try:
        name = server.new_bucket()
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.env["STORAGE_EMULATOR_HOST"])
        bucket = Bucket(server.url(name), server.endpoint(name), server.env)
        source = Source(tmp_path / "src")
        source.add("alpha", "1.0.0")
        await publish_paths(bucket, [source.root], cursor="1000000001")
        indexer = StorageIndexer(bucket.url, bucket.endpoint)
        assert await indexer.poll()
        server.stop()
        assert not await indexer.poll()
        assert versions(indexer) == ["alpha-1.0.0"] and indexer.last_error
        await indexer.close()
    finally:
        server.stop()


async def test_storage_endpoint_with_or_without_trailing_slash(folder_bucket: Bucket, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    source.add("alpha", "1.0.0")
    await publish_paths(folder_bucket, [source.root])
    for endpoint in ("http://cdn.example/public", "http://cdn.example/public/"):
        indexer = StorageIndexer(folder_bucket.url, endpoint)
        await indexer.poll()
        (package,) = indexer.packages()
        static = await indexer.static(package, "docs/README.md")
        artifact = await indexer.artifact(package, "zip")
        signature = await indexer.signature(package)
        assert static.url == "http://cdn.example/public/artifacts/static/alpha-1.0.0/docs/README.md"
        assert artifact.url == "http://cdn.example/public/artifacts/packages/alpha-1.0.0.zip"
        assert signature.url == "http://cdn.example/public/artifacts/packages/alpha-1.0.0.zip.sig"
        assert (await indexer.artifact(package, "tar.gz")).message == "artifact not found"


def test_storage_flags_are_checked_at_start_up(tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eprd", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )

    missing = run("-feature-storage-indexer")
    assert missing.returncode == 2 and "-storage-indexer-bucket-internal is required" in missing.stderr
    bad = run("-feature-storage-indexer", "-storage-indexer-bucket-internal", "ftp://x")
    assert bad.returncode == 2 and "unsupported storage URL" in bad.stderr
    sql = run("-feature-sql-storage-indexer", "-feature-incremental-updates")
    assert sql.returncode == 2
