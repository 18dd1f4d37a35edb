"""The SDK set-up: resource, sampler, self-monitoring counters, bounded shutdown."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from aiobs import ConfigError, Observability, Settings
from aiobs.metrics.instruments import Instruments
from aiobs.tracing.provider import (
    build_exporter,
    build_resource,
    build_sampler,
    build_tracer_provider,
)


class _GatedExporter(SpanExporter):
    """Blocks every export until released; fails or succeeds as told."""

    def __init__(self, succeed: bool = True) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.succeed = succeed
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS if self.succeed else SpanExportResult.FAILURE


class _RaisingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector exploded")


def _observability(
    exporter: SpanExporter, **settings: object
) -> tuple[Observability, CollectorRegistry]:
    registry = CollectorRegistry()
    obs = Observability(
        Settings.load({"span_schedule_delay_ms": 10, **settings}, environ={}),
        registry=registry,
        span_exporter=exporter,
        environ={},
    )
    return obs, registry


def test_resource_carries_service_identity_over_resource_attributes() -> None:
    """service.name/version and deployment.environment.name (the current semantic convention,
    not the deprecated deployment.environment) win over OTEL_RESOURCE_ATTRIBUTES, whose other
    attributes are kept."""
    settings = Settings.load(
        {"service_version": "1.2.3"},
        environ={
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=ml",
            "AIOBS_ENVIRONMENT": "prod",
        },
    )
    attributes = build_resource(settings).attributes
    assert attributes["service.name"] == "from-attrs"
    assert attributes["service.version"] == "1.2.3"
    assert attributes["deployment.environment.name"] == "prod"
    assert "deployment.environment" not in attributes
    assert attributes["team"] == "ml"


INSTANCE_ID_OF_A_CHILD = (
    "from aiobs import Settings; from aiobs.tracing.provider import build_resource; "
    "print(build_resource(Settings.load(environ={})).attributes['service.instance.id'])"
)


def test_service_instance_id_is_a_uuid4_per_process() -> None:
    """service.instance.id is a random UUID, the same for every resource of a process and
    another in another process."""
    first = build_resource(Settings.load(environ={})).attributes["service.instance.id"]
    again = build_resource(Settings.load(environ={})).attributes["service.instance.id"]
    assert isinstance(first, str)
    assert uuid.UUID(first).version == 4
    assert again == first
    child = subprocess.run(
        [sys.executable, "-c", INSTANCE_ID_OF_A_CHILD],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert uuid.UUID(child.stdout.strip()).version == 4
    assert child.stdout.strip() != first


def test_service_instance_id_from_resource_attributes_wins() -> None:
    """An instance id given in OTEL_RESOURCE_ATTRIBUTES (a pod name, say) is the one used."""
    settings = Settings.load(environ={"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-7"})
    assert build_resource(settings).attributes["service.instance.id"] == "pod-7"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OTEL_BSP_EXPORT_TIMEOUT": "1234"}, 1234),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "3"}, 30_000),  # the specification's default
    ],
)
def test_bsp_export_timeout_reaches_the_batch_processor(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], expected: float
) -> None:
    """OTEL_BSP_EXPORT_TIMEOUT is the batch processor's export timeout, as the specification
    says; the OTLP request timeout does not replace it."""
    passed: list[float | None] = []
    original = BatchSpanProcessor.__init__

    def spy(self: BatchSpanProcessor, *args: object, **kwargs: object) -> None:
        passed.append(kwargs.get("export_timeout_millis"))  # type: ignore[arg-type]
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BatchSpanProcessor, "__init__", spy)
    settings = Settings.load(environ=environ)
    provider = build_tracer_provider(
        settings, Instruments(CollectorRegistry(), None), InMemorySpanExporter()
    )
    provider.shutdown()
    assert passed == [expected]
    assert settings.span_export_timeout_ms == expected


@pytest.mark.parametrize(
    ("name", "arg", "description"),
    [
        ("always_off", None, "AlwaysOffSampler"),
        ("traceidratio", "0.1", "TraceIdRatioBased{0.1}"),
        ("parentbased_traceidratio", "0.25", "ParentBased{root:TraceIdRatioBased{0.25}"),
    ],
)
def test_sampler_from_standard_variables(name: str, arg: str | None, description: str) -> None:
    """OTEL_TRACES_SAMPLER and _ARG select the sampler the specification names."""
    environ = {"OTEL_TRACES_SAMPLER": name}
    if arg is not None:
        environ["OTEL_TRACES_SAMPLER_ARG"] = arg
    assert build_sampler(Settings.load(environ=environ)).get_description().startswith(description)


def test_spans_dropped_when_the_queue_is_full_are_counted() -> None:
    """With the exporter stuck, spans past the queue are dropped and counted, and ending a
    span never blocks.

    The first batch is let reach the exporter before the rest are ended: a drop is counted
    when the queue is full as a span ends (the SDK's own test), and the export thread taking
    a batch at that instant would let that one span in after all.
    """
    exporter = _GatedExporter()
    obs, registry = _observability(
        exporter, span_queue_size=8, span_batch_size=4, span_schedule_delay_ms=60_000
    )
    assert obs.tracer is not None
    for _ in range(4):
        obs.tracer.start_span("work").end()
    assert exporter.entered.wait(5)
    started = time.perf_counter()
    for _ in range(96):
        obs.tracer.start_span("work").end()
    elapsed = time.perf_counter() - started
    dropped = registry.get_sample_value("aiobs_spans_dropped_total")
    exporter.release.set()
    obs.force_flush(5)
    assert elapsed < 1.0
    assert dropped == 96 - 8
    exported = registry.get_sample_value("aiobs_spans_exported_total")
    assert exported == exporter.exported == 4 + 8
    obs.shutdown(1)


def test_export_failures_are_counted_and_never_raise() -> None:
    """Failed batches and raising exporters count their spans as failures."""
    for exporter in (_GatedExporter(succeed=False), _RaisingExporter()):
        if isinstance(exporter, _GatedExporter):
            exporter.release.set()
        obs, registry = _observability(exporter)
        assert obs.tracer is not None
        for _ in range(5):
            obs.tracer.start_span("work").end()
        obs.force_flush(5)
        assert registry.get_sample_value("aiobs_span_export_failures_total") == 5
        assert registry.get_sample_value("aiobs_spans_exported_total") == 0
        obs.shutdown(1)


def test_shutdown_is_bounded_by_its_budget() -> None:
    """A collector that never answers cannot hold shutdown past its budget."""
    exporter = _GatedExporter()
    obs, _ = _observability(exporter, shutdown_timeout=0.5)
    assert obs.tracer is not None
    for _ in range(10):
        obs.tracer.start_span("work").end()
    started = time.perf_counter()
    assert obs.shutdown() is False
    elapsed = time.perf_counter() - started
    exporter.release.set()
    assert elapsed < 1.0
    assert obs.shutdown() is True  # idempotent


def test_no_endpoint_means_no_exporter() -> None:
    """Without an OTLP endpoint no exporter is built; spans still exist for log correlation."""
    settings = Settings.load(environ={})
    assert build_exporter(settings) is None
    obs = Observability(settings, registry=CollectorRegistry(), environ={})
    assert obs.tracer is not None
    with obs.tracer.start_as_current_span("work") as span:
        assert span.get_span_context().is_valid
    obs.shutdown(1)


def test_grpc_without_its_extra_names_the_setting() -> None:
    """Choosing gRPC without the exporter installed fails at start-up, naming the fix."""
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("the grpc extra is installed here")
    settings = Settings.load(
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
    )
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        Observability(settings, registry=CollectorRegistry(), environ={})
