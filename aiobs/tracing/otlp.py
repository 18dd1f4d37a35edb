"""OTLP/HTTP trace export with a direct protobuf encoder.

The SDK's exporter builds a protobuf message object per span, attribute and value before
serialising: about 17 us per server span on the export thread, which shares the GIL with the
event loop (benchmarks/README.md). This module writes the same bytes straight from the
``ReadableSpan`` (about 4 us) and hands them to the SDK exporter's own HTTP client, so the
transport, retries, timeout, headers, TLS and compression stay the SDK's. The test suite
decodes both encodings with opentelemetry-proto and requires equal messages.
"""

from __future__ import annotations

import inspect
import logging
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

from aiobs.tracing.spans import LeanSpan

_log = logging.getLogger("aiobs.tracing")
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_EMPTY_STATUS = b"\x7a\x00"


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode("utf-8"))
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_key_value(b"\x0a", str(k), v) for k, v in value.items()))
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


_CACHE_SIZE = 4096
_encoded: dict[tuple[bytes, str, type, Any], bytes] = {}
"""Encoded key-value pairs of scalar attributes: most repeat (methods, routes, statuses).
Cleared when full, so values that stop recurring (URL paths) do not keep their place."""


def _key_value(tag: bytes, key: str, value: Any) -> bytes:
    scalar = isinstance(value, (str, int, float, bool))
    if scalar:
        cached = _encoded.get((tag, key, value.__class__, value))
        if cached is not None:
            return cached
    encoded = _field(tag, _field(b"\x0a", key.encode("utf-8")) + _field(b"\x12", _any_value(value)))
    if scalar:
        if len(_encoded) >= _CACHE_SIZE:
            _encoded.clear()
        _encoded[(tag, key, value.__class__, value)] = encoded
    return encoded


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    return b"".join(_key_value(tag, key, value) for key, value in attributes.items())


def _flags(context: SpanContext | None) -> bytes:
    remote = _IS_REMOTE if context is not None and context.is_remote else 0
    return _fixed32(_HAS_IS_REMOTE | remote)


def _count(tag: bytes, value: int) -> bytes:
    return tag + _varint(value) if value else b""


_times = struct.Struct("<BQBQ").pack
"""Fields 7 and 8 of a span, its start and end times: tag, fixed64, tag, fixed64."""
_KINDS = {kind: b"\x30" + _varint(kind.value + 1) for kind in SpanKind}
"""Field 6, the kind: OTLP numbers SpanKind from 1 (0 is unspecified)."""
_SCALARS = frozenset((str, int, float, bool))
_names: dict[str, bytes] = {}
"""Encoded name fields: server and inference span names repeat (``POST /v1/chat``)."""


_NONE: BoundedList[Any] = BoundedList(0)
"""The events or links of a lean span that made none: empty, nothing dropped."""
_SDK_SPANS = frozenset((ReadableSpan, sdk_trace._Span, LeanSpan))
"""The SDK's span classes (and aiobs's, which adds no field): their properties return their
fields as they are, so the encoder reads the fields."""


def _fields(span: ReadableSpan) -> tuple[Any, ...]:
    """Context, parent, name, kind, start and end times, status, attributes, events and links
    of ``span``, and its dropped attributes, events and links. Read from the fields of the
    SDK's own spans (an ended span no longer changes; the public views of its containers copy
    under a lock), through the public properties for any other class."""
    if span.__class__ in _SDK_SPANS:
        fields = span.__dict__  # a lean span's events and links: made when first read
        attributes = span._attributes
        events, links = fields.get("_events", _NONE), fields.get("_links", _NONE)
        if (
            type(attributes) is BoundedAttributes
            and type(events) is BoundedList
            and type(links) is BoundedList
        ):
            return (
                span._context,
                span._parent,
                span._name,
                span._kind,
                span._start_time,
                span._end_time,
                span._status,
                attributes._dict,
                tuple(events) if events else (),
                tuple(links) if links else (),
                attributes.dropped,
                events.dropped,
                links.dropped,
            )
    return (
        span.context,
        span.parent,
        span.name,
        span.kind,
        span.start_time,
        span.end_time,
        span.status,
        span.attributes or {},
        span.events,
        span.links,
        span.dropped_attributes,
        span.dropped_events,
        span.dropped_links,
    )


def encode_span(span: ReadableSpan) -> bytes:
    """One ``Span`` message, as the SDK's ``_encode_span`` would serialise it."""
    (
        context,
        parent,
        name,
        kind,
        start_time,
        end_time,
        status,
        attributes,
        events,
        links,
        dropped_attributes,
        dropped_events,
        dropped_links,
    ) = _fields(span)
    if context is None:
        raise TypeError("a span without a context cannot be exported")
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
        parts.append(_field(b"\x1a", state.encode("utf-8")))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    name_field = _names.get(name)
    if name_field is None:
        name_field = _field(b"\x2a", name.encode("utf-8"))
        if len(_names) >= _CACHE_SIZE:
            _names.clear()
        _names[name] = name_field
    parts += (name_field, _KINDS[kind], _times(0x39, start_time or 0, 0x41, end_time or 0))
    cache = _encoded
    for key, value in attributes.items():
        encoded = None
        if value.__class__ in _SCALARS:
            encoded = cache.get((b"\x4a", key, value.__class__, value))
        parts.append(encoded if encoded is not None else _key_value(b"\x4a", key, value))
    if dropped_attributes:
        parts.append(b"\x50" + _varint(dropped_attributes))
    for event in events:
        parts.append(
            _field(
                b"\x5a",
                b"\x09"
                + _fixed64(event.timestamp)
                + _field(b"\x12", event.name.encode("utf-8"))
                + _attributes(b"\x1a", event.attributes)
                + _count(b"\x20", event.dropped_attributes),
            )
        )
    if dropped_events:
        parts.append(b"\x60" + _varint(dropped_events))
    for link in links:
        parts.append(
            _field(
                b"\x6a",
                b"\x0a\x10"
                + link.context.trace_id.to_bytes(16, "big")
                + b"\x12\x08"
                + link.context.span_id.to_bytes(8, "big")
                + _attributes(b"\x22", link.attributes)
                + _count(b"\x28", link.dropped_attributes)
                + b"\x35"
                + _flags(link.context),
            )
        )
    if dropped_links:
        parts.append(b"\x70" + _varint(dropped_links))
    code = status.status_code.value
    if code or status.description:
        message = _field(b"\x12", status.description.encode("utf-8")) if status.description else b""
        parts.append(_field(b"\x7a", message + _count(b"\x18", code)))
    else:
        parts.append(_EMPTY_STATUS)
    parts += (b"\x85\x01", _flags(parent))  # field 16, fixed32
    return b"".join(parts)


EncodedSpan = tuple[bytes, int]
"""A sampled span already in its OTLP bytes, with the index of its resource and scope among
the exporter's origins: what the batch processor queues in place of the SDK's span when
batches go directly (:meth:`FastOTLPSpanExporter.pre_encode`). A plain tuple of a bytes and an
int, which the cyclic garbage collector stops tracking at its first pass: the spans waiting
for their batch do not add to its full collections, which stall the event loop for tens of
milliseconds (benchmarks/README.md)."""

Origin = tuple[Resource, InstrumentationScope | None]

MAX_ORIGINS = 256
"""(resource, scope) pairs an exporter numbers; spans of further pairs are queued as they are
(the SDK's default tracer provider has one resource, and services a handful of scopes)."""


def encode_request(
    spans: Sequence[ReadableSpan | EncodedSpan], origins: Sequence[Origin] = ()
) -> bytes:
    """An ``ExportTraceServiceRequest``: spans grouped by resource, then by scope, in the
    order they came (as the SDK's ``encode_spans`` groups them). An encoded span's resource
    and scope are ``origins[index]``."""
    # Grouped by identity first (hashing a Resource serialises its attributes), then merged
    # by equality, which is how the SDK groups them.
    by_identity: dict[int, tuple[Any, dict[Any, list[bytes]]]] = {}
    for span in spans:
        if isinstance(span, tuple):
            data, index = span
            resource, scope = origins[index]
        else:
            resource, scope = span.resource, span.instrumentation_scope or None
            data = encode_span(span)
        entry = by_identity.get(id(resource))
        if entry is None:
            entry = by_identity[id(resource)] = (resource, {})
        entry[1].setdefault(scope, []).append(data)
    grouped: list[tuple[Any, dict[Any, list[bytes]]]] = []
    for resource, scopes in by_identity.values():
        for known, known_scopes in grouped:
            if known == resource:
                for scope, encoded in scopes.items():
                    known_scopes.setdefault(scope, []).extend(encoded)
                break
        else:
            grouped.append((resource, scopes))
    resource_spans = []
    for resource, scopes in grouped:
        scope_spans = []
        for scope, encoded in scopes.items():
            scope_message = b""
            schema_url = b""
            if scope is not None:
                scope_message = (
                    (_field(b"\x0a", scope.name.encode("utf-8")) if scope.name else b"")
                    + (_field(b"\x12", scope.version.encode("utf-8")) if scope.version else b"")
                    + _attributes(b"\x1a", scope.attributes)
                )
                if scope.schema_url:
                    schema_url = _field(b"\x1a", scope.schema_url.encode("utf-8"))
            body = _field(b"\x0a", scope_message)
            body += b"".join(_field(b"\x12", span) for span in encoded)
            scope_spans.append(_field(b"\x12", body + schema_url))
        message = _field(b"\x0a", _attributes(b"\x0a", resource.attributes))
        message += b"".join(scope_spans)
        if resource.schema_url:
            message += _field(b"\x1a", resource.schema_url.encode("utf-8"))
        resource_spans.append(_field(b"\x0a", message))
    return b"".join(resource_spans)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter with :func:`encode_request` as its encoder.

    The direct path reaches into the SDK exporter (:func:`direct_client` says what it needs),
    so it is taken only where that check passed at construction; otherwise, and for good from
    the first time the SDK's client rejects it (``TypeError`` or ``AttributeError``: an
    internal changed), batches go through the SDK's own :meth:`OTLPSpanExporter.export`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct_client = direct_client(self)
        # The (resource, scope) pairs of the spans encoded so far, appended (under the lock) by
        # the threads that end spans, read by the export thread; the last one found, as one
        # tuple, read without the lock.
        self._origins: list[Origin] = []
        self._origins_lock = threading.Lock()
        self._last_origin: tuple[Resource | None, InstrumentationScope | None, int] = (
            None,
            None,
            -1,
        )

    @property
    def direct(self) -> bool:
        """Whether batches are encoded by :func:`encode_request` and sent directly."""
        return self._direct_client is not None

    def pre_encode(self, span: ReadableSpan) -> ReadableSpan | EncodedSpan:
        """What the batch processor queues for ``span``: an :class:`EncodedSpan` when batches
        go directly; the span itself otherwise, or when it cannot be encoded (an odd
        attribute: the SDK encodes it at export)."""
        if self._direct_client is None:
            return span
        index = self._origin(span.resource, span.instrumentation_scope or None)
        if index < 0:
            return span
        try:
            return (encode_span(span), index)
        except Exception:  # noqa: BLE001
            _log.debug("direct encoding failed; the SDK encodes this span", exc_info=True)
            return span

    def _origin(self, resource: Resource, scope: InstrumentationScope | None) -> int:
        """The index of ``(resource, scope)`` in the exporter's origins, added if new; -1 when
        there are ``MAX_ORIGINS`` already."""
        last_resource, last_scope, index = self._last_origin
        if resource is last_resource and scope is last_scope:
            return index
        with self._origins_lock:
            origins = self._origins
            found = [i for i, (r, s) in enumerate(origins) if r is resource and s is scope]
            if found:
                index = found[0]
            elif len(origins) < MAX_ORIGINS:
                origins.append((resource, scope))
                index = len(origins) - 1
            else:
                return -1
        self._last_origin = (resource, scope, index)
        return index

    def export(self, spans: Sequence[ReadableSpan | EncodedSpan]) -> SpanExportResult:
        encoded = [span for span in spans if isinstance(span, tuple)]
        client = self._direct_client
        if client is None or self._shutdown:
            if encoded:  # encoded for a direct path that is gone: the SDK cannot send them
                _log.warning("dropping %d spans encoded for the direct export", len(encoded))
                return SpanExportResult.FAILURE
            return super().export(spans)  # type: ignore[arg-type]  # no EncodedSpan here
        try:
            data = encode_request(spans, self._origins)
        except Exception:  # noqa: BLE001 - an odd attribute: let the SDK encode those spans
            _log.debug("direct encoding failed; the SDK encodes this batch", exc_info=True)
            plain = [span for span in spans if not isinstance(span, tuple)]
            results = [super().export(plain)]
            if encoded:
                results.append(self._send(client, encode_request(encoded, self._origins), []))
            ok = all(result is SpanExportResult.SUCCESS for result in results)
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
        return self._send(client, data, [] if encoded else spans)  # type: ignore[arg-type]

    def _send(
        self, client: Any, data: bytes, resend: Sequence[ReadableSpan]
    ) -> SpanExportResult:
        """Send an encoded batch; ``resend`` is what the SDK sends instead if its client
        rejects the direct path (nothing when the batch held encoded spans)."""
        limit = self._max_request_size
        if limit > 0 and len(data) > limit:
            _log.warning("dropping a span batch of %d bytes (limit %d)", len(data), limit)
            return SpanExportResult.FAILURE
        try:
            success = bool(client.export(data).success)
        except (TypeError, AttributeError):
            _log.warning(
                "the SDK's OTLP client rejected the direct export; the SDK exports from now on",
                exc_info=True,
            )
            self._direct_client = None
            return super().export(resend) if resend else SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if success else SpanExportResult.FAILURE


def direct_client(exporter: OTLPSpanExporter) -> Any | None:
    """``exporter``'s HTTP client if the exporter has the shape the direct path was written
    against, else ``None``.

    That shape is opentelemetry-exporter-otlp-proto-http's since 1.45.0 (before, from 1.35 to
    1.44, it had ``_session`` and ``_export(data, timeout_sec)`` instead): ``_client.export``
    taking exactly ``(data)`` and returning a result with ``success``, an int
    ``_max_request_size`` and a bool ``_shutdown``.
    """
    client = getattr(exporter, "_client", None)
    export = getattr(client, "export", None)
    if not callable(export):
        return None
    if not isinstance(getattr(exporter, "_max_request_size", None), int):
        return None
    if not isinstance(getattr(exporter, "_shutdown", None), bool):
        return None
    try:
        parameters = list(inspect.signature(export).parameters)
    except (TypeError, ValueError):  # no signature to read
        return None
    return client if parameters == ["data"] else None
