"""The catalog page in a real browser (Playwright driving Debian's Chromium) against a real eprd.

The eprd process serves a temporary copy of the test packages with live reload on; the tests
edit that copy and watch open pages follow without a reload. Screenshots of every page are
saved under the test run's temporary folder (printed with ``-s``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pkgfactory
from tests.conftest import TESTDATA, EprdProcess, write_config

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000  # generous: 8 helpers share 2 cores; the page itself updates well within a second

if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")

TRAP_README = """# Readme trap

Text before the script.

<script>window.__pwned = true; document.title = "pwned";</script>

<img src="x" onerror="window.__pwned = true">

<a href="javascript:window.__pwned=true" id="trap-link">a link</a>

Text after the script.
"""


class Site:
    """One eprd process on a copy of the test packages, and where its files are."""

    def __init__(self, root: Path, process: EprdProcess) -> None:
        self.root = root
        self.packages = root / "packages"
        self.process = process
        self.base = process.base

    def search(self, query: str = "") -> list[tuple[str, str]]:
        with urllib.request.urlopen(f"{self.base}/search?{query}", timeout=30) as response:
            return [(e["name"], e["version"]) for e in json.load(response)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ui-site")
    shutil.copytree(TESTDATA / "packages", root / "packages")
    shutil.copytree(TESTDATA / "zips", root / "zips")
    pkgfactory.write_dir(root / "packages", "readme_trap", "1.0.0", files={"docs/README.md": TRAP_README})
    config = write_config(root / "config.yml", [root / "packages", root / "zips"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPR_", "ELASTIC_APM_"))}
    env["EPR_CACHE_DIR"] = str(root / "cache")
    # -log-level error: EprdProcess pipes the output and nobody reads it while the module runs,
    # so access log lines would fill the pipe and block eprd.
    args = ["-config", str(config), "-require-package-signatures=false", "-log-level", "error"]
    process = EprdProcess(args, env, root)
    try:
        process.wait_healthy()
        yield Site(root, process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    # Script errors and anything the Content-Security-Policy refused (a load from elsewhere).
    tab.on("console", lambda msg: errors.append(msg.text) if "Refused" in msg.text else None)
    yield tab
    context.close()
    assert not errors, errors


def open_page(tab, url: str) -> None:
    tab.goto(url, wait_until="domcontentloaded")  # an event stream never lets the network go idle
    tab.locator("#live-state").wait_for()


def shown(tab) -> list[tuple[str, str]]:
    rows = tab.eval_on_selector_all(
        "#packages li.pkg:not([hidden])", "rows => rows.map(r => [r.dataset.name, r.dataset.version])"
    )
    return [tuple(row) for row in rows]


def wait_shown(tab, expected: list[tuple[str, str]]) -> None:
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while shown(tab) != expected:
        if time.monotonic() > deadline:
            assert shown(tab) == expected
        tab.wait_for_timeout(50)


def test_catalog_lists_the_test_packages(site, page, shots):
    open_page(page, site.base + "/ui/")
    expected = site.search()
    assert len(expected) >= 10
    assert shown(page) == expected
    for title in ("Acme Logs", "Widget Metrics", "Zipped Probe", "Readme_trap package"):
        assert page.get_by_role("link", name=title, exact=False).first.is_visible()
    page.screenshot(path=str(shots / "catalog.png"), full_page=True)


def test_filters_change_the_list_as_search_would(site, page, shots):
    open_page(page, site.base + "/ui/")
    page.select_option("#category", "observability")
    wait_shown(page, site.search("category=observability"))
    assert "category=observability" in page.url
    page.check("#prerelease")
    wait_shown(page, site.search("category=observability&prerelease=true"))
    page.select_option("#category", "")
    page.fill("#kibana", "7.17.0")
    wait_shown(page, site.search("kibana.version=7.17.0&prerelease=true"))
    page.select_option("#type", "input")
    wait_shown(page, site.search("kibana.version=8.14.0&type=input&prerelease=true")[:0])  # none on 7.17
    page.fill("#kibana", "")
    wait_shown(page, site.search("type=input&prerelease=true"))
    page.screenshot(path=str(shots / "catalog-filtered.png"))
    # The URL keeps the filters: reloading it gives the same list.
    open_page(page, page.url)
    assert shown(page) == site.search("type=input&prerelease=true")


def test_search_by_name_or_title_as_you_type(site, page):
    open_page(page, site.base + "/ui/")
    page.locator("#q").press_sequentially("wid")
    wait_shown(page, [("widget_metrics", "1.0.0")])
    page.fill("#q", "")
    page.locator("#q").press_sequentially("Zip Copy")  # a title, any case
    wait_shown(page, [("dual_source", "1.0.0")])
    assert page.locator("#shown").inner_text() == "1"


def test_keyboard_navigation_reaches_a_package(site, page):
    open_page(page, site.base + "/ui/")
    page.locator("body").press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.press("ArrowDown")
    first = site.search()[0]
    assert page.evaluate("document.activeElement.closest('li').dataset.name") == first[0]
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.closest('li').dataset.name") == site.search()[1][0]
    page.keyboard.press("k")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/ui/package/{first[0]}/{first[1]}")


def test_package_page_renders_its_readme(site, page, shots):
    open_page(page, site.base + "/ui/package/widget_metrics/1.0.0")
    readme = page.locator("#readme")
    readme.get_by_role("heading", name="Widget Metrics").wait_for()
    assert readme.locator("table").count() == 1
    assert page.get_by_role("link", name="Download .zip").get_attribute("href") == (
        "/epr/widget_metrics/widget_metrics-1.0.0.zip"
    )
    assert page.get_by_role("link", name="JSON").get_attribute("href") == "/package/widget_metrics/1.0.0/"
    assert page.get_by_role("link", name="Signature").is_visible()
    assert page.get_by_role("heading", name="Data streams").is_visible()
    assert page.get_by_role("heading", name="Policy templates").is_visible()
    page.screenshot(path=str(shots / "package.png"), full_page=True)


def test_a_readme_with_a_script_is_shown_inert(site, page, shots):
    open_page(page, site.base + "/ui/package/readme_trap/1.0.0")
    readme = page.locator("#readme")
    readme.get_by_text("Text after the script.").wait_for()
    assert readme.get_by_text("Text before the script.").is_visible()
    page.wait_for_timeout(200)  # give an onerror handler the time it would need
    assert page.evaluate("window.__pwned") is None
    assert "pwned" not in page.title()
    assert readme.locator("script").count() == 0
    assert readme.locator("[onerror]").count() == 0
    hrefs = readme.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href') || '')")
    assert not any(href.lower().startswith("javascript:") for href in hrefs)
    assert readme.get_by_text("a link").is_visible()  # the link text stays, without its script
    page.screenshot(path=str(shots / "package-readme-trap.png"), full_page=True)


def test_a_broken_manifest_appears_under_problems_and_goes_when_repaired(site, page, shots):
    open_page(page, site.base + "/ui/problems")
    page.get_by_text("Every package version found was loaded.").wait_for()
    page.evaluate("window.__notReloaded = true")
    start = int(page.locator("body").get_attribute("data-generation"))
    # A version that is not its package's latest: the catalog would not show it either way.
    manifest = site.packages / "acme_logs" / "1.2.0" / "manifest.yml"
    good = manifest.read_text()
    manifest.write_text(good.replace("title:", "title: [unclosed", 1))
    problem = page.locator("#rejected li", has_text="acme_logs 1.2.0")
    started = time.monotonic()
    problem.wait_for()
    appeared = time.monotonic() - started
    assert str(manifest.parent) in problem.inner_text()
    assert problem.locator(".reason").inner_text().strip()  # the reason, in words
    assert "last good content is still served" in problem.inner_text()  # live reload keeps it
    assert page.locator("#problem-count").inner_text() == "1"
    assert page.evaluate("window.__notReloaded") is True
    assert int(page.locator("body").get_attribute("data-generation")) > start
    page.screenshot(path=str(shots / "problems.png"), full_page=True)

    manifest.write_text(good)
    page.get_by_text("Every package version found was loaded.").wait_for()
    assert page.locator("#rejected li").count() == 0
    assert page.locator("#problem-count").inner_text() == "0"
    assert page.evaluate("window.__notReloaded") is True
    print(f"\nproblem shown {appeared:.2f} s after the manifest was written")


def test_an_open_catalog_follows_a_new_package(site, page):
    open_page(page, site.base + "/ui/")
    page.evaluate("window.__notReloaded = true")
    pkgfactory.write_dir(site.packages, "late_arrival", "1.0.0", manifest={"title": "Late Arrival"})
    page.locator('li.pkg[data-name="late_arrival"]').wait_for()
    assert shown(page) == site.search()
    assert page.evaluate("window.__notReloaded") is True
    shutil.rmtree(site.packages / "late_arrival")
    page.locator('li.pkg[data-name="late_arrival"]').wait_for(state="detached")


@pytest.mark.parametrize(("width", "scheme"), [(360, "light"), (1920, "dark")])
def test_pages_are_readable_narrow_and_wide_in_both_schemes(site, browser, shots, width, scheme):
    context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    try:
        for path, name in (
            ("/ui/", "catalog"),
            ("/ui/package/widget_metrics/1.0.0", "package"),
            ("/ui/problems", "problems"),
        ):
            open_page(tab, site.base + path)
            overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {width}px"
            background = tab.evaluate("getComputedStyle(document.body).backgroundColor")
            dark = sum(int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3]) < 200
            assert dark == (scheme == "dark"), background
            tab.screenshot(path=str(shots / f"{name}-{width}-{scheme}.png"), full_page=True)
    finally:
        context.close()
    assert all((shots / f"{n}-{width}-{scheme}.png").stat().st_size > 0 for n in ("catalog", "package"))
