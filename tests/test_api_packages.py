"""Package documents, static files, artifacts and signatures (spec §2, §4.6-§4.9), over real HTTP.

Bodies are checked against the real files under ``testdata/`` and archives are opened with
``zipfile`` / ``tarfile``.
"""

from __future__ import annotations

import email.utils
import gzip
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from eprd.config import CacheTimes
from eprd.indexers.local.archives import TAR_GZ, ArchiveStore
from eprd.indexers.local.indexer import load_snapshot
from eprd.model.package import LoadOptions
from tests.conftest import TESTDATA, default_paths
from tests.httpcheck import NO_CACHE, Reply, fetch, go_json

PACKAGES = TESTDATA / "packages"
ZIPS = TESTDATA / "zips"
WIDGET = PACKAGES / "widget_metrics" / "1.0.0"
PROBE_ZIP = ZIPS / "zipped_probe-1.0.0.zip"
PROBE_ZIP_NO_DIRS = ZIPS / "zipped_probe-1.1.0.zip"
ZIP_STAMP = "Fri, 17 May 2024 10:30:00 GMT"  # every entry of the test zips (DOS time read as UTC)

# Distinct values so every endpoint's cache time is recognisable.
TIMES = CacheTimes(index=11, search=22, categories=33, catch_all=44)
INDEX_CACHE = ["max-age=11", "public"]
CATCH_ALL = ["max-age=44", "public"]


# --- helpers --------------------------------------------------------------------------------------


def ordered(value: Any) -> Any:
    """JSON value with every object turned into a list of pairs, so == also compares key order."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def assert_last_modified(reply: Reply, path: Path) -> None:
    """Last-Modified is the file's mtime (its exact rounding is checked on its own, below)."""
    served = email.utils.parsedate_to_datetime(reply.headers["Last-Modified"]).timestamp()
    assert abs(served - path.stat().st_mtime) < 1


def assert_error(reply: Reply, status: int, message: str, cache: list[str]) -> None:
    assert reply.status == status
    assert reply.body == message.encode() + b"\n"
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.cache == cache
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


def tree(root: Path) -> list[tuple[str, bool]]:
    """(relative path, is folder) of everything under ``root``: depth first, names in byte order."""
    out: list[tuple[str, bool]] = []

    def visit(folder: Path, prefix: str) -> None:
        for child in sorted(folder.iterdir(), key=lambda p: p.name.encode()):
            rel = prefix + child.name
            out.append((rel, child.is_dir()))
            if child.is_dir():
                visit(child, rel + "/")

    visit(root, "")
    return out


def files_of(root: Path) -> dict[str, bytes]:
    return {rel: (root / rel).read_bytes() for rel, is_dir in tree(root) if not is_dir}


def zip_files(path: Path | bytes, top: str) -> dict[str, bytes]:
    """The files of a zip package, relative to its ``top`` folder."""
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    with zipfile.ZipFile(source) as archive:
        return {
            info.filename[len(top) + 1 :]: archive.read(info)
            for info in archive.infolist()
            if not info.is_dir()
        }


# --- the package document (§2.8, §4.6) ------------------------------------------------------------

WIDGET_URL = "/package/widget_metrics/1.0.0"
WIDGET_DOCUMENT: dict[str, Any] = {
    "name": "widget_metrics",
    "title": "Widget Metrics",
    "version": "1.0.0",
    "release": "ga",
    "source": {"license": "Apache-2.0"},
    "description": "Collect CPU & event metrics from <Widget> appliances.",
    "type": "integration",
    "download": "/epr/widget_metrics/widget_metrics-1.0.0.zip",
    "path": WIDGET_URL,
    "icons": [
        {
            "src": "/img/widget.svg",
            "path": f"{WIDGET_URL}/img/widget.svg",
            "title": "Widget logo",
            "size": "32x32",
            "type": "image/svg+xml",
        },
        {
            "src": "img/widget.png",
            "path": f"{WIDGET_URL}/img/widget.png",
            "title": "Widget logo (bitmap)",
            "size": "1x1",
            "type": "image/png",
        },
    ],
    "policy_templates_behavior": "all",
    "conditions": {
        "kibana": {"version": "^8.11.0"},
        "elastic": {"subscription": "platinum", "capabilities": ["observability"]},
        "agent": {"version": "^8.11.0"},
    },
    "owner": {"type": "partner", "github": "acme/widgets"},
    "categories": ["observability", "monitoring"],
    "signature_path": "/epr/widget_metrics/widget_metrics-1.0.0.zip.sig",
    "discovery": {"datasets": [{"name": "widget.cpu"}]},
    "requires": {"input": [{"package": "edge_probe", "version": "^1.0.0"}]},
    "group": "appliances",
    "format_version": "3.0.2",
    "readme": f"{WIDGET_URL}/docs/README.md",
    "license": "platinum",  # no manifest `license`: the subscription
    "screenshots": [
        {
            "src": "/img/screenshot.png",
            "path": f"{WIDGET_URL}/img/screenshot.png",
            "title": "Widget dashboard",
            "size": "1x1",
            "type": "image/png",
        }
    ],
    "assets": [
        # breadth first by depth; within a depth, depth-first walk order in byte order
        f"{WIDGET_URL}/changelog.yml",
        f"{WIDGET_URL}/manifest.yml",
        f"{WIDGET_URL}/docs/README.md",
        f"{WIDGET_URL}/docs/host.md",
        f"{WIDGET_URL}/img/screenshot.png",
        f"{WIDGET_URL}/img/widget.png",
        f"{WIDGET_URL}/img/widget.svg",
        f"{WIDGET_URL}/data_stream/cpu/manifest.yml",
        f"{WIDGET_URL}/data_stream/events/manifest.yml",
        f"{WIDGET_URL}/data_stream/cpu/fields/base-fields.yml",
        f"{WIDGET_URL}/data_stream/events/fields/base-fields.yml",
        f"{WIDGET_URL}/data_stream/cpu/agent/stream/stream.yml.hbs",
        f"{WIDGET_URL}/data_stream/events/agent/stream/httpjson.yml.hbs",
        f"{WIDGET_URL}/data_stream/events/elasticsearch/ingest_pipeline/default.yml",
    ],
    "policy_templates": [
        {
            "name": "host",
            "title": "Widget host metrics",
            "description": "Collect host metrics from Widget appliances.",
            "data_streams": ["cpu"],
            "inputs": [
                {
                    "type": "system/metrics",
                    "vars": [
                        {
                            "name": "hosts",
                            "type": "text",
                            "title": "Hosts",
                            "multi": True,
                            "required": True,
                            "show_user": True,
                            "default": ["localhost:9100"],
                        }
                    ],
                    "title": "Collect host metrics",
                    "description": "Polls the Widget host metrics.",
                    "input_group": "metrics",
                }
            ],
            "multiple": True,
            # `src: ../img/widget.svg`: the path is joined and cleaned.
            "icons": [
                {
                    "src": "../img/widget.svg",
                    "path": "/package/widget_metrics/img/widget.svg",
                    "title": "Host icon",
                }
            ],
            "categories": ["monitoring"],
            "readme": f"{WIDGET_URL}/docs/host.md",
            "deployment_modes": {
                "default": {"enabled": True},
                "agentless": {"enabled": True, "is_default": False, "release": "beta"},
            },
        },
        {
            "name": "events",
            "title": "Widget events",
            "description": "Collect events from Widget appliances.",
            "data_streams": ["events"],
            "inputs": [
                {
                    "type": "httpjson",
                    "title": "Collect events through the API",
                    "description": "Calls the Widget events API.",
                    "deployment_modes": ["default", "agentless"],
                }
            ],
            "multiple": False,
        },
    ],
    "data_streams": [
        {
            "type": "metrics",
            "dataset": "widget.cpu",
            "ilm_policy": "metrics-widget.cpu-default",
            "title": "Widget CPU",
            "release": "beta",
            "streams": [
                {
                    "input": "system/metrics",
                    "vars": [
                        {
                            "name": "period",
                            "type": "text",
                            "title": "Period",
                            "multi": False,
                            "required": False,
                            "show_user": False,
                            "default": "10s",
                        }
                    ],
                    "template_path": "stream.yml.hbs",
                    "title": "CPU usage",
                    "description": "CPU usage of the Widget host.",
                    "enabled": True,
                    "ingestion_method": "File",
                }
            ],
            "package": "widget_metrics",
            "elasticsearch": {
                "index_template.settings": {"index": {"codec": "best_compression", "number_of_shards": 1}},
                "index_template.mappings": {
                    "dynamic": False,
                    "properties": {
                        "host": {"name": {"type": "keyword"}},
                        "widget": {"cpu": {"pct": {"scaling_factor": 1000, "type": "scaled_float"}}},
                    },
                },
            },
            "path": "cpu",
        },
        {
            "type": "logs",
            "dataset": "widget_metrics.events",
            "title": "Widget events",
            "release": "ga",
            "ingest_pipeline": "default",
            "streams": [
                {
                    "input": "httpjson",
                    "template_path": "httpjson.yml.hbs",
                    "title": "Widget event API",
                    "description": "Events from the Widget API.",
                    "enabled": False,
                    "ingestion_method": "API",
                }
            ],
            "package": "widget_metrics",
            "elasticsearch": {
                "ingest_pipeline.name": "default",
                "privileges": {"indices": ["auto_configure", "create_doc"]},
            },
            "path": "events",
        },
    ],
    "vars": [
        {
            "name": "endpoint",
            "type": "url",
            "title": "Endpoint",
            "description": "Base URL of the Widget API.",
            "multi": False,
            "required": True,
            "show_user": True,
            "default": "http://localhost:9100",
        },
        {
            "name": "period",
            "type": "integer",
            "title": "Period",
            "multi": False,
            "required": False,
            "show_user": False,
            "default": 10,
        },
        {
            "name": "ratio",
            "type": "float",
            "multi": False,
            "required": False,
            "show_user": False,
            "default": 10,
        },
        {
            "name": "threshold",
            "type": "float",
            "multi": False,
            "required": False,
            "show_user": False,
            "default": 0.25,
        },
        {
            "name": "verbose",
            "type": "bool",
            "multi": False,
            "required": False,
            "show_user": True,
            "default": False,
        },
        {
            "name": "label",
            "type": "text",
            "multi": False,
            "required": False,
            "show_user": False,
            "default": "",
        },
        {
            "name": "tags",
            "type": "text",
            "multi": True,
            "required": False,
            "show_user": False,
            "default": ["alpha", "beta"],
        },
        {
            "name": "labels",
            "type": "yaml",
            "multi": False,
            "required": False,
            "show_user": False,
            "default": {"alpha": {"beta": "two"}, "zeta": 1},
        },
        {
            "name": "legacy_token",
            "type": "password",
            "multi": False,
            "required": False,
            "show_user": False,
            "deprecated": {
                "since": "1.0.0",
                "description": "Use endpoint credentials instead.",
                "replaced_by": {"variable": "endpoint"},
            },
        },
    ],
    "elasticsearch": {"privileges": {"cluster": ["monitor"]}},
    "agent": {"privileges": {"root": True}},
}


async def test_full_document_with_key_order(serve, http):
    _, base = await serve(cache_time=TIMES)
    reply = await fetch(http, base, "/package/widget_metrics/1.0.0/")
    assert reply.status == 200
    assert ordered(reply.json) == ordered(WIDGET_DOCUMENT)
    assert reply.body == go_json(WIDGET_DOCUMENT)
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.cache == INDEX_CACHE  # cache_time.index, not catch_all
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "Last-Modified" not in reply.headers


async def test_float_default_with_integral_value_is_printed_without_fraction(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/package/widget_metrics/1.0.0/")
    assert b'"name": "ratio",' in reply.body
    assert b'      "default": 10\n' in reply.body
    assert b'      "default": 0.25\n' in reply.body
    assert b'"default": 10.0' not in reply.body


async def test_deprecated_sits_between_discovery_and_format_version(serve, http):
    _, base = await serve()
    doc = (await fetch(http, base, "/package/old_gadget/1.0.0/")).json
    # 1.0.0 declares nothing: the block comes from 2.0.0, the highest deprecated version.
    assert list(doc) == [
        "name",
        "title",
        "version",
        "release",
        "description",
        "type",
        "download",
        "path",
        "categories",
        "deprecated",
        "format_version",
        "readme",
        "license",
        "assets",
    ]
    assert doc["deprecated"] == {
        "since": "2.0.0",
        "description": "Old Gadget is no longer maintained, use Widget Metrics.",
        "replaced_by": {"package": "widget_metrics"},
    }
    assert doc["format_version"] == "2.10.1"
    assert doc["license"] == "basic"
    assert doc["assets"] == [
        "/package/old_gadget/1.0.0/manifest.yml",
        "/package/old_gadget/1.0.0/docs/README.md",
    ]


async def test_input_package_document(serve, http):
    _, base = await serve()
    doc = (await fetch(http, base, "/package/edge_probe/1.0.0/")).json
    assert doc["type"] == "input"
    assert doc["release"] == "beta"
    assert doc["conditions"] == {
        "kibana": {"version": "~8.13.0 || >=9.0.0"},
        "agent": {"version": ">=8.13.0"},
    }
    assert doc["discovery"] == {
        "fields": [{"name": "process.pid"}],
        "datasets": [{"name": "edge_probe.events"}],
    }
    # The template's own vars are never shown; input: httpjson maps to the API ingestion method.
    assert ordered(doc["policy_templates"]) == ordered(
        [
            {
                "name": "probe",
                "title": "Edge probe events",
                "description": "Poll Edge probes for events.",
                "multiple": True,
                "categories": ["monitoring"],
                "type": "logs",
                "input": "httpjson",
                "ingestion_method": "API",
                "template_path": "input.yml.hbs",
            }
        ]
    )
    assert "data_streams" not in doc and "vars" not in doc


async def test_content_package_document(serve, http):
    _, base = await serve()
    doc = (await fetch(http, base, "/package/kit_dashboards/1.0.0/")).json
    assert doc["type"] == "content"
    assert doc["conditions"] == {
        "kibana": {"version": ">=8.12.0-SNAPSHOT"},
        "elastic": {"subscription": "basic", "capabilities": ["observability", "security"]},
    }
    assert doc["owner"] == {"type": "community", "github": "acme/kit"}
    assert doc["assets"] == [
        "/package/kit_dashboards/1.0.0/manifest.yml",
        "/package/kit_dashboards/1.0.0/docs/README.md",
        "/package/kit_dashboards/1.0.0/kibana/dashboard/kit_dashboards-overview.json",
    ]
    assert "policy_templates" not in doc and "data_streams" not in doc


async def test_default_ingest_pipeline_without_elasticsearch_block(serve, http):
    _, base = await serve()
    doc = (await fetch(http, base, "/package/acme_logs/1.10.0/")).json
    (stream,) = doc["data_streams"]
    assert stream["ingest_pipeline"] == "default"
    assert "elasticsearch" not in stream
    assert stream["dataset"] == "acme_logs.access"
    assert stream["streams"][0]["vars"][0]["default"] == ["/var/log/acme/access.log"]
    assert stream["streams"][0]["ingestion_method"] == "File"
    # 0.9.0 has no pipeline file: no ingest_pipeline at all.
    (older,) = (await fetch(http, base, "/package/acme_logs/0.9.0/")).json["data_streams"]
    assert "ingest_pipeline" not in older


async def test_prerelease_and_experimental_versions_are_served(serve, http):
    _, base = await serve()
    rc = await fetch(http, base, "/package/acme_logs/2.0.0-rc1/")
    assert rc.status == 200 and rc.json["version"] == "2.0.0-rc1" and rc.json["release"] == "beta"
    lab = await fetch(http, base, "/package/lab_tracer/1.0.0/")
    assert lab.status == 200 and lab.json["release"] == "experimental"
    assert lab.json["data_streams"][0]["type"] == "traces"


# The assets of testdata's zipped_probe versions, in archive order within each depth:
# manifest.yml was written before changelog.yml, beta_ds before alpha_ds.
ZIPPED_PROBE_ASSETS = [
    "manifest.yml",
    "changelog.yml",
    "docs/README.md",
    "img/probe.svg",
    "data_stream/beta_ds/manifest.yml",
    "data_stream/alpha_ds/manifest.yml",
    "data_stream/beta_ds/fields/base-fields.yml",
    "data_stream/alpha_ds/fields/base-fields.yml",
]


async def test_zip_package_document_uses_archive_order(serve, http):
    _, base = await serve()
    url = "/package/zipped_probe/1.0.0"
    doc = (await fetch(http, base, url + "/")).json
    assert doc["assets"] == [f"{url}/{asset}" for asset in ZIPPED_PROBE_ASSETS]
    assert [d["path"] for d in doc["data_streams"]] == ["beta_ds", "alpha_ds"]
    assert [d["dataset"] for d in doc["data_streams"]] == ["zipped_probe.beta_ds", "zipped_probe.alpha_ds"]
    assert doc["signature_path"] == "/epr/zipped_probe/zipped_probe-1.0.0.zip.sig"
    assert doc["download"] == "/epr/zipped_probe/zipped_probe-1.0.0.zip"
    assert doc["icons"] == [
        {"src": "/img/probe.svg", "path": f"{url}/img/probe.svg", "title": "Probe", "type": "image/svg+xml"}
    ]


async def test_zip_without_directory_entries(serve, http):
    _, base = await serve()
    url = "/package/zipped_probe/1.1.0"
    doc = (await fetch(http, base, url + "/")).json
    assert doc["assets"] == [f"{url}/{asset}" for asset in ZIPPED_PROBE_ASSETS]
    assert [d["path"] for d in doc["data_streams"]] == ["beta_ds", "alpha_ds"]
    assert "signature_path" not in doc
    assert doc["conditions"] == {"kibana": {"version": "^8.0.0"}}


async def test_signature_path_only_when_a_signature_file_exists(serve, http):
    _, base = await serve()
    signed = {
        "/package/widget_metrics/1.0.0/": "/epr/widget_metrics/widget_metrics-1.0.0.zip.sig",
        "/package/zipped_probe/1.0.0/": "/epr/zipped_probe/zipped_probe-1.0.0.zip.sig",
        "/package/zipped_probe/1.1.0/": None,
        "/package/acme_logs/1.2.0/": None,
        "/package/dual_source/1.0.0/": None,
    }
    for path, expected in signed.items():
        assert (await fetch(http, base, path)).json.get("signature_path") == expected, path


async def test_assets_skip_ds_store_files(serve, http, tmp_path):
    root = tmp_path / "pkgs"
    shutil.copytree(PACKAGES / "old_gadget" / "1.0.0", root / "old_gadget" / "1.0.0")
    (root / "old_gadget" / "1.0.0" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "old_gadget" / "1.0.0" / "docs" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    _, base = await serve([root])
    doc = (await fetch(http, base, "/package/old_gadget/1.0.0/")).json
    assert doc["assets"] == [
        "/package/old_gadget/1.0.0/manifest.yml",
        "/package/old_gadget/1.0.0/docs/README.md",
    ]
    # ... but the download holds every file.
    body = (await fetch(http, base, "/epr/old_gadget/old_gadget-1.0.0.zip")).body
    assert set(zip_files(body, "old_gadget-1.0.0")) == {
        ".DS_Store",
        "docs/.DS_Store",
        "docs/README.md",
        "manifest.yml",
    }


async def test_zip_wins_over_folder_and_first_path_wins_among_folders(serve, http):
    _, base = await serve()
    dual = (await fetch(http, base, "/package/dual_source/1.0.0/")).json
    assert dual["title"] == "Dual Source (zip copy)"
    assert dual["deprecated"]["replaced_by"] == {"package": "zipped_probe"}
    folder_only = (await fetch(http, base, "/package/dual_source/0.5.0/")).json
    assert folder_only["title"] == "Dual Source (folder copy)"
    assert "deprecated" not in folder_only
    overrides = TESTDATA / "packages_overrides"
    _, first = await serve([overrides, PACKAGES, ZIPS])
    assert (await fetch(http, first, "/package/acme_logs/1.2.0/")).json[
        "title"
    ] == "Acme Logs (override copy)"
    _, last = await serve([PACKAGES, overrides, ZIPS])
    assert (await fetch(http, last, "/package/acme_logs/1.2.0/")).json["title"] == "Acme Logs"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/package/missing/1.0.0/", 404, "package revision not found"),
        ("/package/acme_logs/9.9.9/", 404, "package revision not found"),
        ("/package/acme_logs/1.2.0+build5/", 404, "package revision not found"),  # exact string lookup
        ("/package/acme_logs/a.b.c/", 400, "invalid package version"),
        ("/package/acme_logs/1.2/", 400, "invalid package version"),
        ("/package/acme_logs/01.2.0/", 400, "invalid package version"),
        ("/package/acme_logs/v1.2.0/", 400, "invalid package version"),
    ],
)
async def test_document_errors(serve, http, path, status, message):
    _, base = await serve(cache_time=TIMES)
    assert_error(await fetch(http, base, path), status, message, NO_CACHE)


async def test_document_without_trailing_slash_redirects(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/package/acme_logs/1.2.0")
    assert reply.status == 301
    assert reply.headers["Location"] == "/package/acme_logs/1.2.0/"
    assert reply.body == b'<a href="/package/acme_logs/1.2.0/">Moved Permanently</a>.\n\n'
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    # The redirect comes before version validation.
    reply = await fetch(http, base, "/package/acme_logs/a.b.c")
    assert reply.status == 301 and reply.headers["Location"] == "/package/acme_logs/a.b.c/"


# --- static files (§4.7) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "content_type"),
    [
        ("docs/README.md", "text/markdown; charset=utf-8"),
        ("manifest.yml", "text/yaml; charset=UTF-8"),
        ("img/widget.png", "image/png"),
        ("img/widget.svg", "image/svg+xml"),
        ("data_stream/cpu/agent/stream/stream.yml.hbs", "text/plain; charset=utf-8"),  # sniffed
        ("data_stream/events/elasticsearch/ingest_pipeline/default.yml", "text/yaml; charset=UTF-8"),
    ],
)
async def test_static_file_from_folder(serve, http, rel, content_type):
    _, base = await serve(cache_time=TIMES)
    reply = await fetch(http, base, f"/package/widget_metrics/1.0.0/{rel}")
    assert reply.status == 200
    assert reply.body == (WIDGET / rel).read_bytes()
    assert reply.headers["Content-Type"] == content_type
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert_last_modified(reply, WIDGET / rel)
    assert reply.headers["Accept-Ranges"] == "bytes"
    assert reply.cache == CATCH_ALL
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


async def test_static_json_file(serve, http):
    _, base = await serve()
    rel = "kibana/dashboard/kit_dashboards-overview.json"
    reply = await fetch(http, base, f"/package/kit_dashboards/1.0.0/{rel}")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body == (PACKAGES / "kit_dashboards" / "1.0.0" / rel).read_bytes()


@pytest.mark.parametrize(
    ("rel", "content_type"),
    [
        ("docs/README.md", "text/markdown; charset=utf-8"),
        ("manifest.yml", "text/yaml; charset=UTF-8"),
        ("img/probe.svg", "image/svg+xml"),
        ("data_stream/alpha_ds/fields/base-fields.yml", "text/yaml; charset=UTF-8"),
    ],
)
async def test_static_file_from_zip(serve, http, rel, content_type):
    _, base = await serve(cache_time=TIMES)
    reply = await fetch(http, base, f"/package/zipped_probe/1.0.0/{rel}")
    assert reply.status == 200
    assert reply.body == zip_files(PROBE_ZIP, "zipped_probe-1.0.0")[rel]
    assert reply.headers["Content-Type"] == content_type
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert reply.headers["Last-Modified"] == ZIP_STAMP
    assert reply.headers["Accept-Ranges"] == "bytes"
    assert reply.cache == CATCH_ALL


async def test_static_file_of_the_winning_copy(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/package/dual_source/1.0.0/docs/README.md")
    assert reply.body == b"# Dual Source 1.0.0\n\nZip copy.\n"
    reply = await fetch(http, base, "/package/dual_source/0.5.0/docs/README.md")
    assert reply.body == (PACKAGES / "dual_source" / "0.5.0" / "docs" / "README.md").read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/package/widget_metrics/1.0.0/docs/README.md", "/package/zipped_probe/1.0.0/docs/README.md"],
)
async def test_if_modified_since(serve, http, path):
    _, base = await serve(cache_time=TIMES)
    last_modified = (await fetch(http, base, path)).headers["Last-Modified"]
    reply = await fetch(http, base, path, {"If-Modified-Since": last_modified})
    assert reply.status == 304
    assert reply.body == b""
    assert reply.headers["Last-Modified"] == last_modified
    assert reply.cache == CATCH_ALL
    later = await fetch(http, base, path, {"If-Modified-Since": "Thu, 01 Jan 2099 00:00:00 GMT"})
    assert later.status == 304
    earlier = await fetch(http, base, path, {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert earlier.status == 200 and earlier.body


@pytest.mark.parametrize(
    "path",
    ["/package/widget_metrics/1.0.0/docs/README.md", "/package/zipped_probe/1.0.0/docs/README.md"],
)
async def test_other_preconditions(serve, http, path):
    _, base = await serve()
    full = await fetch(http, base, path)
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await fetch(http, base, path, {"If-Unmodified-Since": old})).status == 412
    assert (
        await fetch(http, base, path, {"If-Unmodified-Since": full.headers["Last-Modified"]})
    ).status == 200
    # No ETag of the reference can match, but `*` matches any existing resource.
    assert (await fetch(http, base, path, {"If-None-Match": "*"})).status == 304
    other = await fetch(http, base, path, {"If-None-Match": '"not-this-one"'})
    assert other.status == 200 and other.body == full.body
    # If-Range with a date the file no longer has: the whole file instead of the range.
    stale = await fetch(http, base, path, {"Range": "bytes=0-3", "If-Range": old})
    assert stale.status == 200 and stale.body == full.body
    fresh = await fetch(http, base, path, {"Range": "bytes=0-3", "If-Range": full.headers["Last-Modified"]})
    assert fresh.status == 206 and fresh.body == full.body[:4]


async def test_last_modified_is_the_mtime_truncated_to_the_second(serve, http, tmp_path):
    root = tmp_path / "pkgs"
    shutil.copytree(WIDGET, root / "widget_metrics" / "1.0.0")
    readme = root / "widget_metrics" / "1.0.0" / "docs" / "README.md"
    stamp = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
    os.utime(readme, ns=(stamp * 10**9 + 600_000_000, stamp * 10**9 + 600_000_000))
    _, base = await serve([root])
    path = "/package/widget_metrics/1.0.0/docs/README.md"
    reply = await fetch(http, base, path)
    assert reply.headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    # The comparison is done at second granularity: the file is not newer than 22:13:20.
    unchanged = await fetch(http, base, path, {"If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"})
    assert unchanged.status == 304
    changed = await fetch(http, base, path, {"If-Modified-Since": "Tue, 14 Nov 2023 22:13:19 GMT"})
    assert changed.status == 200


@pytest.mark.parametrize(
    "path",
    ["/package/widget_metrics/1.0.0/docs/README.md", "/package/zipped_probe/1.0.0/docs/README.md"],
)
async def test_not_modified_response_drops_content_headers(serve, http, path):
    _, base = await serve()
    last_modified = (await fetch(http, base, path)).headers["Last-Modified"]
    reply = await fetch(http, base, path, {"If-Modified-Since": last_modified})
    assert reply.status == 304
    assert "Content-Type" not in reply.headers
    assert reply.headers.get("Content-Length", "0") == "0"


@pytest.mark.parametrize(
    ("path", "full"),
    [
        ("/package/widget_metrics/1.0.0/docs/README.md", (WIDGET / "docs" / "README.md").read_bytes()),
        (
            "/package/zipped_probe/1.0.0/docs/README.md",
            zip_files(PROBE_ZIP, "zipped_probe-1.0.0")["docs/README.md"],
        ),
    ],
)
async def test_range_requests(serve, http, path, full):
    _, base = await serve(cache_time=TIMES)
    reply = await fetch(http, base, path, {"Range": "bytes=2-9"})
    assert reply.status == 206
    assert reply.body == full[2:10]
    assert reply.headers["Content-Range"] == f"bytes 2-9/{len(full)}"
    assert reply.headers["Content-Length"] == "8"
    assert reply.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert reply.cache == CATCH_ALL
    suffix = await fetch(http, base, path, {"Range": "bytes=-5"})
    assert suffix.status == 206 and suffix.body == full[-5:]
    assert suffix.headers["Content-Range"] == f"bytes {len(full) - 5}-{len(full) - 1}/{len(full)}"
    unsatisfiable = await fetch(http, base, path, {"Range": f"bytes={len(full) + 100}-"})
    assert unsatisfiable.status == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(full)}"


@pytest.mark.parametrize(
    "path",
    ["/package/widget_metrics/1.0.0/docs/README.md", "/package/zipped_probe/1.0.0/docs/README.md"],
)
async def test_unsatisfiable_range_drops_cache_headers(serve, http, path):
    _, base = await serve()
    reply = await fetch(http, base, path, {"Range": "bytes=100000-"})
    assert reply.status == 416
    assert "Cache-Control" not in reply.headers
    assert "Last-Modified" not in reply.headers


@pytest.mark.parametrize(
    ("path", "full"),
    [
        ("/package/widget_metrics/1.0.0/manifest.yml", (WIDGET / "manifest.yml").read_bytes()),
        (
            "/package/zipped_probe/1.0.0/manifest.yml",
            zip_files(PROBE_ZIP, "zipped_probe-1.0.0")["manifest.yml"],
        ),
    ],
)
async def test_multiple_ranges_are_multipart(serve, http, path, full):
    _, base = await serve()
    reply = await fetch(http, base, path, {"Range": "bytes=0-3,10-13"})
    assert reply.status == 206
    assert reply.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert f"Content-Range: bytes 0-3/{len(full)}".encode() in reply.body
    assert f"Content-Range: bytes 10-13/{len(full)}".encode() in reply.body
    assert full[0:4] in reply.body and full[10:14] in reply.body


@pytest.mark.parametrize(
    "path",
    [
        "/package/widget_metrics/1.0.0/docs/missing.md",
        "/package/widget_metrics/1.0.0/docs",  # a folder is not a file
        "/package/widget_metrics/1.0.0/img/widget.PNG",
        "/package/zipped_probe/1.0.0/missing.txt",
        "/package/zipped_probe/1.0.0/docs",  # folder entry of the archive
        "/package/zipped_probe/1.1.0/docs",  # implicit folder of an archive without folder entries
        "/package/zipped_probe/1.1.0/zipped_probe-1.1.0/manifest.yml",  # names are relative to the root
    ],
)
async def test_missing_file_is_404_with_public_cache_headers(serve, http, path):
    _, base = await serve(cache_time=TIMES)
    assert_error(await fetch(http, base, path), 404, "resource not found", CATCH_ALL)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/package/no_such_package/1.0.0/docs/README.md", 404, "package revision not found"),
        ("/package/widget_metrics/9.0.0/docs/README.md", 404, "package revision not found"),
        ("/package/Widget_Metrics/1.0.0/docs/README.md", 404, "package revision not found"),
        ("/package/widget_metrics/1.0/docs/README.md", 400, "invalid package version"),
        ("/package/widget_metrics/latest/docs/README.md", 400, "invalid package version"),
    ],
)
async def test_static_file_errors_before_the_package_is_found(serve, http, path, status, message):
    _, base = await serve(cache_time=TIMES)
    assert_error(await fetch(http, base, path), status, message, NO_CACHE)


async def test_static_file_path_is_percent_decoded(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/package/widget_metrics/1.0.0/docs/%52EADME.md")
    assert reply.status == 200
    assert reply.body == (WIDGET / "docs" / "README.md").read_bytes()


# --- artifacts (§4.8) -----------------------------------------------------------------------------


async def test_folder_package_download_is_a_zip_of_the_folder(serve, http):
    _, base = await serve(cache_time=TIMES)
    reply = await fetch(http, base, "/epr/widget_metrics/widget_metrics-1.0.0.zip")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/zip"
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert reply.cache == CATCH_ALL
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        infos = archive.infolist()
        # Depth-first walk in byte order, folders as their own entries, no entry for the root.
        expected = [f"widget_metrics-1.0.0/{rel}" + ("/" if is_dir else "") for rel, is_dir in tree(WIDGET)]
        assert [i.filename for i in infos] == expected
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos if not i.is_dir())
        assert archive.testzip() is None
    assert zip_files(reply.body, "widget_metrics-1.0.0") == files_of(WIDGET)


async def test_download_ignores_the_first_path_segment(serve, http):
    _, base = await serve()
    named = await fetch(http, base, "/epr/widget_metrics/widget_metrics-1.0.0.zip")
    other = await fetch(http, base, "/epr/something_else/widget_metrics-1.0.0.zip")
    assert other.status == 200
    assert zip_files(other.body, "widget_metrics-1.0.0") == zip_files(named.body, "widget_metrics-1.0.0")


async def test_prerelease_version_splits_at_the_first_dash(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/epr/acme_logs/acme_logs-2.0.0-rc1.zip")
    assert reply.status == 200
    files = zip_files(reply.body, "acme_logs-2.0.0-rc1")
    assert files == files_of(PACKAGES / "acme_logs" / "2.0.0-rc1")


@pytest.mark.parametrize("zip_path", [PROBE_ZIP, PROBE_ZIP_NO_DIRS, ZIPS / "dual_source-1.0.0.zip"])
async def test_zip_package_download_is_the_file_itself(serve, http, zip_path):
    _, base = await serve(cache_time=TIMES)
    name = zip_path.name.partition("-")[0]
    reply = await fetch(http, base, f"/epr/{name}/{zip_path.name}")
    assert reply.status == 200
    assert reply.body == zip_path.read_bytes()
    assert reply.headers["Content-Type"] == "application/zip"
    assert reply.headers["Content-Length"] == str(zip_path.stat().st_size)
    assert_last_modified(reply, zip_path)
    assert reply.headers["Accept-Ranges"] == "bytes"
    assert reply.cache == CATCH_ALL


async def test_zip_package_download_supports_ranges_and_conditions(serve, http):
    _, base = await serve()
    full = PROBE_ZIP.read_bytes()
    reply = await fetch(http, base, "/epr/x/zipped_probe-1.0.0.zip", {"Range": "bytes=0-3"})
    assert reply.status == 206
    assert reply.body == full[:4] == b"PK\x03\x04"
    assert reply.headers["Content-Range"] == f"bytes 0-3/{len(full)}"
    tail = await fetch(http, base, "/epr/x/zipped_probe-1.0.0.zip", {"Range": "bytes=-22"})
    assert tail.status == 206 and tail.body == full[-22:]
    unchanged = await fetch(
        http, base, "/epr/x/zipped_probe-1.0.0.zip", {"If-Modified-Since": tail.headers["Last-Modified"]}
    )
    assert unchanged.status == 304 and unchanged.body == b""


async def test_tar_gz_of_a_folder_package(serve, http):
    _, base = await serve(cache_time=TIMES)
    reply = await fetch(http, base, "/epr/anything/widget_metrics-1.0.0.tar.gz")
    assert reply.status == 200
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert reply.headers["Content-Type"] == "application/gzip"
    assert reply.cache == CATCH_ALL
    gzip.decompress(reply.body)  # a real gzip stream
    with tarfile.open(fileobj=io.BytesIO(reply.body), mode="r:gz") as archive:
        members = archive.getmembers()
        assert all(m.name.startswith("widget_metrics-1.0.0/") for m in members)
        folders = {m.name.removeprefix("widget_metrics-1.0.0/") for m in members if m.isdir()}
        assert folders == {rel for rel, is_dir in tree(WIDGET) if is_dir}
        files = {
            m.name.removeprefix("widget_metrics-1.0.0/"): archive.extractfile(m).read()
            for m in members
            if m.isfile()
        }
    assert files == files_of(WIDGET)


async def test_tar_gz_of_a_zip_package(serve, http):
    _, base = await serve()
    for zip_path, top in ((PROBE_ZIP, "zipped_probe-1.0.0"), (PROBE_ZIP_NO_DIRS, "zipped_probe-1.1.0")):
        reply = await fetch(http, base, f"/epr/zipped_probe/{top}.tar.gz")
        assert reply.status == 200
        with tarfile.open(fileobj=io.BytesIO(reply.body), mode="r:gz") as archive:
            members = archive.getmembers()
            assert all(m.name.startswith(f"{top}/") for m in members)
            files = {
                m.name.removeprefix(f"{top}/"): archive.extractfile(m).read() for m in members if m.isfile()
            }
        assert files == zip_files(zip_path, top)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/epr/widget_metrics/widget_metrics-9.9.9.zip", 404, "artifact not found"),
        ("/epr/missing/missing-1.0.0.zip", 404, "artifact not found"),
        ("/epr/acme_logs/acme_logs-1.2.0+build.zip", 404, "artifact not found"),
        ("/epr/widget_metrics/widget_metrics-9.9.9.tar.gz", 404, "artifact not found"),
        ("/epr/widget_metrics/widget_metrics-a.b.c.zip", 400, "invalid package version"),
        ("/epr/widget_metrics/widget_metrics-1.0.zip", 400, "invalid package version"),
        ("/epr/widget_metrics/widget_metrics-1.0.0.zip.zip", 400, "invalid package version"),
        ("/epr/widget_metrics/widget_metrics-1.0.tar.gz", 400, "invalid package version"),
    ],
)
async def test_artifact_errors(serve, http, path, status, message):
    _, base = await serve(cache_time=TIMES)
    assert_error(await fetch(http, base, path), status, message, NO_CACHE)


# --- signatures (§4.9) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "sig"),
    [
        ("/epr/widget_metrics/widget_metrics-1.0.0.zip.sig", PACKAGES / "widget_metrics" / "1.0.0.sig"),
        ("/epr/ignored/zipped_probe-1.0.0.zip.sig", ZIPS / "zipped_probe-1.0.0.zip.sig"),
    ],
)
async def test_signature(serve, http, path, sig):
    _, base = await serve(cache_time=TIMES)
    reply = await fetch(http, base, path)
    assert reply.status == 200
    assert reply.body == sig.read_bytes()
    assert reply.body.startswith(b"-----BEGIN PGP SIGNATURE-----\n")
    assert reply.headers["Content-Type"] in ("application/pgp-signature", "text/plain; charset=utf-8")
    assert_last_modified(reply, sig)
    assert reply.cache == CATCH_ALL
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    partial = await fetch(http, base, path, {"Range": "bytes=5-9"})
    assert partial.status == 206 and partial.body == sig.read_bytes()[5:10]


@pytest.mark.parametrize(
    ("path", "status", "message", "cache"),
    [
        ("/epr/missing/missing-1.0.0.zip.sig", 404, "signature file not found", NO_CACHE),
        ("/epr/widget_metrics/widget_metrics-2.0.0.zip.sig", 404, "signature file not found", NO_CACHE),
        ("/epr/widget_metrics/widget_metrics-1.0.zip.sig", 400, "invalid package version", NO_CACHE),
        # The package exists but is not signed (only possible without required signatures).
        ("/epr/acme_logs/acme_logs-1.2.0.zip.sig", 500, "internal server error", CATCH_ALL),
        ("/epr/zipped_probe/zipped_probe-1.1.0.zip.sig", 500, "internal server error", CATCH_ALL),
    ],
)
async def test_signature_errors(serve, http, path, status, message, cache):
    _, base = await serve(cache_time=TIMES, require_signature=False)
    assert_error(await fetch(http, base, path), status, message, cache)


async def test_archive_cache_evicts_the_least_recently_used_beyond_its_size(tmp_path):
    snapshot = load_snapshot([str(p) for p in default_paths()], LoadOptions(require_signature=False))
    folder_packages = [i.package for i in snapshot.packages.values() if i.package.files.kind == "dir"]
    store = ArchiveStore(str(tmp_path / "archives"), max_bytes=1)
    first = await store.get(folder_packages[0], TAR_GZ)
    os.utime(first, (1_000_000, 1_000_000))  # long ago: no download can be about to open it
    second = await store.get(folder_packages[1], TAR_GZ)
    assert os.path.exists(second)  # the one just built is kept
    assert not os.path.exists(first)
