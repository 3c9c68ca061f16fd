"""``-proxy-cache-artifacts``: files of remote packages fetched once and served from disk.

Instead of the reference's 301, the zip, signature or static file is fetched from the
upstream through the shared client, checked, written to the archive cache folder (and so
size-capped with the archives: :meth:`ArchiveStore.make_room`) and served like a local
file (sendfile, ``Content-Length``, Range). A body shorter or longer than its
``Content-Length``, or a zip that does not open, is neither kept nor served. Concurrent
requests for the same file make one download.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import zipfile

from eprd.indexers.base import DiskFile, Failed, NotFound, Resource
from eprd.indexers.local.archives import ArchiveStore
from eprd.model import mediatypes
from eprd.upstream.client import Upstream, UpstreamError

log = logging.getLogger("eprd.proxy")

_CHUNK = 1 << 16
_NOT_FOUND = {
    "statics": "resource not found",
    "artifacts": "artifact not found",
    "signatures": "signature file not found",
}


class PulledFiles:
    """Remote package files kept in the archive cache folder (see the module docstring)."""

    def __init__(self, upstream: Upstream, archives: ArchiveStore) -> None:
        self.upstream = upstream
        self.archives = archives
        self.folder = archives.folder
        self._pulling: dict[str, asyncio.Task[Resource]] = {}
        self.downloads = 0

    def path_of(self, url: str) -> str:
        suffix = ".zip.sig" if url.endswith(".zip.sig") else os.path.splitext(url)[1][:16]
        return os.path.join(self.folder, "remote-" + hashlib.sha256(url.encode()).hexdigest() + suffix)

    async def get(self, url: str, kind: str, name: str) -> Resource:
        """The local copy of ``url`` (a ``kind`` file named ``name``), downloading it if needed."""
        path = self.path_of(url)
        if os.path.exists(path):
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: the last to be evicted
            return DiskFile(path, self._content_type(kind, name, path))
        task = self._pulling.get(path)
        if task is None:
            task = asyncio.create_task(self._pull(url, kind, name, path), name=f"eprd-pull {url}")
            self._pulling[path] = task
            task.add_done_callback(lambda _t: self._pulling.pop(path, None))
        return await asyncio.shield(task)

    async def _pull(self, url: str, kind: str, name: str, path: str) -> Resource:
        self.downloads += 1
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".building-remote-")
        try:
            with os.fdopen(fd, "wb") as out:
                async with self.upstream.stream(url, component=kind) as resp:
                    if resp.status == 404:
                        return NotFound(_NOT_FOUND[kind])
                    if resp.status != 200:
                        return Failed(f"upstream answered {resp.status} for {url}")
                    size = 0
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        out.write(chunk)
                        size += len(chunk)
                    expected = resp.content_length
            if expected is not None and size != expected:
                return Failed(f"{url}: {size} bytes received, Content-Length {expected}")
            if kind == "artifacts" and not await asyncio.to_thread(_opens_as_zip, tmp):
                return Failed(f"{url}: not a valid zip archive")
            os.replace(tmp, path)
        except (UpstreamError, OSError, TimeoutError) as err:
            return Failed(f"{url}: {err}")
        except Exception as err:  # aiohttp payload errors: a body cut short
            return Failed(f"{url}: {type(err).__name__}: {err}")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        await asyncio.to_thread(self.archives.make_room, path)
        log.info("remote package file cached", extra={"url.full": url, "bytes": size})
        return DiskFile(path, self._content_type(kind, name, path))

    @staticmethod
    def _content_type(kind: str, name: str, path: str) -> str:
        if kind == "artifacts":
            return "application/zip"
        known = mediatypes.content_type_by_name(name)
        if known is not None:
            return known
        with open(path, "rb") as fh:
            return mediatypes.sniff(fh.read(512))


def _opens_as_zip(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None  # every member's CRC checks out
    except (zipfile.BadZipFile, OSError, EOFError):
        return False
