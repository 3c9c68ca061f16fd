"""SharedSocketSite: the listener of ``-workers N`` takes one waiting connection per wake-up.

Real sockets on loopback and a real event loop: connections wait in the kernel's queue while the
loop is not running, then the loop runs exactly one turn.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web

from eprd.http.sharedsite import SharedSocketSite


async def _hello(request: web.BaseRequest) -> web.Response:
    return web.Response(text="hello")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _one_turn(loop: asyncio.AbstractEventLoop) -> None:
    loop.call_soon(loop.stop)
    loop.run_forever()


def _waiting(listener: socket.socket) -> int:
    """How many connections wait in ``listener``'s queue (taken out of it to count them)."""
    count = 0
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_an_accepted_connection_is_served(loop: asyncio.AbstractEventLoop) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    port = listener.getsockname()[1]
    runner = web.ServerRunner(web.Server(_hello, loop=loop), shutdown_timeout=0.1)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(SharedSocketSite(runner, listener).start())
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        client.setblocking(False)
        reply = b""
        for _ in range(1000):
            _one_turn(loop)
            try:
                reply += client.recv(65536)
            except BlockingIOError:
                continue
            if reply.endswith(b"hello"):
                break
        assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"hello")
    finally:
        client.close()
        loop.run_until_complete(runner.cleanup())


def test_a_burst_is_left_in_the_queue_after_the_first_accept(loop: asyncio.AbstractEventLoop) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    # A second descriptor of the same socket, as the other worker holds it.
    other = socket.socket(fileno=socket.dup(listener.fileno()))
    runner = web.ServerRunner(web.Server(_hello, loop=loop), shutdown_timeout=0.1)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(SharedSocketSite(runner, listener).start())
    clients = [socket.create_connection(other.getsockname()[:2], timeout=5) for _ in range(5)]
    try:
        _one_turn(loop)
        assert _waiting(other) == 4  # asyncio's own accept loop would have taken all five
        loop.run_until_complete(runner.cleanup())  # the site stops accepting
        late = socket.create_connection(other.getsockname()[:2], timeout=5)
        _one_turn(loop)
        assert _waiting(other) == 1  # left to the workers still serving
        late.close()
    finally:
        for client in clients:
            client.close()
        loop.run_until_complete(runner.cleanup())  # (again, if an assertion failed before: a no-op)
        other.close()
