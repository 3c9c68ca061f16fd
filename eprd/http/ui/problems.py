"""What an author needs while editing: rejected versions and warnings about served ones.

Rejections are in the snapshot. Warnings are worked out here, from the served packages'
own manifests and from the package paths, because the loader only logs them: a category
eprd does not know (dropped from the package) and files or folders the scan ignores.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eprd.catalog.snapshot import Snapshot
from eprd.model import yamlfile
from eprd.model.categories import CATEGORIES
from eprd.model.package import Package
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


class Warnings:
    """Warnings of one snapshot, worked out once per package (packages are immutable)."""

    def __init__(self) -> None:
        self._by_package: dict[int, tuple[Package, tuple[Problem, ...]]] = {}

    def compute(self, snapshot: Snapshot, package_paths: Sequence[str]) -> list[Problem]:
        """Blocking (reads manifests and lists folders): run it off the event loop."""
        known: dict[int, tuple[Package, tuple[Problem, ...]]] = {}
        out: list[Problem] = []
        for _, items in snapshot.indexers:
            for item in items:
                package = item.package
                cached = self._by_package.get(id(package))
                if cached is None or cached[0] is not package:
                    cached = (package, tuple(_category_warnings(package)))
                known[id(package)] = cached
                out.extend(cached[1])
        self._by_package = known  # forget the packages no snapshot serves any more
        out.extend(ignored_entries(package_paths))
        out.sort(key=lambda p: (p.location, p.message))
        return out


def _category_warnings(package: Package) -> Iterable[Problem]:
    files = getattr(package, "files", None)
    if files is None:
        return  # not read from files here (another kind of indexer)
    try:
        manifest = yamlfile.load_config(files.read("manifest.yml"))
    except (OSError, ValueError):
        return  # changed since it was loaded: the next snapshot will tell
    if not isinstance(manifest, dict):
        return
    label = f"{package.name} {package.version}"
    for category in _texts(manifest.get("categories")):
        if category not in CATEGORIES:
            yield Problem(label, package.location, f"unknown category {category!r} is ignored", "warning")
    templates = manifest.get("policy_templates")
    for template in templates if isinstance(templates, list) else ():
        if not isinstance(template, dict):
            continue
        for category in _texts(template.get("categories")):
            if category not in CATEGORIES:
                name = template.get("name", "?")
                yield Problem(
                    label,
                    package.location,
                    f"policy template {name!r} uses unknown category {category!r}",
                    "warning",
                )


def _texts(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


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
