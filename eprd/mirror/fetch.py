"""Download selected versions into DIR: verified first, placed atomically, resumed, pruned.

Every file is written to a hidden temporary name in DIR (``.<name>-<version>.zip.partial``;
eprd's loader and watcher skip hidden names) and renamed into place only when it is whole and
verified, so a live-reloading eprd serving DIR never sees half a zip. The signature is placed
before its zip: eprd requires the ``.sig`` of a zip by default, and a zip appearing first would
be rejected by a watcher that reloads in between. An interrupted body stays as ``.partial`` and
the next attempt (or the next run) asks for the rest with ``Range``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from eprd.mirror.select import Version
from eprd.mirror.verify import KeyRing, Refused, check_zip
from eprd.upstream.client import UpstreamError

ADDED, KEPT, REFUSED = "added", "kept", "refused"
SIG_LIMIT = 1 << 20  # a detached armored signature is a few hundred bytes
BODY_ATTEMPTS = 3  # reads of one body, each resuming where the last one was cut
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
CHUNK = 1 << 16
# Files are asked for as they are: their bytes are what is verified, and Content-Length and
# Range count those bytes, not a compressed transfer of them.
IDENTITY = {"Accept-Encoding": "identity"}


@dataclass(slots=True)
class Outcome:
    """What happened to one selected version."""

    version: Version
    status: str  # ADDED, KEPT or REFUSED
    reason: str = ""
    bytes: int = 0  # downloaded for it in this run


class Progress(Protocol):
    """Where the downloads report to (a terminal bar or plain lines)."""

    def expect(self, size: int) -> None:
        """Another ``size`` bytes are coming (a body's length, when it is announced)."""

    def advance(self, size: int) -> None:
        """``size`` more bytes arrived."""

    def finished(self, outcome: Outcome) -> None:
        """One version is done."""


class Client(Protocol):
    """The part of the shared upstream client a mirror uses."""

    def stream(self, url: str, *, headers: Any = None, component: str = ...) -> Any: ...


def partial_name(filename: str) -> str:
    """The hidden temporary name of ``filename`` while it is downloaded."""
    return f".{filename}.partial"


class Mirror:
    """Downloads versions into ``dest`` through ``client``, ``parallel`` at a time."""

    def __init__(
        self,
        client: Client,
        dest: Path,
        keyring: KeyRing | None,
        progress: Progress,
        parallel: int = 4,
    ) -> None:
        self.client = client
        self.dest = dest
        self.keyring = keyring
        self.progress = progress
        self._slots = asyncio.Semaphore(parallel)

    async def run(self, selection: Iterable[Version]) -> list[Outcome]:
        """Bring every version of ``selection`` into ``dest``; one Outcome each, in order."""
        return list(await asyncio.gather(*(self._one(v) for v in selection)))

    async def _one(self, version: Version) -> Outcome:
        async with self._slots:
            try:
                if await asyncio.to_thread(self._present, version):
                    outcome = Outcome(version, KEPT)
                else:
                    outcome = Outcome(version, ADDED, bytes=await self._fetch(version))
            except Refused as err:
                outcome = Outcome(version, REFUSED, str(err))
            except (TimeoutError, UpstreamError, aiohttp.ClientError, OSError) as err:
                outcome = Outcome(version, REFUSED, f"download failed: {err or type(err).__name__}")
            except Exception as err:  # one odd version must not stop the others
                outcome = Outcome(version, REFUSED, f"failed: {type(err).__name__}: {err}")
        self.progress.finished(outcome)
        return outcome

    def _present(self, version: Version) -> bool:
        """Whether DIR already holds this version whole (and verified, with a key)."""
        zip_path = self.dest / version.filename
        sig_path = self.dest / f"{version.filename}.sig"
        if not zip_path.is_file():
            return False
        try:
            check_zip(zip_path)
            if self.keyring is not None:
                self.keyring.verify(zip_path, sig_path.read_bytes())
            elif version.signature is not None and not sig_path.is_file():
                return False
        except (Refused, OSError):
            return False
        return True

    async def _fetch(self, version: Version) -> int:
        """Download, check and place one version; the bytes downloaded. Raises Refused."""
        if self.keyring is not None and version.signature is None:
            raise Refused("missing signature: the upstream lists no signature_path for it")
        signature = await self._signature(version) if version.signature else None
        partial = self.dest / partial_name(version.filename)
        resumed = partial.exists() and partial.stat().st_size > 0
        received = await self._body(version.download, partial)
        try:
            await asyncio.to_thread(self._check, partial, signature)
        except Refused:
            partial.unlink(missing_ok=True)
            if not resumed:
                raise
            # The piece from before may belong to another build of the file: once, from scratch.
            received += await self._body(version.download, partial)
            try:
                await asyncio.to_thread(self._check, partial, signature)
            except Refused:
                partial.unlink(missing_ok=True)
                raise
        if signature is not None:
            self._place_bytes(f"{version.filename}.sig", signature)
        _fsync(partial)
        os.replace(partial, self.dest / version.filename)
        _fsync_dir(self.dest)
        return received + (len(signature) if signature else 0)

    def _check(self, path: Path, signature: bytes | None) -> None:
        check_zip(path)
        if self.keyring is not None:
            assert signature is not None
            self.keyring.verify(path, signature)

    async def _signature(self, version: Version) -> bytes:
        assert version.signature is not None
        async with self.client.stream(version.signature, headers=IDENTITY, component="mirror") as resp:
            if resp.status != 200:
                raise Refused(f"missing signature: {version.signature} answered {resp.status}")
            if resp.content_length is not None and resp.content_length > SIG_LIMIT:
                raise Refused(f"bad signature: {resp.content_length} bytes is not a signature")
            body = bytearray()
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    body += chunk
                    if len(body) > SIG_LIMIT:
                        raise Refused("bad signature: longer than any signature")
            except (aiohttp.ClientError, TimeoutError) as err:
                raise Refused(f"truncated signature: {err or type(err).__name__}") from None
        if resp.content_length is not None and len(body) != resp.content_length:
            raise Refused(f"truncated signature: {len(body)} of {resp.content_length} bytes")
        return bytes(body)

    async def _body(self, url: str, partial: Path) -> int:
        """Fetch ``url`` into ``partial`` until it is whole; the bytes received. Raises Refused."""
        received = 0
        reason = "no answer"
        for _ in range(BODY_ATTEMPTS):
            offset = partial.stat().st_size if partial.exists() else 0
            headers = {**IDENTITY, "Range": f"bytes={offset}-"} if offset else IDENTITY
            async with self.client.stream(url, headers=headers, component="mirror") as resp:
                total, mode = self._plan(resp, offset)
                if mode is None:
                    partial.unlink(missing_ok=True)  # the piece is no use: start over
                    reason = f"cannot resume ({resp.status})"
                    continue
                start = offset if mode == "ab" else 0
                if total is not None:
                    self.progress.expect(total - start)
                got = 0
                cut: str | None = None
                with open(partial, mode) as out:
                    try:
                        async for chunk in resp.content.iter_chunked(CHUNK):
                            out.write(chunk)
                            got += len(chunk)
                            self.progress.advance(len(chunk))
                    except (TimeoutError, aiohttp.ClientError) as err:
                        cut = str(err) or type(err).__name__
                received += got
            size = start + got
            if total is not None and size > total:
                partial.unlink(missing_ok=True)
                raise Refused(f"body longer than its Content-Length ({size} > {total} bytes)")
            if total is not None and size < total:
                reason = f"truncated body: {size} of {total} bytes" + (f" ({cut})" if cut else "")
                continue
            if cut is not None:  # no length announced: a cut body cannot be told from a whole one
                reason = f"truncated body: {cut}"
                continue
            return received
        raise Refused(reason)

    @staticmethod
    def _plan(resp: aiohttp.ClientResponse, offset: int) -> tuple[int | None, str | None]:
        """(the whole file's length if known, open mode) for an answer; mode None: restart."""
        if resp.status == 200:
            return resp.content_length, "wb"
        if resp.status == 206 and offset:
            match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if match and int(match.group(1)) == offset:
                return (None if match.group(3) == "*" else int(match.group(3))), "ab"
            return None, None
        if resp.status == 416 and offset:
            return None, None
        raise Refused(f"download failed: {resp.url} answered {resp.status}")

    def _place_bytes(self, filename: str, data: bytes) -> None:
        temp = self.dest / partial_name(filename)
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.dest / filename)


def prune(dest: Path, selection: Iterable[Version], *, apply: bool = True) -> list[str]:
    """Remove zips (with their .sig) and leftovers of versions not selected; the stems removed.

    Only top-level ``*.zip``, ``*.zip.sig`` and their ``.partial`` temporaries are touched:
    anything else in DIR is the operator's.
    """
    wanted = {v.filename for v in selection}
    stems: set[str] = set()
    for entry in os.scandir(dest):
        if not entry.is_file(follow_symlinks=False):
            continue
        name = entry.name
        hidden = name.startswith(".") and name.endswith(".partial")
        base = name[1 : -len(".partial")] if hidden else name
        zip_name = base[: -len(".sig")] if base.endswith(".zip.sig") else base
        if not zip_name.endswith(".zip") or zip_name in wanted:
            continue
        if not hidden and base == zip_name:
            stems.add(zip_name[: -len(".zip")])
        if apply:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    return sorted(stems)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the folder is synced (the copy is carried away afterwards).
    with contextlib.suppress(OSError):
        _fsync(path)
