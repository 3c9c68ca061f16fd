"""Configuration file and command line (§6), through the real ``eprd`` process.

Processes that exit at once (usage, flag and configuration errors, ``-dry-run``) run to their
end; two served processes cover cache times, query-parameter strictness, logs and validation.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pkgfactory as pf
import pytest
from conftest import write_config

from eprd import __version__
from eprd.config import CacheTimes, ConfigError, parse_config, parse_duration

IDENTITY = {"Accept-Encoding": "identity"}  # bodies as sent, never compressed


def run_to_exit(eprd_process, args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run eprd until it exits by itself; returns (exit code, stdout, stderr)."""
    return eprd_process(args, env).wait_exit(timeout=60)


def lenient_collection(tmp_path: Path) -> dict[str, Path]:
    """A valid package and one that is only invalid while validation is on (no title)."""
    root = tmp_path / "lenient"
    return {
        "root": root,
        "good": pf.write_dir(root, "good", "1.0.0"),
        "notitle": pf.write_dir(root, "notitle", "1.0.0", manifest={"title": pf.DROP}),
    }


def mixed_collection(tmp_path: Path) -> dict[str, Path]:
    """The lenient collection plus packages that are invalid whatever the flags say."""
    paths = lenient_collection(tmp_path)
    root = paths["root"]
    paths["noreadme"] = pf.write_dir(root, "noreadme", "1.0.0", files={"docs/README.md": None})
    paths["badrelease"] = pf.write_zip(root, "badrelease", "1.0.0", manifest={"release": "alpha"})
    paths["noroot"] = pf.write_zip(root, "noroot", "1.0.0", files={"manifest.yml": None})
    return paths


REASONS = {
    "notitle": "no title set for package: notitle",
    "noreadme": "README.md is required",
    "badrelease": 'invalid release: "alpha"',
    "noroot": "failed to determine root directory",
}


# --- configuration file (unit) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1h2m3s", 3723.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("10m", 600.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "10x", "s", "1m30", "ten seconds", True])
def test_invalid_durations(value):
    with pytest.raises(ConfigError):
        parse_duration(value)


def test_config_keys_are_flat_dotted_names():
    config = parse_config(
        {
            "package_paths": ["/a", "/b"],
            "cache_time.index": "1m30s",
            "cache_time.search": 45,
            "cache_time.categories": "2h",
            "cache_time.catch_all": "10s",
            "unknown.key": "ignored",
        }
    )
    assert config.package_paths == ("/a", "/b")
    assert config.cache_time == CacheTimes(index=90.0, search=45.0, categories=7200.0, catch_all=10.0)


def test_nested_cache_time_is_not_recognised():
    config = parse_config(
        {"cache_time": {"index": "1s", "search": "2s", "categories": "3s", "catch_all": "4s"}}
    )
    assert config.cache_time == CacheTimes()
    assert CacheTimes() == CacheTimes(index=10.0, search=600.0, categories=600.0, catch_all=600.0)


@pytest.mark.parametrize("key", ["index", "search", "categories", "catch_all"])
@pytest.mark.parametrize("value", [0, "0s", "0", "-5s"])
def test_cache_times_must_be_positive(key, value):
    with pytest.raises(ConfigError, match=f"cache_time.{key}"):
        parse_config({f"cache_time.{key}": value})


# --- processes that exit at once -------------------------------------------------------------


def test_help_exits_zero_with_usage(eprd_process):
    code, out, err = run_to_exit(eprd_process, ["-h"])
    assert code == 0
    usage = out + err
    for flag in ("-config", "-dry-run", "-allow-unknown-query-parameters", "-disable-package-validation"):
        assert flag in usage


def test_unknown_flag_exits_two_with_usage(eprd_process):
    code, _, err = run_to_exit(eprd_process, ["-no-such-flag"])
    assert code == 2
    assert "flag provided but not defined: -no-such-flag" in err
    assert "-config" in err and "-log-type" in err


def test_version_prints_and_exits_without_config(eprd_process, tmp_path):
    code, out, _ = run_to_exit(eprd_process, ["-config", str(tmp_path / "missing.yml"), "-version"])
    assert code == 0
    assert __version__ in out


def test_missing_config_file_is_fatal(eprd_process, tmp_path):
    missing = tmp_path / "nowhere" / "config.yml"
    code, out, err = run_to_exit(eprd_process, [f"-config={missing}"])
    assert code != 0
    assert "Configuration file is not available" in out + err
    assert str(missing) in out + err


def test_a_zero_cache_time_is_refused(eprd_process, tmp_path):
    paths = lenient_collection(tmp_path)
    config = write_config(tmp_path / "config.yml", [paths["root"]], **{"cache_time.search": "0"})
    code, out, err = run_to_exit(
        eprd_process, ["-config", str(config), "-dry-run", "-disable-package-validation"]
    )
    assert code != 0
    assert "cache_time.search" in out + err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-tls-min-version", "1.0", "-tls-cert", "c.pem", "-tls-key", "k.pem"],
            "unsupported TLS version: 1.0",
        ),
        (
            ["-tls-min-version=1.2"],
            "-tls-min-version set but missing TLS cert and key files (-tls-cert and -tls-key)",
        ),
        (
            ["-feature-proxy-mode=true", "-proxy-to", "http://127.0.0.1:1/"],
            '-proxy-to must use HTTPS (got "http://127.0.0.1:1/"); use -proxy-allow-insecure to allow HTTP',
        ),
        (["-package-paths-workers", "0"], "package-paths-workers must be greater than 0"),
        (["-log-type", "xml"], "xml"),
    ],
    ids=["tls-version", "tls-no-files", "proxy-mode", "workers", "log-type"],
)
def test_invalid_flag_combinations_are_fatal(eprd_process, tmp_path, args, message):
    paths = lenient_collection(tmp_path)
    config = write_config(tmp_path / "config.yml", [paths["root"]])
    code, out, err = run_to_exit(eprd_process, ["-config", str(config), *args])
    assert code != 0
    assert message in out + err


def test_invalid_environment_value_is_fatal(eprd_process, tmp_path):
    paths = lenient_collection(tmp_path)
    config = write_config(tmp_path / "config.yml", [paths["root"]])
    code, out, err = run_to_exit(eprd_process, ["-config", str(config)], env={"EPR_DRY_RUN": "maybe"})
    assert code != 0
    assert "failed to set -dry-run" in out + err


def test_dry_run_on_a_clean_collection_exits_zero(eprd_process, tmp_path):
    paths = lenient_collection(tmp_path)
    (paths["notitle"].parent).rename(tmp_path / "set_aside")
    config = write_config(tmp_path / "config.yml", [paths["root"]])
    code, out, err = run_to_exit(
        eprd_process, [f"-config={config}", "--dry-run", "-require-package-signatures=false"]
    )
    assert code == 0, out + err
    assert "invalid package" not in out


def test_dry_run_lists_every_invalid_package_with_its_reason(eprd_process, tmp_path):
    paths = mixed_collection(tmp_path)
    config = write_config(tmp_path / "config.yml", [paths["root"]])
    # The flag overrides the environment: validation is on.
    code, out, _ = run_to_exit(
        eprd_process,
        ["-config", str(config), "-dry-run", "-disable-package-validation=false"],
        env={"EPR_DISABLE_PACKAGE_VALIDATION": "true", "EPR_REQUIRE_PACKAGE_SIGNATURES": "false"},
    )
    assert code != 0
    lines = [line for line in out.splitlines() if any(str(p) in line for p in paths.values())]
    for name, reason in REASONS.items():
        matching = [line for line in lines if str(paths[name]) in line]
        assert len(matching) == 1, (name, out)
        assert reason in matching[0]
    assert not any(str(paths["good"]) in line for line in out.splitlines())


def test_environment_variables_apply_when_no_flag_is_given(eprd_process, tmp_path):
    paths = lenient_collection(tmp_path)
    config = write_config(tmp_path / "config.yml", [paths["root"]])
    code, out, err = run_to_exit(
        eprd_process,
        ["-config", str(config), "-dry-run"],
        env={"EPR_DISABLE_PACKAGE_VALIDATION": "true", "EPR_REQUIRE_PACKAGE_SIGNATURES": "false"},
    )
    assert code == 0, out + err


def test_signatures_are_required_by_default(eprd_process, tmp_path):
    paths = lenient_collection(tmp_path)
    config = write_config(tmp_path / "config.yml", [paths["root"]])
    code, out, _ = run_to_exit(
        eprd_process, ["-config", str(config), "-dry-run", "-disable-package-validation"]
    )
    assert code != 0
    assert "package good-1.0.0 is missing a required signature file" in out


def test_bool_flags_never_take_the_next_argument(eprd_process, tmp_path):
    paths = lenient_collection(tmp_path)
    config = write_config(tmp_path / "config.yml", [paths["root"]])
    # "false" is not the value of -disable-package-validation: it is the first non-flag
    # argument, so validation is disabled and the title-less package is valid.
    code, out, err = run_to_exit(
        eprd_process,
        [
            "-config",
            str(config),
            "-require-package-signatures=false",
            "-dry-run",
            "-disable-package-validation",
            "false",
        ],
    )
    assert code == 0, out + err


# --- served processes ------------------------------------------------------------------------


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, list[str], bytes]:
    async with session.get(url, allow_redirects=False, headers=IDENTITY) as response:
        return response.status, response.headers.getall("Cache-Control", []), await response.read()


async def test_served_with_flat_config_strict_parameters_and_ecs_logs(eprd_process, tmp_path):
    paths = mixed_collection(tmp_path)
    config = write_config(
        tmp_path / "config.yml",
        [paths["root"]],
        **{
            "cache_time.index": "1m30s",
            "cache_time.search": "45",
            "cache_time.categories": "2h",
            "cache_time.catch_all": "10s",
        },
    )
    process = eprd_process(
        [
            "--config",
            str(config),
            "-log-type=ecs",
            "-allow-unknown-query-parameters=false",
            "-require-package-signatures=false",
            "-package-paths-enable-watcher=false",
        ],
        env={"EPR_ALLOW_UNKNOWN_QUERY_PARAMETERS": "true"},
    )
    process.wait_healthy()
    base = process.base
    async with aiohttp.ClientSession() as session:
        status, cache, body = await get(session, f"{base}/search")
        assert status == 200
        assert [e["name"] for e in json.loads(body)] == ["good"]
        assert cache == ["max-age=45", "public"]
        status, cache, _ = await get(session, f"{base}/package/good/1.0.0/")
        assert (status, cache) == (200, ["max-age=90", "public"])
        status, cache, _ = await get(session, f"{base}/")
        assert (status, cache) == (200, ["max-age=90", "public"])
        status, cache, _ = await get(session, f"{base}/categories")
        assert (status, cache) == (200, ["max-age=7200", "public"])
        status, cache, _ = await get(session, f"{base}/package/good/1.0.0/docs/README.md")
        assert (status, cache) == (200, ["max-age=10", "public"])
        for name in ("notitle", "noreadme", "badrelease", "noroot"):
            status, _, _ = await get(session, f"{base}/package/{name}/1.0.0/")
            assert status == 404, name
        # The flag wins over EPR_ALLOW_UNKNOWN_QUERY_PARAMETERS=true.
        status, _, body = await get(session, f"{base}/search?package=good&unknown=true")
        assert (status, body) == (400, b'unknown query parameter: "unknown"\n')
        status, _, body = await get(session, f"{base}/categories?nope=1")
        assert (status, body) == (400, b'unknown query parameter: "nope"\n')
        status, _, _ = await get(session, f"{base}/search?package=good&prerelease=true")
        assert status == 200
    code, _, err = process.stop()
    assert code == 0

    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records, "no log lines"
    errors = [r for r in records if r["log.level"] == "error"]
    for name, reason in REASONS.items():
        mentioning = [r for r in errors if str(paths[name]) in json.dumps(r, ensure_ascii=False)]
        assert len(mentioning) == 1, (name, errors)
        assert reason in json.dumps(mentioning[0], ensure_ascii=False).replace('\\"', '"')
    assert len(errors) == len(REASONS)


async def test_served_with_nested_config_dev_logs_and_validation_disabled(eprd_process, tmp_path):
    paths = mixed_collection(tmp_path)
    config = tmp_path / "nested.yml"
    config.write_text(
        f"package_paths:\n  - {paths['root']}\n"
        "cache_time:\n  index: 1s\n  search: 2s\n  categories: 3s\n  catch_all: 4s\n"
    )
    process = eprd_process(
        ["-config", str(config), "-log-type", "dev", "-disable-package-validation"],
        env={"EPR_REQUIRE_PACKAGE_SIGNATURES": "false", "EPR_PACKAGE_PATHS_ENABLE_WATCHER": "false"},
    )
    process.wait_healthy()
    base = process.base
    async with aiohttp.ClientSession() as session:
        status, cache, body = await get(session, f"{base}/search")
        assert status == 200
        assert [e["name"] for e in json.loads(body)] == ["good", "notitle"]
        assert "title" not in json.loads(body)[1]
        assert cache == ["max-age=600", "public"]
        status, cache, _ = await get(session, f"{base}/package/notitle/1.0.0/")
        assert (status, cache) == (200, ["max-age=10", "public"])
        status, cache, _ = await get(session, f"{base}/categories")
        assert cache == ["max-age=600", "public"]
        status, cache, _ = await get(session, f"{base}/package/good/1.0.0/manifest.yml")
        assert (status, cache) == (200, ["max-age=600", "public"])
        # Unknown query parameters are allowed by default.
        status, _, body = await get(session, f"{base}/search?package=good&unknown=true")
        assert status == 200
        assert [e["name"] for e in json.loads(body)] == ["good"]
    code, _, err = process.stop()
    assert code == 0

    lines = [line for line in err.splitlines() if line.strip()]
    assert lines
    for line in lines:
        with pytest.raises(ValueError):
            json.loads(line)
    errors = [line for line in lines if "ERROR" in line]
    assert len(errors) == 3, errors
    for name in ("noreadme", "badrelease", "noroot"):
        mentioning = [line for line in errors if str(paths[name]) in line]
        assert len(mentioning) == 1, (name, errors)
        assert REASONS[name] in mentioning[0]
    assert not any(str(paths["notitle"]) in line for line in errors)
