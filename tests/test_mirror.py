"""``eprd mirror`` against a real upstream: an eprd process serving signed test zips on loopback.

Covers every selection filter, signature verification (good, bad, missing, wrong key),
incremental re-runs, prune, and the round trip (an eprd serving the mirror answers /search as
the upstream does for the same selection).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pkgfactory as pf
from tests.conftest import EprdProcess, child_env, write_config
from tests.mirrorkit import CATALOG, Pkg, Signer, kibana, run_mirror, visible, write_packages


def _start_eprd(folder: Path, cache: Path, *extra: str) -> EprdProcess:
    config = write_config(folder.parent / f"{folder.name}.yml", [folder])
    process = EprdProcess(
        ["-config", str(config), *extra], child_env({"EPR_CACHE_DIR": str(cache)}), folder.parent
    )
    process.wait_healthy()
    return process


def _search(base: str, query: str = "") -> list[dict]:
    with urllib.request.urlopen(f"{base}/search{'?' + query if query else ''}", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, signer: Signer) -> Iterator[str]:
    """An eprd process serving CATALOG as signed zips; its base URL."""
    root = tmp_path_factory.mktemp("upstream")
    write_packages(root / "packages", signer, CATALOG)
    process = _start_eprd(root / "packages", root / "cache")
    yield process.base
    process.stop()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory, signer: Signer) -> Path:
    return signer.write_key(tmp_path_factory.mktemp("key") / "key.asc")


def _selected(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("selected "))
    return [line.split()[0] for line in lines[start + 1 :] if line.startswith("  ")]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], ["acme-1.1.0", "gadget-3.2.0", "widget-1.0.0"]),
        (["-kibana.version", "7.17.5"], ["widget-0.9.0"]),
        # repeatable: the union of what each Kibana sees
        (
            ["-kibana.version", "7.17.5", "-kibana.version", "8.5.0"],
            ["acme-1.0.0", "gadget-3.2.0", "widget-0.9.0", "widget-1.0.0"],
        ),
        (["-package", "acme"], ["acme-1.1.0"]),
        (["-package", "acme", "-package", "widget"], ["acme-1.1.0", "widget-1.0.0"]),
        (["-category", "security"], ["acme-1.1.0"]),
        (["-prerelease"], ["acme-1.2.0-beta1", "gadget-3.2.0", "widget-1.0.0"]),
        (
            ["-all"],
            [
                "acme-1.0.0",
                "acme-1.1.0",
                "gadget-3.0.0",
                "gadget-3.1.0",
                "gadget-3.2.0",
                "widget-0.9.0",
                "widget-1.0.0",
            ],
        ),
        (["-spec.max", "3.0"], ["acme-1.1.0", "gadget-3.2.0", "widget-0.9.0"]),  # widget 1.0.0 is 3.3
        (
            ["-latest", "2"],
            ["acme-1.0.0", "acme-1.1.0", "gadget-3.1.0", "gadget-3.2.0", "widget-0.9.0", "widget-1.0.0"],
        ),
        (["-latest", "2", "-prerelease", "-package", "acme"], ["acme-1.1.0", "acme-1.2.0-beta1"]),
        (
            ["-all", "-kibana.version", "8.5.0", "-package", "gadget"],
            ["gadget-3.0.0", "gadget-3.1.0", "gadget-3.2.0"],
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("-") else None,
)
async def test_filters_select_through_the_upstream_search(
    upstream: str, tmp_path: Path, filters: list[str], expected: list[str]
) -> None:
    dest = tmp_path / "mirror"
    run = await run_mirror("-from", upstream, "-to", dest, "-dry-run", *filters)
    assert run.rc == 0, run.err
    assert _selected(run.out) == expected
    assert not dest.exists()  # -dry-run: nothing downloaded, not even the folder


async def test_mirror_verifies_and_places_zip_and_signature(
    upstream: str, tmp_path: Path, key_file: Path
) -> None:
    dest = tmp_path / "mirror"
    run = await run_mirror(
        "-from", upstream, "-to", dest, "-package", "acme", "-all", "-verify-key", key_file
    )
    assert run.rc == 0, run.out + run.err
    assert visible(dest) == ["acme-1.0.0.zip", "acme-1.0.0.zip.sig", "acme-1.1.0.zip", "acme-1.1.0.zip.sig"]
    assert sorted(os.listdir(dest)) == visible(dest)  # no leftovers
    assert "added acme-1.0.0" in run.out and "added acme-1.1.0" in run.out
    assert run.summary().startswith("mirror: 2 added, 0 kept, 0 refused, 0 pruned, ")
    with urllib.request.urlopen(f"{upstream}/epr/acme/acme-1.1.0.zip", timeout=10) as resp:
        assert (dest / "acme-1.1.0.zip").read_bytes() == resp.read()


async def test_rerun_downloads_nothing_and_keeps_files(upstream: str, tmp_path: Path, key_file: Path) -> None:
    dest = tmp_path / "mirror"
    first = await run_mirror("-from", upstream, "-to", dest, "-all", "-verify-key", key_file)
    assert first.rc == 0, first.out + first.err
    stamps = {name: os.stat(dest / name).st_ino for name in visible(dest)}
    second = await run_mirror("-from", upstream, "-to", dest, "-all", "-verify-key", key_file)
    assert second.rc == 0, second.out + second.err
    assert second.summary().startswith("mirror: 0 added, 7 kept, 0 refused, 0 pruned, 0 bytes downloaded")
    assert {name: os.stat(dest / name).st_ino for name in visible(dest)} == stamps
    # a damaged local copy is not "present and valid": only it is fetched again
    (dest / "gadget-3.1.0.zip").write_bytes(b"PK\x03\x04 not a zip any more")
    third = await run_mirror("-from", upstream, "-to", dest, "-all", "-verify-key", key_file)
    assert third.rc == 0, third.out + third.err
    assert third.summary().startswith("mirror: 1 added, 6 kept, 0 refused")
    assert "added gadget-3.1.0" in third.out


async def test_prune_removes_only_versions_no_longer_selected(upstream: str, tmp_path: Path) -> None:
    dest = tmp_path / "mirror"
    assert (await run_mirror("-from", upstream, "-to", dest, "-all")).rc == 0
    (dest / "README.txt").write_text("the operator's own file\n")
    (dest / "notes").mkdir()
    (dest / ".other-0.1.0.zip.partial").write_bytes(b"left over from an interrupted run")
    dry = await run_mirror("-from", upstream, "-to", dest, "-package", "gadget", "-prune", "-dry-run")
    assert dry.rc == 0
    assert [line for line in dry.out.splitlines() if line.startswith("would prune")] == [
        f"would prune {stem}"
        for stem in (
            "acme-1.0.0",
            "acme-1.1.0",
            "gadget-3.0.0",
            "gadget-3.1.0",
            "widget-0.9.0",
            "widget-1.0.0",
        )
    ]
    assert len(visible(dest)) == 7 * 2 + 2  # the dry run removed nothing
    run = await run_mirror("-from", upstream, "-to", dest, "-package", "gadget", "-latest", "1", "-prune")
    assert run.rc == 0, run.out + run.err
    assert visible(dest) == ["README.txt", "gadget-3.2.0.zip", "gadget-3.2.0.zip.sig", "notes"]
    assert not (dest / ".other-0.1.0.zip.partial").exists()
    assert run.summary().startswith("mirror: 0 added, 1 kept, 0 refused, 6 pruned, 0 bytes")
    assert "pruned acme-1.0.0" in run.out
    # a selection that is empty (a misspelt -package) does not empty the mirror
    run = await run_mirror("-from", upstream, "-to", dest, "-package", "gadgett", "-prune")
    assert run.rc == 0
    assert "nothing selected, so -prune removes nothing" in run.err
    assert visible(dest) == ["README.txt", "gadget-3.2.0.zip", "gadget-3.2.0.zip.sig", "notes"]


async def test_round_trip_eprd_serving_the_mirror_answers_as_the_upstream(
    upstream: str, tmp_path: Path
) -> None:
    for filters, query in (
        ([], ""),
        (["-all", "-kibana.version", "8.5.0"], "all=true&kibana.version=8.5.0"),
    ):
        dest = tmp_path / ("m" + query.replace("&", "_").replace("=", "-"))
        run = await run_mirror("-from", upstream, "-to", dest, *filters)
        assert run.rc == 0, run.out + run.err
        served = _start_eprd(dest, tmp_path / "cache")
        try:
            assert _search(served.base, query) == _search(upstream, query)
            assert _search(served.base, "all=true&prerelease=true") == _search(upstream, query)
        finally:
            served.stop()


async def test_round_trip_from_folder_packages_streamed_without_length(tmp_path: Path) -> None:
    """Folder packages are zipped on the fly by the upstream (chunked, no Content-Length)."""
    pf.write_dir(tmp_path / "up", "lab", "1.0.0", manifest={"conditions": kibana("^8.0.0")})
    pf.write_dir(tmp_path / "up", "lab", "2.0.0", manifest={"conditions": kibana("^9.0.0")})
    up = _start_eprd(tmp_path / "up", tmp_path / "cache-up", "-require-package-signatures=false")
    try:
        dest = tmp_path / "mirror"
        run = await run_mirror("-from", up.base, "-to", dest, "-all")
        assert run.rc == 0, run.out + run.err
        assert visible(dest) == ["lab-1.0.0.zip", "lab-2.0.0.zip"]
        served = _start_eprd(dest, tmp_path / "cache", "-require-package-signatures=false")
        try:
            assert _search(served.base, "all=true") == _search(up.base, "all=true")
        finally:
            served.stop()
    finally:
        up.stop()


async def test_verification_refuses_bad_and_missing_signatures(
    tmp_path: Path, signer: Signer, key_file: Path
) -> None:
    folder = tmp_path / "up"
    write_packages(
        folder, signer, [Pkg("good", "1.0.0"), Pkg("forged", "1.0.0"), Pkg("plain", "1.0.0", signed=False)]
    )
    # a real signature by the right key, but over other bytes
    (folder / "forged-1.0.0.zip.sig").write_bytes(signer.sign(b"another archive"))
    up = _start_eprd(folder, tmp_path / "cache", "-require-package-signatures=false")
    try:
        dest = tmp_path / "mirror"
        run = await run_mirror("-from", up.base, "-to", dest, "-verify-key", key_file)
        assert run.rc == 1
        assert visible(dest) == ["good-1.0.0.zip", "good-1.0.0.zip.sig"]
        assert sorted(os.listdir(dest)) == visible(dest)
        assert "refused forged-1.0.0: bad signature" in run.out
        assert "refused plain-1.0.0: missing signature" in run.out
        assert run.summary().startswith("mirror: 1 added, 0 kept, 2 refused")
        assert (
            "eprd mirror: refused forged-1.0.0" in run.err and "eprd mirror: refused plain-1.0.0" in run.err
        )

        wrong = Signer("Someone Else <else@example.invalid>").write_key(tmp_path / "wrong.asc")
        other = tmp_path / "other"
        run = await run_mirror("-from", up.base, "-to", other, "-package", "good", "-verify-key", wrong)
        assert run.rc == 1
        assert "refused good-1.0.0: bad signature" in run.out
        assert visible(other) == []

        # without -verify-key nothing is checked against a key: the unsigned one comes without .sig
        loose = tmp_path / "loose"
        run = await run_mirror("-from", up.base, "-to", loose, "-package", "plain")
        assert run.rc == 0, run.out + run.err
        assert visible(loose) == ["plain-1.0.0.zip"]
        assert "  plain-1.0.0 (unsigned)" in run.out
    finally:
        up.stop()


async def test_a_kept_copy_is_checked_against_the_key(upstream: str, tmp_path: Path, key_file: Path) -> None:
    dest = tmp_path / "mirror"
    assert (await run_mirror("-from", upstream, "-to", dest, "-package", "acme")).rc == 0
    wrong = Signer("Someone Else <else@example.invalid>").write_key(tmp_path / "wrong.asc")
    run = await run_mirror("-from", upstream, "-to", dest, "-package", "acme", "-verify-key", wrong)
    assert run.rc == 1
    assert "refused acme-1.1.0: bad signature" in run.out
    # the copy that was there stays: it is not replaced by anything unverified
    assert visible(dest) == ["acme-1.1.0.zip", "acme-1.1.0.zip.sig"]
