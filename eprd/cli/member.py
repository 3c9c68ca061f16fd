"""What a ``-workers`` worker process gets from its supervisor (see :mod:`eprd.cli.workers`)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eprd.catalog.snapshot import Snapshot
    from eprd.ops.metrics import Metrics

METRICS_REQUEST = "metrics"


@dataclass
class Member:
    """What a worker process gets from the supervisor."""

    index: int
    snapshot: Snapshot
    sockets: dict[str, socket.socket]  # flag name -> listening socket (address, httpprof)
    feed: Connection  # watch batches, READY and errors, as the watch process sends them
    control: Connection  # metrics requests from the supervisor, answered on it

    def start_control(self, loop: Any, metrics: Metrics | None) -> None:
        """Answer the supervisor's metrics requests (the exposition is built on the event loop)."""

        async def exposition() -> bytes:
            return metrics.exposition()[0] if metrics is not None else b""

        def answer() -> None:
            import asyncio

            try:
                while True:
                    request = self.control.recv()
                    if request == METRICS_REQUEST:
                        self.control.send_bytes(asyncio.run_coroutine_threadsafe(exposition(), loop).result())
            except (EOFError, OSError, RuntimeError):
                pass  # the supervisor or the loop is gone

        threading.Thread(target=answer, name="eprd-worker-control", daemon=True).start()

    def pid_header(self) -> Callable[[Any, Any], Any]:
        """An aiohttp on_response_prepare callback naming this worker's pid (side listeners' apps)."""
        # (Here, not at the top: the supervisor imports this module and never needs aiohttp.)
        from eprd.http.server import WORKER_HEADER

        pid = str(os.getpid())

        async def add(request: Any, response: Any) -> None:
            response.headers[WORKER_HEADER] = pid

        return add
