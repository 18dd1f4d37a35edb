"""A real OTLP/HTTP trace receiver for tests, served from a thread of the test process.

``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` is decoded and its spans
kept as plain :class:`ReceivedSpan` records. ``blackhole`` mode accepts and reads a request
but never answers (until stopped); :meth:`OtlpReceiver.stop` and :meth:`OtlpReceiver.start`
may be called again on the same port to simulate an outage and its recovery.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

HOST = "127.0.0.1"
TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, message: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds
    pass (AssertionError, with the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"condition not met within {timeout} s{': ' + message if message else ''}"
                f" (last value {value!r})"
            )
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RefusingPort:
    """A port that refuses connections: bound (so nobody else takes it) but not listening.

    :meth:`release` frees it, e.g. just before a receiver starts there to end an outage.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self.port = int(self._sock.getsockname()[1])

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> RefusingPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _any_value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedEvent:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector saw it, ids as lowercase hex ("" when absent)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str  # "SERVER", "INTERNAL", ...
    attributes: dict[str, Any]
    status_code: str  # "UNSET", "OK", "ERROR"
    status_message: str
    links: tuple[ReceivedLink, ...]
    events: tuple[ReceivedEvent, ...]
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one serialized ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        attributes=_attributes(span.attributes),
                        status_code=Status.StatusCode.Name(span.status.code).removeprefix(
                            "STATUS_CODE_"
                        ),
                        status_message=span.status.message,
                        links=tuple(
                            ReceivedLink(
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                _attributes(link.attributes),
                            )
                            for link in span.links
                        ),
                        events=tuple(
                            ReceivedEvent(event.name, _attributes(event.attributes))
                            for event in span.events
                        ),
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return spans


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        receiver._record_request(self.path, self.headers.get("Content-Type", ""))
        if receiver.mode == "blackhole":
            # Hold the connection without answering until the receiver stops.
            receiver._stopping.wait()
            self.close_connection = True
            return
        if self.path != TRACES_PATH:
            self._answer(404, b"", "text/plain")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != PROTOBUF:
            self._answer(415, b"", "text/plain")
            return
        try:
            spans = decode(body)
        except DecodeError:
            self._answer(400, b"", "text/plain")
            return
        receiver._add(spans)
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

    def _answer(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__((HOST, port), _Handler)


class OtlpReceiver:
    """The receiver; ``port=0`` picks a free port on the first :meth:`start`."""

    def __init__(self, port: int = 0, mode: str = "normal") -> None:
        if mode not in ("normal", "blackhole"):
            raise ValueError(mode)
        self.port = port
        self.mode = mode
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[tuple[str, str]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> OtlpReceiver:
        if self._server is not None:
            return self
        self._stopping = threading.Event()
        server = _Server(self.port, self)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"otlp-receiver-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the port (blackholed requests are released unanswered)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def endpoint(self) -> str:
        """The base endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``); the exporter appends
        ``/v1/traces``."""
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what was received -----------------------------------------------------------
    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(path, content type)`` of every request received, answered or not."""
        with self._lock:
            return list(self._requests)

    def server_spans(self) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.kind == "SERVER"]

    def spans_for_path(self, path: str) -> list[ReceivedSpan]:
        """The spans whose ``url.path`` attribute is ``path``."""
        return [span for span in self.spans if span.attributes.get("url.path") == path]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._requests.clear()

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def _record_request(self, path: str, content_type: str) -> None:
        with self._lock:
            self._requests.append((path, content_type))
