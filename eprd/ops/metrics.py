"""Prometheus metrics (``-metrics-address``): the reference's ``epr_*`` series and eprd's own.

Everything lives in one :class:`Metrics` object with its own ``CollectorRegistry``
(plus the process, platform and GC collectors); nothing is registered when the
flag is not set. Requests are reported by ``server.make_server``'s wrapper once
their response is sent (:meth:`Metrics.record`), so duration, response size and
``epr_in_flight_requests`` cover the whole exchange, downloads included, as the
reference's Go middleware does; requests that matched no route are not measured.

The per-request families (:class:`HttpFamilies`) keep plain numbers per (route,
method, status), so measuring a request costs a dict lookup and a few additions;
everything else uses prometheus-client's metric classes.
"""

from __future__ import annotations

import socket
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any, Protocol

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

from eprd import __version__


class _Serving(Protocol):
    """What the gauges follow: the registry (eprd.http.registry), whose snapshot changes."""

    snapshot: Any


class _Changes(Protocol):
    """What a rebuild reports (eprd.indexers.base.Changes)."""

    rejected: list[str]


# The reference's size buckets (metrics/metrics.go): 16 B to 1 KiB, 64 KiB, 256 KiB.
SIZE_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 64 * 1024, 256 * 1024)
SIZE_BOUNDS = (*SIZE_BUCKETS, INF)
# client_golang's default buckets (prometheus.DefBuckets), which the reference's histograms use.
GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DURATION_BOUNDS = (*GO_DEFAULT_BUCKETS, INF)
_LE = {bounds: [floatToGoString(b) for b in bounds] for bounds in (SIZE_BOUNDS, DURATION_BOUNDS)}
REBUILD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STORAGE_COMPONENTS = ("artifacts", "statics", "signatures")

# promhttp's method label: the standard methods in lower case, anything else "unknown".
_METHODS = {
    m: m.lower() for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
}
_METHODS["NOTIFY"] = "notify"


def instance_name() -> str:
    """The ``instance`` label of ``epr_service_info``: the host name, ``localhost`` without one."""
    try:
        return socket.gethostname() or "localhost"
    except OSError:
        return "localhost"


def request_size(request: web.BaseRequest) -> int:
    """promhttp's approximate request size: request line, header names and values, body length."""
    size = len(request.raw_path) + len(request.method) + 8 + (request.content_length or 0)
    for name, value in request.raw_headers:
        size += len(name) + len(value)
    return size


class _Series:
    """The request counts and histograms of one (path, method, code)."""

    __slots__ = (
        "count",
        "duration",
        "duration_sum",
        "labels",
        "request",
        "request_sum",
        "response",
        "response_sum",
    )

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.count = 0
        self.duration = [0] * len(DURATION_BOUNDS)  # per bucket, not cumulative
        self.duration_sum = 0.0
        self.request = [0] * len(SIZE_BOUNDS)
        self.request_sum = 0
        self.response = [0] * len(SIZE_BOUNDS)
        self.response_sum = 0


class HttpFamilies(Collector):
    """``epr_in_flight_requests`` and ``epr_http_*{code,method,path}``, the per-request metrics.

    They are updated for every request, so instead of prometheus-client's Counter and
    Histogram (a lock per increment, three per observation) they are plain numbers in one
    series object per (route template, method, code), created once and looked up in a dict.
    Requests are served and scrapes answered on the event loop's thread, which is the only
    one that touches them.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self._series: dict[tuple[str, str, int], _Series] = {}

    def record(
        self,
        template: str,
        method: str,
        status: int,
        seconds: float,
        request: web.BaseRequest,
        response: web.StreamResponse,
    ) -> None:
        key = (template, _METHODS.get(method, "unknown"), status)  # (bounded: no client-made labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series((str(status), key[1], template))
        series.count += 1
        series.duration[bisect_left(DURATION_BOUNDS, seconds)] += 1
        series.duration_sum += seconds
        size = request_size(request)
        series.request[bisect_left(SIZE_BOUNDS, size)] += 1
        series.request_sum += size
        size = response.content_length or 0
        series.response[bisect_left(SIZE_BOUNDS, size)] += 1
        series.response_sum += size

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "epr_in_flight_requests",
            "A gauge of requests currently being served by the http server",
            value=self.in_flight,
        )
        labels = ("code", "method", "path")
        requests = CounterMetricFamily(
            "epr_http_requests", "A counter for requests to the http server", labels=labels
        )
        duration = HistogramMetricFamily(
            "epr_http_request_duration_seconds",
            "A histogram of latencies for requests to the http server",
            labels=labels,
        )
        request_size = HistogramMetricFamily(
            "epr_http_request_size_bytes",
            "A histogram of sizes of requests to the http server",
            labels=labels,
        )
        response_size = HistogramMetricFamily(
            "epr_http_response_size_bytes",
            "A histogram of response sizes for requests to the http server",
            labels=labels,
        )
        for series in list(self._series.values()):
            requests.add_metric(series.labels, series.count)
            for family, le, counts, total in (
                (duration, _LE[DURATION_BOUNDS], series.duration, series.duration_sum),
                (request_size, _LE[SIZE_BOUNDS], series.request, series.request_sum),
                (response_size, _LE[SIZE_BOUNDS], series.response, series.response_sum),
            ):
                family.add_metric(series.labels, list(zip(le, accumulate(counts), strict=True)), total)
        yield from (requests, duration, request_size, response_size)


class _Families:
    """Declares prometheus-client families in one registry under one namespace."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace

    def gauge(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, documentation, labels, namespace=self.namespace, registry=self.registry)

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, documentation, labels, namespace=self.namespace, registry=self.registry)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = GO_DEFAULT_BUCKETS,  # the reference's histograms use Go's defaults
    ) -> Histogram:
        return Histogram(
            name, documentation, labels, namespace=self.namespace, registry=self.registry, buckets=buckets
        )


class Metrics:
    """The metric families of one eprd process, registered in a private CollectorRegistry."""

    def __init__(self, instance: str | None = None, version: str = __version__) -> None:
        # The Go client exposes no *_created series; neither does eprd (a prometheus-client switch).
        prometheus_client.disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # prometheus-client's default collectors, in this registry rather than the global one.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        epr, own = _Families(r, "epr"), _Families(r, "eprd")  # the reference's series, and eprd's own
        self.service_info = epr.gauge(
            "service_info", "Version information about this binary", ("version", "instance")
        )
        self.service_info.labels(version, instance or instance_name()).set(1)
        self.indexed_packages = epr.gauge(
            "number_indexed_packages",
            "A gauge for number of indexed packages (package versions loaded at start-up)",
        )
        self.storage_requests = epr.counter(
            "storage_requests_total",
            "A counter for requests performed to the storage",
            ("location", "component"),
        )
        # "remote" series appear once a storage package's resource is served.
        self.storage = {(c, "local"): self.storage_requests.labels("local", c) for c in STORAGE_COMPONENTS}
        self.indexer_get = epr.histogram(
            "indexer_get_duration_seconds",
            "A histogram of latencies for get processes run by the indexer",
            ("indexer",),
        )
        self.storage_update_success = epr.counter(
            "storage_indexer_update_index_success_total",
            "A counter for all the update index processes that finished successfully",
        )
        self.storage_update_error = epr.counter(
            "storage_indexer_update_index_error_total",
            "A counter for all the update index processes that finished with error",
        )
        self.storage_update_duration = epr.histogram(
            "storage_indexer_update_index_duration_seconds",
            "A histogram of latencies for update index processes run by the storage indexer",
        )
        self.http = HttpFamilies()
        r.register(self.http)

        # Outgoing calls of the shared upstream client (eprd.upstream), and proxy mode.
        self.upstream_requests = own.counter(
            "upstream_requests_total",
            "Attempts of calls to upstream servers, by component and outcome",
            ("component", "outcome"),
        )
        self.upstream_duration = own.histogram(
            "upstream_request_duration_seconds",
            "Duration of attempts of calls to upstream servers",
            ("component",),
        )
        self.proxy_stale_answers = own.counter(
            "proxy_stale_answers_total",
            "Proxy mode answers built from a stale upstream answer because the upstream failed",
            ("component",),
        )

        # The live snapshot and its rebuilds.
        self.packages_served = own.gauge("packages_served", "Package versions the current snapshot serves")
        self.rejected = own.gauge(
            "rejected_package_versions", "Package versions currently left out because they are invalid"
        )
        self.rejections = own.counter(
            "package_rejections_total", "Invalid package versions found, at start-up and on every reload"
        )
        self.generation = own.gauge("snapshot_generation", "Generation of the current snapshot")
        self.built_at = own.gauge(
            "snapshot_build_timestamp_seconds", "When the current snapshot was built (Unix time)"
        )
        self.rebuilds = own.counter(
            "snapshot_rebuilds_total", "Snapshots rebuilt and swapped in by the package path watcher"
        )
        self.rebuild_duration = own.histogram(
            "snapshot_rebuild_duration_seconds",
            "Time from a batch of file changes to the new snapshot being served",
            buckets=REBUILD_BUCKETS,
        )
        self.task_restarts = own.counter(
            "background_task_restarts_total",
            "Background tasks (the package path watcher, ...) that failed and were restarted",
            ("task",),
        )

    # --- wiring -------------------------------------------------------------------------------

    def bind(self, registry: _Serving) -> None:
        """Follow ``registry``: snapshot gauges read its current snapshot at every scrape."""
        snapshot = registry.snapshot
        self.indexed_packages.set(len(snapshot))  # at start-up only, as the reference
        self.rejections.inc(len(snapshot.rejected))
        self.packages_served.set_function(lambda: len(registry.snapshot))
        self.rejected.set_function(lambda: len(registry.snapshot.rejected))
        self.generation.set_function(lambda: registry.snapshot.generation)
        self.built_at.set_function(lambda: registry.snapshot.built_at)

    def on_rebuild(self, changes: _Changes, seconds: float) -> None:
        """A ``Combined.on_rebuild`` callback: a snapshot was rebuilt after ``changes``."""
        self.rebuilds.inc()
        self.rebuild_duration.observe(seconds)
        if changes.rejected:
            self.rejections.inc(len(changes.rejected))

    def on_task_restart(self, task: str) -> None:
        """A ``Supervisor.on_restart`` callback."""
        self.task_restarts.labels(task).inc()

    def observe_indexer(self, indexer: str, seconds: float) -> None:
        self.indexer_get.labels(indexer).observe(seconds)

    def storage_request(self, component: str, location: str = "local") -> None:
        counter = self.storage.get((component, location))
        if counter is None:
            counter = self.storage[(component, location)] = self.storage_requests.labels(location, component)
        counter.inc()

    def storage_update(self, success: bool, seconds: float) -> None:
        """A ``StorageIndexer.on_update`` callback: one poll that loaded an index, or failed."""
        (self.storage_update_success if success else self.storage_update_error).inc()
        self.storage_update_duration.observe(seconds)

    def upstream_request(self, component: str, outcome: str, seconds: float) -> None:
        """One attempt of an upstream call (an ``eprd.upstream`` Observer report).

        Artifacts, statics and signatures fetched from an upstream also count as the
        reference's ``epr_storage_requests_total{location="remote"}``.
        """
        self.upstream_requests.labels(component, outcome).inc()
        self.upstream_duration.labels(component).observe(seconds)
        if outcome == "ok" and component in STORAGE_COMPONENTS:
            self.storage_requests.labels("remote", component).inc()

    def proxy_stale(self, component: str) -> None:
        """A stale upstream answer served in proxy mode (an ``UpstreamCache.on_stale`` callback)."""
        self.proxy_stale_answers.labels(component).inc()

    # --- requests -----------------------------------------------------------------------------

    def record(
        self, request: web.BaseRequest, template: str, response: web.StreamResponse, seconds: float
    ) -> None:
        """One request to ``template`` whose response was sent (``Registry.sent``)."""
        self.http.record(template, request.method, response.status, seconds, request, response)

    # --- the /metrics listener ----------------------------------------------------------------

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


NOT_FOUND = b"404 page not found\n"


def not_found() -> web.Response:
    return web.Response(
        status=404,
        body=NOT_FOUND,
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"},
    )


def make_metrics_app(metrics: Metrics) -> web.Application:
    """The second listener: the exposition at exactly ``/metrics``, 404 anywhere else."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path != "/metrics":
            return not_found()
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
