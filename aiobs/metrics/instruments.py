"""Prometheus instruments, created from the catalog on an injected registry."""

from __future__ import annotations

import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from aiobs import catalog
from aiobs.metrics.multiprocess import MergedCollector

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create(metric: catalog.Metric, registry: CollectorRegistry | None) -> Any:
    """The prometheus_client instrument for a catalog entry, registered on ``registry``."""
    if metric.kind == "counter":
        return Counter(metric.base_name, metric.help, metric.labels, registry=registry)
    if metric.kind == "histogram":
        return Histogram(
            metric.name, metric.help, metric.labels, registry=registry, buckets=metric.buckets
        )
    return Gauge(
        metric.name,
        metric.help,
        metric.labels,
        registry=registry,
        multiprocess_mode=metric.multiprocess_mode,  # type: ignore[arg-type]
    )


class Instruments:
    """The instruments one :class:`~aiobs.Observability` records into.

    In multiprocess mode the values live in per-process files and the instruments are not
    registered anywhere; :meth:`exposition_registry` then merges every worker's files.
    """

    def __init__(self, registry: CollectorRegistry, multiprocess_dir: str | None) -> None:
        self.registry = registry
        self.multiprocess_dir = multiprocess_dir
        target = None if multiprocess_dir else registry
        self._target = target
        self._created: dict[str, Any] = {}
        self.http_requests = self.get(catalog.HTTP_REQUESTS)
        self.http_duration = self.get(catalog.HTTP_REQUEST_DURATION)
        self.http_first_byte = self.get(catalog.HTTP_RESPONSE_FIRST_BYTE)
        self.http_in_flight = self.get(catalog.HTTP_REQUESTS_IN_FLIGHT)
        self.service_ready = self.get(catalog.SERVICE_READY)
        self.spans_exported = self.get(catalog.SPANS_EXPORTED)
        self.span_export_failures = self.get(catalog.SPAN_EXPORT_FAILURES)
        self.spans_dropped = self.get(catalog.SPANS_DROPPED)
        self.log_lines_dropped = self.get(catalog.LOG_LINES_DROPPED)

    def get(self, metric: catalog.Metric) -> Any:
        """The instrument for ``metric``, created on first use."""
        instrument = self._created.get(metric.name)
        if instrument is None:
            instrument = self._created[metric.name] = create(metric, self._target)
        return instrument

    def exposition_registry(self) -> CollectorRegistry:
        """The registry ``/metrics`` renders."""
        if not self.multiprocess_dir:
            return self.registry
        # MergedCollector reads under the lock that compactions of dead workers' files take,
        # and adds exactly.
        merged = CollectorRegistry()
        merged.register(MergedCollector(self.multiprocess_dir))
        return merged


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def serve_metrics(
    port: int, addr: str, registry: CollectorRegistry, *, shared: bool
) -> tuple[WSGIServer, threading.Thread]:
    """``/metrics`` on its own port, from a daemon thread (prometheus_client's server).

    ``shared``: every worker process of the service binds the port (``SO_REUSEPORT``), the
    kernel spreads scrapes over them, and each answers with every worker's values merged.
    """
    family, *_, address = socket.getaddrinfo(
        addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    host = str(address[0])

    class Server(ThreadingWSGIServer):
        address_family = family

        def server_bind(self) -> None:
            if shared and hasattr(socket, "SO_REUSEPORT"):
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="aiobs-metrics", daemon=True)
    thread.start()
    return server, thread


def render(registry: CollectorRegistry, openmetrics: bool) -> tuple[bytes, str]:
    """The exposition of ``registry`` and its content type (blocking: call off the loop)."""
    if openmetrics:
        return generate_openmetrics(registry), OPENMETRICS_CONTENT_TYPE  # type: ignore[no-untyped-call]
    return generate_text(registry), TEXT_CONTENT_TYPE


def wants_openmetrics(accept: str) -> bool:
    """Whether an ``Accept`` header asks for OpenMetrics (the format exemplars travel in)."""
    return "application/openmetrics-text" in accept
