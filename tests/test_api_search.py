"""``/search`` against eprd's own test packages (spec §2.7, §3.3, §4.4, §5), over real HTTP.

The packages under ``testdata/`` and what each one exercises are listed in
``testdata/README.md``. Expected results below are derived from the spec by hand.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TESTDATA
from tests.httpcheck import Reply, assert_bad_request, fetch, go_json

# --- helpers --------------------------------------------------------------------------------------


def pairs(reply: Reply) -> list[tuple[str, str]]:
    assert reply.status == 200, reply.body
    return [(p["name"], p["version"]) for p in reply.json]


async def search(http: aiohttp.ClientSession, base: str, query: str = "") -> list[tuple[str, str]]:
    return pairs(await fetch(http, base, "/search" + (f"?{query}" if query else "")))


def write_package(
    root: Path, name: str, version: str, extra: str = "", format_version: str | None = "3.0.0"
) -> Path:
    """A minimal valid folder package ``root/name/version`` with ``extra`` manifest YAML appended."""
    folder = root / name / version
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "README.md").write_text(f"# {name} {version}\n")
    head = f"format_version: {format_version}\n" if format_version else ""
    (folder / "manifest.yml").write_text(
        f"{head}name: {name}\ntitle: {name} title\nversion: {version}\n"
        f"description: The {name} test package.\n{extra}"
    )
    return folder


# --- expected selections --------------------------------------------------------------------------

# Latest version per name, without prereleases and without release: experimental (lab_tracer).
DEFAULT = [
    ("acme_logs", "1.10.0"),
    ("beta_sensor", "0.3.0"),
    ("dual_source", "1.0.0"),
    ("edge_probe", "1.0.0"),
    ("kit_dashboards", "1.0.0"),
    ("old_gadget", "2.0.0"),
    ("portal_guard", "1.0.0"),
    ("widget_metrics", "1.0.0"),
    ("zipped_probe", "1.1.0"),
]
ALL = [
    ("acme_logs", "0.9.0"),
    ("acme_logs", "1.2.0"),
    ("acme_logs", "1.10.0"),
    ("beta_sensor", "0.3.0"),
    ("dual_source", "0.5.0"),
    ("dual_source", "1.0.0"),
    ("edge_probe", "1.0.0"),
    ("kit_dashboards", "1.0.0"),
    ("old_gadget", "1.0.0"),
    ("old_gadget", "1.1.0"),
    ("old_gadget", "2.0.0"),
    ("portal_guard", "1.0.0"),
    ("widget_metrics", "1.0.0"),
    ("zipped_probe", "1.0.0"),
    ("zipped_probe", "1.1.0"),
]
ALL_PRERELEASE = [
    ("acme_logs", "0.9.0"),
    ("acme_logs", "1.2.0"),
    ("acme_logs", "1.10.0"),
    ("acme_logs", "2.0.0-rc1"),
    ("beta_sensor", "0.3.0"),
    ("beta_sensor", "0.4.0-beta1"),
    ("dual_source", "0.5.0"),
    ("dual_source", "1.0.0"),
    ("edge_probe", "1.0.0"),
    ("kit_dashboards", "1.0.0"),
    ("lab_tracer", "1.0.0"),
    ("old_gadget", "1.0.0"),
    ("old_gadget", "1.1.0"),
    ("old_gadget", "2.0.0"),
    ("portal_guard", "1.0.0"),
    ("widget_metrics", "1.0.0"),
    ("zipped_probe", "1.0.0"),
    ("zipped_probe", "1.1.0"),
]
PRERELEASE = [
    ("acme_logs", "2.0.0-rc1"),
    ("beta_sensor", "0.4.0-beta1"),
    ("dual_source", "1.0.0"),
    ("edge_probe", "1.0.0"),
    ("kit_dashboards", "1.0.0"),
    ("lab_tracer", "1.0.0"),
    ("old_gadget", "2.0.0"),
    ("portal_guard", "1.0.0"),
    ("widget_metrics", "1.0.0"),
    ("zipped_probe", "1.1.0"),
]


def without(selection: list[tuple[str, str]], *names: str) -> list[tuple[str, str]]:
    return [p for p in selection if p[0] not in names]


# --- the test data itself -------------------------------------------------------------------------


def test_every_testdata_package_loads(make_registry):
    registry = make_registry()
    assert registry.snapshot.rejected == ()
    served = sorted(registry.snapshot.packages)
    assert served == sorted({*ALL_PRERELEASE})


# --- default selection, formatting, headers -------------------------------------------------------


async def test_default_search_is_latest_non_prerelease_non_experimental(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/search")
    assert pairs(reply) == DEFAULT
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers.getall("Cache-Control") == ["max-age=600", "public"]
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


async def test_search_body_layout_is_gos(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/search?all=true&prerelease=true")
    assert reply.body == go_json(reply.json)
    assert reply.body.startswith(b'[\n  {\n    "name": "acme_logs",\n    "title": "Acme Logs",\n')
    assert reply.body.endswith(b"\n  }\n]\n")
    # No HTML escaping of < > & (Go's encoder is configured not to).
    assert b"Collect CPU & event metrics from <Widget> appliances." in reply.body
    assert b"\\u003c" not in reply.body and b"\\u0026" not in reply.body


async def test_empty_search_is_two_bytes_without_newline(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/search?package=no_such_package")
    assert reply.status == 200
    assert reply.body == b"[]"
    assert reply.headers["Content-Type"] == "application/json"


async def test_search_ignores_range_and_dates_but_has_a_strong_etag(serve, http):
    # The reference ignores conditional and range headers on JSON endpoints; eprd (issue 4) adds
    # a strong ETag and answers If-None-Match with 304, and still ignores Range and dates.
    _, base = await serve()
    plain = await fetch(http, base, "/search")
    etag = plain.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    for headers in ({"Range": "bytes=0-3"}, {"If-Modified-Since": "Wed, 01 Jan 2070 00:00:00 GMT"}):
        reply = await fetch(http, base, "/search", headers)
        assert reply.status == 200, headers
        assert reply.body == plain.body
        assert "Last-Modified" not in reply.headers
        assert "Content-Range" not in reply.headers
        assert reply.headers["ETag"] == etag
    for match in (etag, "*", f'"other", {etag}'):
        reply = await fetch(http, base, "/search", {"If-None-Match": match})
        assert reply.status == 304, match
        assert reply.body == b""
        assert reply.headers["ETag"] == etag
        assert reply.headers.getall("Cache-Control") == ["max-age=600", "public"]
    reply = await fetch(http, base, "/search", {"If-None-Match": '"something-else"'})
    assert reply.status == 200 and reply.body == plain.body


async def test_search_is_gzipped_for_clients_that_accept_it(serve, http):
    _, base = await serve()
    plain = await fetch(http, base, "/search")
    reply = await fetch(http, base, "/search", {"Accept-Encoding": "gzip, deflate"})
    assert reply.status == 200
    assert reply.headers["Content-Encoding"] == "gzip"
    assert reply.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(reply.body) == plain.body
    assert reply.headers["ETag"] != plain.headers["ETag"]
    refused = await fetch(http, base, "/search", {"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers and refused.body == plain.body


async def test_search_entry_key_order(serve, http):
    _, base = await serve()
    (entry,) = (await fetch(http, base, "/search?package=widget_metrics")).json
    assert list(entry) == [
        "name",
        "title",
        "version",
        "release",
        "source",
        "description",
        "type",
        "download",
        "path",
        "icons",
        "policy_templates_behavior",
        "policy_templates",
        "conditions",
        "owner",
        "categories",
        "signature_path",
        "discovery",
        "data_streams",
        "requires",
        "group",
    ]
    assert [list(t) for t in entry["policy_templates"]] == [
        ["name", "title", "description", "icons", "categories", "deployment_modes", "data_streams"],
        ["name", "title", "description", "data_streams"],
    ]
    assert entry["data_streams"] == [
        {"type": "metrics", "dataset": "widget.cpu", "title": "Widget CPU"},
        {"type": "logs", "dataset": "widget_metrics.events", "title": "Widget events"},
    ]
    assert [list(d) for d in entry["data_streams"]] == [["type", "dataset", "title"]] * 2
    assert list(entry["conditions"]) == ["kibana", "elastic", "agent"]
    assert entry["conditions"] == {
        "kibana": {"version": "^8.11.0"},
        "elastic": {"subscription": "platinum", "capabilities": ["observability"]},
        "agent": {"version": "^8.11.0"},
    }
    assert entry["owner"] == {"type": "partner", "github": "acme/widgets"}
    assert entry["categories"] == ["observability", "monitoring"]
    assert entry["signature_path"] == "/epr/widget_metrics/widget_metrics-1.0.0.zip.sig"
    assert entry["download"] == "/epr/widget_metrics/widget_metrics-1.0.0.zip"
    assert entry["path"] == "/package/widget_metrics/1.0.0"
    assert entry["discovery"] == {"datasets": [{"name": "widget.cpu"}]}
    # The full document's members never leak into /search.
    for key in ("format_version", "readme", "license", "assets", "screenshots", "vars", "elasticsearch"):
        assert key not in entry


async def test_minimal_entry_omits_empty_members(serve, http):
    _, base = await serve()
    (entry,) = (await fetch(http, base, "/search?package=old_gadget")).json
    assert entry == {
        "name": "old_gadget",
        "title": "Old Gadget",
        "version": "2.0.0",
        "release": "ga",
        "description": "Inventory of old Gadget devices.",
        "type": "integration",
        "download": "/epr/old_gadget/old_gadget-2.0.0.zip",
        "path": "/package/old_gadget/2.0.0",
        "categories": ["productivity"],
        "deprecated": {
            "since": "2.0.0",
            "description": "Old Gadget is no longer maintained, use Widget Metrics.",
            "replaced_by": {"package": "widget_metrics"},
        },
    }
    assert list(entry) == [
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
    ]


async def test_release_defaults_and_explicit_values(serve, http):
    _, base = await serve()
    docs = (await fetch(http, base, "/search?all=true&prerelease=true")).json
    release = {(d["name"], d["version"]): d["release"] for d in docs}
    assert release[("acme_logs", "0.9.0")] == "beta"  # 0.x defaults to beta
    assert release[("acme_logs", "1.2.0")] == "ga"  # explicit
    assert release[("acme_logs", "1.10.0")] == "ga"  # default for >= 1.0.0
    assert release[("acme_logs", "2.0.0-rc1")] == "beta"  # prerelease tag defaults to beta
    assert release[("beta_sensor", "0.4.0-beta1")] == "beta"
    assert release[("edge_probe", "1.0.0")] == "beta"  # explicit beta on a 1.x version is kept
    assert release[("lab_tracer", "1.0.0")] == "experimental"


# --- all, prerelease, sort order ------------------------------------------------------------------


async def test_all_returns_every_non_prerelease_version_sorted_by_name_then_semver(serve, http):
    _, base = await serve()
    assert await search(http, base, "all=true") == ALL
    acme = [v for n, v in await search(http, base, "all=true") if n == "acme_logs"]
    assert acme == ["0.9.0", "1.2.0", "1.10.0"]  # semver, not string order


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
async def test_all_accepts_go_true_spellings(serve, http, value):
    _, base = await serve()
    assert await search(http, base, f"all={value}") == ALL


@pytest.mark.parametrize("value", ["0", "f", "F", "FALSE", "false", "False"])
async def test_all_accepts_go_false_spellings(serve, http, value):
    _, base = await serve()
    assert await search(http, base, f"all={value}") == DEFAULT


async def test_prerelease_includes_prerelease_versions_and_experimental_packages(serve, http):
    _, base = await serve()
    assert await search(http, base, "prerelease=true") == PRERELEASE
    assert await search(http, base, "prerelease=false") == DEFAULT


async def test_all_with_prerelease_sorts_prerelease_before_next_release(serve, http):
    _, base = await serve()
    result = await search(http, base, "all=true&prerelease=true")
    assert result == ALL_PRERELEASE
    assert [v for n, v in result if n == "acme_logs"] == ["0.9.0", "1.2.0", "1.10.0", "2.0.0-rc1"]
    assert [v for n, v in result if n == "beta_sensor"] == ["0.3.0", "0.4.0-beta1"]


async def test_zero_x_versions_are_not_prereleases(serve, http):
    _, base = await serve()
    assert ("beta_sensor", "0.3.0") in await search(http, base)
    assert await search(http, base, "package=acme_logs&kibana.version=7.17.0") == [("acme_logs", "0.9.0")]


# --- experimental (legacy mode, §5.8) -------------------------------------------------------------

LEGACY = [
    ("acme_logs", "1.10.0"),
    ("beta_sensor", "0.3.0"),
    ("dual_source", "1.0.0"),
    ("edge_probe", "1.0.0"),
    ("kit_dashboards", "1.0.0"),
    ("lab_tracer", "1.0.0"),
    ("old_gadget", "2.0.0"),
    ("portal_guard", "1.0.0"),
    ("widget_metrics", "1.0.0"),
    ("zipped_probe", "1.1.0"),
]


async def test_experimental_legacy_mode_prefers_releases_over_prereleases(serve, http):
    _, base = await serve()
    # lab_tracer (release: experimental) is included; acme_logs 1.10.0 beats 2.0.0-rc1 and
    # beta_sensor 0.3.0 beats the higher 0.4.0-beta1 because it is not a prerelease.
    assert await search(http, base, "experimental=true") == LEGACY
    assert await search(http, base, "experimental=false") == DEFAULT


async def test_experimental_legacy_mode_with_all_drops_prereleases_and_zero_x_of_stable_packages(serve, http):
    _, base = await serve()
    assert await search(http, base, "experimental=true&all=true") == [
        ("acme_logs", "1.2.0"),  # 0.9.0 (0.x) and 2.0.0-rc1 dropped: acme_logs has stable versions
        ("acme_logs", "1.10.0"),
        ("beta_sensor", "0.3.0"),  # no stable version: 0.x and prerelease are kept
        ("beta_sensor", "0.4.0-beta1"),
        ("dual_source", "1.0.0"),  # the folder's 0.5.0 is dropped
        ("edge_probe", "1.0.0"),
        ("kit_dashboards", "1.0.0"),
        ("lab_tracer", "1.0.0"),
        ("old_gadget", "1.0.0"),
        ("old_gadget", "1.1.0"),
        ("old_gadget", "2.0.0"),
        ("portal_guard", "1.0.0"),
        ("widget_metrics", "1.0.0"),
        ("zipped_probe", "1.0.0"),
        ("zipped_probe", "1.1.0"),
    ]


@pytest.mark.parametrize(
    "ignored",
    [
        "prerelease=true",
        "agent.version=1.0.0",
        "capabilities=none",
        "discovery=fields:no.such.field",
        "spec.min=9.9",
        "spec.max=0.1",
    ],
)
async def test_experimental_legacy_mode_ignores_other_filters(serve, http, ignored):
    _, base = await serve()
    assert await search(http, base, f"experimental=true&{ignored}") == LEGACY


async def test_experimental_legacy_mode_keeps_kibana_package_type_and_category_filters(serve, http):
    _, base = await serve()
    assert await search(http, base, "experimental=true&kibana.version=8.5.0&package=acme_logs") == [
        ("acme_logs", "1.2.0")
    ]
    assert await search(http, base, "experimental=true&type=content") == [("kit_dashboards", "1.0.0")]
    # The latest legacy version of acme_logs (1.10.0) is not in `web`; with all=true its 0.x
    # version is dropped, so only portal_guard is left.
    assert await search(http, base, "experimental=true&category=web") == [("portal_guard", "1.0.0")]
    assert await search(http, base, "experimental=true&all=true&category=web") == [("portal_guard", "1.0.0")]


# --- kibana.version / agent.version ---------------------------------------------------------------


async def test_kibana_version_filters_before_latest_selection(serve, http):
    _, base = await serve()
    # acme_logs: 0.9.0 ^7.14.0; zipped_probe 1.1.0 needs ^8.0.0 so 1.0.0 (no condition) is returned.
    assert await search(http, base, "kibana.version=7.17.0") == [
        ("acme_logs", "0.9.0"),
        ("beta_sensor", "0.3.0"),
        ("dual_source", "1.0.0"),
        ("old_gadget", "2.0.0"),
        ("portal_guard", "1.0.0"),
        ("zipped_probe", "1.0.0"),
    ]
    assert await search(http, base, "kibana.version=8.5.0") == [
        ("acme_logs", "1.2.0"),  # >=8.0.0 (1.10.0 needs ^8.10.0)
        ("beta_sensor", "0.3.0"),
        ("dual_source", "1.0.0"),
        ("old_gadget", "2.0.0"),
        ("portal_guard", "1.0.0"),
        ("zipped_probe", "1.1.0"),
    ]


async def test_kibana_version_constraint_forms(serve, http):
    _, base = await serve()
    # 8.13.2: acme ^8.10.0 (|| alternative), widget ^8.11.0 (dotted top-level key),
    # edge ~8.13.0 (first alternative), kit >=8.12.0-SNAPSHOT (dotted key under conditions).
    assert await search(http, base, "kibana.version=8.13.2") == DEFAULT
    # 8.14.0: edge_probe's ~8.13.0 || >=9.0.0 no longer matches.
    assert await search(http, base, "kibana.version=8.14.0") == without(DEFAULT, "edge_probe")
    # 9.1.0: acme's second alternative ^9.0.0; widget's ^8.11.0 and zipped_probe 1.1.0's ^8.0.0
    # fail; edge's >=9.0.0 matches.
    assert await search(http, base, "kibana.version=9.1.0") == [
        ("acme_logs", "1.10.0"),
        ("beta_sensor", "0.3.0"),
        ("dual_source", "1.0.0"),
        ("edge_probe", "1.0.0"),
        ("kit_dashboards", "1.0.0"),
        ("old_gadget", "2.0.0"),
        ("portal_guard", "1.0.0"),
        ("zipped_probe", "1.0.0"),
    ]
    assert ("acme_logs", "2.0.0-rc1") in await search(http, base, "kibana.version=9.1.0&prerelease=true")


async def test_kibana_constraint_without_operator_is_an_exact_version(serve, http):
    _, base = await serve()
    # lab_tracer declares `version: 8.15.0` (a YAML scalar, no operator).
    query = "prerelease=true&package=lab_tracer&kibana.version="
    assert await search(http, base, query + "8.15.0") == [("lab_tracer", "1.0.0")]
    assert await search(http, base, query + "8.15") == [("lab_tracer", "1.0.0")]
    assert await search(http, base, query + "8.15.1") == []
    assert await search(http, base, query + "8.14.9") == []
    (doc,) = (await fetch(http, base, "/search?" + query + "8.15.0")).json
    assert doc["conditions"] == {"kibana": {"version": "8.15.0"}}


async def test_kibana_version_is_parsed_loosely(serve, http):
    _, base = await serve()
    expected = await search(http, base, "kibana.version=8.13.0")
    assert await search(http, base, "kibana.version=8.13") == expected
    assert await search(http, base, "kibana.version=v8.13.0") == expected
    assert await search(http, base, "kibana.version=8") == await search(http, base, "kibana.version=8.0.0")


async def test_snapshot_kibana_version_only_matches_constraints_with_a_prerelease(serve, http):
    _, base = await serve()
    # ^8.11.0, >=8.0.0, ^8.10.0 || ^9.0.0 and ^8.0.0 do not accept 8.14.0-SNAPSHOT;
    # kit_dashboards' >=8.12.0-SNAPSHOT does; packages without a condition always match.
    assert await search(http, base, "kibana.version=8.14.0-SNAPSHOT") == [
        ("beta_sensor", "0.3.0"),
        ("dual_source", "1.0.0"),
        ("kit_dashboards", "1.0.0"),
        ("old_gadget", "2.0.0"),
        ("portal_guard", "1.0.0"),
        ("zipped_probe", "1.0.0"),
    ]
    released = await search(http, base, "kibana.version=8.14.0")
    assert ("widget_metrics", "1.0.0") in released and ("zipped_probe", "1.1.0") in released


async def test_agent_version(serve, http):
    _, base = await serve()
    # widget_metrics: ^8.11.0; edge_probe: >=8.13.0; nobody else has an agent condition.
    assert await search(http, base, "agent.version=8.12.0") == without(DEFAULT, "edge_probe")
    assert await search(http, base, "agent.version=8.13.1") == DEFAULT
    assert await search(http, base, "agent.version=9.0.0") == without(DEFAULT, "widget_metrics")
    assert await search(http, base, "agent.version=8.10.0") == without(
        DEFAULT, "edge_probe", "widget_metrics"
    )
    assert await search(http, base, "agent.version=8.13.0-SNAPSHOT") == without(
        DEFAULT, "edge_probe", "widget_metrics"
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("kibana.version=foo", "invalid Kibana version 'foo': invalid semantic version"),
        ("kibana.version=8.1.0.1", "invalid Kibana version '8.1.0.1': invalid semantic version"),
        ("agent.version=x.y", "invalid agent version 'x.y': invalid semantic version"),
        ("all=yes", "invalid 'all' query param: 'yes'"),
        ("prerelease=foo", "invalid 'prerelease' query param: 'foo'"),
        ("experimental=foo", "invalid 'experimental' query param: 'foo'"),
        (
            "spec.max=2.10.1&prerelease=true",
            "invalid 'spec.max' version: invalid version '2.10.1': it should be <major.version>",
        ),
        ("spec.min=3", "invalid 'spec.min' version: invalid version '3': it should be <major.version>"),
        (
            "spec.min=a.b",
            "invalid 'spec.min' version: invalid spec version 'a.b': invalid semantic version",
        ),
        ("discovery=", "invalid 'discovery' query param: '': could not parse filter \"\""),
        ("discovery=fields", "invalid 'discovery' query param: 'fields': could not parse filter \"fields\""),
        (
            "discovery=names:a",
            "invalid 'discovery' query param: 'names:a': unknown discovery filter \"names\"",
        ),
        (
            "discovery=fields:process.pid&discovery=",
            "invalid 'discovery' query param: '': could not parse filter \"\"",
        ),
    ],
)
async def test_invalid_parameters_are_400_with_the_reference_text(serve, http, query, message):
    _, base = await serve()
    assert_bad_request(await fetch(http, base, f"/search?{query}"), message)


# --- category (§5.7) ------------------------------------------------------------------------------


async def test_category_is_applied_after_latest_selection(serve, http):
    _, base = await serve()
    # acme_logs 0.9.0 is in `web`, but its latest version 1.10.0 is not.
    assert await search(http, base, "category=web") == [("portal_guard", "1.0.0")]
    assert await search(http, base, "category=web&all=true") == [
        ("acme_logs", "0.9.0"),
        ("portal_guard", "1.0.0"),
    ]
    # With kibana.version=7.17.0 the latest eligible acme_logs is 0.9.0, which is in `web`.
    assert await search(http, base, "category=web&kibana.version=7.17.0") == [
        ("acme_logs", "0.9.0"),
        ("portal_guard", "1.0.0"),
    ]


async def test_category_matches_subcategories_and_trims_templates_literally(serve, http):
    _, base = await serve()
    docs = (await fetch(http, base, "/search?category=observability")).json
    assert [(d["name"], d["version"]) for d in docs] == [
        ("acme_logs", "1.10.0"),  # monitoring is a subcategory of observability
        ("edge_probe", "1.0.0"),  # only its template is in monitoring
        ("kit_dashboards", "1.0.0"),
        ("portal_guard", "1.0.0"),  # web is a subcategory of observability
        ("widget_metrics", "1.0.0"),
    ]
    by_name = {d["name"]: d for d in docs}
    # edge_probe matched through its template's subcategory: trimming is literal, so nothing is left.
    assert "policy_templates" not in by_name["edge_probe"]
    # Packages matched at package level keep every template.
    assert [t["name"] for t in by_name["portal_guard"]["policy_templates"]] == ["shield", "gadgets"]
    assert [t["name"] for t in by_name["widget_metrics"]["policy_templates"]] == ["host", "events"]


async def test_category_through_a_policy_template_keeps_only_matching_templates(serve, http):
    _, base = await serve()
    (full,) = (await fetch(http, base, "/search?package=portal_guard")).json
    docs = (await fetch(http, base, "/search?category=security")).json
    assert [(d["name"], d["version"]) for d in docs] == [
        ("acme_logs", "1.10.0"),
        ("portal_guard", "1.0.0"),
        ("zipped_probe", "1.1.0"),
    ]
    trimmed = docs[1]
    assert [t["name"] for t in trimmed["policy_templates"]] == ["shield"]
    assert trimmed["policy_templates"] == [full["policy_templates"][0]]
    assert {k: v for k, v in trimmed.items() if k != "policy_templates"} == {
        k: v for k, v in full.items() if k != "policy_templates"
    }
    assert list(trimmed) == list(full)
    # A category only a template has, unknown to the category table, still matches that template.
    (gizmos,) = (await fetch(http, base, "/search?category=gizmos")).json
    assert gizmos["name"] == "portal_guard"
    assert [t["name"] for t in gizmos["policy_templates"]] == ["gadgets"]


async def test_category_matching_a_template_literally(serve, http):
    _, base = await serve()
    docs = (await fetch(http, base, "/search?category=monitoring")).json
    assert [d["name"] for d in docs] == ["acme_logs", "edge_probe", "widget_metrics"]
    by_name = {d["name"]: d for d in docs}
    assert [t["name"] for t in by_name["edge_probe"]["policy_templates"]] == ["probe"]
    assert [t["name"] for t in by_name["widget_metrics"]["policy_templates"]] == ["host", "events"]


async def test_unknown_package_category_is_dropped(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/search?category=kiosks")
    assert reply.status == 200 and reply.body == b"[]"
    (portal,) = (await fetch(http, base, "/search?package=portal_guard")).json
    assert portal["categories"] == ["web"]


async def test_other_categories(serve, http):
    _, base = await serve()
    assert await search(http, base, "category=custom") == [("edge_probe", "1.0.0")]
    assert await search(http, base, "category=productivity") == [("old_gadget", "2.0.0")]
    assert await search(http, base, "category=network&all=true") == [
        ("dual_source", "0.5.0"),
        ("dual_source", "1.0.0"),
        ("zipped_probe", "1.0.0"),
        ("zipped_probe", "1.1.0"),
    ]
    assert await search(http, base, "category=application_observability") == []
    assert await search(http, base, "category=observability&prerelease=true&package=lab_tracer") == [
        ("lab_tracer", "1.0.0")
    ]


# --- package, type --------------------------------------------------------------------------------


async def test_package_is_an_exact_name_match(serve, http):
    _, base = await serve()
    assert await search(http, base, "package=acme_logs") == [("acme_logs", "1.10.0")]
    assert await search(http, base, "package=acme_logs&all=true") == ALL[:3]
    assert await search(http, base, "package=acme") == []
    assert await search(http, base, "package=ACME_LOGS") == []


async def test_type(serve, http):
    _, base = await serve()
    assert await search(http, base, "type=input") == [("edge_probe", "1.0.0")]
    assert await search(http, base, "type=content") == [("kit_dashboards", "1.0.0")]
    assert await search(http, base, "type=integration") == without(DEFAULT, "edge_probe", "kit_dashboards")
    assert await search(http, base, "type=solution") == []
    docs = {d["name"]: d["type"] for d in (await fetch(http, base, "/search")).json}
    assert docs["old_gadget"] == "integration"


async def test_type_is_filtered_before_latest_selection(serve, http, tmp_path):
    write_package(tmp_path, "shape_shift", "1.0.0")
    write_package(tmp_path, "shape_shift", "1.1.0", "type: input\n")
    _, base = await serve([tmp_path])
    assert await search(http, base, "") == [("shape_shift", "1.1.0")]
    assert await search(http, base, "type=integration") == [("shape_shift", "1.0.0")]
    assert await search(http, base, "type=input") == [("shape_shift", "1.1.0")]


# --- capabilities ---------------------------------------------------------------------------------


async def test_capabilities(serve, http):
    _, base = await serve()
    # widget_metrics requires [observability]; kit_dashboards requires [observability, security].
    assert await search(http, base, "capabilities=observability") == without(DEFAULT, "kit_dashboards")
    assert await search(http, base, "capabilities=observability,security") == DEFAULT
    assert await search(http, base, "capabilities=security,observability,uptime") == DEFAULT
    assert await search(http, base, "capabilities=none") == without(
        DEFAULT, "kit_dashboards", "widget_metrics"
    )
    # The list is split on commas without trimming spaces.
    assert await search(http, base, "capabilities=observability,%20security") == without(
        DEFAULT, "kit_dashboards"
    )


async def test_capabilities_are_filtered_before_latest_selection(serve, http):
    _, base = await serve()
    # acme_logs 2.0.0-rc1 requires the security capability.
    assert ("acme_logs", "2.0.0-rc1") in await search(http, base, "prerelease=true&capabilities=security")
    assert ("acme_logs", "1.10.0") in await search(http, base, "prerelease=true&capabilities=none")


# --- spec.min / spec.max --------------------------------------------------------------------------


async def test_spec_max_compares_minor_numerically(serve, http):
    _, base = await serve()
    # format_versions: acme 1.0.0 / 2.3.0 / 3.0.0 / 3.1.0, old_gadget 2.10.1 (1.x) and 3.0.0 (2.0.0),
    # zipped_probe 2.5.0, kit 3.2.0, everything else 3.0.x.
    assert await search(http, base, "spec.max=2.10") == [
        ("acme_logs", "1.2.0"),
        ("old_gadget", "1.1.0"),
        ("zipped_probe", "1.1.0"),
    ]
    assert await search(http, base, "spec.max=2.9") == [("acme_logs", "1.2.0"), ("zipped_probe", "1.1.0")]
    assert await search(http, base, "spec.max=v2.10") == await search(http, base, "spec.max=2.10")
    assert await search(http, base, "spec.max=1.0") == [("acme_logs", "0.9.0")]


async def test_spec_min_and_range(serve, http):
    _, base = await serve()
    assert await search(http, base, "spec.min=3.1") == [("kit_dashboards", "1.0.0")]
    assert await search(http, base, "spec.min=3.1&prerelease=true") == [
        ("acme_logs", "2.0.0-rc1"),
        ("kit_dashboards", "1.0.0"),
    ]
    assert await search(http, base, "spec.min=2.5&spec.max=2.10") == [
        ("old_gadget", "1.1.0"),
        ("zipped_probe", "1.1.0"),
    ]
    # The patch of format_version is ignored: widget_metrics' 3.0.2 is spec 3.0.
    assert await search(http, base, "spec.max=3.0&package=widget_metrics") == [("widget_metrics", "1.0.0")]
    assert await search(http, base, "spec.min=3.0&spec.max=3.0") == without(
        DEFAULT, "kit_dashboards", "zipped_probe"
    )
    reply = await fetch(http, base, "/search?spec.min=3.0&spec.max=2.0")
    assert reply.status == 200 and reply.body == b"[]"


async def test_spec_filter_on_a_package_without_format_version_is_404(serve, http, tmp_path):
    write_package(tmp_path, "no_spec", "1.0.0", format_version=None)
    _, base = await serve([tmp_path], validate=False)
    assert await search(http, base, "") == [("no_spec", "1.0.0")]
    reply = await fetch(http, base, "/search?spec.min=1.0")
    assert reply.status == 404
    assert reply.text.startswith("fetching package failed: can't compare spec version for no_spec (")
    assert reply.text.endswith("): package spec version is not set\n")
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"


# --- discovery (§5.6) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # fields: every declared field of the package must be in the query list.
        ("discovery=fields:process.pid", ["edge_probe"]),
        ("discovery=fields:process.pid,host.name", ["edge_probe", "kit_dashboards"]),
        ("discovery=fields:host.name,extra.field,process.pid", ["edge_probe", "kit_dashboards"]),
        ("discovery=fields:host.name", []),
        ("discovery=fields:widget.cpu", []),  # widget_metrics declares datasets only
        # datasets: at least one declared dataset must be in the query list.
        ("discovery=datasets:nginx.access", ["kit_dashboards"]),
        ("discovery=datasets:edge_probe.events,nginx.access", ["edge_probe", "kit_dashboards"]),
        ("discovery=datasets:widget.cpu,unknown.ds", ["widget_metrics"]),
        ("discovery=datasets:process.pid", []),
        # repeated: all filters must match.
        ("discovery=fields:process.pid,host.name&discovery=datasets:nginx.access", ["kit_dashboards"]),
        ("discovery=fields:process.pid&discovery=datasets:nginx.access", []),
        ("discovery=datasets:edge_probe.events&discovery=fields:process.pid", ["edge_probe"]),
    ],
)
async def test_discovery(serve, http, query, expected):
    _, base = await serve()
    assert [n for n, _ in await search(http, base, query)] == expected


async def test_discovery_without_match_is_empty_list_without_newline(serve, http):
    _, base = await serve()
    reply = await fetch(http, base, "/search?prerelease=true&discovery=fields:non.existing.field")
    assert reply.status == 200 and reply.body == b"[]"


# --- parameter parsing (§3.3) ---------------------------------------------------------------------


async def test_empty_values_are_ignored(serve, http):
    _, base = await serve()
    query = (
        "all=&prerelease=&experimental=&kibana.version=&agent.version=&category=&package=&type="
        "&capabilities=&spec.min=&spec.max=&internal="
    )
    assert await search(http, base, query) == DEFAULT
    assert await search(http, base, "all&prerelease&experimental") == DEFAULT


async def test_only_the_first_occurrence_counts(serve, http):
    _, base = await serve()
    assert await search(http, base, "package=acme_logs&package=widget_metrics") == [("acme_logs", "1.10.0")]
    assert await search(http, base, "prerelease=false&prerelease=foo") == DEFAULT
    assert_bad_request(
        await fetch(http, base, "/search?all=foo&all=true"), "invalid 'all' query param: 'foo'"
    )


async def test_query_decoding(serve, http):
    _, base = await serve()
    assert await search(http, base, "package=acme%5Flogs") == [("acme_logs", "1.10.0")]
    assert await search(http, base, "category=web+server") == []  # + is a space
    # Pairs with ';' or a bad escape are dropped, as if absent.
    assert await search(http, base, "package=acme_logs;x") == DEFAULT
    assert await search(http, base, "package=%zz") == DEFAULT
    assert await search(http, base, "all=foo;bar&package=widget_metrics") == [("widget_metrics", "1.0.0")]


async def test_internal_is_accepted_and_ignored(serve, http):
    _, base = await serve()
    assert await search(http, base, "internal=true") == DEFAULT
    assert await search(http, base, "internal=not-a-bool") == DEFAULT
    _, strict = await serve(allow_unknown=False)
    assert await search(http, strict, "internal=true") == DEFAULT


async def test_unknown_parameters_are_allowed_by_default(serve, http):
    _, base = await serve()
    assert await search(http, base, "package=acme_logs&unknown=true") == [("acme_logs", "1.10.0")]
    assert await search(http, base, "include_policy_templates=foo") == DEFAULT


async def test_unknown_parameters_are_400_when_disallowed(serve, http):
    _, base = await serve(allow_unknown=False)
    assert_bad_request(
        await fetch(http, base, "/search?package=acme_logs&unknown=true"),
        'unknown query parameter: "unknown"',
    )
    assert_bad_request(await fetch(http, base, "/search?foo="), 'unknown query parameter: "foo"')
    assert_bad_request(
        await fetch(http, base, "/search?include_policy_templates=true"),
        'unknown query parameter: "include_policy_templates"',
    )
    assert_bad_request(await fetch(http, base, "/search?we%22ird=1"), 'unknown query parameter: "we\\"ird"')
    every_known = (
        "kibana.version=8.13.0&agent.version=8.13.0&category=observability&package=widget_metrics"
        "&type=integration&capabilities=observability&spec.min=3.0&spec.max=3.0&all=false"
        "&prerelease=false&experimental=false&discovery=datasets:widget.cpu&internal=x"
    )
    assert await search(http, base, every_known) == [("widget_metrics", "1.0.0")]


# --- deprecation, sources and precedence ----------------------------------------------------------

GADGET_DEPRECATION = {
    "since": "2.0.0",
    "description": "Old Gadget is no longer maintained, use Widget Metrics.",
    "replaced_by": {"package": "widget_metrics"},
}


async def test_deprecation_of_the_highest_version_is_shown_on_every_version(serve, http):
    _, base = await serve()
    docs = (await fetch(http, base, "/search?package=old_gadget&all=true")).json
    assert [d["version"] for d in docs] == ["1.0.0", "1.1.0", "2.0.0"]
    assert [d["deprecated"] for d in docs] == [GADGET_DEPRECATION] * 3
    assert [list(d)[-1] for d in docs] == ["deprecated"] * 3


async def test_deprecation_of_the_highest_deprecated_version_reaches_newer_versions(serve, http, tmp_path):
    write_package(tmp_path, "fading", "1.0.0", "deprecated:\n  since: 1.0.0\n  description: first notice\n")
    write_package(tmp_path, "fading", "1.5.0", "deprecated:\n  since: 1.5.0\n  description: final notice\n")
    write_package(tmp_path, "fading", "2.0.0")
    _, base = await serve([tmp_path])
    docs = (await fetch(http, base, "/search?all=true")).json
    assert [(d["version"], d["deprecated"]) for d in docs] == [
        ("1.0.0", {"since": "1.5.0", "description": "final notice"}),
        ("1.5.0", {"since": "1.5.0", "description": "final notice"}),
        ("2.0.0", {"since": "1.5.0", "description": "final notice"}),
    ]


async def test_zip_wins_over_folder_and_deprecation_does_not_cross_sources(serve, http):
    _, base = await serve()
    docs = (await fetch(http, base, "/search?package=dual_source&all=true")).json
    assert [(d["version"], d["title"]) for d in docs] == [
        ("0.5.0", "Dual Source (folder copy)"),
        ("1.0.0", "Dual Source (zip copy)"),
    ]
    # Only the zip declares `deprecated`; the folder versions belong to another indexer.
    assert "deprecated" not in docs[0]
    assert docs[1]["deprecated"]["replaced_by"] == {"package": "zipped_probe"}


async def test_zip_wins_over_folder_whatever_the_path_order(serve, http):
    _, base = await serve([TESTDATA / "zips", TESTDATA / "packages"])
    docs = (await fetch(http, base, "/search?package=dual_source")).json
    assert [(d["version"], d["title"]) for d in docs] == [("1.0.0", "Dual Source (zip copy)")]


async def test_first_package_path_wins_for_the_same_folder_package(serve, http):
    overrides = TESTDATA / "packages_overrides"
    _, first = await serve([overrides, TESTDATA / "packages", TESTDATA / "zips"])
    _, last = await serve([TESTDATA / "packages", overrides, TESTDATA / "zips"])
    titles_first = {d["version"]: d["title"] for d in (await fetch(http, first, "/search?all=true")).json}
    titles_last = {d["version"]: d["title"] for d in (await fetch(http, last, "/search?all=true")).json}
    assert titles_first["1.2.0"] == "Acme Logs (override copy)"
    assert titles_last["1.2.0"] == "Acme Logs"
    assert await search(http, first, "all=true") == ALL


async def test_signature_path_only_for_signed_packages(serve, http):
    _, base = await serve()
    docs = (await fetch(http, base, "/search?all=true")).json
    signed = {(d["name"], d["version"]): d.get("signature_path") for d in docs if "signature_path" in d}
    assert signed == {
        ("widget_metrics", "1.0.0"): "/epr/widget_metrics/widget_metrics-1.0.0.zip.sig",
        ("zipped_probe", "1.0.0"): "/epr/zipped_probe/zipped_probe-1.0.0.zip.sig",
    }
