"""The reference shapes of proxy mode: eprd's own documents go through them unchanged."""

from __future__ import annotations

import orjson
import pytest

from eprd.indexers.local.collection import Collection
from eprd.indexers.proxy import shapes
from eprd.model import gojson
from eprd.model.package import LoadOptions
from tests.conftest import default_paths, snapshot_of


@pytest.fixture(scope="module")
def items() -> list:
    collection = Collection(tuple(str(p) for p in default_paths()), LoadOptions(validate=True))
    collection.load_all()
    return list(snapshot_of(collection).packages.values())


def test_search_entries_round_trip(items: list) -> None:
    """Every /search entry eprd writes, decoded and rendered again, is byte for byte the same."""
    assert len(items) > 10
    for item in items:
        assert gojson.encode(shapes.render(orjson.loads(item.entry), shapes.SEARCH_ENTRY)) == item.entry


def test_package_documents_round_trip(items: list) -> None:
    for item in items:
        document = item.document
        assert gojson.dumps(shapes.render(orjson.loads(document), shapes.PACKAGE_DOCUMENT)) == document


def test_unknown_keys_dropped_and_rules_applied() -> None:
    rendered = shapes.render(
        {
            "version": "1.0.0",
            "name": "x",
            "extra": 1,
            "release": "",
            "discovery": {"fields": []},
            "conditions": {"elastic": {}, "kibana": None},
            "icons": [{"src": "/i.svg", "size": "", "bogus": True}],
            "vars": [{"name": "v", "type": "bool", "default": False, "options": [1]}],
        },
        shapes.PACKAGE_DOCUMENT,
    )
    assert list(rendered) == [
        "name", "version", "description", "type", "download", "path", "icons", "conditions",
        "format_version", "vars",
    ]  # fmt: skip
    assert rendered["icons"] == [{"src": "/i.svg", "path": ""}]
    assert rendered["conditions"] == {"elastic": {"subscription": ""}}
    assert rendered["vars"] == [
        {"name": "v", "type": "bool", "multi": False, "required": False, "show_user": False, "default": False}
    ]
