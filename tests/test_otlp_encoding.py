"""aiobs's direct OTLP encoder writes what the SDK's encoder writes, message for message, and
the exporter built from the settings uses it."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.common import http as sdk_http
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import trace_exporter as sdk_trace_exporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from prometheus_client import CollectorRegistry

from aiobs import Settings
from aiobs.metrics.instruments import Instruments
from aiobs.tracing.otlp import FastOTLPSpanExporter, encode_request
from aiobs.tracing.provider import build_exporter, build_tracer_provider
from aiobs.tracing.spans import Spans
from tests.support.otlp_receiver import OtlpReceiver, decode

REMOTE_PARENT = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value"), ("other", "x")]),
)


def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=6, max_events=2, max_links=1)
    for schema in (None, "https://opentelemetry.io/schemas/1.26.0"):
        provider = TracerProvider(
            resource=Resource({"service.name": "svc", "replicas": 3}, schema_url=schema),
            span_limits=limits,
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        plain = provider.get_tracer("aiobs")
        versioned = provider.get_tracer("app.module", "1.2.3", schema_url=schema)
        with plain.start_as_current_span("GET /v1/models/{name}", kind=SpanKind.SERVER) as root:
            root.set_attributes(
                {"http.request.method": "GET", "http.response.status_code": 200, "ok": True}
            )
            with versioned.start_as_current_span("inference ü") as child:
                child.set_attributes(
                    {
                        "ratio": 0.25,
                        "negative": -7,
                        "big": 2**62,
                        "tags": ("a", "b"),
                        "flags": [True, False],
                        "numbers": [1.5, -2.0],
                        "over_the_limit": "dropped",
                        "also_over": 1,
                    }
                )
                child.add_event("stage compute", {"duration_ms": 1.5})
                child.add_event("empty")
                child.add_event("third, dropped")
                child.set_status(Status(StatusCode.ERROR, "model failed"))
        remote = set_span_in_context(NonRecordingSpan(REMOTE_PARENT))
        linked = plain.start_span(
            "consumer",
            context=remote,
            kind=SpanKind.CONSUMER,
            links=[Link(REMOTE_PARENT, {"reason": "batch"}), Link(REMOTE_PARENT)],
        )
        linked.set_status(Status(StatusCode.OK))
        linked.end()
        server_spans = Spans(plain, SpanKind.SERVER)  # the middleware's lean path
        assert server_spans.lean
        server = server_spans.start("POST", remote, {"url.path": "/v1/chat"}, [Link(REMOTE_PARENT)])
        server.add_event("exception", {"exception.type": "ValueError"})
        server_spans.finish(server, "POST /v1/chat", {"http.response.status_code": 500}, True)
        bare = server_spans.start("GET", Context(), {"url.path": "/health"})  # no events, links
        server_spans.finish(bare, None, {"http.response.status_code": 200}, False)
        for kind in (SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.INTERNAL):
            plain.start_span(f"kind {kind.name}", kind=kind).end()
    return list(exporter.get_finished_spans())


def test_direct_encoding_equals_the_sdk_encoding() -> None:
    """Resources, scopes, schema URLs, every attribute type, events, links, status, trace
    state, dropped counts and flags decode to the same messages as the SDK's encoding."""
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode_request(spans))
    theirs = encode_spans(spans)
    assert ours == theirs
    (decoded,) = [
        span
        for scope in ours.resource_spans[0].scope_spans
        for span in scope.spans
        if span.name == "inference ü"
    ]
    assert decoded.dropped_attributes_count == 2
    assert decoded.dropped_events_count == 1


def test_empty_batch_encodes_to_an_empty_request() -> None:
    """No spans, no bytes: an empty request."""
    assert ExportTraceServiceRequest.FromString(encode_request([])) == encode_spans([])


def _exporter(endpoint: str) -> FastOTLPSpanExporter:
    exporter = build_exporter(Settings.load(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}))
    assert isinstance(exporter, FastOTLPSpanExporter)
    return exporter


def test_settings_build_the_direct_exporter_on_the_sdk_client() -> None:
    """The HTTP exporter from the settings is the direct one, and this SDK version keeps the
    HTTP client in the shape it expects (otherwise every batch would take the slow path)."""
    exporter = _exporter("http://127.0.0.1:9")
    assert exporter.direct
    exporter.shutdown()


class _SdkEncodings:
    """Counts the batches the SDK's own encoder serialises for its exporter."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches = 0
        monkeypatch.setattr(sdk_trace_exporter, "encode_spans", self._encode)

    def _encode(self, spans: Sequence[ReadableSpan]) -> Any:
        self.batches += 1
        return encode_spans(spans)


def test_an_sdk_client_of_another_shape_gets_the_sdk_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the SDK's HTTP client is not the one the direct path was written against (here
    its export takes another argument), every batch goes through the SDK's own export and
    reaches the collector intact."""
    original = sdk_http._OTLPHTTPClient.export

    def export(self: Any, data: bytes, timeout: float | None = None) -> Any:
        return original(self, data)

    monkeypatch.setattr(sdk_http._OTLPHTTPClient, "export", export)
    sdk = _SdkEncodings(monkeypatch)
    spans = _spans()
    with OtlpReceiver() as receiver:
        exporter = _exporter(receiver.endpoint)
        assert not exporter.direct
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        received = receiver.spans
    assert sdk.batches == 1
    assert received == decode(encode_spans(spans).SerializeToString())


def test_a_direct_path_that_breaks_at_export_hands_over_to_the_sdk(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If the SDK's client raises TypeError for the direct path, that batch is exported by
    the SDK instead, one warning says so, and later batches take the SDK's path."""
    original = sdk_http._OTLPHTTPClient.export
    calls = []

    def export(self: Any, data: bytes) -> Any:
        calls.append(data)
        if len(calls) == 1:
            raise TypeError("export() missing 1 required keyword-only argument: 'deadline'")
        return original(self, data)

    spans = _spans()
    with OtlpReceiver() as receiver:
        exporter = _exporter(receiver.endpoint)
        assert exporter.direct
        monkeypatch.setattr(sdk_http._OTLPHTTPClient, "export", export)
        sdk = _SdkEncodings(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="aiobs.tracing"):
            assert exporter.export(spans[:3]) is SpanExportResult.SUCCESS
            assert exporter.export(spans[3:]) is SpanExportResult.SUCCESS
        exporter.shutdown()
        received = receiver.spans
    assert not exporter.direct
    assert sdk.batches == 2
    assert len(calls) == 3
    batches = (spans[:3], spans[3:])
    assert received == [s for b in batches for s in decode(encode_spans(b).SerializeToString())]
    assert len([r for r in caplog.records if r.name == "aiobs.tracing"]) == 1


@pytest.mark.parametrize("value", [object(), {1: {2: object()}}])
def test_unencodable_values_raise_for_the_fallback(value: object) -> None:
    """A value outside OTLP's types raises, so the exporter hands the batch to the SDK."""
    from aiobs.tracing.otlp import _any_value

    with pytest.raises(TypeError):
        _any_value(value)


# --- spans queued as their bytes ----------------------------------------------------------


def test_pre_encoded_spans_encode_to_the_same_request() -> None:
    """The processor queues EncodedSpans (bytes, the number of their resource and scope): the
    request built from them, alone or mixed with SDK spans, is the SDK's message."""
    spans = _spans()
    exporter = _exporter("http://127.0.0.1:9")
    queued = [exporter.pre_encode(span) for span in spans]
    assert all(type(item) is tuple for item in queued)
    mixed = [queued[i] if i % 2 else span for i, span in enumerate(spans)]
    for batch in (queued, mixed):
        request = encode_request(batch, exporter._origins)
        assert ExportTraceServiceRequest.FromString(request) == encode_spans(spans)
    exporter.shutdown()


def test_the_batch_processor_holds_bytes_not_the_sdks_spans() -> None:
    """Between their end and their batch's export, spans are held as EncodedSpans: the SDK's
    span objects are freed at once, what is queued is untracked by the cyclic garbage collector
    after its first pass (so spans waiting for their batch do not feed its full collections),
    and the collector receives what the SDK would have sent."""
    with OtlpReceiver() as receiver:
        settings = Settings.load(
            {"span_schedule_delay_ms": 60_000, "span_batch_size": 512, "service_name": "svc"},
            environ={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
        )
        registry = CollectorRegistry()
        provider = build_tracer_provider(settings, Instruments(registry, None))
        tracer = provider.get_tracer("aiobs")
        ended = []
        for index in range(20):
            with tracer.start_as_current_span(f"span {index}") as span:
                span.set_attribute("index", index)
            ended.append(weakref.ref(span))
        del span  # the test's own reference to the last one
        processor = provider._active_span_processor._span_processors[0]
        queue = processor._batch_processor._queue
        assert len(queue) == 20
        assert all(type(item) is tuple for item in queue)
        gc.collect()
        assert [ref for ref in ended if ref() is not None] == []
        assert [item for item in queue if gc.is_tracked(item)] == []
        assert provider.force_flush(10_000)
        received = receiver.spans
        provider.shutdown()
    assert sorted(span.name for span in received) == sorted(f"span {i}" for i in range(20))
    assert registry.get_sample_value("aiobs_spans_exported_total") == 20


def test_a_span_that_cannot_be_pre_encoded_is_queued_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiobs.tracing import otlp

    span = _spans()[0]
    exporter = _exporter("http://127.0.0.1:9")

    def fail(_span: ReadableSpan) -> bytes:
        raise TypeError("cannot encode attribute value of type object")

    monkeypatch.setattr(otlp, "encode_span", fail)
    assert exporter.pre_encode(span) is span
    exporter.shutdown()


def test_pre_encoded_spans_without_the_direct_path_fail_and_say_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = _exporter("http://127.0.0.1:9")
    queued = [exporter.pre_encode(span) for span in _spans()]
    exporter.shutdown()
    with caplog.at_level(logging.WARNING, logger="aiobs.tracing"):
        assert exporter.export(queued) is SpanExportResult.FAILURE
    assert "encoded for the direct export" in caplog.text


def test_spans_of_other_classes_are_read_through_their_properties() -> None:
    """A span class the SDK does not make (a processor's wrapper, say) is encoded from what its
    public properties return, not from the SDK's fields."""

    class Renamed(ReadableSpan):
        @property
        def name(self) -> str:
            return "renamed " + self._name

    spans = [
        Renamed(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes,
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        for span in _spans()
    ]
    ours = ExportTraceServiceRequest.FromString(encode_request(spans))
    assert ours == encode_spans(spans)
    names = [s.name for r in ours.resource_spans for ss in r.scope_spans for s in ss.spans]
    assert names
    assert all(name.startswith("renamed ") for name in names)
