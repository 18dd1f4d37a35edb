"""The pure ASGI middleware: one server span, the ``http_*`` metrics and one access line per
request; the ``/metrics`` and ``/health`` endpoints; bounded flush at lifespan shutdown.

Transparent by design: every message the app sends reaches the server unchanged, and an
exception the app raises is recorded (span, metric, one log line) and raised again, so that the
app's error handlers, the server and anything wrapping the app see it as without aiobs. What is
recorded is what the client got: the status actually sent, ``499`` when the client went away
before the response ended (nginx's convention), and the duration to the last byte.
"""

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
from opentelemetry.trace import Link, SpanKind

from aiobs import catalog
from aiobs._inference import RequestClock, current_request
from aiobs._observability import Observability
from aiobs.http.endpoints import Endpoints, Message, Receive, Scope, Send
from aiobs.http.routes import route_template
from aiobs.logs.pipeline import SPAN_CONTEXT_ATTRIBUTE, route_server_loggers
from aiobs.metrics.recorders import HistogramRecorder, adder, incrementer
from aiobs.tracing.provider import propagation_headers, record_error
from aiobs.tracing.spans import Spans

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
# A propagation header longer than this is ignored rather than parsed (W3C limits
# traceparent to 55 characters and recommends 512 for tracestate; baggage allows 8192).
MAX_PROPAGATION_HEADER = 8192
CLIENT_CLOSED_REQUEST = 499
"""Status recorded when the client disconnects before the response ends (nginx's 499)."""

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


class ObservabilityMiddleware:
    """Wraps an ASGI application. :func:`aiobs.instrument` puts it outside a Starlette app's
    whole middleware stack, so that it sees the status the client actually gets; it can also
    be added by hand: ``app.add_middleware(ObservabilityMiddleware, observability=obs)``.

    When a span is already current as a request arrives (an OpenTelemetry instrumentation
    outside, such as ``opentelemetry-instrument``'s), that span is the request's server span:
    aiobs makes none of its own, and its metrics, access line and inference spans join it.
    """

    def __init__(self, app: ASGIApp, observability: Observability) -> None:
        self.app = app
        self.obs = observability
        settings = observability.settings
        instruments = observability._instruments
        tracer = observability.tracer if settings.instrumentation == "aiobs" else None
        self._spans = Spans(tracer, SpanKind.SERVER) if tracer is not None else None
        self._propagator = observability._propagator
        self._propagation_fields = frozenset(
            name.lower().encode("latin-1") for name in propagation_headers(settings)
        )
        self._public_edge = settings.public_edge
        self._exemplars = settings.exemplars and not settings.multiprocess_dir
        self._requests = instruments.http_requests
        self._duration = instruments.http_duration
        self._first_byte = instruments.http_first_byte
        self._in_flight = adder(instruments.http_in_flight)
        self._bound_route = observability._label_guard.bound
        self._admitted_routes: set[str] = set()
        self._request_counts: dict[tuple[str, str, str], Callable[[], None]] = {}
        self._durations: dict[tuple[str, str], HistogramRecorder] = {}
        self._first_bytes: dict[tuple[str, str], HistogramRecorder] = {}
        self._access_log = observability._access_log.write if settings.access_log else None
        self._endpoints = Endpoints(observability).by_path()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http":
            if scope_type == "websocket":
                scope.setdefault("fastapi.telemetry", None)  # see below
                await self.app(scope, receive, send)
            elif scope_type == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # FastAPI's own mark for its mounted apps: none opens a second server span.
        scope.setdefault("fastapi.telemetry", None)
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        endpoint = self._endpoints.get(path)
        if endpoint is not None:
            await endpoint(scope, receive, send)
            return
        # A request, observed here rather than in a method of its own: one coroutine less.
        started = time.perf_counter()
        method = scope["method"]
        if method not in KNOWN_METHODS:
            method = "_OTHER"
        self._in_flight(1)
        server_span = trace.get_current_span()
        span = None
        token = None
        if self._spans is not None and not server_span.get_span_context().is_valid:
            span, request_context = self._start_span(scope, method)
            server_span = span
            token = otel_context.attach(trace.set_span_in_context(span, request_context))
        status = 0
        first_byte = 0.0  # when the first body chunk of a streamed response was sent
        last_byte = 0.0  # when the response ended
        disconnected = False
        clock = RequestClock(started)
        clock_token = current_request.set(clock)

        async def receive_observed() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect" and not last_byte:
                disconnected = True
            return message

        async def send_observed(message: Message) -> None:
            nonlocal status, first_byte, last_byte, disconnected
            kind = message["type"]
            if kind == "http.response.body":
                if message.get("more_body", False):
                    if not first_byte:
                        first_byte = time.perf_counter()
                elif not last_byte:
                    last_byte = time.perf_counter()
                    clock.ended = True
            elif kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.pathsend":
                last_byte = time.perf_counter()
                clock.ended = True
            try:
                await send(message)
            except OSError:  # ASGI 2.4: the client is gone
                disconnected = True
                raise

        error: BaseException | None = None
        try:
            await self.app(scope, receive_observed, send_observed)
        except BaseException as exc:
            error = exc
            raise
        finally:
            ended = last_byte or time.perf_counter()
            duration = ended - started
            self._in_flight(-1)
            if disconnected or isinstance(error, asyncio.CancelledError):
                status = CLIENT_CLOSED_REQUEST
            elif not status:  # no answer: the server sends 500
                status = 500
            failure = error if isinstance(error, Exception) and not disconnected else None
            route = route_template(scope, root_path)
            if route not in self._admitted_routes and route != catalog.UNMATCHED_ROUTE:
                bounded = self._bound_route(catalog.HTTP_REQUESTS.name, catalog.ROUTE, route)
                if bounded == route:  # admitted for good (a folded one is counted each time)
                    self._admitted_routes.add(route)
                route = bounded
            context = server_span.get_span_context()
            self._record(method, route, status, duration, context, ended)
            if first_byte:
                self._record_first_byte(method, route, first_byte - started, context, ended)
            if failure is not None:
                if span is not None and span.is_recording():
                    record_error(span, failure)
                _error_log.error("unhandled_exception", exc_info=failure)
                if context.is_valid:
                    with contextlib.suppress(AttributeError):  # an exception with __slots__
                        setattr(failure, SPAN_CONTEXT_ATTRIBUTE, context)
            if span is not None:
                self._end_span(span, route, status, failure)
            if self._access_log is not None:
                self._access_log(method, route, status, duration, context)
            if token is not None:
                otel_context.detach(token)
            current_request.reset(clock_token)

    # --- requests ----------------------------------------------------------------------
    def _start_span(self, scope: Scope, method: str) -> tuple[trace.Span, Context | None]:
        """The request's server span, and the context it goes into (None: the current one),
        which holds what the propagators read from the request (its baggage)."""
        assert self._spans is not None
        headers = scope["headers"]
        fields = self._propagation_fields
        parent = _EMPTY_CONTEXT  # most requests carry no context: skip the propagators
        request_context = None
        for name, _ in headers:
            if name in fields:
                current = otel_context.get_current()
                parent = self._propagator.extract(headers, current, getter=_GETTER)
                request_context = parent
                break
        links = None
        if self._public_edge:
            # A public edge does not let callers choose its trace (new root, caller linked)
            # nor hand baggage to the service and its downstream calls.
            caller = trace.get_current_span(parent).get_span_context()
            links = [Link(caller)] if caller.is_valid else None
            parent = Context()
            request_context = None
        attributes = {
            catalog.ATTR_HTTP_METHOD: method,
            catalog.ATTR_URL_PATH: scope["path"],
            catalog.ATTR_URL_SCHEME: scope.get("scheme", "http"),
        }
        return self._spans.start(method, parent, attributes, links), request_context

    def _record(
        self, method: str, route: str, status: int, duration: float, context: Any, now: float
    ) -> None:
        key = (method, route, str(status))
        count = self._request_counts.get(key)
        if count is None:
            count = self._request_counts[key] = incrementer(self._requests.labels(*key))
        count()
        histogram = self._durations.get(key[:2])
        if histogram is None:
            child = self._duration.labels(method, route)
            histogram = self._durations[key[:2]] = HistogramRecorder(child, self._exemplars)
        histogram.observe(duration, context, now)

    def _record_first_byte(
        self, method: str, route: str, seconds: float, context: Any, now: float
    ) -> None:
        histogram = self._first_bytes.get((method, route))
        if histogram is None:
            child = self._first_byte.labels(method, route)
            histogram = self._first_bytes[method, route] = HistogramRecorder(child, self._exemplars)
        histogram.observe(seconds, context, now)

    def _end_span(
        self, span: trace.Span, route: str, status: int, error: Exception | None
    ) -> None:
        assert self._spans is not None
        if not span.is_recording():  # not sampled: nothing to add
            span.end()
            return
        attributes: dict[str, str | int] = {catalog.ATTR_HTTP_STATUS: status}
        name = None
        if route != catalog.UNMATCHED_ROUTE:  # semantic conventions: no route, no suffix
            name = f"{span.name} {route}"  # type: ignore[attr-defined]  # an SDK span
            attributes[catalog.ATTR_HTTP_ROUTE] = route
        failed = error is not None or 500 <= status < 600
        if failed:
            attributes[catalog.ATTR_ERROR_TYPE] = type(error).__name__ if error else str(status)
        self._spans.finish(span, name, attributes, failed)

    # --- lifespan ----------------------------------------------------------------------
    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_observed() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self.obs.installed:
                # uvicorn.run() applies its logging config after the app was imported.
                route_server_loggers()
            return message

        async def send_observed(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # The flush blocks (exporter, stdout): keep it off the event loop.
                await asyncio.to_thread(self.obs.shutdown)
            await send(message)

        await self.app(scope, receive_observed, send_observed)
