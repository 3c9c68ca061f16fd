"""From package paths to a snapshot: scan, load every candidate, combine."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from eprd.package import LoadOptions, Package, PackageError, load_package
from eprd.snapshot import Snapshot, build_snapshot
from eprd.sources import Candidates, scan

log = logging.getLogger("eprd.loader")


@dataclass(frozen=True, slots=True)
class LoadResult:
    packages: dict[str, Package]  # by location
    rejected: dict[str, PackageError]


def load_locations(locations: Iterable[str], options: LoadOptions) -> LoadResult:
    """Load each candidate; invalid ones are logged once and reported, never raised."""
    packages: dict[str, Package] = {}
    rejected: dict[str, PackageError] = {}
    for location in locations:
        try:
            packages[location] = load_package(location, options)
        except PackageError as err:
            rejected[location] = err
            log.error(
                "invalid package, left out: %s",
                err.reason,
                extra={"file.path": err.location, "error.message": err.reason},
            )
    return LoadResult(packages, rejected)


def snapshot_from(
    candidates: Candidates,
    result: LoadResult,
    generation: int = 1,
    previous: Snapshot | None = None,
) -> Snapshot:
    """Combine loaded packages in discovery order (zips, then folders) into a snapshot."""
    return build_snapshot(
        (result.packages[loc] for loc in candidates.zips if loc in result.packages),
        (result.packages[loc] for loc in candidates.dirs if loc in result.packages),
        rejected=result.rejected.values(),
        generation=generation,
        previous=previous,
    )


def load_snapshot(package_paths: Iterable[str], options: LoadOptions) -> Snapshot:
    """Scan ``package_paths`` and load everything into a first snapshot."""
    started = time.monotonic()
    candidates = scan(list(package_paths))
    result = load_locations((*candidates.zips, *candidates.dirs), options)
    snapshot = snapshot_from(candidates, result)
    log.info(
        "packages loaded",
        extra={
            "packages.loaded": len(result.packages),
            "packages.rejected": len(result.rejected),
            "packages.served": len(snapshot),
            "event.duration": int((time.monotonic() - started) * 1e9),
        },
    )
    return snapshot
