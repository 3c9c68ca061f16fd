"""``eprd``: parse flags, load packages, serve until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from eprd import API_VERSION, __version__
from eprd.cli import flags, storage
from eprd.config import Config, ConfigError, load_config
from eprd.indexers.local.collection import Collection, Loading
from eprd.indexers.local.indexer import load_snapshot
from eprd.model.package import LoadOptions
from eprd.ops import apm, logs

log = logging.getLogger("eprd")

TLS_VERSIONS = ("1.1", "1.2", "1.3")


# Subcommands, dispatched on the first argument before any flag is parsed: name -> module
# with a ``main(argv) -> int``.
SUBCOMMANDS = {"publish": "eprd.cli.publish", "mirror": "eprd.cli.mirror"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run eprd; the return value is the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        import importlib

        return importlib.import_module(SUBCOMMANDS[args[0]]).main(args[1:])
    try:
        options = flags.parse(args, os.environ)
    except flags.HelpRequested:
        print(flags.usage(), file=sys.stderr)
        return 0
    except flags.FlagError as err:
        print(f"{err}\n{flags.usage()}", file=sys.stderr)
        return 2
    try:
        _check_flags(options)
    except ValueError as err:
        print(f"eprd: {err}", file=sys.stderr)
        return 2
    if options["version"]:
        print(f"eprd version {__version__} (Elastic Package Registry API {API_VERSION})")
        return 0
    logs.setup(options["log-level"], options["log-type"], logs.service_fields())
    for name in sorted(options.explicitly_set):
        spec = next(s for s in flags.FLAGS if s.name == name)
        if spec.unsupported:
            log.warning("flag -%s has no effect: %s", name, spec.unsupported, extra={"flag": name})
    try:
        config = load_config(options["config"])
    except ConfigError as err:
        log.critical("Init failed: %s", err)
        return 1
    load_options = LoadOptions(
        validate=not options["disable-package-validation"],
        require_signature=options["require-package-signatures"],
    )
    if options["dry-run"]:
        return _dry_run(config, load_options, options["package-paths-workers"])
    log.info("eprd starting", extra={"service.version": __version__, "eprd.api_version": API_VERSION})
    collection = Collection(
        config.package_paths,
        load_options,
        workers=options["package-paths-workers"],
        cache_folder=os.path.join(flags.cache_dir(options), "index"),
    )
    loading = None
    if not options["httpprof"] and not apm.enabled(os.environ):
        # Loading starts while aiohttp and the operations' libraries are imported (a few tenths
        # of a second), unless -httpprof or APM want to observe the load from its start.
        loading = Loading.start(collection)

    import asyncio

    from eprd.cli import serve  # aiohttp and the operations' libraries: only when serving

    return asyncio.run(serve.serve(config, options, collection, loading))


def _check_flags(options: flags.Options) -> None:
    if options["feature-proxy-mode"]:
        raise ValueError(f"-feature-proxy-mode is not supported: {flags.NOT_IN_EPRD}")
    if options["feature-storage-indexer"] and options["feature-sql-storage-indexer"]:
        raise ValueError(
            "both -feature-storage-indexer and -feature-sql-storage-indexer flags are enabled "
            "but are mutually exclusive"
        )
    if options["feature-incremental-updates"] and options["feature-sql-storage-indexer"]:
        raise ValueError("-feature-incremental-updates is not supported with -feature-sql-storage-indexer")
    if storage.enabled(options):
        from eprd.indexers.storage.objectstore import split_url

        if not options["storage-indexer-bucket-internal"]:
            raise ValueError("-storage-indexer-bucket-internal is required by the storage indexer")
        split_url(options["storage-indexer-bucket-internal"])  # ValueError says what is wrong
    if options["package-paths-workers"] <= 0:
        raise ValueError("package-paths-workers must be greater than 0")
    if options["log-type"] not in logs.LOG_TYPES:
        raise ValueError(f"invalid log type: {options['log-type']}")
    if options["log-level"] not in logs.LEVELS:
        raise ValueError(f"unknown log level: {options['log-level']}")
    if options["tls-min-version"]:
        if options["tls-min-version"] not in TLS_VERSIONS:
            raise ValueError(f"unsupported TLS version: {options['tls-min-version']}")
        if not (options["tls-cert"] and options["tls-key"]):
            raise ValueError(
                "-tls-min-version set but missing TLS cert and key files (-tls-cert and -tls-key)"
            )


def _dry_run(config: Config, load_options: LoadOptions, workers: int) -> int:
    """Load everything, list every invalid package version with its reason."""
    snapshot = load_snapshot(config.package_paths, load_options, workers)
    for error in snapshot.rejected:
        print(f"invalid package {error.location}: {error.reason}")
    print(f"{len(snapshot)} package versions valid, {len(snapshot.rejected)} invalid")
    return 1 if snapshot.rejected else 0
