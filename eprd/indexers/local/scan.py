"""Finding package candidates under ``package_paths``: version folders and zip files."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from eprd.model.versions import is_strict

log = logging.getLogger("eprd.sources")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A place that may hold a package: a version folder or a zip file."""

    kind: str  # "zip" or "dir"
    location: str
    # Discovery order: package path index, then the path's components (a sorted depth-first walk).
    order: tuple[int, tuple[str, ...]]


def scan(package_paths: Sequence[str]) -> list[Candidate]:
    """Every zip and folder package candidate under every package path."""
    found: list[Candidate] = []
    for index in range(len(package_paths)):
        found.extend(scan_within(package_paths, index, ()))
    return found


def scan_within(package_paths: Sequence[str], index: int, parts: tuple[str, ...]) -> list[Candidate]:
    """The candidates below ``parts`` (components under package path ``index``), in discovery order."""
    folder = os.path.join(package_paths[index], *parts)
    found: list[Candidate] = []
    if os.path.isdir(folder):
        _scan_dir(folder, index, parts, found)
    elif not parts:
        log.debug("package path does not exist, skipped", extra={"file.path": folder})
    return found


def candidate_at(package_paths: Sequence[str], index: int, parts: tuple[str, ...]) -> Candidate | None:
    """The candidate at exactly ``parts`` below a package path, if the scan would find one there."""
    location = os.path.join(package_paths[index], *parts)
    if parts and parts[-1].endswith(".zip") and os.path.isfile(location):
        return Candidate("zip", location, (index, parts))
    if len(parts) == 2 and is_strict(parts[1]) and os.path.isdir(location):
        return Candidate("dir", location, (index, parts))
    return None


def _scan_dir(folder: str, index: int, parts: tuple[str, ...], found: list[Candidate]) -> None:
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        log.warning("cannot list folder", extra={"file.path": folder, "error.message": str(err)})
        return
    depth = len(parts) + 1
    for name in names:
        if name.startswith("."):
            continue  # hidden entries, e.g. the "..data" folders of Kubernetes ConfigMap volumes
        full = os.path.join(folder, name)
        here = (*parts, name)
        if not os.path.isdir(full):
            if name.endswith(".zip") and os.path.isfile(full):
                found.append(Candidate("zip", full, (index, here)))
            elif depth == 2:
                log.warning("ignoring unexpected file", extra={"file.path": full})
            continue
        if depth == 2 and is_strict(name):
            # A version folder: its contents are the package, not more packages.
            found.append(Candidate("dir", full, (index, here)))
            continue
        if depth == 2:
            log.warning("ignoring unexpected directory", extra={"file.path": full})
        _scan_dir(full, index, here, found)
