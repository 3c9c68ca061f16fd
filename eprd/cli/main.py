"""``eprd``: parse flags, load packages, serve until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

from eprd import API_VERSION, __version__
from eprd.cli import flags, storage
from eprd.config import Config, ConfigError, load_config
from eprd.indexers.combined import build
from eprd.indexers.local.collection import Collection, Loading
from eprd.indexers.local.indexer import load_snapshot, local_indexers, log_loaded
from eprd.model.package import LoadOptions
from eprd.ops import apm, logs

log = logging.getLogger("eprd")

TLS_VERSIONS = ("1.1", "1.2", "1.3")

# Subcommands come before the server's flags (whose parsing stops at the first non-flag):
# name -> module with ``main(argv) -> int``, imported only when it runs.
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
        cache = None
        if "cache-dir" in options.explicitly_set:  # (else a dry run leaves nothing behind)
            cache = os.path.join(flags.cache_dir(options), "index")
        return _dry_run(config, load_options, options["package-paths-workers"], cache)
    log.info("eprd starting", extra={"service.version": __version__, "eprd.api_version": API_VERSION})
    collection = Collection(
        config.package_paths,
        load_options,
        workers=options["package-paths-workers"],
        cache_folder=os.path.join(flags.cache_dir(options), "index"),
    )
    if options["workers"] > 1:
        from eprd.cli import workers  # N serving processes, loaded once (see eprd.cli.workers)

        return workers.WorkerGroup(config, options, collection).run()
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
        from eprd.indexers.proxy import check_proxy_to

        check_proxy_to(options["proxy-to"], options["proxy-allow-insecure"])
        if options["proxy-timeout"] <= 0:
            raise ValueError("-proxy-timeout must be greater than 0")
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
    if options["workers"] <= 0:
        raise ValueError("workers must be greater than 0")
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


def _dry_run(config: Config, load_options: LoadOptions, workers: int, cache_folder: str | None) -> int:
    """Load everything, list every invalid package version with its reason.

    With ``-cache-dir`` (flag or ``EPR_CACHE_DIR``) the index is also written there: a baked
    index, which a later start (even after a copy that keeps sizes and mtimes) reads instead of
    the packages. Versions still fresh in that index are taken from it, as a start would.
    """
    if cache_folder is None:
        snapshot = load_snapshot(config.package_paths, load_options, workers)
    else:
        started = time.monotonic()
        collection = Collection(
            config.package_paths, load_options, workers=workers, cache_folder=cache_folder
        )
        collection.load_all()
        snapshot = build(local_indexers(collection, None))
        collection.save_cache()
        log_loaded(log, snapshot, collection, started)
        if collection.cache_outdated:
            print(f"eprd: cannot write the index cache into {cache_folder}", file=sys.stderr)
            return 1
        print(f"index written to {collection.cache_file}")
    for error in snapshot.rejected:
        print(f"invalid package {error.location}: {error.reason}")
    print(f"{len(snapshot)} package versions valid, {len(snapshot.rejected)} invalid")
    return 1 if snapshot.rejected else 0
