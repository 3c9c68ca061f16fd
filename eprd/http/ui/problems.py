"""What an author needs while editing: rejected versions and warnings about served ones.

Rejections are in the snapshot, and so are the loader's warnings about served versions (a
category eprd does not know); files and folders the scan ignores are found here, from the
package paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from eprd.catalog.snapshot import Snapshot
from eprd.model.versions import is_strict

_ZIP_NAME = re.compile(r"^([a-z0-9_]+)-(.+)\.zip$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One line of the Problems page."""

    package: str  # "name version", or "" when the path names no package
    location: str
    message: str
    kind: str  # "rejected" or "warning"
    still_served: bool = False  # rejected, but its last good content is still served (live reload)


def rejected(snapshot: Snapshot) -> list[Problem]:
    """Every rejected version, latest or not, by path."""
    out = []
    for err in snapshot.rejected:
        label = package_of(err.location)
        item = snapshot.lookup(*label.split(" ", 1)) if label else None
        served = item is not None and item.package.location.rstrip("/") == err.location.rstrip("/")
        out.append(Problem(label, err.location, err.reason, "rejected", served))
    out.sort(key=lambda p: p.location)
    return out


def package_of(location: str) -> str:
    """``name version`` as a package path names it (``<name>/<version>/`` or ``<name>-<version>.zip``)."""
    base = os.path.basename(location.rstrip("/"))
    found = _ZIP_NAME.match(base)
    if found:
        return f"{found.group(1)} {found.group(2)}"
    parent = os.path.basename(os.path.dirname(location.rstrip("/")))
    return f"{parent} {base}" if parent and is_strict(base) else ""


def warnings(snapshot: Snapshot, package_paths: Sequence[str]) -> list[Problem]:
    """What loading noticed in served packages, and what the scan skips under the package paths.

    Blocking (lists folders): run it off the event loop.
    """
    out = [
        Problem(f"{item.package.name} {item.package.version}", item.package.location, message, "warning")
        for _, items in snapshot.indexers
        for item in items
        for message in item.package.warnings
    ]
    out.extend(ignored_entries(package_paths))
    out.sort(key=lambda p: (p.location, p.message))
    return out


def ignored_entries(package_paths: Sequence[str]) -> list[Problem]:
    """Files and folders the package scan skips (eprd.indexers.local.scan's rules)."""
    out: list[Problem] = []
    for root in package_paths:
        if os.path.isdir(root):
            _walk(root, 1, out)
    return out


def _walk(folder: str, depth: int, out: list[Problem]) -> None:
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        out.append(Problem("", folder, f"cannot list folder: {err.strerror or err}", "warning"))
        return
    for name in names:
        if name.startswith("."):
            continue
        full = os.path.join(folder, name)
        if not os.path.isdir(full):
            signature = name.endswith(".sig") and os.path.exists(full[:-4])  # beside its package
            if depth == 2 and not name.endswith(".zip") and not signature:
                out.append(Problem("", full, "unexpected file, ignored (not a package)", "warning"))
            continue
        if depth == 2 and is_strict(name):
            continue  # a version folder
        if depth == 2:
            out.append(Problem("", full, "unexpected folder, ignored (its name is not a version)", "warning"))
        _walk(full, depth + 1, out)
