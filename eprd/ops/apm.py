"""Elastic APM tracing, on only when ``ELASTIC_APM_SERVER_URL`` is set.

The Python agent would send to ``http://127.0.0.1:8200`` when no server URL is
configured, so without the variable no client is created at all. With it, the
agent is configured by the standard ``ELASTIC_APM_*`` variables (the service
name defaults to ``package-registry`` like the reference's, the service version
to eprd's) and:

* every API request is a ``request`` transaction (as the agent's aiohttp
  middleware makes them, :meth:`Apm.trace`), named ``<METHOD> <route template>`` (``GET /search``,
  ``GET /package/{packageName:[a-z0-9_]+}/{packageVersion}/``) as the reference's
  apmgorilla names them, ``<METHOD> unknown route`` when no route matched;
* loading packages at start-up and every live reload is a transaction
  (``load packages`` of type ``backend.init``, ``reload packages`` of type
  ``backend.watcher``) with a span for reading the package versions and one for
  building the snapshot;
* log lines written during a transaction carry ``trace.id`` and
  ``transaction.id`` (the agent's log record factory, read by ecs-logging), and
  so do access lines (:meth:`Apm.observe`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from eprd import __version__

if TYPE_CHECKING:  # aiohttp and the agent are imported only when APM is on
    from collections.abc import Awaitable

    import elasticapm
    from aiohttp import web

    Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


log = logging.getLogger("eprd.apm")

SERVICE_NAME = "package-registry"


def enabled(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("ELASTIC_APM_SERVER_URL", "").strip())


class Apm:
    """The agent's client and the pieces of eprd it traces."""

    def __init__(self) -> None:
        import aiohttp
        import elasticapm

        self._elasticapm = elasticapm
        # Framework-level settings: every ELASTIC_APM_* variable overrides them.
        self.client: elasticapm.Client = elasticapm.Client(
            config={
                "SERVICE_NAME": SERVICE_NAME,
                "SERVICE_VERSION": __version__,
                "FRAMEWORK_NAME": "aiohttp",
                "FRAMEWORK_VERSION": aiohttp.__version__,
            }
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Apm | None:
        """An Apm when ``ELASTIC_APM_SERVER_URL`` is set, else None (no agent at all)."""
        return cls() if enabled(environ) else None

    def trace(self, handler: Handler) -> Handler:
        """``handler`` with every request a ``request`` transaction.

        What the agent's aiohttp middleware does (it needs an ``Application`` and its router,
        which the API server does without): continue the caller's trace, record the request
        and response context, result and outcome, capture an exception. The transaction is
        named by :meth:`observe` (``<METHOD> unknown route`` until then).
        """
        from elasticapm.conf import constants
        from elasticapm.contrib.aiohttp.middleware import AioHttpTraceParent
        from elasticapm.contrib.aiohttp.utils import get_data_from_request, get_data_from_response

        apm = self._elasticapm
        client = self.client
        if client.config.instrument and client.config.enabled:
            apm.instrument()

        async def traced(request: web.BaseRequest) -> web.StreamResponse:
            if client.should_ignore_url(request.path):
                return await handler(request)
            client.begin_transaction("request", trace_parent=AioHttpTraceParent.from_headers(request.headers))
            apm.set_transaction_name(f"{request.method} unknown route", override=False)
            config = client.config
            apm.set_context(lambda: get_data_from_request(request, config, constants.TRANSACTION), "request")
            status = 500
            try:
                response = await handler(request)
                status = response.status
                apm.set_context(
                    lambda: get_data_from_response(response, config, constants.TRANSACTION), "response"
                )
                return response
            except Exception:
                apm.set_context({"status_code": 500}, "response")
                client.capture_exception(
                    context={"request": get_data_from_request(request, config, constants.ERROR)}
                )
                raise
            finally:
                apm.set_transaction_result(f"HTTP {status // 100}xx", override=False)
                apm.set_transaction_outcome(http_status_code=status, override=False)
                client.end_transaction()

        return traced

    def observe(self, request: web.BaseRequest, template: str | None) -> dict[str, Any]:
        """Name the request's transaction after its route template; its ids for the access log line."""
        apm = self._elasticapm
        apm.set_transaction_name(f"{request.method} {template or 'unknown route'}")
        trace_id = apm.get_trace_id()
        if trace_id is None:
            return {}
        return {"trace": {"id": trace_id}, "transaction": {"id": apm.get_transaction_id()}}

    def traced_collection(self, collection: Any) -> TracedCollection:
        return TracedCollection(collection, self)

    def close(self) -> None:
        """Send what is queued and stop the agent's threads."""
        self.client.close()


class TracedCollection:
    """A ``loader.Collection`` whose loads and snapshot builds are APM transactions and spans.

    Start-up calls ``load_all()`` then builds the first snapshot, the watcher ``refresh()``
    or ``apply()`` then (when something changed) builds the next, each in a worker thread;
    a load begins the transaction and the snapshot build (:meth:`build`) ends it.
    Everything else is the collection's own.
    """

    def __init__(self, collection: Any, apm: Apm) -> None:
        self._collection = collection
        self._apm = apm
        self._open: tuple[Any, str] | None = None  # the transaction a load began, and its name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def load_all(self) -> Any:
        return self._load("load packages", "backend.init", self._collection.load_all, always_build=True)

    def apply(self, changed_paths: Any) -> Any:
        return self._load(
            "reload packages", "backend.watcher", lambda: self._collection.apply(changed_paths), False
        )

    def refresh(self) -> Any:
        """The watcher's catch-up once it watches: what changed since start-up."""
        return self._load("reload packages", "backend.watcher", self._collection.refresh, False)

    def _load(self, name: str, kind: str, load: Callable[[], Any], always_build: bool) -> Any:
        apm = self._apm._elasticapm
        client = self._apm.client
        transaction = client.begin_transaction(kind)
        try:
            with apm.capture_span("load package versions", span_type="app", span_subtype="packages"):
                changes = load()
        except BaseException:
            if transaction is not None:
                client.end_transaction(name, "failure")
            raise
        if transaction is None:
            return changes
        for what in ("added", "changed", "removed", "rejected"):
            value = getattr(changes, what, None)
            if value is not None:
                apm.label(**{f"packages_{what}": len(value)})
        if changes or always_build:
            self._open = (transaction, name)
        else:
            client.end_transaction(name, "no changes")
        return changes

    def build(self, build: Callable[[], Any]) -> Any:
        """Run a snapshot build (``eprd.indexers.combined``) as the end of the load's transaction."""
        apm = self._apm._elasticapm
        client = self._apm.client
        opened, self._open = self._open, None
        if opened is None:
            transaction, name = client.begin_transaction("backend.init"), "build snapshot"
        else:
            transaction, name = opened
            from elasticapm.traces import execution_context

            execution_context.set_transaction(transaction)  # this worker thread continues the load's
        try:
            with apm.capture_span("build snapshot", span_type="app", span_subtype="snapshot"):
                snapshot = build()
        except BaseException:
            if transaction is not None:
                client.end_transaction(name, "failure")
            raise
        if transaction is not None:
            apm.label(packages_served=len(snapshot), snapshot_generation=snapshot.generation)
            client.end_transaction(name, "success")
        return snapshot
