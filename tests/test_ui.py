"""The catalog page at /ui/ over HTTP: routing, equality with /search, README safety, Problems, events."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from eprd.http.ui import problems, readme
from tests import pkgfactory
from tests.conftest import TESTDATA, write_config

IDENTITY = {"Accept-Encoding": "identity"}  # the http fixture does not decompress
ROW = re.compile(r'<li class="pkg" data-name="([^"]+)" data-title="[^"]*" data-version="([^"]+)"')


@pytest.fixture
async def ui(serve, make_registry):
    """A registry serving the test packages with the catalog page on."""
    registry = make_registry()
    registry.ui = True
    return await serve(registry=registry)


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], str]:
    async with http.get(url, allow_redirects=False, headers=IDENTITY) as response:
        return response.status, dict(response.headers), (await response.read()).decode()


async def test_ui_redirects_to_the_slash_form_keeping_the_query(ui, http):
    _, base = ui
    status, headers, _ = await _get(http, base + "/ui?type=input")
    assert status == 301
    assert headers["Location"] == "/ui/?type=input"


async def test_ui_off_is_a_plain_404(serve, http):
    _, base = await serve()  # Registry(ui=False), as -ui=false makes it
    for path in ("/ui", "/ui/", "/ui/problems", "/ui/events"):
        status, _, body = await _get(http, base + path)
        assert (status, body) == (404, "404 page not found\n"), path


async def test_ui_pages_are_never_cached_and_load_nothing_from_elsewhere(ui, http):
    _, base = ui
    status, headers, body = await _get(http, base + "/ui/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "Access-Control-Allow-Origin" not in headers
    for url in re.findall(r'(?:src|href)="([^"]+)"', body):
        assert url.startswith("/") or url.startswith("#"), url
    status, headers, script = await _get(http, base + "/ui/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert 'cache: "no-store"' in script and "EventSource" in script


@pytest.mark.parametrize(
    "query",
    [
        "",
        "prerelease=true",
        "kibana.version=7.17.0",
        "kibana.version=8.15.0&prerelease=true",
        "category=observability",
        "category=security&prerelease=true",
        "type=input",
        "type=content&kibana.version=8.12.0",
        "category=nonexistent",
    ],
)
async def test_catalog_lists_what_search_answers(ui, http, query):
    _, base = ui
    status, _, page = await _get(http, f"{base}/ui/?{query}")
    assert status == 200
    async with http.get(f"{base}/search?{query}", headers=IDENTITY) as response:
        expected = [(entry["name"], entry["version"]) for entry in await response.json()]
    assert ROW.findall(page) == expected
    if not expected:
        assert "No package matches." in page


async def test_catalog_offers_every_version_latest_first(ui, http):
    _, base = ui
    _, _, page = await _get(http, base + "/ui/?prerelease=true")
    block = page[page.index('data-name="acme_logs"') :]
    block = block[: block.index("</li>\n    <li") if "</li>\n    <li" in block else len(block)]
    shown = re.findall(r'href="/ui/package/acme_logs/([^"]+)">', block)
    assert shown[0] == "2.0.0-rc1"  # the title link, then the versions list
    assert shown[1:] == ["2.0.0-rc1", "1.10.0", "1.2.0", "0.9.0"]


async def test_catalog_text_search_filters_by_name_or_title(ui, http):
    _, base = ui
    _, _, page = await _get(http, base + "/ui/?q=GADGET")
    assert [name for name, _ in ROW.findall(page)] == ["old_gadget"]
    _, _, page = await _get(http, base + "/ui/?q=zip%20copy")  # the title of the zip dual_source
    assert [name for name, _ in ROW.findall(page)] == ["dual_source"]


async def test_catalog_bad_filter_shows_the_search_error(ui, http):
    _, base = ui
    status, _, page = await _get(http, base + "/ui/?kibana.version=banana")
    async with http.get(base + "/search?kibana.version=banana") as response:
        message = (await response.text()).strip()
    assert status == 400 and response.status == 400
    assert message.replace("'", "&#39;") in page


async def test_package_page_shows_readme_templates_streams_and_links(ui, http):
    _, base = ui
    status, _, page = await _get(http, base + "/ui/package/widget_metrics/1.0.0")
    assert status == 200
    assert "<h1>Widget Metrics</h1>" in page  # the README's own heading, rendered
    assert "<table>" in page  # and its table
    assert 'href="/epr/widget_metrics/widget_metrics-1.0.0.zip"' in page
    assert 'href="/epr/widget_metrics/widget_metrics-1.0.0.zip.sig"' in page
    assert 'href="/package/widget_metrics/1.0.0/"' in page
    assert "Widget host metrics" in page and "widget_metrics.events" in page
    assert "Widget dashboard" in page  # a screenshot
    _, _, unsigned = await _get(http, base + "/ui/package/zipped_probe/1.1.0")
    assert "unsigned" in unsigned and ".zip.sig" not in unsigned


async def test_package_page_of_latest_and_of_a_missing_version(ui, http):
    _, base = ui
    status, headers, _ = await _get(http, base + "/ui/package/acme_logs/")
    assert (status, headers["Location"]) == (302, "/ui/package/acme_logs/1.10.0")
    status, headers, _ = await _get(http, base + "/ui/package/beta_sensor/")
    assert (status, headers["Location"]) == (302, "/ui/package/beta_sensor/0.3.0")
    status, _, page = await _get(http, base + "/ui/package/acme_logs/9.9.9")
    assert status == 404 and "no package acme_logs 9.9.9" in page


def test_readme_html_is_sanitised_and_stays_inside_the_registry():
    html = readme.render(
        "# Title\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n"
        "![local](../img/shot.png) ![remote](https://example.com/a.png)\n\n"
        "[site](https://example.com/) [bad](javascript:alert(3)) [anchor](#usage)\n\n"
        "<a href='data:text/html,x' onclick='x()'>data</a> <iframe src='/x'></iframe>\n",
        "demo",
        "1.0.0",
    )
    assert "<script" not in html and "alert(1)" not in html
    assert "onerror" not in html and "onclick" not in html and "<iframe" not in html
    assert 'src="/package/demo/1.0.0/img/shot.png"' in html
    assert "example.com/a.png" not in html  # would be fetched from outside
    assert 'href="https://example.com/"' in html and "noopener" in html
    assert 'href="javascript:' not in html and "data:text" not in html  # left as inert text or dropped
    assert 'href="#usage"' in html
    assert "<h1>Title</h1>" in html


def test_package_of_names_folder_and_zip_paths():
    assert problems.package_of("/p/acme/1.2.0") == "acme 1.2.0"
    assert problems.package_of("/p/acme-1.2.0-rc1.zip") == "acme 1.2.0-rc1"
    assert problems.package_of("/p/acme/notaversion") == ""


async def test_problems_list_every_rejected_version_and_the_warnings(serve, make_registry, http, tmp_path):
    root = tmp_path / "packages"
    pkgfactory.write_dir(root, "demo", "1.0.0", manifest={"title": pkgfactory.DROP})  # rejected, not latest
    template = {
        "name": "kettles",
        "title": "Kettles",
        "description": "Boil things.",
        "categories": ["security", "boilers"],
        "inputs": [{"type": "logfile", "title": "Collect logs", "description": "Log files."}],
    }
    manifest = {"categories": ["custom", "teapots"], "policy_templates": [template]}
    pkgfactory.write_dir(root, "demo", "2.0.0", manifest=manifest)
    pkgfactory.write_dir(root, "demo", "3.0.0", manifest={"version": "3.0.1"})  # rejected, latest
    (root / "demo" / "notes.txt").write_text("not a package\n")
    (root / "demo" / "drafts").mkdir()
    registry = make_registry([root])
    registry.ui = True
    _, base = await serve(registry=registry)
    status, _, page = await _get(http, base + "/ui/problems")
    assert status == 200
    items = re.findall(r'<li class="problem (\w+)">(.*?)</li>', page, re.S)
    rejected = [text for kind, text in items if kind == "rejected"]
    warnings = [text for kind, text in items if kind == "warning"]
    assert len(rejected) == 2
    assert "demo 1.0.0" in rejected[0] and str(root / "demo" / "1.0.0") in rejected[0]
    assert "no title set for package: demo" in rejected[0]
    assert "demo 3.0.0" in rejected[1] and "inconsistent versions" in rejected[1]
    assert any("teapots" in w and "demo 2.0.0" in w for w in warnings)
    kettles = "policy template &#39;kettles&#39; uses unknown category &#39;boilers&#39;"  # quotes escaped
    assert any(kettles in w for w in warnings)
    assert not any("security" in w for w in warnings)  # a known category is no problem
    assert any("notes.txt" in w and "unexpected file" in w for w in warnings)
    assert any("drafts" in w and "unexpected folder" in w for w in warnings)
    assert 'class="count bad">2<' in page  # the count in the navigation
    _, _, package = await _get(http, base + "/ui/package/demo/2.0.0")
    assert "Refused versions" in package and "no title set" in package


async def test_events_name_each_new_snapshot_generation(ui, http):
    registry, base = ui
    async with http.get(base + "/ui/events") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-store"
        first = await asyncio.wait_for(_next_event(response), 10)
        assert first == ("snapshot", '{"generation":1,"packages":18,"rejected":0}')
        registry.swap(dataclasses.replace(registry.snapshot, generation=2))
        assert registry.snapshot.generation == 2
        second = await asyncio.wait_for(_next_event(response), 10)
        assert second[0] == "snapshot" and '"generation":2' in second[1]


async def test_head_of_the_event_stream_does_not_stream(ui, http):
    _, base = ui
    async with http.head(base + "/ui/events") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
    async with http.post(base + "/ui/") as response:
        assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"


async def _next_event(response: aiohttp.ClientResponse) -> tuple[str, str]:
    name = data = ""
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif line == "" and name:
            return name, data


def _wait_for(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_flag_off_and_an_open_event_stream_does_not_hold_up_shutdown(eprd_process, tmp_path):
    packages = tmp_path / "packages"
    shutil.copytree(TESTDATA / "packages", packages)
    config = write_config(tmp_path / "config.yml", [packages])
    off = eprd_process(["-config", str(config), "-require-package-signatures=false", "-ui=false"])
    off.wait_healthy()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(off.base + "/ui/", timeout=10)
    assert missing.value.code == 404
    off.stop()

    # The default: on. A page holding its event stream must not make SIGTERM wait for it.
    on = eprd_process(["-config", str(config), "-require-package-signatures=false", "-shutdown-timeout=120s"])
    on.wait_healthy()
    stream = urllib.request.urlopen(on.base + "/ui/events", timeout=30)
    assert stream.readline() == b"retry: 1000\n"
    on.proc.send_signal(signal.SIGTERM)
    _wait_for(lambda: on.proc.poll() is not None, timeout=50)  # far below the 60 s it would wait
    assert on.proc.returncode == 0
    stream.close()


def test_templates_and_static_files_are_package_data():
    folder = Path(readme.__file__).parent
    assert {p.name for p in (folder / "templates").iterdir()} >= {"base.html", "catalog.html"}
    assert {p.name for p in (folder / "static").iterdir()} == {"app.js", "app.css"}
