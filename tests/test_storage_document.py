"""Packages rebuilt from their /package/{n}/{v}/ documents equal the packages loaded from folders."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from eprd.indexers.local.indexer import load_snapshot
from eprd.model.document import package_from_document
from eprd.model.package import LoadOptions, PackageError, render_document, render_entry
from tests import pkgfactory as pf
from tests.conftest import TESTDATA

COMPARED = (
    "name",
    "version",
    "key",
    "prerelease",
    "major",
    "release",
    "type",
    "categories",
    "template_categories",
    "capabilities",
    "discovery_fields",
    "discovery_datasets",
    "spec",
    "deprecated",
    "entry_parts",
)


def floats_package(root: Path) -> Path:
    variables = [
        {"name": "ratio", "type": "float", "default": 1.5},
        {"name": "whole", "type": "float", "default": 10.0},
        {"name": "tiny", "type": "float", "default": 1e-7},
        {"name": "nested", "type": "yaml", "default": {"b": [0.25, 2.0], "a": 3}},
    ]
    stream = {"input": "logfile", "vars": variables, "title": "Logs", "description": "Logs"}
    data_stream = {
        "streams": [stream],
        "elasticsearch": {"index_template": {"settings": {"index.refresh": 0.5, "shards": 1.0}}},
    }
    pf.write_dir(root, "floaty", "1.0.0", manifest={"vars": variables}, data_streams={"log": data_stream})
    return root


def test_documents_rebuild_the_same_packages(tmp_path: Path) -> None:
    paths = [str(TESTDATA / "packages"), str(TESTDATA / "zips"), str(floats_package(tmp_path / "floats"))]
    snapshot = load_snapshot(paths, LoadOptions())
    assert not snapshot.rejected
    assert ("floaty", "1.0.0") in snapshot.packages
    for item in snapshot.packages.values():
        package = item.package
        document = render_document(package, package.deprecated)
        rebuilt = package_from_document(orjson.loads(document), "index#0")
        for name in COMPARED:
            assert getattr(rebuilt, name) == getattr(package, name), (package.name, package.version, name)
        assert (rebuilt.kibana is None) == (package.kibana is None)
        assert render_document(rebuilt, rebuilt.deprecated) == document
        assert render_entry(rebuilt, item.deprecated) == item.entry
        assert rebuilt.files is None and rebuilt.signature is None
    floaty = render_document(snapshot.packages[("floaty", "1.0.0")].package, None)
    assert b'"default": 10\n' in floaty and b"1e-7" in floaty and b'"shards": 1' in floaty


@pytest.mark.parametrize(
    "doc, reason",
    [
        ([], "not a JSON object"),
        ({"name": "x"}, "no name or version"),
        ({"name": "x", "version": "1.0"}, "invalid package version"),
        ({"name": "x", "version": "1.0.0", "policy_templates": 3}, "invalid package document"),
        ({"name": "x", "version": "1.0.0", "conditions": {"kibana": {"version": ""}}}, "versions range"),
        ({"name": "x", "version": "1.0.0", "format_version": "one"}, "invalid package document"),
    ],
)
def test_unusable_documents_are_refused_with_a_reason(doc: object, reason: str) -> None:
    with pytest.raises(PackageError) as caught:
        package_from_document(doc, "index#3")
    assert reason in caught.value.reason and caught.value.location.startswith("index#3")
