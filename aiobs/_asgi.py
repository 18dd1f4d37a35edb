"""The pure ASGI middleware: one server span, the ``http_*`` metrics and one access line per
request; the ``/metrics`` and ``/health`` endpoints; bounded flush at lifespan shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from aiobs import _logging, catalog
from aiobs._endpoints import Endpoints, Message, Receive, Scope, Send, send_json
from aiobs._observability import Observability
from aiobs._tracing import propagation_headers, record_error

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
# A propagation header longer than this is ignored rather than parsed (W3C limits
# traceparent to 55 characters and recommends 512 for tracestate; baggage allows 8192).
MAX_PROPAGATION_HEADER = 8192

_error_log = logging.getLogger("aiobs.http")


class _HeaderGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    """Reads propagation headers straight from ASGI's raw header list."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.encode("latin-1")
        values = [
            value.decode("latin-1")
            for name, value in carrier
            if name == wanted and len(value) <= MAX_PROPAGATION_HEADER
        ]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


_GETTER = _HeaderGetter()
_EMPTY_CONTEXT = Context()


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/models/{name}``), mounts included, or
    ``unmatched``. Read after the router ran: Starlette records the route in the scope."""
    route = scope.get("route")
    if route is None:
        return catalog.UNMATCHED_ROUTE
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return catalog.UNMATCHED_ROUTE
    # Inside a mount, root_path grew by the mount's prefix.
    root_path: str = scope.get("root_path", "")
    prefix = root_path[len(scope.get("app_root_path", "")) :]
    if hasattr(route, "routes") and template.endswith("/{path}"):  # the mount itself
        return prefix + "/{path}"
    return prefix + template


class ObservabilityMiddleware:
    """Add with ``app.add_middleware(ObservabilityMiddleware, observability=obs)``, or let
    :func:`aiobs.instrument` do it."""

    def __init__(self, app: ASGIApp, observability: Observability) -> None:
        self.app = app
        self.obs = observability
        settings = observability.settings
        instruments = observability.instruments
        self._tracer = observability.tracer if settings.instrumentation == "aiobs" else None
        self._propagator = observability.propagator
        self._propagation_fields = frozenset(
            name.lower().encode("latin-1") for name in propagation_headers(settings)
        )
        self._public_edge = settings.public_edge
        self._exemplars = settings.exemplars and not settings.multiprocess_dir
        self._requests = instruments.http_requests
        self._duration = instruments.http_duration
        self._in_flight = instruments.http_in_flight
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._duration_children: dict[tuple[str, str], Any] = {}
        self._access_log = (
            _logging.AccessLog(settings, observability.log_sink) if settings.access_log else None
        )
        self._endpoints = Endpoints(observability).by_path()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "http":
            path = scope["path"]
            root_path = scope.get("root_path", "")
            if root_path and path.startswith(root_path):
                path = path[len(root_path) :]
            endpoint = self._endpoints.get(path)
            if endpoint is not None:
                await endpoint(scope, receive, send)
            else:
                await self._observe(scope, receive, send)
        elif scope_type == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --- requests ----------------------------------------------------------------------
    async def _observe(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        if method not in KNOWN_METHODS:
            method = "_OTHER"
        self._in_flight.inc()
        span = None
        token = None
        if self._tracer is not None:
            span = self._start_span(scope, method)
            token = otel_context.attach(trace.set_span_in_context(span))
        status = 0

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: Exception | None = None
        try:
            await self.app(scope, receive, send_observed)
        except Exception as exc:  # noqa: BLE001 - answered with a JSON 500, logged once
            error = exc
            if status == 0:
                await self._send_error(send, span)
            status = 500
        finally:
            duration = time.perf_counter() - started
            self._in_flight.dec()
            status = status or 500  # the app ended without answering
            route = route_template(scope)
            self._record(method, route, status, duration, span)
            if error is not None:
                self._report(error, span)
            if span is not None:
                self._end_span(span, route, status, error)
            if self._access_log is not None:
                # With the OpenTelemetry instrumentor the server span is its, and current.
                current = span if span is not None else trace.get_current_span()
                self._access_log(method, route, status, duration, current.get_span_context())
            if token is not None:
                otel_context.detach(token)

    def _start_span(self, scope: Scope, method: str) -> trace.Span:
        assert self._tracer is not None
        headers = scope["headers"]
        fields = self._propagation_fields
        if any(name in fields for name, _ in headers):
            parent = self._propagator.extract(headers, getter=_GETTER)
        else:  # most requests carry no context: skip the propagators
            parent = _EMPTY_CONTEXT
        links = None
        if self._public_edge:
            # A public edge does not let callers choose its trace: new root, caller linked.
            caller = trace.get_current_span(parent).get_span_context()
            links = [Link(caller)] if caller.is_valid else None
            parent = Context()
        return self._tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                catalog.ATTR_HTTP_METHOD: method,
                catalog.ATTR_URL_PATH: scope["path"],
                catalog.ATTR_URL_SCHEME: scope.get("scheme", "http"),
            },
            links=links,
        )

    def _record(self, method: str, route: str, status: int, duration: float, span: Any) -> None:
        key = (method, route, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(*key)
        counter.inc()
        histogram = self._duration_children.get(key[:2])
        if histogram is None:
            histogram = self._duration_children[key[:2]] = self._duration.labels(method, route)
        context = span.get_span_context() if span is not None and self._exemplars else None
        if context is not None and context.trace_flags.sampled:
            histogram.observe(duration, {"trace_id": format(context.trace_id, "032x")})
        else:
            histogram.observe(duration)

    def _end_span(self, span: Any, route: str, status: int, error: Exception | None) -> None:
        if span.is_recording():
            if route != catalog.UNMATCHED_ROUTE:  # semantic conventions: no route, no suffix
                span.update_name(f"{span.name} {route}")
                span.set_attribute(catalog.ATTR_HTTP_ROUTE, route)
            span.set_attribute(catalog.ATTR_HTTP_STATUS, status)
            if status >= 500:
                span.set_attribute(
                    catalog.ATTR_ERROR_TYPE, type(error).__name__ if error else str(status)
                )
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    def _report(self, error: Exception, span: Any) -> None:
        if span is not None and span.is_recording():
            record_error(span, error)
        _error_log.error("unhandled_exception", exc_info=error)

    async def _send_error(self, send: Send, span: Any) -> None:
        body: dict[str, Any] = {"error": "internal_server_error", "detail": "Internal Server Error"}
        context = span.get_span_context() if span is not None else None
        if context is not None and context.is_valid:
            body["trace_id"] = format(context.trace_id, "032x")
        with contextlib.suppress(OSError, RuntimeError):  # the client may be gone already
            await send_json(send, 500, body)

    # --- lifespan ----------------------------------------------------------------------
    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_observed() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self.obs.installed:
                # uvicorn.run() applies its logging config after the app was imported.
                _logging.route_server_loggers()
            return message

        async def send_observed(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # The flush blocks (exporter, stdout): keep it off the event loop.
                await asyncio.to_thread(self.obs.shutdown)
            await send(message)

        await self.app(scope, receive_observed, send_observed)
