"""The storage indexer against real buckets (a local folder, a GCS emulator, an S3 server).

A bucket published from the test package folders must answer every endpoint exactly as
eprd serving those folders does; downloads and files are piped from the bucket with Range.
"""

from __future__ import annotations

import difflib
import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import TESTDATA, EprdProcess
from tests.storage_helpers import (
    answer,
    endpoint_urls,
    get,
    publish_paths,
    start_local_eprd,
    start_storage_eprd,
)
from tests.storage_servers import Bucket, bucket_fixture, gcs_server, s3_server  # noqa: F401 (fixtures)

PATHS = [TESTDATA / "packages", TESTDATA / "zips"]


def comparable_paths(tmp_path: Path) -> list[Path]:
    """The test packages, less the zip copy of dual_source.

    A bucket is one indexer, so a deprecation propagates over all versions of a name; locally
    the zip indexer's deprecated dual_source 1.0.0 does not reach the folder copies (§1.4).
    """
    zips = tmp_path / "zips"
    zips.mkdir()
    for archive in (TESTDATA / "zips").glob("zipped_probe-*"):
        shutil.copy2(archive, zips / archive.name)
    return [TESTDATA / "packages", zips]


async def test_bucket_answers_equal_folders(
    bucket: Bucket, tmp_path: Path, eprd_process: Callable[..., EprdProcess]
) -> None:
    paths = comparable_paths(tmp_path)
    report = await publish_paths(bucket, paths)
    assert report.cursor and report.versions == report.added > 10
    local = start_local_eprd(eprd_process, tmp_path, paths)
    remote = start_storage_eprd(eprd_process, tmp_path, bucket)
    urls = endpoint_urls(local.base)
    assert len(urls) > 100
    with ThreadPoolExecutor(8) as pool:
        wants = list(pool.map(lambda p: answer(local.base, p), urls))
        gots = list(pool.map(lambda p: answer(remote.base, p), urls))
    compared = 0
    for path, want, got in zip(urls, wants, gots, strict=True):
        if bucket.url.startswith("gs:") and "/package/" in path and not path.endswith("/"):
            # The GCS emulator drops content-type parameters (GCS keeps them): compare media types.
            for headers in (want[1], got[1]):
                headers["Content-Type"] = (headers["Content-Type"] or "").split(";")[0]
        if path.endswith("/missing.txt"):
            # Storage's own 404 is passed through (the reference's behaviour): status and cache only.
            assert got[0] == want[0] == 404, path
            assert got[1]["Cache-Control"] == want[1]["Cache-Control"], path
            continue
        assert got == want, f"{path}:\n" + _diff(want[2], got[2])
        compared += 1
    assert compared == len(urls) - len([u for u in urls if u.endswith("/missing.txt")])


def _diff(want: bytes, got: bytes) -> str:
    lines = difflib.unified_diff(
        want.decode(errors="replace").splitlines(), got.decode(errors="replace").splitlines(), lineterm=""
    )
    return "\n".join(list(lines)[:40])


async def test_artifacts_and_statics_are_piped_with_range(
    bucket: Bucket, tmp_path: Path, eprd_process: Callable[..., EprdProcess]
) -> None:
    source = tmp_path / "src"
    shutil.copytree(TESTDATA / "packages" / "acme_logs", source / "acme_logs")
    await publish_paths(bucket, [source])
    remote = start_storage_eprd(eprd_process, tmp_path, bucket)
    status, headers, whole = get(remote.base + "/epr/acme_logs/acme_logs-1.10.0.zip")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    assert whole[:2] == b"PK" and int(headers["Content-Length"]) == len(whole)
    assert "Date" in headers
    if not bucket.url.startswith("gs:"):  # the GCS emulator sends no Last-Modified
        assert "Last-Modified" in headers
    status, headers, part = get(remote.base + "/epr/acme_logs/acme_logs-1.10.0.zip", {"Range": "bytes=10-99"})
    assert status == 206 and part == whole[10:100]
    assert headers["Content-Range"] == f"bytes 10-99/{len(whole)}"
    status, headers, readme = get(
        remote.base + "/package/acme_logs/1.10.0/docs/README.md", {"Range": "bytes=2-"}
    )
    full = (TESTDATA / "packages/acme_logs/1.10.0/docs/README.md").read_bytes()
    assert status == 206 and readme == full[2:]
    # Any indexed version's files are fetched whether or not they exist: storage's 404 passes.
    status, headers, body = get(remote.base + "/epr/acme_logs/acme_logs-1.10.0.zip.sig")
    assert status == 404 and headers["Cache-Control"].startswith("max-age=")
    # Versions the index does not hold are the registry's own 404s.
    status, _, body = get(remote.base + "/epr/acme_logs/acme_logs-9.9.9.zip")
    assert (status, body) == (404, b"artifact not found\n")


async def test_storage_wins_over_local_packages(
    tmp_path: Path, eprd_process: Callable[..., EprdProcess]
) -> None:
    folder = tmp_path / "bucket"  # precedence does not depend on the kind of bucket
    folder.mkdir()
    bucket = Bucket(folder.as_uri(), folder.as_uri() + "/", {})
    # The bucket holds the zip copy of dual_source 1.0.0 only; locally there is also a folder copy.
    await publish_paths(bucket, [TESTDATA / "zips"])
    local_only = start_local_eprd(eprd_process, tmp_path, [TESTDATA / "packages"])
    both = start_storage_eprd(eprd_process, tmp_path, bucket, package_paths=[TESTDATA / "packages"])
    zip_doc = json.loads(get(both.base + "/package/dual_source/1.0.0/")[2])
    folder_doc = json.loads(get(local_only.base + "/package/dual_source/1.0.0/")[2])
    assert zip_doc != folder_doc
    storage_alone = json.loads(
        get(local_only.base.replace(local_only.base, both.base) + "/package/dual_source/1.0.0/")[2]
    )
    assert storage_alone == zip_doc
    # Local-only packages are still served next to the storage ones.
    assert get(both.base + "/package/acme_logs/1.10.0/")[0] == 200
    assert get(both.base + "/package/zipped_probe/1.1.0/")[0] == 200
