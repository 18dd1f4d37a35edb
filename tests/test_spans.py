"""The lean server span path: spans equal to the SDK's own, in every configuration the
sampler, limits and processors can give, and the SDK's path wherever the shape differs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace import sampling as samplers
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aiobs.tracing import spans as lean_spans
from aiobs.tracing.spans import LeanSpan, Spans

REQUEST = {"http.request.method": "POST", "url.path": "/v1/predict", "url.scheme": "http"}
ENDING = {"http.response.status_code": 200, "http.route": "/v1/predict"}


class _TaggingSampler(samplers.Sampler):
    """Samples everything and adds an attribute, as a user's sampler may."""

    def should_sample(self, *args: Any, **kwargs: Any) -> samplers.SamplingResult:
        parent_context, attributes = args[0], args[4]
        state = trace.get_current_span(parent_context).get_span_context().trace_state
        return samplers.SamplingResult(
            samplers.Decision.RECORD_AND_SAMPLE, {**(attributes or {}), "sampler": "tag"}, state
        )

    def get_description(self) -> str:
        return "tagging"


class _Recording:
    """A user's processor: what it saw at start and at end."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter, _Recording]:
    provider = TracerProvider(shutdown_on_exit=False, **kwargs)
    exporter = InMemorySpanExporter()
    recording = _Recording()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(recording)  # type: ignore[arg-type]
    return provider, exporter, recording


def _parent(traceparent: str | None, tracestate: str | None = None) -> Context:
    carrier = {"traceparent": traceparent} if traceparent else {}
    if tracestate:
        carrier["tracestate"] = tracestate
    return TraceContextTextMapPropagator().extract(carrier)


APP_SET = {"http.route": "/set/by/the/app", "user.id": "u-1"}
"""What the app sets on the current span during the request, in the cases that say so (with
an event and a link)."""
APP_LINK = trace.SpanContext(9, 10, is_remote=True, trace_flags=TraceFlags(1))


def _app_sets(span: trace.Span) -> None:
    span.set_attributes(APP_SET)
    span.add_event("cache miss", {"key": "k-1"}, timestamp=1_000)
    span.add_link(APP_LINK, {"why": "batch"})


def _lean(
    spans: Spans,
    context: Context,
    links: Sequence[Link] | None,
    error: bool,
    app_sets: bool = False,
) -> None:
    span = spans.start("POST", context, dict(REQUEST), links)
    if app_sets:
        _app_sets(span)
    spans.finish(span, "POST /v1/predict", ENDING, error)


def _sdk(
    tracer: trace.Tracer,
    context: Context,
    links: Sequence[Link] | None,
    error: bool,
    app_sets: bool = False,
    kind: SpanKind = SpanKind.SERVER,
) -> None:
    span = tracer.start_span(
        "POST", context=context, kind=kind, attributes=dict(REQUEST), links=links
    )
    if app_sets:
        _app_sets(span)
    span.update_name("POST /v1/predict")
    span.set_attributes(ENDING)
    if error:
        span.set_status(trace.StatusCode.ERROR)
    span.end()


def _comparable(span: ReadableSpan) -> dict[str, Any]:
    """Everything exported of a span but what differs by nature (span id, times)."""
    context = span.context
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind,
        "parent": span.parent,
        "trace_id": context.trace_id if span.parent else None,
        "flags": context.trace_flags,
        "state": context.trace_state,
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "events": [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        "dropped": (span.dropped_events, span.dropped_links),
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
    }


CASES = {
    "root": ({}, None, None, None, False),
    "child of a remote parent": (
        {},
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "vendor=v1",
        None,
        False,
    ),
    "unsampled parent, parent-based": (
        {"sampler": samplers.ParentBased(samplers.ALWAYS_ON)},
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        None,
        None,
        False,
    ),
    "never sampled": ({"sampler": samplers.ALWAYS_OFF}, None, None, None, False),
    "a sampler that adds attributes": ({"sampler": _TaggingSampler()}, None, None, None, False),
    "count limit": ({"span_limits": SpanLimits(max_span_attributes=4)}, None, None, None, False),
    "the app set attributes (one of them aiobs's), an event and a link": (
        {},
        None,
        None,
        None,
        False,
    ),
    "length and count limits": (
        {"span_limits": SpanLimits(max_span_attributes=4, max_span_attribute_length=5)},
        None,
        None,
        None,
        False,
    ),
    "linked caller, failed": (
        {},
        None,
        None,
        [Link(trace.SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(1)), {"k": "v"})],
        True,
    ),
}


@pytest.mark.parametrize("kind", [SpanKind.SERVER, SpanKind.INTERNAL])  # request, inference
@pytest.mark.parametrize("case", CASES)
def test_lean_spans_export_as_the_sdk_spans_do(case: str, kind: SpanKind) -> None:
    options, traceparent, tracestate, links, error = CASES[case]
    provider, exporter, recording = _provider(**options)
    tracer = provider.get_tracer("aiobs")
    spans = Spans(tracer, kind)
    assert spans.lean
    context = _parent(traceparent, tracestate)
    app_sets = case.startswith("the app set")
    _lean(spans, context, links, error, app_sets)
    _sdk(tracer, context, links, error, app_sets, kind)
    exported = exporter.get_finished_spans()
    if case in ("never sampled", "unsampled parent, parent-based"):
        assert exported == ()
        return
    lean, sdk = exported
    assert type(lean) is LeanSpan
    assert _comparable(lean) == _comparable(sdk)
    assert list(lean.attributes or {}) == list(sdk.attributes or {})  # in the same order
    assert lean.context.span_id != sdk.context.span_id  # type: ignore[union-attr]
    assert lean.start_time is not None
    assert lean.end_time is not None
    assert lean.start_time <= lean.end_time
    assert recording.started == ["POST", "POST"]  # the user's processor saw both start
    assert [span.name for span in recording.ended] == ["POST /v1/predict"] * 2
    if traceparent is None:
        assert lean.context.trace_flags.random_trace_id  # type: ignore[union-attr]


def test_an_ended_lean_span_no_longer_changes() -> None:
    provider, exporter, _ = _provider()
    spans = Spans(provider.get_tracer("aiobs"), SpanKind.SERVER)
    span = spans.start("GET", Context(), dict(REQUEST))
    trace.get_current_span(trace.set_span_in_context(span)).set_attribute("user.set", "yes")
    spans.finish(span, "GET /items", {"http.response.status_code": 404}, False)
    span.set_attribute("late", "no")
    span.update_name("late")
    spans.finish(span, "later", {"http.response.status_code": 500}, True)  # ends only once
    (exported,) = exporter.get_finished_spans()
    assert exported.name == "GET /items"
    assert exported.attributes is not None
    assert exported.attributes["user.set"] == "yes"
    assert exported.attributes["http.response.status_code"] == 404
    assert "late" not in exported.attributes
    assert exported.status.status_code is trace.StatusCode.UNSET


@pytest.fixture
def drifted_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SDK whose spans carry one field more than the lean path builds."""
    original = lean_spans.sdk_trace._Span.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._new_field = 1

    monkeypatch.setattr(lean_spans.sdk_trace._Span, "__init__", init)


@pytest.mark.usefixtures("drifted_sdk")
def test_an_sdk_of_another_shape_gets_its_own_path() -> None:
    provider, exporter, _ = _provider()
    tracer = provider.get_tracer("aiobs")
    spans = Spans(tracer, SpanKind.SERVER)
    assert not spans.lean
    _lean(spans, Context(), None, True)
    (exported,) = exporter.get_finished_spans()
    assert type(exported) is not LeanSpan
    assert exported.name == "POST /v1/predict"
    assert dict(exported.attributes or {}) == {**REQUEST, **ENDING}
    assert exported.status.status_code is trace.StatusCode.ERROR


def test_a_tracer_that_is_not_the_sdks_gets_its_own_path() -> None:
    spans = Spans(trace.NoOpTracer(), SpanKind.SERVER)
    assert not spans.lean
    span = spans.start("GET", Context(), dict(REQUEST))
    assert not span.is_recording()
    spans.finish(span, "GET /x", ENDING, False)


class _Ids(IdGenerator):
    """Trace ids from a list (each twice: the lean span and the SDK's get the same)."""

    def __init__(self, trace_ids: list[int]) -> None:
        self.trace_ids = trace_ids

    def generate_span_id(self) -> int:
        return 0x1234

    def generate_trace_id(self) -> int:
        return self.trace_ids.pop(0)


SAMPLERS: dict[str, samplers.Sampler] = {
    "always on": samplers.ALWAYS_ON,
    "always off": samplers.ALWAYS_OFF,
    "ratio": samplers.TraceIdRatioBased(0.5),
    "parent-based, always on (the default)": samplers.DEFAULT_ON,
    "parent-based ratio": samplers.ParentBasedTraceIdRatio(0.25),
    "parent-based, every delegate set": samplers.ParentBased(
        samplers.ALWAYS_OFF,
        remote_parent_sampled=samplers.ALWAYS_OFF,
        remote_parent_not_sampled=samplers.ALWAYS_ON,
        local_parent_sampled=samplers.TraceIdRatioBased(0.5),
        local_parent_not_sampled=samplers.ParentBased(samplers.ALWAYS_ON),
    ),
}
PARENTS = {
    "no parent": None,
    **{
        f"{'remote' if remote else 'local'} {'sampled' if sampled else 'unsampled'} parent": (
            trace.SpanContext(
                0x0AF7651916CD43DD8448EB211C80319C,
                0xB7AD6B7169203331,
                is_remote=remote,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0),
                trace_state=TraceState([("vendor", "v1")]),
            )
        )
        for remote in (True, False)
        for sampled in (True, False)
    },
}
_BOUND = samplers.TraceIdRatioBased.get_bound_for_rate(0.5)
TRACE_IDS = [1, _BOUND - 1, _BOUND, _BOUND + 1, (7 << 64) | (_BOUND - 1), 2**128 - 1]


@pytest.mark.parametrize("parent", PARENTS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_sdks_samplers_decide_as_they_would_themselves(sampler: str, parent: str) -> None:
    chosen, parent_context = SAMPLERS[sampler], PARENTS[parent]
    rule = lean_spans.sampling_rule(chosen)
    assert rule is not None
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent_context)) if (
        parent_context
    ) else Context()
    trace_ids = TRACE_IDS if parent_context is None else [parent_context.trace_id] * 6
    ids = _Ids([trace_id for trace_id in trace_ids for _ in (1, 2)])
    provider = TracerProvider(sampler=chosen, id_generator=ids, shutdown_on_exit=False)
    tracer = provider.get_tracer("aiobs")
    spans = Spans(tracer, SpanKind.SERVER)
    assert spans.lean
    for trace_id in trace_ids:
        result = chosen.should_sample(context, trace_id, "POST", SpanKind.SERVER, REQUEST)
        sampled = result.decision is samplers.Decision.RECORD_AND_SAMPLE
        assert rule(parent_context, trace_id) is sampled, hex(trace_id)
        lean = spans.start("POST", context, dict(REQUEST))
        sdk = tracer.start_span("POST", context, SpanKind.SERVER, dict(REQUEST))
        assert lean.get_span_context() == sdk.get_span_context()
        assert lean.is_recording() is sdk.is_recording() is sampled
        assert lean.get_span_context().trace_state == (
            parent_context.trace_state if parent_context else TraceState()
        )
        for span in (lean, sdk):
            span.end()


class _OwnDecision(samplers.TraceIdRatioBased):
    def should_sample(self, *args: Any, **kwargs: Any) -> samplers.SamplingResult:
        return samplers.SamplingResult(samplers.Decision.RECORD_ONLY)


class _OwnBound(samplers.TraceIdRatioBased):
    @property
    def bound(self) -> int:
        return 0


@pytest.mark.parametrize(
    "sampler",
    [
        _OwnDecision(1.0),
        _OwnBound(1.0),
        samplers.StaticSampler(samplers.Decision.RECORD_ONLY),
        samplers.ParentBased(_OwnDecision(1.0)),
        _TaggingSampler(),
    ],
    ids=["own should_sample", "own bound", "record only", "parent-based, own root", "user's"],
)
def test_other_samplers_are_asked_themselves(sampler: samplers.Sampler) -> None:
    assert lean_spans.sampling_rule(sampler) is None
    provider, exporter, _ = _provider(sampler=sampler)
    tracer = provider.get_tracer("aiobs")
    lean = Spans(tracer, SpanKind.SERVER).start("POST", Context(), dict(REQUEST))
    sdk = tracer.start_span("POST", Context(), SpanKind.SERVER, dict(REQUEST))
    assert lean.is_recording() is sdk.is_recording()
    assert lean.get_span_context().trace_flags == sdk.get_span_context().trace_flags
    lean.end()
    sdk.end()
    assert len(exporter.get_finished_spans()) in (0, 2)
