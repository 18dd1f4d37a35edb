"""The one place that builds the OpenTelemetry SDK: resource, sampler, exporter, propagator."""

from __future__ import annotations

import functools
import logging
import os
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import sampling as samplers
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.version import __version__ as otel_version

from aiobs import catalog
from aiobs._settings import ConfigError, Settings
from aiobs.logs.pipeline import redact_text
from aiobs.metrics.instruments import Instruments

# The batch processor logs one warning per span it drops: under an outage that is a flood
# through the service's own log pipeline. Drops are counted in aiobs_spans_dropped_total.
_NOISY_LOGGERS = ("opentelemetry.sdk._shared_internal", "opentelemetry.sdk.trace.export")


def build_resource(settings: Settings) -> Resource:
    """``service.*`` and ``deployment.environment.name`` over ``OTEL_RESOURCE_ATTRIBUTES``,
    and under them this process's ``service.instance.id``."""
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": otel_version,
        catalog.ATTR_SERVICE_INSTANCE_ID: _instance_id(os.getpid()),
        **settings.resource_attributes,
        catalog.ATTR_SERVICE_NAME: settings.service_name,
        catalog.ATTR_SERVICE_VERSION: settings.service_version,
        catalog.ATTR_DEPLOYMENT_ENVIRONMENT_NAME: settings.environment,
    }
    return Resource(attributes)


@functools.lru_cache(maxsize=1)
def _instance_id(pid: int) -> str:
    """A random UUID for the process ``pid``: a forked worker gets its own."""
    return str(uuid.uuid4())


def build_sampler(settings: Settings) -> samplers.Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER``/``_ARG`` name, as the specification defines them."""
    ratio = samplers.TraceIdRatioBased(settings.sampler_arg)
    chosen: dict[str, samplers.Sampler] = {
        "always_on": samplers.ALWAYS_ON,
        "always_off": samplers.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": samplers.ParentBased(samplers.ALWAYS_ON),
        "parentbased_always_off": samplers.ParentBased(samplers.ALWAYS_OFF),
        "parentbased_traceidratio": samplers.ParentBased(ratio),
    }
    return chosen[settings.sampler]


def build_propagator(settings: Settings) -> TextMapPropagator:
    """W3C tracecontext + baggage by default; B3 single or multi header for Envoy meshes."""
    parts: list[TextMapPropagator] = []
    for name in settings.propagators:
        if name == "tracecontext":
            parts.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            parts.append(W3CBaggagePropagator())
        else:
            from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat

            parts.append(B3SingleFormat() if name == "b3" else B3MultiFormat())
    return CompositePropagator(parts)


def record_error(span: trace.Span, error: BaseException) -> None:
    """Add the standard ``exception`` event, with secrets redacted from the message and the
    traceback (which, unlike a debugger's, carries no local variables)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    span.add_event(
        "exception",
        {
            "exception.type": type(error).__qualname__,
            "exception.message": redact_text(str(error))[:4096],
            "exception.stacktrace": redact_text(text),
        },
    )


def propagation_headers(settings: Settings) -> frozenset[str]:
    """Every header the configured propagators may read (B3 reads both of its forms)."""
    names = set(build_propagator(settings).fields)
    if any(name.startswith("b3") for name in settings.propagators):
        names |= {"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"}
    return frozenset(names)


class CountingSpanExporter(SpanExporter):
    """Counts what its exporter accepted and what failed; never raises into the processor."""

    def __init__(self, exporter: SpanExporter, instruments: Instruments) -> None:
        self._exporter = exporter
        self._exported = instruments.spans_exported
        self._failed = instruments.span_export_failures

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:
            logging.getLogger("aiobs.tracing").warning("span exporter raised", exc_info=True)
            result = SpanExportResult.FAILURE
        (self._exported if result is SpanExportResult.SUCCESS else self._failed).inc(len(spans))
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans it drops when its queue is full.

    The queue is the SDK's (oldest span dropped first); only the count is added. The test
    suite pins that drops are counted, so an SDK change that moves the queue fails CI.
    ``pre_encode`` (the direct OTLP exporter's) turns each ended span into what is queued in
    its place.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        settings: Settings,
        instruments: Instruments,
        pre_encode: Callable[[ReadableSpan], Any] | None = None,
    ):
        super().__init__(
            exporter,
            max_queue_size=settings.span_queue_size,
            schedule_delay_millis=settings.span_schedule_delay_ms,
            max_export_batch_size=min(settings.span_batch_size, settings.span_queue_size),
            export_timeout_millis=settings.span_export_timeout_ms,
        )
        self._capacity = settings.span_queue_size
        self._dropped = instruments.spans_dropped
        batch_processor = getattr(self, "_batch_processor", None)
        self._queue = getattr(batch_processor, "_queue", None)
        # What BatchSpanProcessor.on_end calls once it has checked what on_end checks here.
        emit = getattr(batch_processor, "emit", None)
        self._emit: Callable[[Any], None] = emit if callable(emit) else super().on_end
        # What pre_encode makes is read by the exporter alone, not by BatchSpanProcessor.on_end.
        self._pre_encode = pre_encode if callable(emit) else None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        queue = self._queue
        if queue is not None and len(queue) >= self._capacity:
            self._dropped.inc()
        self._emit(span if self._pre_encode is None else self._pre_encode(span))


def build_exporter(settings: Settings) -> SpanExporter | None:
    """The OTLP exporter, or ``None`` when no endpoint is configured (nothing touches the
    network then)."""
    if settings.otlp_endpoint is None:
        return None
    headers = dict(settings.otlp_headers)
    if settings.otlp_protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: "
                "pip install 'aiobs[grpc]'"
            ) from None
        return GrpcSpanExporter(  # type: ignore[no-any-return,unused-ignore]
            endpoint=settings.otlp_endpoint, headers=headers, timeout=settings.otlp_timeout
        )
    from aiobs.tracing.otlp import FastOTLPSpanExporter

    return FastOTLPSpanExporter(
        endpoint=settings.otlp_endpoint, headers=headers, timeout=settings.otlp_timeout
    )


def build_tracer_provider(
    settings: Settings,
    instruments: Instruments,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """A tracer provider that exports through ``exporter`` (default: OTLP per settings).

    The SDK's own exit hook is off: :meth:`Observability.shutdown` flushes within a budget.
    """
    provider = TracerProvider(
        resource=build_resource(settings),
        sampler=build_sampler(settings),
        shutdown_on_exit=False,
    )
    exporter = exporter if exporter is not None else build_exporter(settings)
    if exporter is not None:
        counted = CountingSpanExporter(exporter, instruments)
        pre_encode = getattr(exporter, "pre_encode", None)
        provider.add_span_processor(
            CountingBatchSpanProcessor(counted, settings, instruments, pre_encode)
        )
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return provider
