"""The spans aiobs makes on every request (the server span, the inference span), on the SDK,
with less work each than ``Tracer.start_span``.

A span is the SDK's own ``Span`` class, started and ended by the SDK's ``start`` and ``end``:
the tracer provider's sampler, id generator, span limits and processors (users' included) all
see it as they see any span. What is left out is work these spans do not need: the generic
argument handling of ``start_span``, a second cleaning of attributes whose types aiobs knows
(strings and numbers, cleaned by the SDK whenever a length limit is set or a sampler changed
them), one lock per attribute set at the end, and the read-only copy the SDK
makes for its processors when a span ends (an ended span no longer changes; processors get the
span itself, which is a ``ReadableSpan``).

The lean path reaches into the SDK (``_Span``'s fields, the tracer's sampler and limits), so
:class:`Spans` takes it only where :func:`lean_tracer` found the shape it was written
against, checked field by field against a span the SDK built; otherwise spans are started
with ``Tracer.start_span`` and finished through the public ``Span`` methods.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

_log = logging.getLogger("aiobs.tracing")

_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)
_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}

_MAX_TRACE_ID = 2**128 - 1
_MAX_SPAN_ID = 2**64 - 1

SamplingRule = Callable[[trace.SpanContext | None, int], bool]
"""Whether a span is sampled, given its parent's valid span context (or None) and its trace id."""


class _MadeWhenRead:
    """A span's list of events or of links, made the first time it is read (most spans have
    neither); an instance field once made, as the SDK's span has it from the start."""

    def __init__(self, limit: str) -> None:
        self._limit = limit

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, span: Any, owner: type | None = None) -> Any:
        if span is None:
            return self
        made: BoundedList[Any] = BoundedList(getattr(span._limits, self._limit))
        return span.__dict__.setdefault(self._name, made)  # one list if two threads race


class LeanSpan(sdk_trace._Span):
    """The SDK's span, built by :meth:`Spans.start`; an ended one is its own read-only view
    (its fields no longer change once ``end`` has run)."""

    _attributes: BoundedAttributes
    _events = _MadeWhenRead("max_events")
    _links = _MadeWhenRead("max_links")

    def _readable_span(self) -> sdk_trace.ReadableSpan:
        return self


class Spans:
    """Starts and finishes the spans of one kind made by one tracer."""

    def __init__(self, tracer: trace.Tracer, kind: SpanKind) -> None:
        self._tracer = tracer
        self._kind = kind
        self._lean = lean_tracer(tracer, kind)
        self._sampler: sampling.Sampler | None = None
        self._rule: SamplingRule | None = None

    @property
    def lean(self) -> bool:
        """Whether spans take the lean path (the SDK has the shape it was written against)."""
        return self._lean is not None

    def start(
        self,
        name: str,
        context: Context,
        attributes: Mapping[str, str],
        links: Sequence[Link] | None = None,
    ) -> trace.Span:
        """A started span, child of the span in ``context`` if any; ``attributes`` (string
        values) go to the sampler and onto the span."""
        tracer = self._lean
        kind = self._kind
        if tracer is None or not tracer._is_enabled():
            return self._tracer.start_span(
                name, context=context, kind=kind, attributes=attributes, links=links
            )
        links = links or ()
        ids = tracer.id_generator
        parent: trace.SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            random = parent.trace_flags.random_trace_id
        else:
            parent = None
            trace_id = ids.generate_trace_id()
            random = ids.is_trace_id_random()
        sampler = tracer.sampler
        if sampler is not self._sampler:
            self._sampler, self._rule = sampler, sampling_rule(sampler)
        rule = self._rule
        if rule is not None:  # the SDK's own sampler: its decision without its result object
            sampled = rule(parent, trace_id)
            decision = Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP
            trace_state = parent.trace_state if parent is not None else DEFAULT_TRACE_STATE
            added: Mapping[str, Any] | None = None
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision = result.decision
            sampled = decision is Decision.RECORD_AND_SAMPLE
            state = result.trace_state
            trace_state = DEFAULT_TRACE_STATE if state is None else state
            added = None if result.attributes == attributes else result.attributes
        span_id = ids.generate_span_id()
        span_context = tuple.__new__(  # SpanContext(...) without its argument handling
            trace.SpanContext,
            (
                trace_id,
                span_id,
                False,
                _FLAGS[sampled, random],
                trace_state,
                0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID,
            ),
        )
        record_end_metrics = tracer._tracer_metrics.start_span(parent, decision)
        if decision is Decision.DROP:
            return trace.NonRecordingSpan(span_context)
        span = _new_span(tracer, kind, name, span_context, parent, links, record_end_metrics)
        if added is None:
            _add_clean(span._attributes, attributes)
        else:
            span._attributes._set_items(added)
        span.start(parent_context=context)
        return span

    def finish(
        self,
        span: trace.Span,
        name: str | None,
        attributes: Mapping[str, str | int | float],
        error: bool,
    ) -> None:
        """Rename ``span`` (unless ``name`` is None), add ``attributes`` (strings and
        numbers), mark it failed if ``error``, and end it."""
        if self._lean is not None and type(span) is LeanSpan:
            with span._lock:
                if span._end_time is None:
                    if name is not None:
                        span._name = name
                    _add_clean(span._attributes, attributes)
        elif span.is_recording():
            if name is not None:
                span.update_name(name)
            span.set_attributes(attributes)
        if error and span.is_recording():
            span.set_status(_ERROR)
        span.end()


def _add_clean(bounded: BoundedAttributes, attributes: Mapping[str, str | int | float]) -> None:
    """``bounded.update(attributes)`` for values that need no cleaning (strings and numbers)
    unless a length limit truncates them: in one step where no key is replaced and the count
    limit is not reached, else key by key as the SDK adds them."""
    if bounded.max_value_len is not None:
        bounded._set_items(attributes)
        return
    with bounded._lock:
        present = bounded._dict
        if (
            bounded.maxlen is None or len(present) + len(attributes) <= bounded.maxlen
        ) and present.keys().isdisjoint(attributes):
            present.update(attributes)
        else:
            for key, value in attributes.items():
                bounded._setitem_locked(key, value)


def _new_span(
    tracer: sdk_trace.Tracer,
    kind: SpanKind,
    name: str,
    context: trace.SpanContext,
    parent: trace.SpanContext | None,
    links: Sequence[Link],
    record_end_metrics: Any,
) -> LeanSpan:
    """What ``_Span.__init__`` builds for a span without attributes or events, field by
    field (its argument handling is most of its cost)."""
    limits = tracer._span_limits
    span: LeanSpan = object.__new__(LeanSpan)
    span.__dict__.update(
        _name=name,
        _context=context,
        _kind=kind,
        _instrumentation_info=tracer.instrumentation_info,
        _instrumentation_scope=tracer._instrumentation_scope,
        _parent=parent,
        _start_time=None,
        _end_time=None,
        _resource=tracer.resource,
        _status=_UNSET,
        _sampler=tracer.sampler,
        _trace_config=None,
        _record_exception=True,
        _set_status_on_exception=True,
        _span_processor=tracer.span_processor,
        _limits=limits,
        _lock=threading.Lock(),
        _attributes=BoundedAttributes(
            limits.max_span_attributes,
            None,
            immutable=False,
            max_value_len=limits.max_span_attribute_length,
        ),
        _record_end_metrics=record_end_metrics,
    )
    if links:
        span._links = span._new_links(links)  # reads the limits set above
    return span


def sampling_rule(sampler: sampling.Sampler) -> SamplingRule | None:
    """What ``sampler.should_sample`` decides, as a function of the parent and the trace id,
    for the SDK's own samplers (always on, always off, trace id ratio, parent-based of
    those: the ones ``OTEL_TRACES_SAMPLER`` names), whose result otherwise costs several
    objects per span; None for any other sampler, which is then asked itself."""
    should_sample = type(sampler).should_sample
    if should_sample is sampling.StaticSampler.should_sample:
        decision = sampler._decision  # type: ignore[attr-defined]
        if decision not in (Decision.DROP, Decision.RECORD_AND_SAMPLE):
            return None
        sampled = decision is Decision.RECORD_AND_SAMPLE
        return lambda parent, trace_id: sampled
    if should_sample is sampling.TraceIdRatioBased.should_sample:
        if type(sampler).bound is not sampling.TraceIdRatioBased.bound:  # type: ignore[attr-defined]
            return None  # a bound of its own, which may change
        limit, bound = sampler.TRACE_ID_LIMIT, sampler.bound  # type: ignore[attr-defined]
        return lambda parent, trace_id: trace_id & limit < bound
    if should_sample is not sampling.ParentBased.should_sample:
        return None
    delegates = [
        sampling_rule(getattr(sampler, name))
        for name in (
            "_root",
            "_remote_parent_sampled",
            "_remote_parent_not_sampled",
            "_local_parent_sampled",
            "_local_parent_not_sampled",
        )
    ]
    root, remote_sampled, remote_unsampled, local_sampled, local_unsampled = delegates
    if None in delegates:
        return None

    def parent_based(parent: trace.SpanContext | None, trace_id: int) -> bool:
        if parent is None:
            return root(parent, trace_id)  # type: ignore[misc]
        if parent.is_remote:
            rule = remote_sampled if parent.trace_flags.sampled else remote_unsampled
        else:
            rule = local_sampled if parent.trace_flags.sampled else local_unsampled
        return rule(parent, trace_id)  # type: ignore[misc]

    return parent_based


def _comparable(key: str, value: Any) -> Any:
    """What of a span field must be equal between the SDK's span and the lean path's."""
    if key == "_lock":
        return type(value)
    if isinstance(value, Status):
        return (value.status_code, value.description)
    if isinstance(value, BoundedAttributes):
        return (value.maxlen, value.max_value_len, value._immutable, dict(value))
    if key in ("_events", "_links"):
        return (type(value), value._dq.maxlen, list(value))
    return value


def lean_tracer(tracer: trace.Tracer, kind: SpanKind) -> sdk_trace.Tracer | None:
    """``tracer`` if it is an SDK tracer whose spans of ``kind`` :func:`_new_span` builds
    exactly as the SDK does (the same fields, equal but for the locks), else ``None``."""
    if type(tracer) is not sdk_trace.Tracer:
        return None
    try:
        context = trace.SpanContext(1, 1, is_remote=False)
        reference = sdk_trace._Span(
            name="n",
            context=context,
            sampler=tracer.sampler,
            resource=tracer.resource,
            span_processor=tracer.span_processor,
            kind=kind,
            instrumentation_info=tracer.instrumentation_info,
            limits=tracer._span_limits,
            instrumentation_scope=tracer._instrumentation_scope,
            record_end_metrics=None,
        )
        lean = _new_span(tracer, kind, "n", context, None, (), None)
        lean._events, lean._links  # noqa: B018 - made when read
        if reference.__dict__.keys() != lean.__dict__.keys():
            return None
        for key, value in reference.__dict__.items():
            if _comparable(key, value) != _comparable(key, lean.__dict__[key]):
                return None
        shaped = (
            callable(getattr(tracer, "_is_enabled", None))
            and hasattr(tracer._tracer_metrics, "start_span")
            and _span_context_is_a_tuple()
        )
        return tracer if shaped else None
    except Exception:  # noqa: BLE001 - any other shape: the SDK's own path
        _log.debug("the SDK's span differs from the lean path's; using start_span", exc_info=True)
        return None


def _span_context_is_a_tuple() -> bool:
    """Whether ``SpanContext`` is the tuple of its fields that :meth:`Spans.start` builds."""
    flags = TraceFlags(TraceFlags.SAMPLED)
    built = tuple.__new__(trace.SpanContext, (2, 3, False, flags, DEFAULT_TRACE_STATE, True))
    reference = trace.SpanContext(2, 3, is_remote=False, trace_flags=flags)
    fields = ("trace_id", "span_id", "is_remote", "trace_flags", "trace_state", "is_valid")
    return tuple(reference) == built and all(
        getattr(reference, name) == getattr(built, name) for name in fields
    )
