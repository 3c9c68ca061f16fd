"""One package version: loading, validating and pre-rendering it.

:func:`load_package` follows the reference's load pipeline step by step and
returns an immutable :class:`Package` holding everything the HTTP layer and
the filters need: the values the filters compare, the ``/search`` entry as
data (its policy templates can be trimmed by the category filter) and the
``/package/{n}/{v}/`` document already encoded, split around ``deprecated``
because that block can be inherited from another version (§1.4).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import orjson
import semver
import zstandard

from eprd.model import gojson, yamlfile
from eprd.model.categories import CATEGORIES
from eprd.model.datastream import data_stream_dirs, data_stream_summary, load_data_stream
from eprd.model.errors import PackageError, printable, rejection
from eprd.model.files import DirFiles, PackageFileError, PackageFiles, open_package, signature_path
from eprd.model.listing import Listing
from eprd.model.manifest import (
    OMIT_NULL,
    VALID_RELEASES,
    ManifestError,
    agent_doc,
    deprecated_doc,
    go_path_join,
    go_quote,
    images_doc,
    obj,
    objects,
    optional_text,
    put,
    text,
    texts,
    variables_doc,
)
from eprd.model.sections import (
    conditions_doc,
    discovery_doc,
    elasticsearch_doc,
    policy_template_doc,
    requires_doc,
    template_summary,
)
from eprd.model.versions import (
    Constraint,
    VersionError,
    is_prerelease,
    parse_constraint,
    parse_strict,
    sort_key,
)

log = logging.getLogger("eprd.package")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    validate: bool = True
    require_signature: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Package:
    """An immutable, fully loaded package version."""

    name: str
    version: str
    key: tuple[Any, ...]  # semver precedence
    prerelease: bool
    major: int
    release: str
    type: str
    categories: tuple[str, ...]
    # Categories of each policy template; None for a template without a categories key.
    template_categories: tuple[tuple[str, ...] | None, ...]
    kibana: Constraint | None
    agent: Constraint | None
    capabilities: tuple[str, ...] | None
    discovery_fields: tuple[str, ...]
    discovery_datasets: tuple[str, ...]
    spec: tuple[Any, ...] | None  # sort key of format_version's major.minor.0
    deprecated: dict[str, Any] | None  # this version's own block
    # The /search entry's members, encoded: 1-11, "policy_templates" (the category filter may
    # trim it), "conditions" to "data_streams", and after "deprecated" (which is decided per snapshot).
    entry_parts: tuple[bytes, ...]
    # The document's members before "deprecated", and after it, encoded. The tail (tens of KB) is
    # compressed with zstd, because documents are most of a package's memory and a request for one
    # is answered from a cache (zstd's level 1 comes out smaller than zlib's and takes a third of
    # its time both ways); the head (under 1 KB) is kept plain: compressing it saved little and cost
    # a compressor's set-up for every version loaded.
    doc_head: bytes
    doc_tail: bytes
    # None for a package built from a storage index document (eprd.model.document): no local files.
    files: PackageFiles | None = field(repr=False)
    location: str
    signature: str | None  # filesystem path of the detached signature
    folders: int  # folders on disk (the watcher needs one inotify watch for each)
    # What loading noticed but served anyway, in words (the catalog page's Problems).
    warnings: tuple[str, ...] = ()


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def load_package(location: str, options: LoadOptions) -> tuple[Package | PackageError, tuple[str, ...]]:
    """Load the package at ``location`` (a version folder or a zip).

    Returns the package, or the error that makes it invalid, and the paths its content was
    derived from (empty when not even its file list could be read), for the index cache.

    This is the one boundary around loading a version: whatever goes wrong inside, of whatever
    exception type (RecursionError, MemoryError, a zipfile or codec error...), rejects this
    version with a reason (:func:`rejection`) and never reaches the caller.
    """
    files: PackageFiles | None = None
    listing: Listing | None = None
    try:
        if printable(location) != location:
            raise PackageFileError("path is not valid UTF-8")
        files = open_package(location)
        listing = Listing(files.entries())
        result: Package | PackageError = _Loader(files, listing, options).load()
    except Exception as err:
        result = rejection(location, err)
    if files is not None:
        files.loaded()
    if files is None or listing is None:
        return result, ()
    try:
        return result, _inputs(files, listing)
    except Exception:  # (nothing to stamp: the version is read again when anything changes)
        return result, ()


def _inputs(files: PackageFiles, listing: Listing) -> tuple[str, ...]:
    """The folder, its sub-folders, the files read and the signature: what the result depends on."""
    location = files.location
    paths = [location, location.rstrip("/") + ".sig"]
    if isinstance(files, DirFiles):
        prefix = os.path.join(location, "")
        paths.extend([prefix + folder for folder in sorted(listing.dirs)])
        paths.extend([prefix + read for read in sorted(files.reads)])
        files.reads.clear()
    return tuple(paths)


class _Loader:
    def __init__(self, files: PackageFiles, listing: Listing, options: LoadOptions) -> None:
        self.files = files
        self.listing = listing
        self.options = options

    def load(self) -> Package:
        if not self.listing.is_file("manifest.yml"):
            raise ManifestError("manifest.yml not found in package")
        raw = obj(yamlfile.load_config(self.files.read_listed("manifest.yml")), "") or {}
        name = text(raw.get("name"), "name")
        version = text(raw.get("version"), "version")
        title = optional_text(raw.get("title"), "title")
        description = text(raw.get("description"), "description")
        release = text(raw.get("release"), "release")
        format_version = text(raw.get("format_version"), "format_version")
        if self.options.validate:
            self._validate_manifest(raw, name, version, title, description, format_version)

        url = go_path_join("/package", name, version)
        templates = [
            policy_template_doc(t, f"policy_templates.{i}", url, raw, self.listing, self.options.validate)
            for i, t in enumerate(objects(raw.get("policy_templates"), "policy_templates"))
        ]
        pkg_type = text(raw.get("type"), "type") or "integration"
        conditions = conditions_doc(raw.get("conditions"))
        license_ = text(raw.get("license"), "license") or (
            (conditions or {}).get("elastic", {}).get("subscription") or "basic"
        )

        try:
            parsed = parse_strict(version)
        except VersionError as err:
            raise ManifestError(f"invalid package version: {err}") from None
        kibana = self._constraint(conditions, "kibana", "Kibana")
        agent = self._constraint(conditions, "agent", "Agent")
        spec = None
        if format_version:
            try:
                spec_version = parse_strict(format_version)
            except VersionError as err:
                raise ManifestError(f"invalid format spec version '{format_version}': {err}") from None
            spec = sort_key(semver.Version(spec_version.major, spec_version.minor, 0))

        icons = images_doc(raw.get("icons"), "icons", url)
        screenshots = images_doc(raw.get("screenshots"), "screenshots", url)
        release = release or _default_release(parsed)
        if release not in VALID_RELEASES:
            raise ManifestError(f"invalid release: {go_quote(release)}")
        if not self.listing.is_file("docs/README.md"):
            if self.listing.is_dir("docs/README.md"):
                raise ManifestError("README.md is a directory")
            raise ManifestError("no readme file found, README.md is required: docs/README.md does not exist")
        assets = self._assets(url, name)
        package_info = {"name": name, "release": release}
        data_streams = [
            load_data_stream(self.files, self.listing, folder, package_info, self.options.validate)
            for folder in data_stream_dirs(self.listing)
        ]
        signature = signature_path(self.files.location)
        if signature is None and self.options.require_signature:
            raise ManifestError(f"package {name}-{version} is missing a required signature file")
        categories = self._known_categories(texts(raw.get("categories"), "categories"), name, version)

        download = go_path_join("/epr", name, f"{name}-{version}.zip")
        elastic = (conditions or {}).get("elastic") or {}
        discovery = discovery_doc(raw.get("discovery"))
        base = self._base_fields(
            raw, name, title, version, release, description, pkg_type, download, url, icons
        )
        after = self._shared_fields(raw, conditions, categories, download if signature else "", discovery)
        deprecated = deprecated_doc(raw.get("deprecated"), "deprecated")

        summaries: dict[str, Any] = {}
        put(summaries, "policy_templates", [template_summary(t) for t in templates])
        middle = dict(after)
        put(middle, "data_streams", [data_stream_summary(d) for d in data_streams])
        last: dict[str, Any] = {}  # after "deprecated", in both shapes
        put(last, "requires", requires_doc(raw.get("requires")), OMIT_NULL)
        put(last, "group", text(raw.get("group"), "group"))
        entry_parts = tuple(encode_members(part) for part in (base, summaries, middle, last))

        head = dict(base)
        head.update(after)
        tail: dict[str, Any] = dict(last)
        tail["format_version"] = format_version
        put(tail, "readme", go_path_join(url, "docs", "README.md"), OMIT_NULL)
        put(tail, "license", license_)
        put(tail, "screenshots", screenshots)
        put(tail, "assets", assets)
        put(tail, "policy_templates", templates)
        put(tail, "data_streams", data_streams)
        put(tail, "vars", variables_doc(raw.get("vars"), "vars"))
        put(tail, "elasticsearch", elasticsearch_doc(raw.get("elasticsearch")), OMIT_NULL)
        put(tail, "agent", agent_doc(raw.get("agent")), OMIT_NULL)

        return Package(
            name=name,
            version=version,
            key=sort_key(parsed),
            prerelease=is_prerelease(parsed),
            major=parsed.major,
            release=release,
            type=pkg_type,
            categories=tuple(categories),
            template_categories=tuple(
                tuple(t["categories"]) if "categories" in t else None for t in templates
            ),
            kibana=kibana,
            agent=agent,
            capabilities=tuple(elastic["capabilities"]) if elastic.get("capabilities") else None,
            discovery_fields=tuple(f["name"] for f in (discovery or {}).get("fields", [])),
            discovery_datasets=tuple(d["name"] for d in (discovery or {}).get("datasets", [])),
            spec=spec,
            deprecated=deprecated,
            entry_parts=entry_parts,
            doc_head=encode_members(head),
            doc_tail=zstandard.compress(encode_members(tail), 1),
            files=self.files,
            location=self.files.location,
            signature=signature,
            folders=1 + len(self.listing.dirs) if self.files.kind == "dir" else 0,
            warnings=tuple(self._category_warnings(raw, templates)),
        )

    # --- validation ---------------------------------------------------------------------------

    def _validate_manifest(
        self,
        raw: dict[str, Any],
        name: str,
        version: str,
        title: str | None,
        description: str,
        format_version: str,
    ) -> None:
        if not format_version:
            raise ManifestError("no format_version set")
        try:
            parse_strict(format_version)
        except VersionError as err:
            raise ManifestError(f"invalid package version: {format_version}, {err}") from None
        parsed = parse_strict(version)
        if not title:
            raise ManifestError(f"no title set for package: {name}")
        if not description:
            raise ManifestError("no description set")
        for kind in ("icons", "screenshots"):
            for image in objects(raw.get(kind), kind):
                src = text(image.get("src"), f"{kind}.src")
                rel = go_path_join("/", src).lstrip("/")
                if not self.listing.is_file(rel) and not self.listing.is_dir(rel):
                    raise ManifestError(f"{kind} file does not exist in package: {src}")
        folder = self.files.location.rstrip("/").rsplit("/", 1)[-1]
        if self.files.kind == "dir":
            try:
                in_path = parse_strict(folder)
            except VersionError:
                in_path = None
            if in_path is not None and in_path.compare(parsed) != 0:
                raise ManifestError(
                    "version in manifest file is not consistent with path: inconsistent versions "
                    f"(path: {in_path}, manifest: {parsed})"
                )

    def _known_categories(self, categories: list[str], name: str, version: str) -> list[str]:
        known = []
        for category in categories:
            if category in CATEGORIES:
                known.append(category)
            else:
                log.warning(
                    "package uses an unknown category, will be ignored",
                    extra={"package": name, "version": version, "category": category},
                )
        return known

    @staticmethod
    def _category_warnings(raw: dict[str, Any], templates: list[dict[str, Any]]) -> list[str]:
        """Categories eprd does not know: dropped from the package, kept in its policy templates."""
        out = [
            f"unknown category {c!r} is ignored"
            for c in _strings(raw.get("categories"))
            if c not in CATEGORIES
        ]
        for template in templates:
            for category in template.get("categories") or ():
                if category not in CATEGORIES:
                    out.append(
                        f"policy template {template.get('name', '?')!r} uses unknown category {category!r}"
                    )
        return out

    # --- manifest sections ----------------------------------------------------------------------

    def _base_fields(
        self,
        raw: dict[str, Any],
        name: str,
        title: str | None,
        version: str,
        release: str,
        description: str,
        pkg_type: str,
        download: str,
        url: str,
        icons: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Members 1-11, shared by the /search entry and the package document."""
        doc: dict[str, Any] = {"name": name}
        put(doc, "title", title, OMIT_NULL)
        doc["version"] = version
        put(doc, "release", release)
        source = obj(raw.get("source"), "source")
        if source is not None:
            doc["source"] = {}
            put(doc["source"], "license", text(source.get("license"), "source.license"))
        doc["description"] = description
        doc["type"] = pkg_type
        doc["download"] = download
        doc["path"] = url
        put(doc, "icons", icons)
        put(
            doc,
            "policy_templates_behavior",
            text(raw.get("policy_templates_behavior"), "policy_templates_behavior"),
        )
        return doc

    def _shared_fields(
        self,
        raw: dict[str, Any],
        conditions: dict[str, Any] | None,
        categories: list[str],
        signature_url: str,
        discovery: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """``conditions`` to ``discovery``: the same in both shapes, only their neighbours differ."""
        doc: dict[str, Any] = {}
        put(doc, "conditions", conditions, OMIT_NULL)
        owner = obj(raw.get("owner"), "owner")
        if owner is not None:
            doc["owner"] = {}
            for key in ("type", "github"):
                put(doc["owner"], key, text(owner.get(key), f"owner.{key}"))
        put(doc, "categories", categories)
        put(doc, "signature_path", signature_url + ".sig" if signature_url else "")
        put(doc, "discovery", discovery or None, OMIT_NULL)
        return doc

    def _constraint(self, conditions: dict[str, Any] | None, key: str, label: str) -> Constraint | None:
        section = (conditions or {}).get(key)
        if section is None:
            return None
        try:
            given = section["version"]
            # (Memoised: most versions of a package, and many packages, share their constraints.)
            return parse_constraint(given) if isinstance(given, str) else Constraint.parse(given)
        except VersionError as err:
            raise ManifestError(f"invalid {label} versions range {section['version']}: {err}") from None

    # --- assets -------------------------------------------------------------------------------

    def _assets(self, url: str, name: str) -> list[str]:
        assets = []
        for group in _depth_groups(self.listing):
            for entry in group:
                if ".DS_Store" in entry.path:
                    continue
                if entry.is_dir:
                    if "-" in entry.path.rsplit("/", 1)[-1]:
                        raise ManifestError(f"directory name inside package {name} contains -: {entry.path}")
                    continue
                assets.append(f"{url}/{entry.path}")
        return assets


def _depth_groups(listing: Listing) -> list[list[Any]]:
    """Entries by depth, stopping at the first depth with no entry (as the reference's globbing does)."""
    groups = listing.by_depth()
    out = []
    for group in groups:
        if not group:
            break
        out.append(group)
    return out


def _default_release(version: semver.Version) -> str:
    if version.prerelease or version.major == 0:
        return "beta"
    return "ga"


def encode_members(members: dict[str, Any]) -> bytes:
    """Encode the members of a top-level object, indented, without braces."""
    if not members:
        return b""
    body = gojson.encode(members)
    return body[2:-2]  # strip "{\n" and "\n}"


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def inflate(part: bytes) -> bytes:
    """A document half as encoded: compressed (a zstd frame starts with ``(\xb5/\xfd``) or kept plain.

    Encoded members start with spaces, so the two never mix up. Heads are kept plain, and so
    are both halves of packages from a storage index: compressing every document would double
    the index's load time.
    """
    return zstandard.decompress(part) if part[:4] == _ZSTD_MAGIC else part


def render_document(package: Package, deprecated: dict[str, Any] | None) -> bytes:
    """The /package/{n}/{v}/ body for ``package`` with the effective ``deprecated`` block."""
    parts = [inflate(package.doc_head)]
    if deprecated is not None:
        parts.append(encode_members({"deprecated": deprecated}))
    tail = inflate(package.doc_tail)
    if tail:
        parts.append(tail)
    return b"{\n" + b",\n".join(p for p in parts if p) + b"\n}\n"


def render_entry(
    package: Package, deprecated: dict[str, Any] | None, templates: list[Any] | None = None
) -> bytes:
    """The /search entry for ``package``, optionally with trimmed policy templates."""
    base, summaries, middle, last = package.entry_parts
    if templates is not None:
        summaries = encode_members({"policy_templates": templates}) if templates else b""
    parts = [base, summaries, middle]
    if deprecated is not None:
        parts.append(encode_members({"deprecated": deprecated}))
    parts.append(last)
    return b"{\n" + b",\n".join(p for p in parts if p) + b"\n}"


def template_summaries(package: Package) -> list[dict[str, Any]]:
    """The policy templates of the /search entry, as data."""
    encoded = package.entry_parts[1]
    return orjson.loads(b"{" + encoded + b"}")["policy_templates"] if encoded else []
