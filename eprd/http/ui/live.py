"""Server-sent events naming the snapshot generation, for the catalog page's live updates."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web

from eprd.catalog.snapshot import Snapshot

# A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT_SECONDS = 15.0
CONTENT_TYPE = "text/event-stream"


class Broadcaster:
    """Wakes every open event stream when the registry swaps its snapshot.

    Each swap sets the current event and puts a fresh one in its place, so a stream
    waits on exactly one event at a time and nothing is queued per client.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._changed = asyncio.Event()
        self._closing = False
        self.streams = 0  # open streams, for tests and diagnostics

    def swapped(self, snapshot: Snapshot) -> None:
        """``Registry.on_swap`` callback: called on the event loop with the new snapshot."""
        self.snapshot = snapshot
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """End every stream (at shutdown, so that open pages do not hold it up)."""
        self._closing = True
        self._changed.set()

    async def stream(self, request: web.BaseRequest) -> web.StreamResponse:
        """One ``text/event-stream`` response: the current generation, then one event per swap."""
        response = web.StreamResponse(
            headers={
                "Content-Type": CONTENT_TYPE,
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx would otherwise hold the events back
            }
        )
        await response.prepare(request)
        self.streams += 1
        try:
            # retry: browsers reconnect after a second (a restart or a dropped connection)
            await response.write(b"retry: 1000\n\n" + _event(self.snapshot))
            sent = self.snapshot.generation
            while not self._closing:
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), HEARTBEAT_SECONDS)
                if self._closing:
                    break
                if self.snapshot.generation != sent:
                    sent = self.snapshot.generation
                    await response.write(_event(self.snapshot))
                else:
                    await response.write(b": keep-alive\n\n")
        except (ConnectionError, asyncio.CancelledError):
            pass  # the page went away, or the server is stopping
        finally:
            self.streams -= 1
        return response


def _event(snapshot: Snapshot) -> bytes:
    data = orjson.dumps(
        {"generation": snapshot.generation, "packages": len(snapshot), "rejected": len(snapshot.rejected)}
    )
    return b"event: snapshot\nid: %d\ndata: %s\n\n" % (snapshot.generation, data)
