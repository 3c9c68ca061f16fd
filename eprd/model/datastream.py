"""Loading and validating the data streams of a package (``data_stream/*/manifest.yml``)."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from eprd.model import yamlfile
from eprd.model.files import PackageFiles
from eprd.model.gofmt import go_string
from eprd.model.ingestion import ingestion_method
from eprd.model.listing import Listing
from eprd.model.manifest import (
    OMIT_NULL,
    VALID_RELEASES,
    ManifestError,
    agent_doc,
    deprecated_doc,
    flag,
    free_form,
    obj,
    objects,
    put,
    required,
    text,
    texts,
    variables_doc,
)

VALID_TYPES = ("logs", "metrics", "synthetics", "traces")
DEFAULT_PIPELINES = ("default.json", "default.yml")
REQUIRED_FIELDS = (
    ("data_stream.type", "constant_keyword"),
    ("data_stream.dataset", "constant_keyword"),
    ("data_stream.namespace", "constant_keyword"),
    ("@timestamp", "date"),
)


class DataStreamError(ValueError):
    """A data stream that makes its package invalid."""


def data_stream_dirs(listing: Listing) -> list[str]:
    """Folders under ``data_stream/`` that hold a manifest, in walk order."""
    found = []
    for path, is_dir in listing.entries:
        # (Slices first: splitting every path of the package cost more than the rest of this loop.)
        if path[:12] == "data_stream/" and path[-13:] == "/manifest.yml" and not is_dir:
            folder = path[12:-13]
            if folder and "/" not in folder:
                found.append(folder)
    return found


def stream_doc(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """A stream of a data stream or an input, with the reference's defaults."""
    doc: dict[str, Any] = {}
    input_type = text(raw.get("input"), f"{where}.input")
    put(doc, "input", input_type)
    put(doc, "package", text(raw.get("package"), f"{where}.package"))
    put(doc, "vars", variables_doc(raw.get("vars"), f"{where}.vars"))
    put(doc, "data_stream", text(raw.get("data_stream"), f"{where}.data_stream"))
    put(doc, "template_path", text(raw.get("template_path"), f"{where}.template_path") or "stream.yml.hbs")
    put(doc, "title", text(raw.get("title"), f"{where}.title"))
    put(doc, "description", text(raw.get("description"), f"{where}.description"))
    enabled = flag(raw.get("enabled"), f"{where}.enabled")
    doc["enabled"] = True if enabled is None else enabled
    put(doc, "ingestion_method", ingestion_method(input_type) or text(raw.get("ingestion_method"), where))
    return doc


@dataclass(frozen=True, slots=True)
class _Built:
    """A data stream built from one manifest, and what its validation needs from the manifest."""

    doc: dict[str, Any]
    ds_type: str
    dataset: str  # as in the manifest (the document's may be the default)
    pipeline: str  # as in the manifest
    streams: list[dict[str, Any]]


# Data streams built, by what they are built from (the manifest's content, the folder, the
# package's name and release, the pipeline files): consecutive versions of a package mostly
# carry the same data streams. Shared and read-only, like yamlfile's documents. Only what built
# without an error is kept, so a hit raises only what validation raises, as a build would.
_BUILT: OrderedDict[tuple[Any, ...], _Built] = OrderedDict()
_BUILT_SIZE = 1024


def load_data_stream(
    files: PackageFiles, listing: Listing, folder: str, package: dict[str, str], validate: bool
) -> dict[str, Any]:
    """The full data stream object of ``data_stream/<folder>``; raises DataStreamError."""
    base = f"data_stream/{folder}"
    try:
        body = files.read_listed(f"{base}/manifest.yml")
        pipelines = tuple(e.path for e in listing.children(f"{base}/elasticsearch/ingest_pipeline"))
        key = (
            body,
            folder,
            package["name"],
            package["release"],
            pipelines,
        )
        built = _BUILT.get(key)
        if built is None:
            raw = obj(yamlfile.load_config(body), "") or {}
            built = _build(files, listing, base, folder, raw, package, validate, pipelines)
            _BUILT[key] = built
            if len(_BUILT) > _BUILT_SIZE:
                _BUILT.popitem(last=False)
        elif validate:
            _validate(files, listing, base, built.ds_type, built.dataset, built.pipeline, built.streams)
        return built.doc
    except (ManifestError, yamlfile.YAMLError, OSError) as err:
        raise DataStreamError(f"building data stream failed (path: {base}): {err}") from None


def _build(
    files: PackageFiles,
    listing: Listing,
    base: str,
    folder: str,
    raw: dict[str, Any],
    package: dict[str, str],
    validate: bool,
    pipelines: tuple[str, ...],
) -> _Built:
    ds_type = required(raw.get("type"), "type")
    title = required(raw.get("title"), "title")
    raw_dataset = dataset = text(raw.get("dataset"), "dataset")
    raw_pipeline = pipeline = text(raw.get("ingest_pipeline"), "ingest_pipeline")
    streams = [stream_doc(s, f"streams.{i}") for i, s in enumerate(objects(raw.get("streams"), "streams"))]
    if validate:
        _validate(files, listing, base, ds_type, dataset, pipeline, streams)

    dataset = dataset or f"{package['name']}.{folder}"
    release = text(raw.get("release"), "release") or package["release"]
    if release not in VALID_RELEASES:
        raise ManifestError(f"invalid release: {json.dumps(release)}")

    es_raw = obj(raw.get("elasticsearch"), "elasticsearch")
    es_doc = _elasticsearch_doc(es_raw) if es_raw is not None else None
    has_default = any(p.rsplit("/", 1)[-1] in DEFAULT_PIPELINES for p in pipelines)
    if es_doc is not None and not es_doc.get("ingest_pipeline.name"):
        if has_default:
            es_doc = _insert_pipeline_name(es_doc)
            pipeline = "default"
    elif not pipeline and has_default:
        pipeline = "default"
    if not pipeline and pipelines:
        raise ManifestError(f"unused pipelines in the package (dataset: {dataset}): {','.join(pipelines)}")

    doc: dict[str, Any] = {"type": ds_type}
    put(doc, "dataset", dataset)
    put(doc, "hidden", flag(raw.get("hidden"), "hidden"))
    put(doc, "ilm_policy", text(raw.get("ilm_policy"), "ilm_policy"))
    put(doc, "dataset_is_prefix", flag(raw.get("dataset_is_prefix"), "dataset_is_prefix"))
    doc["title"] = title
    put(doc, "release", release)
    put(doc, "ingest_pipeline", pipeline)
    put(doc, "streams", streams)
    put(doc, "package", package["name"])
    put(doc, "elasticsearch", es_doc, OMIT_NULL)
    put(doc, "agent", agent_doc(raw.get("agent")), OMIT_NULL)
    put(doc, "path", folder)
    put(doc, "deprecated", deprecated_doc(raw.get("deprecated"), "deprecated"), OMIT_NULL)
    return _Built(doc, ds_type, raw_dataset, raw_pipeline, streams)


def _elasticsearch_doc(raw: dict[str, Any]) -> dict[str, Any]:
    template = obj(raw.get("index_template"), "elasticsearch.index_template") or {}
    doc: dict[str, Any] = {}
    for key in ("settings", "mappings"):
        value = obj(template.get(key), f"elasticsearch.index_template.{key}")
        put(doc, f"index_template.{key}", free_form(value) if value else None)
    pipeline = obj(raw.get("ingest_pipeline"), "elasticsearch.ingest_pipeline") or {}
    put(doc, "ingest_pipeline.name", text(pipeline.get("name"), "elasticsearch.ingest_pipeline.name"))
    privileges = obj(raw.get("privileges"), "elasticsearch.privileges")
    if privileges is not None:
        doc["privileges"] = {}
        put(
            doc["privileges"], "indices", texts(privileges.get("indices"), "elasticsearch.privileges.indices")
        )
    return doc


def _insert_pipeline_name(es_doc: dict[str, Any]) -> dict[str, Any]:
    """Set ``ingest_pipeline.name`` to ``default`` at its place in the struct order."""
    order = ("index_template.settings", "index_template.mappings", "ingest_pipeline.name", "privileges")
    merged = {**es_doc, "ingest_pipeline.name": "default"}
    return {key: merged[key] for key in order if key in merged}


# --- validation (skipped with -disable-package-validation) -----------------------------------


def _validate(
    files: PackageFiles,
    listing: Listing,
    base: str,
    ds_type: str,
    dataset: str,
    pipeline: str,
    streams: list[dict[str, Any]],
) -> None:
    if "-" in dataset:
        raise ManifestError(f"data stream name is not allowed to contain `-`: {dataset}")
    if ds_type not in VALID_TYPES:
        raise ManifestError(f"type is not valid: {ds_type}")
    if pipeline:
        _validate_pipeline(files, listing, base, pipeline)
    _validate_required_fields(files, listing, base)
    for stream in streams:
        has_input, has_package = bool(stream.get("input")), bool(stream.get("package"))
        if has_input == has_package:
            but = ", but not both" if has_input else ""
            raise ManifestError(f"stream {stream.get('title', '')} must have a input or package{but}")


def _validate_pipeline(files: PackageFiles, listing: Listing, base: str, pipeline: str) -> None:
    folder = f"{base}/elasticsearch/ingest_pipeline"
    found = False
    for ext in (".json", ".yml"):
        path = f"{folder}/{pipeline}{ext}"
        if not listing.is_file(path) and not listing.is_dir(path):
            continue
        try:
            body = files.read_listed(path)
            value = json.loads(body) if ext == ".json" else yamlfile.load(body)
        except (OSError, ValueError) as err:
            raise ManifestError(f"validating ingest pipeline file failed (path: {path}): {err}") from None
        if value is not None and not isinstance(value, dict):
            raise ManifestError(f"validating ingest pipeline file failed (path: {path}): not an object")
        found = True
    if not found:
        raise ManifestError(f"defined ingest_pipeline does not exist: {folder}{pipeline}")


# Outcomes of required-fields checks by the fields files' paths, sizes and hashes: consecutive
# versions of a package mostly carry the very same files, and the check flattens every field of
# every file. Python's hash of the bytes (salted per process, kept on the object and shared with
# yamlfile's memo) rather than the bytes themselves: this memo must not keep whole files alive.
_CHECKED: dict[tuple[tuple[str, int, int], ...], str | None] = {}
_CHECKED_SIZE = 4096


def _validate_required_fields(files: PackageFiles, listing: Listing, base: str) -> None:
    contents: list[tuple[str, bytes | None]] = []
    for entry in listing.children(f"{base}/fields"):
        try:
            body = None if entry.is_dir else files.read_listed(entry.path)
        except OSError as err:
            raise ManifestError(
                f"validating required fields failed: reading file failed (path: {entry.path}): {err}"
            ) from None
        contents.append((entry.path, body))
    key = tuple((path, -1, 0) if body is None else (path, len(body), hash(body)) for path, body in contents)
    if key not in _CHECKED:
        if len(_CHECKED) >= _CHECKED_SIZE:
            _CHECKED.clear()
        _CHECKED[key] = _required_fields_problem(contents)
    if _CHECKED[key]:
        raise ManifestError(f"validating required fields failed: {_CHECKED[key]}")


def _required_fields_problem(contents: list[tuple[str, bytes | None]]) -> str | None:
    """What is wrong with the required fields in these fields files (None: nothing)."""
    fields: list[dict[str, Any]] = []
    for path, body in contents:
        try:
            data = yamlfile.load(body) if body is not None else 0
        except yamlfile.YAMLError as err:
            return f"reading file failed (path: {path}): {err}"
        if data is None:
            continue
        if not isinstance(data, list) or not all(f is None or isinstance(f, dict) for f in data):
            return f"unmarshaling file failed (path: {path}): not a list of fields"
        fields.extend(_flatten(f or {}) for f in data)
    try:
        for name, wanted in REQUIRED_FIELDS:
            found = _find_field(fields, name)
            if found is None:
                found = _find_nested_field(fields, name)
            if found != wanted:
                return f"wrong field type for '{name}' (expected: {wanted}, got: {found})"
    except ManifestError as err:
        return str(err)
    return None


def _flatten(entry: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _find_field(fields: list[dict[str, Any]], name: str) -> str | None:
    """The type of the first field definition called ``name`` (None if there is none)."""
    for field in fields:
        if "name" not in field:
            raise ManifestError(f"finding field failed (searchedName: {name}): cannot get value (key: name)")
        if field["name"] != name:
            continue
        field_type = field.get("type")
        if not field_type:
            raise ManifestError(
                f"finding field failed (searchedName: {name}): field '{name}' found, but type is undefined"
            )
        return str(field_type)
    return None


def _find_nested_field(fields: list[dict[str, Any]], name: str) -> str:
    """Look ``a.b`` up as a field ``b`` inside the ``fields`` of a group ``a``."""
    *groups, last = name.split(".")
    current = fields
    for group in groups:
        for field in current:
            if "name" not in field:
                raise ManifestError(
                    f"finding field failed (searchedName: {name}): cannot get value (key: name)"
                )
            if field["name"] == group:
                children = field.get("fields")
                if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
                    raise ManifestError(
                        f"finding field failed (searchedName: {name}): fields was not []MapStr"
                    )
                current = [{str(k): _go_text(v) for k, v in c.items()} for c in children]
                break
        else:
            raise ManifestError(f"finding field failed (searchedName: {name}): field '{group}' not found")
    found = _find_field(current, last)
    if found is None:
        raise ManifestError(f"finding field failed (searchedName: {name}): field '{last}' not found")
    return found


def _go_text(value: Any) -> str:
    return value if isinstance(value, str) else go_string(value)


def data_stream_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The projection of a data stream that ``/search`` shows."""
    summary: dict[str, Any] = {}
    put(summary, "type", doc["type"])
    summary["dataset"] = doc.get("dataset", "")
    summary["title"] = doc["title"]
    put(summary, "deprecated", doc.get("deprecated"), OMIT_NULL)
    return summary
