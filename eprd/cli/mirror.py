"""``eprd mirror -from URL -to DIR [filters]``: a verified offline copy of a registry's packages.

Exit status: 0 when every selected version is in DIR and valid, 1 when some were refused or
failed (each is listed with its reason) or the upstream could not be asked, 2 for usage errors.
Flags are Go-style like the server's (``-flag value``, ``-flag=value``, booleans alone);
``-kibana.version`` and ``-package`` can be given more than once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from eprd import __version__
from eprd.cli.flags import FlagError, HelpRequested, scan
from eprd.mirror import fetch
from eprd.mirror.select import Filters, SelectionError, select
from eprd.mirror.verify import KeyRing
from eprd.model.versions import VersionError, parse_loose
from eprd.upstream.client import Upstream, UpstreamError


@dataclass(frozen=True, slots=True)
class MirrorFlag:
    name: str
    kind: type  # bool, str, int, float (a duration) or list (a repeatable string)
    default: Any
    help: str


FLAGS: tuple[MirrorFlag, ...] = (
    MirrorFlag("from", str, "", "URL of the upstream registry (e.g. https://epr.elastic.co)."),
    MirrorFlag("to", str, "", "Folder the mirror is written to (created when missing)."),
    MirrorFlag("kibana.version", list, (), "Versions compatible with this Kibana (repeatable: the union)."),
    MirrorFlag("package", list, (), "Only this package (repeatable)."),
    MirrorFlag("category", str, "", "Only packages of this category."),
    MirrorFlag("prerelease", bool, False, "Include prerelease and experimental versions."),
    MirrorFlag("all", bool, False, "Every version, not only the latest compatible one."),
    MirrorFlag("spec.max", str, "", "Only packages whose format version is at most this <major.minor>."),
    MirrorFlag("latest", int, 0, "The newest N versions of each package."),
    MirrorFlag("verify-key", str, "", "Armored OpenPGP public key: refuse zips without a good signature."),
    MirrorFlag("parallel", int, 4, "Downloads at a time."),
    MirrorFlag("prune", bool, False, "Remove the versions in the folder that are no longer selected."),
    MirrorFlag("dry-run", bool, False, "Print the selection only; download nothing."),
    MirrorFlag("timeout", float, 10.0, "Timeout of each connection attempt and each read."),
    MirrorFlag("attempts", int, 5, "Attempts per request before a version is given up."),
)
_BY_NAME = {spec.name: spec for spec in FLAGS}


def usage() -> str:
    """The ``-h`` text."""
    lines = [
        "Usage: eprd mirror -from URL -to DIR [filters] [-verify-key FILE] [-parallel N]",
        "Without filters: the latest version of every package.",
    ]
    for spec in FLAGS:
        kind = {bool: "", str: " string", int: " int", float: " duration", list: " value"}[spec.kind]
        lines.append(f"  -{spec.name}{kind}")
        shown = f"{spec.default:g}s" if spec.kind is float else repr(spec.default)
        default = "" if spec.default in ("", False, (), 0) else f" (default {shown})"
        lines.append(f"    \t{spec.help}{default}")
    return "\n".join(lines)


def parse(argv: Sequence[str]) -> dict[str, Any]:
    """Go ``flag`` syntax as the server's flags; raises FlagError or HelpRequested."""
    values: dict[str, Any] = {spec.name: spec.default for spec in FLAGS}
    args = list(argv)
    for name, value in scan(args, _BY_NAME):
        values[name] = (*values[name], value) if _BY_NAME[name].kind is list else value
    if args:
        raise FlagError(f"unexpected argument: {args[0]}")
    _check(values)
    return values


def _check(values: dict[str, Any]) -> None:
    if not values["from"]:
        raise FlagError("-from is required")
    if not values["from"].startswith(("http://", "https://")):
        raise FlagError(f"-from must be an http:// or https:// URL: {values['from']}")
    if not values["to"]:
        raise FlagError("-to is required")
    if values["parallel"] < 1:
        raise FlagError("-parallel must be at least 1")
    if values["attempts"] < 1:
        raise FlagError("-attempts must be at least 1")
    if values["latest"] < 0:
        raise FlagError("-latest must be at least 1")
    if values["latest"] and values["all"]:
        raise FlagError("-all and -latest exclude each other")
    for kibana in values["kibana.version"]:
        try:
            parse_loose(kibana)
        except VersionError as err:
            raise FlagError(f"invalid -kibana.version {kibana!r}: {err}") from None
    spec_max = values["spec.max"]
    if spec_max and (len(spec_max.split(".")) != 2 or not all(p.isdigit() for p in spec_max.split("."))):
        raise FlagError(f"invalid -spec.max {spec_max!r}: it should be <major.minor>")


def filters_of(values: dict[str, Any]) -> Filters:
    """The selection part of the parsed flags."""
    return Filters(
        kibana_versions=tuple(values["kibana.version"]),
        packages=tuple(values["package"]),
        category=values["category"],
        prerelease=values["prerelease"],
        all=values["all"],
        spec_max=values["spec.max"],
        latest=values["latest"],
    )


class PlainProgress:
    """One line per finished version: for logs, pipes and CI."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def expect(self, size: int) -> None:
        """Plain lines show no totals."""

    def advance(self, size: int) -> None:
        """Plain lines show no byte counts until a version is done."""

    def finished(self, outcome: fetch.Outcome) -> None:
        """Print what happened to the version."""
        print(outcome_line(outcome), file=self.out, flush=True)

    def close(self) -> None:
        """Nothing to tear down."""


class BarProgress:
    """Two tqdm bars on a terminal (versions, bytes), with the version lines printed above them."""

    def __init__(self, total_versions: int, out: TextIO) -> None:
        from tqdm import tqdm  # only on a terminal

        self.out = out
        self._write = tqdm.write
        self.versions = tqdm(total=total_versions, unit="version", desc="versions", position=0)
        self.bytes = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="bytes", position=1)

    def expect(self, size: int) -> None:
        """Grow the byte bar's total by an announced body length."""
        self.bytes.total += size
        self.bytes.refresh()

    def advance(self, size: int) -> None:
        """Move the byte bar."""
        self.bytes.update(size)

    def finished(self, outcome: fetch.Outcome) -> None:
        """Move the version bar; print the outcome above the bars."""
        self.versions.update(1)
        if outcome.status != fetch.KEPT:
            self._write(outcome_line(outcome), file=self.out)

    def close(self) -> None:
        """Remove the bars from the terminal."""
        self.bytes.close()
        self.versions.close()


def outcome_line(outcome: fetch.Outcome) -> str:
    """``added acme-1.0.0 (1234 bytes)`` / ``kept ...`` / ``refused ...: reason``."""
    key = outcome.version.key
    if outcome.status == fetch.ADDED:
        return f"added {key} ({outcome.bytes} bytes)"
    if outcome.status == fetch.REFUSED:
        return f"refused {key}: {outcome.reason}"
    return f"kept {key}"


def main(argv: Sequence[str]) -> int:
    """Run ``eprd mirror``; the return value is the exit status."""
    try:
        values = parse(argv)
    except HelpRequested:
        print(usage(), file=sys.stderr)
        return 0
    except FlagError as err:
        print(f"{err}\n{usage()}", file=sys.stderr)
        return 2
    keyring = None
    if values["verify-key"]:
        try:
            keyring = KeyRing.load(values["verify-key"])
        except ValueError as err:
            print(f"eprd mirror: {err}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(run(values, keyring, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        print("eprd mirror: interrupted; a re-run resumes where this one stopped", file=sys.stderr)
        return 1


async def run(values: dict[str, Any], keyring: KeyRing | None, out: TextIO, err: TextIO) -> int:
    """Select, download, prune and summarise; the exit status."""
    base = values["from"].rstrip("/")
    dest = Path(values["to"])
    client = Upstream(
        timeout=values["timeout"],
        attempts=values["attempts"],
        limit=max(values["parallel"], 4),
        user_agent=f"eprd-mirror/{__version__}",
    )
    started = time.monotonic()
    try:
        try:
            selection = await select(base, filters_of(values), lambda url: _json(client, url))
        except (SelectionError, UpstreamError) as error:
            print(f"eprd mirror: cannot select from {base}: {error}", file=err)
            return 1
        print(f"selected {len(selection)} versions from {base}", file=out)
        if not selection and values["prune"]:
            # A misspelt -package would otherwise empty the whole mirror.
            print("eprd mirror: nothing selected, so -prune removes nothing", file=err)
            values = {**values, "prune": False}
        for version in selection:
            print(f"  {version.key}" + ("" if version.signature else " (unsigned)"), file=out)
        if values["dry-run"]:
            if values["prune"] and dest.is_dir():
                for stem in fetch.prune(dest, selection, apply=False):
                    print(f"would prune {stem}", file=out)
            return 0
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"eprd mirror: cannot create {dest}: {error}", file=err)
            return 1
        if keyring is not None:
            print(f"verifying signatures with {', '.join(keyring.fingerprints())}", file=out)
        progress: PlainProgress | BarProgress = (
            BarProgress(len(selection), out) if err.isatty() and out.isatty() else PlainProgress(out)
        )
        try:
            outcomes = await fetch.Mirror(client, dest, keyring, progress, values["parallel"]).run(selection)
        finally:
            progress.close()
    finally:
        await client.close()
    pruned = fetch.prune(dest, selection) if values["prune"] else []
    for stem in pruned:
        print(f"pruned {stem}", file=out)
    print(summary(outcomes, pruned, time.monotonic() - started), file=out)
    refused = [o for o in outcomes if o.status == fetch.REFUSED]
    for outcome in refused:
        print(f"eprd mirror: {outcome_line(outcome)}", file=err)
    return 1 if refused else 0


async def _json(client: Upstream, url: str) -> Any:
    # identity: the first version of the shared client did not gunzip JSON (eprd and
    # epr.elastic.co gzip /search when asked); one plain /search per query costs little.
    value, _headers = await client.get_json(url, component="mirror", headers=fetch.IDENTITY)
    return value


def summary(outcomes: list[fetch.Outcome], pruned: list[str], seconds: float) -> str:
    """The final line: versions added, kept, refused, pruned; bytes downloaded."""
    count = {status: 0 for status in (fetch.ADDED, fetch.KEPT, fetch.REFUSED)}
    for outcome in outcomes:
        count[outcome.status] += 1
    size = sum(o.bytes for o in outcomes)
    return (
        f"mirror: {count[fetch.ADDED]} added, {count[fetch.KEPT]} kept, {count[fetch.REFUSED]} refused, "
        f"{len(pruned)} pruned, {size} bytes downloaded in {seconds:.1f} s"
    )
