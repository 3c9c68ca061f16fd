"""Test parts for ``eprd mirror``: a throwaway OpenPGP key, signed zip folders, a faulty upstream.

The faulty upstream is a real aiohttp server on loopback answering a fixed ``/search`` list
and serving files with one fault each (cut bodies, lying ``Content-Length``, corrupted bytes,
missing signatures, Range handling), and recording every request it gets.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pysequoia
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests import pkgfactory as pf
from tests.conftest import ROOT, child_env


class Signer:
    """A throwaway OpenPGP key made by the test; signs like Elastic's ``.zip.sig`` (armored, detached)."""

    def __init__(self, user: str = "Mirror Test <mirror@example.invalid>") -> None:
        self.tsk = pysequoia.Tsk.generate(user)
        self.public = str(self.tsk.extract_certificate())

    def sign(self, data: bytes) -> bytes:
        return pysequoia.sign(self.tsk.signer(), data, mode=pysequoia.SignatureMode.DETACHED)

    def write_key(self, path: Path) -> Path:
        path.write_text(self.public)
        return path


@dataclass(frozen=True)
class Pkg:
    """One version the upstream holds: manifest overrides, signed or not."""

    name: str
    version: str
    manifest: dict[str, Any] = field(default_factory=dict)
    signed: bool = True

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


def kibana(constraint: str) -> dict[str, Any]:
    return {"kibana": {"version": constraint}}


# The upstream of the filter tests: each filter changes the selection in a way the tests check.
CATALOG = (
    Pkg("acme", "1.0.0", {"categories": ["security"], "conditions": kibana("^8.0.0")}),
    Pkg("acme", "1.1.0", {"categories": ["security"], "conditions": kibana("^8.10.0")}),
    Pkg("acme", "1.2.0-beta1", {"categories": ["security"], "conditions": kibana("^8.10.0")}),
    Pkg("widget", "0.9.0", {"categories": ["observability"], "conditions": kibana("^7.17.0")}),
    Pkg("widget", "1.0.0", {"conditions": kibana("^8.0.0"), "format_version": "3.3.0"}),
    Pkg("gadget", "3.0.0", {"conditions": kibana("^8.0.0")}),
    Pkg("gadget", "3.1.0", {"conditions": kibana("^8.0.0")}),
    Pkg("gadget", "3.2.0", {"conditions": kibana("^8.0.0")}),
)


def write_packages(folder: Path, signer: Signer, pkgs: tuple[Pkg, ...] | list[Pkg]) -> dict[str, bytes]:
    """Write ``<name>-<version>.zip`` (+ ``.zip.sig`` when signed) into ``folder``; their bytes by key."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for pkg in pkgs:
        path = pf.write_zip(folder, pkg.name, pkg.version, manifest=pkg.manifest)
        data = path.read_bytes()
        if pkg.signed:
            Path(f"{path}.sig").write_bytes(signer.sign(data))
        out[pkg.key] = data
    return out


def visible(folder: Path) -> list[str]:
    """The names eprd would look at in ``folder`` (hidden temporaries left out)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


@dataclass
class MirrorRun:
    rc: int
    out: str
    err: str

    def summary(self) -> str:
        return next(line for line in self.out.splitlines() if line.startswith("mirror: "))


async def run_mirror(*args: str | Path, timeout: float = 120.0) -> MirrorRun:
    """``python -m eprd mirror ARGS`` as a child process (output not a terminal: plain lines)."""
    env = child_env()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eprd",
        "mirror",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return MirrorRun(proc.returncode, out.decode(), err.decode())


@dataclass
class Served:
    """A file of the faulty upstream and how it misbehaves."""

    data: bytes
    fault: str = ""  # see FaultyUpstream._file
    hits: int = 0


class FaultyUpstream:
    """A registry of the test's own: ``/search`` from a list, files with faults, a request log."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.files: dict[str, Served] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.server: TestServer | None = None
        self.base = ""
        self.chunk_delay = 0.0  # seconds between 4 KiB chunks of "slow" files

    def add(
        self,
        name: str,
        version: str,
        data: bytes,
        signature: bytes | None = None,
        *,
        fault: str = "",
        sig_fault: str = "",
        advertise_sig: bool | None = None,
    ) -> None:
        """Serve ``data`` as ``name-version.zip`` (and ``signature`` as its ``.sig``)."""
        stem = f"{name}-{version}"
        entry: dict[str, Any] = {
            "name": name,
            "version": version,
            "download": f"/epr/{name}/{stem}.zip",
            "path": f"/package/{name}/{version}",
        }
        if advertise_sig if advertise_sig is not None else signature is not None:
            entry["signature_path"] = f"/epr/{name}/{stem}.zip.sig"
        self.entries.append(entry)
        self.files[f"{stem}.zip"] = Served(data, fault)
        if signature is not None:
            self.files[f"{stem}.zip.sig"] = Served(signature, sig_fault)

    def requested(self, suffix: str) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].endswith(suffix)]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/search", self._search)
        app.router.add_get("/epr/{name}/{file}", self._file)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.base = str(self.server.make_url("")).rstrip("/")
        return self.base

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _search(self, request: web.Request) -> web.Response:
        self.requests.append((request.path_qs, None))
        return web.json_response(self.entries)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        """Faults: ``truncate`` (half the announced body, then the connection is cut),
        ``long-length`` (announces more than it sends), ``short-length`` (announces less),
        ``corrupt`` (bytes flipped in the middle), ``missing`` (404), ``error`` (500),
        ``cut-once`` (the first answer is cut at half, later ones honour Range), ``no-range``
        (Range ignored), ``slow`` (4 KiB chunks with ``chunk_delay`` between them), ``trickle``
        (16-byte chunks: a body that arrives in many reads)."""
        name = request.match_info["file"]
        served = self.files.get(name)
        self.requests.append((request.path, request.headers.get("Range")))
        if served is None or served.fault == "missing":
            return web.Response(status=404, text="artifact not found")
        served.hits += 1
        if served.fault == "error":
            return web.Response(status=500, text="internal server error")
        data = served.data
        if served.fault == "corrupt":
            middle = len(data) // 2
            data = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
        start = 0
        range_header = request.headers.get("Range", "")
        if range_header.startswith("bytes=") and served.fault != "no-range":
            start = int(range_header[len("bytes=") :].split("-")[0])
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_type = "application/zip"
        body = data[start:]
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        cut = served.fault == "truncate" or (served.fault == "cut-once" and served.hits == 1)
        if served.fault == "long-length":
            resp.content_length = len(body) + 100
        elif served.fault == "short-length":
            resp.content_length = len(body) - 100
            body = body[: len(body) - 100]
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        if cut:
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection dies half-way through the body
            return resp
        if served.fault in ("slow", "trickle"):
            step = 4096 if served.fault == "slow" else 16
            for pos in range(0, len(body), step):
                await resp.write(body[pos : pos + step])
                await asyncio.sleep(self.chunk_delay if served.fault == "slow" else 0.002)
        else:
            await resp.write(body)
        if served.fault == "long-length":
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp
