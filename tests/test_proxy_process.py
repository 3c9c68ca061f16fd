"""Proxy mode as elastic-package runs it: eprd processes, EPR_* variables, restarts."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import proxyfixtures
from tests.conftest import ROOT
from tests.proxyfixtures import Process, start_upstream, write_config

upstream_eprd = pytest.fixture(scope="module")(proxyfixtures.upstream_eprd)


def get(url: str, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def run_eprd(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EPR_", "ELASTIC_APM_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "eprd", *args],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-feature-proxy-mode", "-proxy-to", "http://127.0.0.1:1/"], {}),
        ([], {"EPR_FEATURE_PROXY_MODE": "true", "EPR_PROXY_TO": "http://127.0.0.1:1/"}),
    ],
)
def test_proxy_to_must_be_https(args: list[str], env: dict[str, str]) -> None:
    result = run_eprd([*args, "-version"], env)
    assert result.returncode == 2
    assert (
        '-proxy-to must use HTTPS (got "http://127.0.0.1:1/"); use -proxy-allow-insecure to allow HTTP'
        in result.stderr
    )
    allowed = run_eprd([*args, "-proxy-allow-insecure", "-version"], env)
    assert allowed.returncode == 0, allowed.stderr


def _proxy_process(folder: Path, upstream: str, *extra: str, packages: list[Path] | None = None) -> Process:
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, packages or [])
    env = {
        "EPR_FEATURE_PROXY_MODE": "true",
        "EPR_PROXY_TO": upstream,
        "EPR_PROXY_ALLOW_INSECURE": "true",
        "EPR_CACHE_DIR": str(folder / "cache"),
    }
    args = ["-config", str(config), "-proxy-timeout", "1s", "-require-package-signatures=false", *extra]
    return Process(args, cwd=folder, env=env)


def test_elastic_package_style_start_with_zero_local_packages(tmp_path: Path, upstream_eprd: Process) -> None:
    proxy = _proxy_process(tmp_path / "proxy", upstream_eprd.base, "-package-paths-enable-watcher=false")
    try:
        proxy.wait_healthy()
        for path in ("/search?all=true", "/categories", "/package/widget_metrics/1.0.0/"):
            status, _, body = get(proxy.base + path)
            assert status == 200, path
            assert body == get(upstream_eprd.base + path)[2], path
        status = get(proxy.base + "/epr/widget_metrics/widget_metrics-1.0.0.zip.sig")[0]
        # urllib follows the 301 to the upstream's signature
        assert status == 200
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    assert "No local packages found, serving the packages of -proxy-to" in err


def test_restart_with_upstream_down_serves_cached_answers(tmp_path: Path) -> None:
    upstream = start_upstream(tmp_path / "upstream")
    local = proxyfixtures.local_packages(tmp_path / "local")
    proxy = _proxy_process(tmp_path / "proxy", upstream.base, packages=[local]).wait_healthy()
    paths = ("/search", "/package/widget_metrics/1.0.0/")
    try:
        before = {path: get(proxy.base + path) for path in paths}
        assert all(status == 200 for status, _, _ in before.values())
    finally:
        proxy.stop()
        upstream.stop()
    proxy = _proxy_process(tmp_path / "proxy", upstream.base, packages=[local]).wait_healthy()
    try:
        for path in paths:
            status, _, body = get(proxy.base + path)
            assert (status, body) == (200, before[path][2]), path
        # Never asked before and the upstream is down: the reference's 500, within the budget.
        started = time.monotonic()
        status, _, body = get(proxy.base + "/categories")
        assert (status, body) == (500, b"internal server error\n")
        assert time.monotonic() - started < 15  # 3 attempts of -proxy-timeout 1s, with slack
        # Local packages are served as ever.
        assert get(proxy.base + "/package/local_only/1.0.0/")[0] == 200
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err


def test_pull_through_and_metrics_of_a_process(tmp_path: Path, upstream_eprd: Process) -> None:
    from tests.conftest import free_port

    metrics_port = free_port()
    proxy = _proxy_process(
        tmp_path / "proxy",
        upstream_eprd.base,
        "-proxy-cache-artifacts",
        "-metrics-address",
        f"127.0.0.1:{metrics_port}",
    ).wait_healthy()
    try:
        path = "/epr/widget_metrics/widget_metrics-1.0.0.zip"
        for _ in range(2):
            status, headers, body = get(proxy.base + path)
            assert status == 200 and headers["Content-Type"] == "application/zip"
            assert body == get(upstream_eprd.base + path)[2]
        assert len(list((tmp_path / "proxy" / "cache" / "archives").glob("remote-*.zip"))) == 1
        _, _, scraped = get(f"http://127.0.0.1:{metrics_port}/metrics")
        text = scraped.decode()
    finally:
        code, _, err = proxy.stop()
    assert code == 0, err
    assert 'epr_storage_requests_total{component="artifacts",location="remote"} 1.0' in text
    assert 'eprd_upstream_requests_total{component="package",outcome="ok"} 1.0' in text
    assert 'eprd_upstream_request_duration_seconds_count{component="artifacts"} 1.0' in text
