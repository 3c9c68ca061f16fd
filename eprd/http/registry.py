"""What the handlers share: the registry's state, of which ``snapshot`` is the one reference that changes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from eprd import API_VERSION
from eprd.catalog.snapshot import Body, Snapshot
from eprd.config import Config
from eprd.indexers.base import Indexer
from eprd.indexers.fallback import Fallback
from eprd.model import gojson
from eprd.ops.accesslog import AccessLog

if TYPE_CHECKING:
    from eprd.indexers.local.watcher import Watcher
    from eprd.ops.apm import Apm
    from eprd.ops.metrics import Metrics

_NO_TRACE: dict[str, Any] = {}


def index_document() -> bytes:
    """The ``/`` body: the API level eprd speaks, named as the reference names itself."""
    name = os.environ.get("ELASTIC_APM_SERVICE_NAME") or "package-registry"
    return gojson.dumps({"service.name": name, "service.version": API_VERSION})


class Registry:
    """Everything the handlers share. ``snapshot`` is the one reference that changes."""

    def __init__(
        self,
        config: Config,
        snapshot: Snapshot,
        indexers: Sequence[Indexer],
        allow_unknown_query_parameters: bool = True,
        favicon: bytes | None = None,
        ui: bool = False,
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.indexers = {indexer.name: indexer for indexer in indexers}
        self.allow_unknown_query_parameters = allow_unknown_query_parameters
        self.index_body = Body(index_document())
        self.favicon = favicon or resources.files("eprd").joinpath("data/favicon.ico").read_bytes()
        self.shutting_down = False
        self.watcher: Watcher | None = None
        self.access_log: AccessLog | None = None
        self.metrics: Metrics | None = None  # -metrics-address (eprd.metrics); set before make_server
        self.apm: Apm | None = None  # ELASTIC_APM_SERVER_URL (eprd.apm)
        # Asked for every answer beyond the snapshot: proxy mode's upstream (-feature-proxy-mode) or nothing.
        self.fallback: Fallback = Fallback()
        # id(request) -> (route template, started, trace) from observe() to the make_server wrapper,
        # which reports requests once their responses are sent; None: reported from observe().
        self._sending: dict[int, tuple[str | None, float, dict[str, Any]]] | None = None
        self.ui = ui  # -ui: the catalog page at /ui/ (eprd.http.ui)
        # Told each new snapshot once it is served (the catalog page's live updates).
        self.on_swap: list[Callable[[Snapshot], None]] = []

    def swap(self, snapshot: Snapshot) -> None:
        """Serve ``snapshot`` from now on; requests in flight keep the one they took."""
        self.snapshot = snapshot
        for callback in self.on_swap:
            callback(snapshot)

    def is_ready(self) -> bool:
        return not self.shutting_down and all(i.is_ready() for i in self.indexers.values())

    def observe(
        self, request: web.BaseRequest, template: str | None, response: web.StreamResponse, started: float
    ) -> None:
        """Called once per request after its handler, before its response is sent."""
        trace = _NO_TRACE
        if self.apm is not None:
            trace = self.apm.observe(request, template)  # names the transaction; its ids for the log line
        if self._sending is not None:
            self._sending[id(request)] = (template, started, trace)  # reported by sent()
        elif self.access_log is not None and request.path != "/health":
            self.access_log.write(request, response, started, trace)

    def sent(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        template: str | None,
        started: float,
        trace: dict[str, Any],
    ) -> None:
        """Called once a response is sent: metrics (matched routes only) and the access log."""
        if self.metrics is not None and template is not None:
            self.metrics.record(request, template, response, time.monotonic() - started)
        if self.access_log is not None and request.path != "/health":
            self.access_log.write(request, response, started, trace)

    def storage_request(self, component: str, location: str = "local") -> None:
        """A package resource served (epr_storage_requests_total): artifacts, statics or signatures."""
        if self.metrics is not None:
            self.metrics.storage_request(component, location)
