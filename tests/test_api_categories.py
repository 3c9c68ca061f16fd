"""``/categories`` against eprd's own test packages (spec §4.5, §5.10), over real HTTP."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TESTDATA
from tests.httpcheck import assert_bad_request, fetch, go_json

# --- helpers --------------------------------------------------------------------------------------


async def categories(http: aiohttp.ClientSession, base: str, query: str = "") -> list[dict[str, Any]]:
    reply = await fetch(http, base, "/categories" + (f"?{query}" if query else ""))
    assert reply.status == 200, reply.body
    return reply.json


def counts(docs: list[dict[str, Any]]) -> dict[str, int]:
    return {d["id"]: d["count"] for d in docs}


def only(tmp_path: Path, *folders: str) -> Path:
    """A package path holding copies of some of the testdata folder packages."""
    root = tmp_path / "pkgs"
    for name in folders:
        shutil.copytree(TESTDATA / "packages" / name, root / name)
    return root


def write_package(root: Path, name: str, version: str, extra: str) -> None:
    folder = root / name / version
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "README.md").write_text(f"# {name}\n")
    (folder / "manifest.yml").write_text(
        f"format_version: 3.0.0\nname: {name}\ntitle: {name}\nversion: {version}\n"
        f"description: The {name} test package.\n{extra}"
    )


def web(count: int) -> dict[str, Any]:
    return {
        "id": "web",
        "title": "Web Server",
        "count": count,
        "parent_id": "observability",
        "parent_title": "Observability",
    }


def monitoring(count: int) -> dict[str, Any]:
    return {
        "id": "monitoring",
        "title": "Monitoring",
        "count": count,
        "parent_id": "observability",
        "parent_title": "Observability",
    }


# Latest versions: acme_logs 1.10.0 [security, monitoring], beta_sensor 0.3.0 [infrastructure],
# dual_source 1.0.0 (zip) [network], edge_probe [custom], kit_dashboards [observability],
# old_gadget 2.0.0 [productivity], portal_guard [web] (kiosks dropped), widget_metrics
# [observability, monitoring], zipped_probe 1.1.0 [network, security].
DEFAULT = [
    {"id": "custom", "title": "Custom", "count": 1},
    {"id": "infrastructure", "title": "Infrastructure", "count": 1},
    monitoring(2),
    {"id": "network", "title": "Network", "count": 2},
    {"id": "observability", "title": "Observability", "count": 2},
    {"id": "productivity", "title": "Productivity", "count": 1},
    {"id": "security", "title": "Security", "count": 2},
    web(1),
]


# --- the default answer ---------------------------------------------------------------------------


async def test_default_categories(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/categories")
    assert reply.status == 200
    assert reply.json == DEFAULT
    assert [list(d) for d in reply.json] == [list(d) for d in DEFAULT]  # key order
    assert reply.body == go_json(DEFAULT)
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers.getall("Cache-Control") == ["max-age=600", "public"]
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "Last-Modified" not in reply.headers


async def test_counts_come_from_latest_versions_only(serve, http):
    _, base = await serve()
    by_id = counts(await categories(http, base))
    # acme_logs 0.9.0 is in `web`, but only its latest version 1.10.0 counts.
    assert by_id["web"] == 1
    # zipped_probe 1.0.0 and 1.1.0 are both in `network`: counted once.
    assert by_id["network"] == 2


async def test_parent_categories_are_not_synthesised(serve, http, tmp_path):
    _, base = await serve([only(tmp_path, "portal_guard")])
    reply = await fetch(http, base, "/categories")
    assert reply.json == [web(1)]
    assert reply.body == (
        b'[\n  {\n    "id": "web",\n    "title": "Web Server",\n    "count": 1,\n'
        b'    "parent_id": "observability",\n    "parent_title": "Observability"\n  }\n]\n'
    )


async def test_empty_categories_is_list_with_newline(serve, http):
    _, base = await serve()
    reply = await fetch(
        http,
        base,
        "/categories?prerelease=true&discovery=datasets:nginx.access&discovery=fields:process.path",
    )
    assert reply.status == 200
    assert reply.body == b"[]\n"
    assert reply.headers["Content-Type"] == "application/json"


async def test_no_packages_at_all_is_an_empty_list(serve, http, tmp_path):
    _, base = await serve([tmp_path / "nothing-here"])
    reply = await fetch(http, base, "/categories")
    assert reply.status == 200 and reply.body == b"[]\n"


# --- include_policy_templates (§5.10) -------------------------------------------------------------


async def test_include_policy_templates_counting_example(serve, http, tmp_path):
    # Package categories [web], templates [security] and [gizmos] -> web 3, security 2, gizmos 2.
    _, base = await serve([only(tmp_path, "portal_guard")])
    assert await categories(http, base, "include_policy_templates=true") == [
        {"id": "gizmos", "title": "gizmos", "count": 2},
        {"id": "security", "title": "Security", "count": 2},
        web(3),
    ]
    assert await categories(http, base, "include_policy_templates=false") == [web(1)]


async def test_include_policy_templates_single_template_without_categories_adds_nothing(
    serve, http, tmp_path
):
    _, base = await serve([only(tmp_path, "acme_logs")])
    plain = await categories(http, base)
    assert plain == [monitoring(1), {"id": "security", "title": "Security", "count": 1}]
    assert await categories(http, base, "include_policy_templates=true") == plain


async def test_include_policy_templates_is_subcategory_aware_for_extras(serve, http, tmp_path):
    # widget_metrics [observability, monitoring]: template `host` [monitoring] (already a package
    # category: no extra), template `events` without categories.
    _, base = await serve([only(tmp_path, "widget_metrics")])
    assert counts(await categories(http, base, "include_policy_templates=true")) == {
        "monitoring": 4,
        "observability": 3,
    }
    # A template category that is the parent of a package category is not an extra either.
    root = tmp_path / "parent"
    write_package(
        root,
        "parent_pkg",
        "1.0.0",
        "categories: [web]\npolicy_templates:\n  - name: one\n    title: One\n    description: One.\n"
        "    categories: [observability]\n",
    )
    _, base = await serve([root])
    assert await categories(http, base, "include_policy_templates=true") == [
        {"id": "observability", "title": "Observability", "count": 1},
        web(2),
    ]


async def test_include_policy_templates_on_all_test_packages(serve, http):
    _, base = await serve()
    # edge_probe: custom +1, monitoring +2 (extra); portal_guard: web +2, security +2, gizmos +2;
    # widget_metrics: observability +2, monitoring +3; one-template packages without categories
    # (acme_logs, zipped_probe) and packages without templates add nothing.
    assert await categories(http, base, "include_policy_templates=1") == [
        {"id": "custom", "title": "Custom", "count": 2},
        {"id": "gizmos", "title": "gizmos", "count": 2},
        {"id": "infrastructure", "title": "Infrastructure", "count": 1},
        monitoring(7),
        {"id": "network", "title": "Network", "count": 2},
        {"id": "observability", "title": "Observability", "count": 4},
        {"id": "productivity", "title": "Productivity", "count": 1},
        {"id": "security", "title": "Security", "count": 4},
        web(3),
    ]


async def test_include_policy_templates_errors(serve, http):
    _, base = await serve()
    assert_bad_request(
        await fetch(http, base, "/categories?include_policy_templates=foo"),
        "invalid 'include_policy_templates' query param: 'foo'",
    )
    # Validated after every other parameter.
    assert_bad_request(
        await fetch(http, base, "/categories?include_policy_templates=foo&prerelease=bar"),
        "invalid 'prerelease' query param: 'bar'",
    )
    assert await categories(http, base, "include_policy_templates=") == DEFAULT


# --- the filters shared with /search --------------------------------------------------------------


async def test_prerelease_and_experimental(serve, http):
    _, base = await serve()
    application = {
        "id": "application_observability",
        "title": "Application",
        "count": 1,
        "parent_id": "observability",
        "parent_title": "Observability",
    }
    # lab_tracer (experimental) joins; acme_logs 2.0.0-rc1 and beta_sensor 0.4.0-beta1 have the
    # same categories as the versions they replace.
    assert await categories(http, base, "prerelease=true") == [application, *DEFAULT]
    assert await categories(http, base, "experimental=true") == [application, *DEFAULT]
    assert await categories(http, base, "experimental=true&capabilities=none") == [application, *DEFAULT]


async def test_kibana_and_agent_version(serve, http):
    _, base = await serve()
    # acme_logs 0.9.0 [web, security], zipped_probe 1.0.0 [network], and the packages without conditions.
    assert await categories(http, base, "kibana.version=7.17.0") == [
        {"id": "infrastructure", "title": "Infrastructure", "count": 1},
        {"id": "network", "title": "Network", "count": 2},
        {"id": "productivity", "title": "Productivity", "count": 1},
        {"id": "security", "title": "Security", "count": 1},
        web(2),
    ]
    # agent 8.10.0 excludes widget_metrics and edge_probe.
    assert counts(await categories(http, base, "agent.version=8.10.0")) == {
        "infrastructure": 1,
        "monitoring": 1,
        "network": 2,
        "observability": 1,
        "productivity": 1,
        "security": 2,
        "web": 1,
    }


async def test_capabilities_spec_and_discovery(serve, http):
    _, base = await serve()
    assert counts(await categories(http, base, "capabilities=none")) == {
        "custom": 1,
        "infrastructure": 1,
        "monitoring": 1,
        "network": 2,
        "productivity": 1,
        "security": 2,
        "web": 1,
    }
    # spec <= 2.10: acme_logs 1.2.0 [security], old_gadget 1.1.0, zipped_probe 1.1.0.
    assert counts(await categories(http, base, "spec.max=2.10")) == {
        "network": 1,
        "productivity": 1,
        "security": 2,
    }
    assert await categories(http, base, "discovery=fields:process.pid") == [
        {"id": "custom", "title": "Custom", "count": 1}
    ]
    assert counts(await categories(http, base, "discovery=datasets:nginx.access,widget.cpu")) == {
        "monitoring": 1,
        "observability": 2,
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("experimental=foo", "invalid 'experimental' query param: 'foo'"),
        ("prerelease=foo", "invalid 'prerelease' query param: 'foo'"),
        ("kibana.version=eight", "invalid Kibana version 'eight': invalid semantic version"),
        ("agent.version=eight", "invalid agent version 'eight': invalid semantic version"),
        (
            "spec.max=2.10.1&prerelease=true",
            "invalid 'spec.max' version: invalid version '2.10.1': it should be <major.version>",
        ),
        ("spec.min=x.y", "invalid 'spec.min' version: invalid spec version 'x.y': invalid semantic version"),
        ("discovery=", "invalid 'discovery' query param: '': could not parse filter \"\""),
        ("discovery=tags:a", "invalid 'discovery' query param: 'tags:a': unknown discovery filter \"tags\""),
    ],
)
async def test_invalid_parameters(serve, http, query, message):
    _, base = await serve()
    assert_bad_request(await fetch(http, base, f"/categories?{query}"), message)


async def test_search_only_parameters_are_not_recognised(serve, http):
    _, base = await serve()
    # category, package, type, all and internal mean nothing here: ignored, even with bad values.
    query = "category=web&package=acme_logs&type=input&all=notabool&internal=1&whatever=1"
    assert await categories(http, base, query) == DEFAULT
    assert await categories(http, base, "") == DEFAULT


@pytest.mark.parametrize("key", ["category", "package", "type", "all", "internal", "unknown"])
async def test_search_only_parameters_are_unknown_when_unknown_parameters_are_disallowed(serve, http, key):
    _, base = await serve(allow_unknown=False)
    assert_bad_request(await fetch(http, base, f"/categories?{key}=1"), f'unknown query parameter: "{key}"')


async def test_known_parameters_pass_when_unknown_parameters_are_disallowed(serve, http):
    _, base = await serve(allow_unknown=False)
    query = (
        "kibana.version=8.13.0&agent.version=8.13.0&prerelease=false&experimental=false"
        "&capabilities=observability,security&spec.min=1.0&spec.max=3.9"
        "&discovery=datasets:widget.cpu&include_policy_templates=false"
    )
    assert await categories(http, base, query) == [
        monitoring(1),
        {"id": "observability", "title": "Observability", "count": 1},
    ]


async def test_spec_filter_failure_is_404_with_bare_text(serve, http, tmp_path):
    folder = tmp_path / "no_spec" / "1.0.0"
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "README.md").write_text("# no spec\n")
    (folder / "manifest.yml").write_text(
        "name: no_spec\ntitle: No spec\nversion: 1.0.0\ndescription: Without format_version.\n"
    )
    _, base = await serve([tmp_path], validate=False)
    reply = await fetch(http, base, "/categories?spec.max=3.0")
    assert reply.status == 404
    text = reply.body.decode()
    assert text.startswith("can't compare spec version for no_spec (")
    assert text.endswith("): package spec version is not set\n")


async def test_categories_ignores_range_and_answers_if_none_match(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/categories", {"Range": "bytes=0-1"})
    assert reply.status == 200
    assert reply.json == DEFAULT
    assert "Last-Modified" not in reply.headers and "Content-Range" not in reply.headers
    again = await fetch(http, base, "/categories", {"If-None-Match": reply.headers["ETag"]})
    assert again.status == 304 and again.body == b""
