"""The :class:`~eprd.upstream.client.Observer` that feeds eprd's metrics and APM spans.

Kept apart from the client so that the client itself knows nothing of Prometheus or the
APM agent; both are optional here (None when ``-metrics-address`` / APM are off).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eprd.ops.apm import Apm
    from eprd.ops.metrics import Metrics


class OpsObserver:
    """Counts attempts in ``metrics`` and wraps them in APM spans when ``apm`` is on.

    With APM on, the agent's aiohttp client instrumentation (switched on here) adds the
    ``external``/``http`` leaf span and the ``traceparent`` header to each request; the
    span made here names the component the call was for.
    """

    def __init__(self, metrics: Metrics | None = None, apm: Apm | None = None) -> None:
        self.metrics = metrics
        self._capture_span: Any = None
        if apm is not None:
            import elasticapm

            elasticapm.instrument()  # idempotent; the aiohttp middleware does the same
            self._capture_span = elasticapm.capture_span

    def request(self, component: str, outcome: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.upstream_request(component, outcome, seconds)

    def span(self, component: str, method: str, url: str) -> AbstractContextManager[Any]:
        if self._capture_span is None:
            return nullcontext()
        return self._capture_span(
            f"upstream {component}", span_type="external", span_subtype="upstream", labels={"url": url}
        )
