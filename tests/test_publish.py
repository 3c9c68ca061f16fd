"""``eprd publish`` end to end, and eprd replicas serving what it publishes.

Real buckets (a folder, the GCS emulator, moto's S3), the real ``eprd`` command as child
processes, and a load generator that must see no error while replicas pick up a publish.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import orjson

from eprd.indexers.storage import layout
from eprd.indexers.storage.objectstore import open_store
from tests import pkgfactory as pf
from tests.conftest import TESTDATA, EprdProcess, free_port
from tests.storage_helpers import get, publish_paths, start_storage_eprd, wait_until
from tests.storage_servers import Bucket, bucket_fixture, gcs_server, s3_server  # noqa: F401 (fixtures)


def run_publish(bucket: Bucket, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPR_")}
    env.update(bucket.env)
    extra = ["-public-read"] if bucket.url.startswith("s3:") else []
    return subprocess.run(
        [sys.executable, "-m", "eprd", "publish", "-to", bucket.url, *extra, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def some_packages(tmp_path: Path) -> Path:
    """A package path with a few of the test packages (one signed)."""
    source = tmp_path / "some"
    for name in ("acme_logs", "widget_metrics"):
        shutil.copytree(TESTDATA / "packages" / name, source / name)
    return source


async def test_publish_writes_the_bucket_and_republishing_uploads_nothing(
    bucket: Bucket, tmp_path: Path
) -> None:
    source = some_packages(tmp_path)
    versions = len([v for n in source.iterdir() for v in n.iterdir() if v.is_dir()])
    first = run_publish(bucket, str(source))
    assert first.returncode == 0, first.stderr
    assert "0 unchanged" in first.stdout and f"added {versions}," in first.stdout, first.stdout
    store = open_store(bucket.url)
    try:
        cursor = layout.parse_cursor(await store.get(layout.CURSOR))
        index = orjson.loads(await store.get(layout.index_key(cursor, layout.INDEX_ALL)))
        names = {entry["package_manifest"]["name"] for entry in index["packages"]}
        assert names == {"acme_logs", "widget_metrics"}
        archive = await store.get(layout.artifact_key("acme_logs", "1.10.0"))
        assert archive[:2] == b"PK"
        signature = await store.get(layout.artifact_key("widget_metrics", "1.0.0", signature=True))
        assert signature == (TESTDATA / "packages/widget_metrics/1.0.0.sig").read_bytes()
        readme = await store.get(layout.static_key("acme_logs", "1.10.0", "docs/README.md"))
        assert readme == (TESTDATA / "packages/acme_logs/1.10.0/docs/README.md").read_bytes()

        again = run_publish(bucket, str(source))
        assert again.returncode == 0, again.stderr
        assert " 0 objects uploaded" in again.stdout and "index unchanged" in again.stdout, again.stdout
        assert layout.parse_cursor(await store.get(layout.CURSOR)) == cursor
    finally:
        await store.close()


async def test_publish_refuses_invalid_versions_and_uploads_nothing(tmp_path: Path) -> None:
    source = tmp_path / "src"
    pf.write_dir(source, "good", "1.0.0")
    pf.write_dir(source, "bad", "1.0.0", manifest={"release": "sometimes"})
    pf.write_dir(source, "worse", "2.0.0", files={"docs/README.md": None})
    folder = tmp_path / "bucket"
    folder.mkdir()
    result = run_publish(Bucket(folder.as_uri(), folder.as_uri() + "/", {}), str(source))
    assert result.returncode == 1
    assert "invalid release" in result.stderr and "README.md is required" in result.stderr
    assert "2 invalid package versions: nothing published" in result.stderr
    assert list(folder.iterdir()) == []


async def test_not_ready_until_the_first_index_then_serving(
    tmp_path: Path, eprd_process: Callable[..., EprdProcess]
) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    bucket = Bucket(folder.as_uri(), folder.as_uri() + "/", {})
    eprd = start_storage_eprd(eprd_process, tmp_path, bucket, wait_ready=False)
    wait_until(lambda: get(eprd.base + "/health")[0] == 200, eprd)
    assert get(eprd.base + "/health?ready=true")[0] == 503
    assert get(eprd.base + "/search")[2] == b"[]"
    source = tmp_path / "src"
    pf.write_dir(source, "alpha", "1.0.0")
    await publish_paths(bucket, [source])
    wait_until(lambda: get(eprd.base + "/health?ready=true")[0] == 200, eprd)
    assert json.loads(get(eprd.base + "/package/alpha/1.0.0/")[2])["name"] == "alpha"


def test_both_storage_flags_are_a_start_up_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eprd", "-feature-storage-indexer", "-feature-sql-storage-indexer"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    both = "both -feature-storage-indexer and -feature-sql-storage-indexer flags are enabled"
    assert f"{both} but are mutually exclusive" in result.stderr


async def test_sql_storage_indexer_flag_serves_the_same_answers_and_metrics(
    tmp_path: Path, eprd_process: Callable[..., EprdProcess]
) -> None:
    folder = tmp_path / "bucket"
    folder.mkdir()
    bucket = Bucket(folder.as_uri(), folder.as_uri() + "/", {})
    await publish_paths(bucket, [TESTDATA / "packages"])
    plain = start_storage_eprd(eprd_process, tmp_path, bucket, name="plain")
    metrics_port = free_port()
    sql_args = ["-metrics-address", f"127.0.0.1:{metrics_port}"]
    config = tmp_path / "sql.yml"
    config.write_text("package_paths: []\n")
    sql = eprd_process(
        [
            "-config",
            str(config),
            "-feature-sql-storage-indexer",
            "-storage-indexer-bucket-internal",
            bucket.url,
            "-storage-endpoint",
            bucket.endpoint,
            "-log-level",
            "warn",
            *sql_args,
        ]
    )
    wait_until(lambda: get(sql.base + "/health?ready=true")[0] == 200, sql)
    for path in ("/search?all=true&prerelease=true", "/categories", "/package/acme_logs/1.10.0/"):
        assert get(sql.base + path)[2] == get(plain.base + path)[2], path
    assert get(sql.base + "/epr/acme_logs/acme_logs-1.10.0.zip")[0] == 200
    _, _, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
    exposition = text.decode()
    assert "epr_storage_indexer_update_index_success_total 1.0" in exposition
    assert "epr_storage_indexer_update_index_error_total 0.0" in exposition
    assert "epr_storage_indexer_update_index_duration_seconds_count 1.0" in exposition
    assert 'epr_storage_requests_total{component="artifacts",location="remote"} 1.0' in exposition
    assert 'epr_indexer_get_duration_seconds_count{indexer="SQLStorageIndexer"}' in exposition


async def test_three_replicas_on_one_bucket_converge_under_load(
    gcs_server,  # noqa: F811
    tmp_path: Path,
    eprd_process: Callable[..., EprdProcess],
    monkeypatch,
) -> None:
    name = gcs_server.new_bucket()
    for key, value in gcs_server.env.items():
        monkeypatch.setenv(key, value)
    bucket = Bucket(gcs_server.url(name), gcs_server.endpoint(name), gcs_server.env)
    source = tmp_path / "src"
    pf.write_dir(source, "alpha", "1.0.0")
    pf.write_dir(source, "beta", "1.0.0")
    await publish_paths(bucket, [source])
    replicas = [
        start_storage_eprd(
            eprd_process, tmp_path, bucket, "-feature-incremental-updates", interval="500ms", name=f"r{i}"
        )
        for i in range(3)
    ]
    stop = threading.Event()
    counts = {"requests": 0, "errors": 0}

    def load() -> None:
        paths = ("/search", "/package/alpha/1.0.0/", "/epr/beta/beta-1.0.0.zip", "/categories")
        while not stop.is_set():
            for replica in replicas:
                for path in paths:
                    status = get(replica.base + path)[0]
                    counts["requests"] += 1
                    if status != 200:
                        counts["errors"] += 1

    generator = threading.Thread(target=load)
    generator.start()
    try:
        await asyncio.sleep(0.5)
        pf.write_dir(source, "alpha", "1.1.0")
        await publish_paths(bucket, [source])
        await asyncio.to_thread(
            wait_until,
            lambda: all(get(r.base + "/package/alpha/1.1.0/")[0] == 200 for r in replicas),
            None,
            60.0,
        )
    finally:
        stop.set()
        generator.join()
    latest = {json.loads(get(r.base + "/search?package=alpha")[2])[0]["version"] for r in replicas}
    assert latest == {"1.1.0"}
    bodies = {get(r.base + "/search?all=true")[2] for r in replicas}
    assert len(bodies) == 1
    assert counts["requests"] > 20 and counts["errors"] == 0, counts
