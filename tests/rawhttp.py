"""A raw HTTP/1.1 client for tests that must send bytes no HTTP library would send.

Requests are written byte for byte on one connection (so keep-alive can be checked);
replies are read by Content-Length or chunked framing, or until the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class RawReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    closed: bool = False  # the server closed the connection after this reply
    head: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]


def request_bytes(
    method: bytes | str, target: bytes | str, headers: list[tuple[bytes | str, bytes | str]] = ()
) -> bytes:
    """One request without a body; ``Host`` is added unless given."""

    def raw(value: bytes | str) -> bytes:
        return value if isinstance(value, bytes) else value.encode()

    lines = [raw(method) + b" " + raw(target) + b" HTTP/1.1"]
    if not any(raw(name).lower() == b"host" for name, _ in headers):
        lines.append(b"Host: eprd.test")
    lines += [raw(name) + b": " + raw(value) for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class RawConnection:
    """One TCP connection to a test server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base: str) -> RawConnection:
        parts = urlsplit(base)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port), timeout=30
        )
        return cls(reader, writer)

    async def exchange(self, raw: bytes, head: bool | None = None, timeout: float = 60) -> RawReply:
        """Send ``raw`` (one whole request) and read one reply."""
        if head is None:
            head = raw.startswith(b"HEAD ")
        self.writer.write(raw)
        await self.writer.drain()
        return await asyncio.wait_for(self._read(head), timeout=timeout)

    async def _read(self, head: bool) -> RawReply:
        try:
            block = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            raise ConnectionError(f"connection closed before a reply ({err.partial[:200]!r})") from err
        lines = block[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        reply = RawReply(status, headers, b"", head=block)
        length = reply.header("Content-Length")
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif (reply.header("Transfer-Encoding") or "").lower() == "chunked":
            body = await self._chunked()
        elif length is not None:
            body = await self.reader.readexactly(int(length))
        else:
            body = await self.reader.read()
            reply.closed = True
        reply.body = body
        if (reply.header("Connection") or "").lower() == "close" or lines[0].startswith(b"HTTP/1.0"):
            reply.closed = True
        return reply

    async def _chunked(self) -> bytes:
        out = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return out
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def send(base: str, raw: bytes, head: bool | None = None) -> RawReply:
    """One request on a connection of its own."""
    conn = await RawConnection.open(base)
    try:
        return await conn.exchange(raw, head)
    finally:
        await conn.close()


class SyncConnection:
    """The blocking twin of :class:`RawConnection`, for tests driven by hypothesis."""

    def __init__(self, base: str, timeout: float = 60) -> None:
        import socket

        parts = urlsplit(base)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def exchange(self, raw: bytes, head: bool | None = None) -> RawReply:
        if head is None:
            head = raw.startswith(b"HEAD ")
        self.sock.sendall(raw)
        block = b""
        while not block.endswith(b"\r\n\r\n"):
            line = self.file.readline(65536)
            if not line:
                raise ConnectionError(f"connection closed before a reply ({block[:200]!r})")
            block += line
            if block == b"\r\n":  # tolerate a stray empty line before the status line
                block = b""
        lines = block[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        reply = RawReply(status, headers, b"", head=block)
        length = reply.header("Content-Length")
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif (reply.header("Transfer-Encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.file.readline(1024).split(b";")[0], 16)
                if size == 0:
                    self.file.readline(1024)
                    break
                body += self._exactly(size)
                self._exactly(2)
        elif length is not None:
            body = self._exactly(int(length))
        else:
            body = self.file.read()
            reply.closed = True
        reply.body = body
        if (reply.header("Connection") or "").lower() == "close" or lines[0].startswith(b"HTTP/1.0"):
            reply.closed = True
        return reply

    def _exactly(self, size: int) -> bytes:
        data = self.file.read(size)
        if len(data) != size:
            raise ConnectionError(f"body cut off after {len(data)} of {size} bytes")
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()
