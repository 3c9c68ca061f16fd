"""Command-line flags with Go's ``flag`` syntax and the reference's ``EPR_*`` variables.

Single or double dash, ``-flag value`` or ``-flag=value``; booleans are set by
``-flag`` alone or ``-flag=false`` and never take the next argument. Each flag
can also be set through ``EPR_<FLAG>`` (upper case, ``-`` as ``_``); the
command line wins over the environment.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eprd.config import ConfigError, parse_duration

BOOL_VALUES = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


class FlagError(ValueError):
    """Bad command line or environment: usage and exit code 2."""


class HelpRequested(Exception):
    """``-h``/``-help``: print usage and exit 0."""


@dataclass(frozen=True, slots=True)
class FlagSpec:
    name: str
    kind: type  # bool, str, int or float (a duration in seconds)
    default: Any
    help: str
    # Why eprd accepts but does not act on it; None for flags that work.
    unsupported: str | None = None


NOT_IN_EPRD = "eprd caches every /search and /categories response without it"

FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("address", str, "localhost:8080", "Address of the package-registry service."),
    FlagSpec("config", str, "config.yml", "Path to the configuration file."),
    FlagSpec("log-level", str, "info", "Log level (debug, info, warn, error)."),
    FlagSpec("log-type", str, "ecs", "Log format: ecs (JSON lines) or dev (readable)."),
    FlagSpec("tls-cert", str, "", "Path of the TLS certificate (HTTPS only when -tls-key is set too)."),
    FlagSpec("tls-key", str, "", "Path of the TLS key."),
    FlagSpec("tls-min-version", str, "", "Minimum TLS version: 1.1, 1.2 or 1.3."),
    FlagSpec("metrics-address", str, "", "Address of the Prometheus /metrics listener (off when empty)."),
    FlagSpec("httpprof", str, "", "Address of the diagnostics listener (/debug/pprof/, off when empty)."),
    FlagSpec(
        "dry-run", bool, False, "Load every package, report the invalid ones and exit (non-zero if any)."
    ),
    FlagSpec("version", bool, False, "Print the version and exit."),
    FlagSpec("disable-package-validation", bool, False, "Disable package content validation."),
    FlagSpec("allow-unknown-query-parameters", bool, True, "Ignore unknown query parameters instead of 400."),
    FlagSpec("require-package-signatures", bool, True, "Reject local packages without a signature file."),
    FlagSpec("package-paths-workers", int, os.cpu_count() or 1, "Number of processes that read packages."),
    FlagSpec(
        "workers",
        int,
        1,
        "Number of serving processes on the one port (set it to the CPU limit to use every core).",
    ),
    FlagSpec("package-paths-enable-watcher", bool, True, "Reload packages when package paths change."),
    FlagSpec("package-paths-watcher-poll", bool, False, "Poll package paths instead of using inotify."),
    FlagSpec("cache-dir", str, "", "Folder for built archives and the index cache (default: a temp folder)."),
    FlagSpec("archive-cache-size", int, 2 * 1024**3, "Bytes of download archives kept in -cache-dir."),
    FlagSpec("favicon", str, "", "Path of an .ico file to serve at /favicon.ico instead of eprd's own icon."),
    FlagSpec("ui", bool, True, "Serve the catalog page at /ui/ on the API listener."),
    FlagSpec("shutdown-timeout", float, 30.0, "Seconds in-flight requests get to finish on SIGTERM."),
    FlagSpec(
        "feature-proxy-mode", bool, False, "Add the packages of the -proxy-to registry to the local ones."
    ),
    FlagSpec("proxy-to", str, "https://epr.elastic.co/", "Registry that proxy mode adds packages from."),
    FlagSpec("proxy-allow-insecure", bool, False, "Allow an http:// -proxy-to."),
    FlagSpec(
        "proxy-cache-time",
        float,
        0.0,
        "How long upstream answers stay fresh (0: the upstream's Cache-Control max-age).",
    ),
    FlagSpec(
        "proxy-stale-if-error",
        float,
        24 * 3600.0,
        "How long past freshness a cached upstream answer is served while the upstream fails.",
    ),
    FlagSpec("proxy-timeout", float, 10.0, "Timeout of one attempt of an upstream request."),
    FlagSpec(
        "proxy-cache-artifacts",
        bool,
        False,
        "Serve zips, signatures and static files of remote packages through eprd instead of a 301.",
    ),
    FlagSpec(
        "feature-storage-indexer",
        bool,
        False,
        "Serve the packages of a Package Storage v2 index (gs://, s3:// or file:// bucket).",
    ),
    FlagSpec(
        "storage-indexer-bucket-internal",
        str,
        "",
        "Bucket of the storage index: gs://BUCKET[/PREFIX], s3://BUCKET[/PREFIX] or file:///FOLDER.",
    ),
    FlagSpec(
        "storage-endpoint",
        str,
        "https://package-storage.elastic.co/",
        "Public URL of the storage bucket that artifacts and static files are fetched from.",
    ),
    FlagSpec(
        "storage-indexer-watch-interval",
        float,
        60.0,
        "How often the storage index is polled for a new cursor (0: load once).",
    ),
    FlagSpec(
        "feature-sql-storage-indexer",
        bool,
        False,
        "The reference's SQLite storage indexer: accepted, served by eprd's storage indexer.",
    ),
    FlagSpec(
        "feature-incremental-updates",
        bool,
        False,
        "Apply the storage index's delta files between cursors instead of reading the full index.",
    ),
    FlagSpec(
        "feature-enable-search-cache", bool, False, "Not needed: eprd always caches responses.", NOT_IN_EPRD
    ),
    FlagSpec(
        "feature-enable-categories-cache",
        bool,
        False,
        "Not needed: eprd always caches responses.",
        NOT_IN_EPRD,
    ),
)
_BY_NAME = {spec.name: spec for spec in FLAGS}


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed flags: ``values`` by flag name, and which unsupported flags were set."""

    values: Mapping[str, Any]
    explicitly_set: frozenset[str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def env_name(flag: str) -> str:
    return "EPR_" + flag.upper().replace("-", "_")


def convert(kind: type, raw: str) -> Any:
    """A flag value as Go's flag package reads one of ``kind`` (float: a duration); ValueError if bad."""
    if kind is bool:
        if raw not in BOOL_VALUES:
            raise ValueError(f'parse error: invalid boolean value "{raw}"')
        return BOOL_VALUES[raw]
    if kind is int:
        try:
            return int(raw, 0)
        except ValueError:
            raise ValueError(f'parse error: invalid integer value "{raw}"') from None
    if kind is float:
        try:
            return parse_duration(raw)
        except ConfigError as err:
            raise ValueError(str(err)) from None
    return raw


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Options:
    """Apply ``EPR_*`` variables, then ``argv``; raises FlagError or HelpRequested."""
    values = {spec.name: spec.default for spec in FLAGS}
    explicit: set[str] = set()
    for spec in FLAGS:
        raw = environ.get(env_name(spec.name))
        if raw is None:
            continue
        try:
            values[spec.name] = convert(spec.kind, raw)
        except ValueError as err:
            raise FlagError(f"failed to set -{spec.name}: {err}") from None
        explicit.add(spec.name)

    args = list(argv)
    for name, value in scan(args, _BY_NAME):
        values[name] = value
        explicit.add(name)
    return Options(values, frozenset(explicit))


def scan(args: list[str], specs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Go's ``flag`` syntax: each flag of ``args`` as (name, converted value), for ``specs`` by name.

    Consumes ``args`` up to ``--`` (taken) or the first argument that is not a flag (left in
    ``args``); raises FlagError or HelpRequested.
    """
    while args:
        arg = args[0]
        if not arg.startswith("-") or arg == "-":
            return
        args.pop(0)
        if arg == "--":
            return
        name, has_value, value = arg.lstrip("-").partition("=")
        if arg.startswith("---") or not name:
            raise FlagError(f"bad flag syntax: {arg}")
        if name in ("h", "help"):
            raise HelpRequested
        spec = specs.get(name)
        if spec is None:
            raise FlagError(f"flag provided but not defined: -{name}")
        if not has_value:
            if spec.kind is bool:
                value = "true"
            elif args:
                value = args.pop(0)
            else:
                raise FlagError(f"flag needs an argument: -{name}")
        try:
            converted = convert(spec.kind, value)
        except ValueError as err:
            raise FlagError(f"invalid value {value!r} for flag -{name}: {err}") from None
        yield name, converted


def usage() -> str:
    lines = [f"Usage of {os.path.basename(sys.argv[0]) or 'eprd'}:"]
    for spec in FLAGS:
        kind = "" if spec.kind is bool else {str: " string", int: " int", float: " duration"}[spec.kind]
        lines.append(f"  -{spec.name}{kind}")
        default = "" if spec.default in ("", False) else f" (default {spec.default!r})"
        lines.append(f"    \t{spec.help}{default} [env {env_name(spec.name)}]")
    return "\n".join(lines)


def cache_dir(options: Options) -> str:
    """Where the index cache and built archives go (-cache-dir, else a per-user temporary folder)."""
    return options["cache-dir"] or os.path.join(tempfile.gettempdir(), f"eprd-cache-{os.getuid()}")
