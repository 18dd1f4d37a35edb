"""An OpenTelemetry set-up that was there first is joined, not fought: one server span per
request, one export pipeline (the service's), aiobs's inference spans in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import aiobs
from aiobs import Observability, Settings
from tests.conftest import client_for
from tests.support.otlp_receiver import HOST, OtlpReceiver, ReceivedSpan, free_port, wait_for
from tests.support.servers import start_logged, stop_process

pytestmark = pytest.mark.anyio


class ServiceTracing:
    """The service's own SDK tracer provider, exporting to memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def joined_app(
    tracing: ServiceTracing, wrap: Callable[[FastAPI], None] | None = None
) -> tuple[FastAPI, Observability]:
    obs = Observability(
        Settings.load({"service_name": "joined"}, environ={}),
        registry=CollectorRegistry(),
        tracer_provider=tracing.provider,
        environ={},
    )
    app = FastAPI()

    @app.get("/v1/models/{name}")
    async def predict(name: str) -> dict[str, str]:
        with obs.inference(name, "v1"):
            pass
        return {"model": name}

    if wrap is not None:
        wrap(app)
    aiobs.instrument(app, observability=obs)
    return app, obs


def server_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.SERVER]


def inference_parent(spans: list[ReadableSpan]) -> int | None:
    (inference,) = [span for span in spans if span.name.startswith("inference ")]
    return inference.parent.span_id if inference.parent else None


async def test_a_provider_set_up_first_carries_aiobs_spans() -> None:
    """With the service's own provider, aiobs adds no processor; its server span and the
    inference span (its child) reach the service's exporter."""
    tracing = ServiceTracing()
    processors_before = len(tracing.provider._active_span_processor._span_processors)
    app, obs = joined_app(tracing)
    async with client_for(app) as client:
        assert (await client.get("/v1/models/m")).status_code == 200
    assert obs.joined_tracing
    assert len(tracing.provider._active_span_processor._span_processors) == processors_before
    spans = tracing.spans()
    (server,) = server_spans(spans)
    assert server.name == "GET /v1/models/{name}"
    assert server.context is not None
    assert inference_parent(spans) == server.context.span_id
    obs.shutdown(timeout=1)


async def test_an_outer_instrumentation_span_is_the_one_server_span() -> None:
    """OpenTelemetry's ASGI middleware outside the app makes the server span: aiobs makes no
    second one; its metrics count the request and the inference span is a child of it."""
    tracing = ServiceTracing()
    app, obs = joined_app(tracing)
    outer = OpenTelemetryMiddleware(
        app, tracer_provider=tracing.provider, exclude_spans=["send", "receive"]
    )
    async with client_for(outer) as client:
        assert (await client.get("/v1/models/m")).status_code == 200
    spans = tracing.spans()
    (server,) = server_spans(spans)
    assert server.context is not None
    assert inference_parent(spans) == server.context.span_id
    assert (
        obs.registry.get_sample_value(
            "http_requests_total", {"method": "GET", "route": "/v1/models/{name}", "status": "200"}
        )
        == 1
    )
    obs.shutdown(timeout=1)


async def test_fastapi_instrumented_before_aiobs_keeps_one_server_span() -> None:
    """An app already instrumented with opentelemetry-instrumentation-fastapi: aiobs goes
    inside its middleware and joins its span."""
    tracing = ServiceTracing()

    def instrument_first(app: FastAPI) -> None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracing.provider, exclude_spans=["send", "receive"]
        )

    app, obs = joined_app(tracing, instrument_first)
    async with client_for(app) as client:
        assert (await client.get("/v1/models/m")).status_code == 200
    spans = tracing.spans()
    (server,) = server_spans(spans)
    assert server.context is not None
    assert inference_parent(spans) == server.context.span_id
    obs.shutdown(timeout=1)


async def test_fastapi_instrumented_after_aiobs_keeps_one_server_span_and_error_answers() -> None:
    """opentelemetry-instrumentation-fastapi applied after aiobs rebuilds the stack around
    what aiobs put on top (it requires a ServerErrorMiddleware there): its span is the one
    server span, aiobs joins it, and an unhandled exception still gets the app's answer."""
    tracing = ServiceTracing()
    app, obs = joined_app(tracing)

    @app.get("/v1/fail")
    async def fail() -> None:
        raise RuntimeError("boom")

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracing.provider, exclude_spans=["send", "receive"]
    )
    async with client_for(app, raise_app_exceptions=False) as client:
        assert (await client.get("/v1/models/m")).status_code == 200
        failed = await client.get("/v1/fail")
    assert failed.status_code == 500
    assert failed.json()["error"] == "internal_server_error"  # aiobs's JSON answer
    spans = tracing.spans()
    servers = server_spans(spans)
    assert len(servers) == 2  # one per request, both OpenTelemetry's
    scopes = {span.instrumentation_scope.name for span in servers}  # type: ignore[union-attr]
    assert scopes == {"opentelemetry.instrumentation.fastapi"}
    assert inference_parent(spans) == servers[0].context.span_id
    assert (
        obs.registry.get_sample_value(
            "http_requests_total", {"method": "GET", "route": "/v1/fail", "status": "500"}
        )
        == 1
    )
    obs.shutdown(timeout=1)


def _serve(
    command: list[str], env: dict[str, str], log: Path, port: int
) -> subprocess.Popen[bytes]:
    process = start_logged(command, env, log)
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1) as client:
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if client.get(f"http://{HOST}:{port}/health/live").status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def _requests_and_spans(
    command: list[str], env: dict[str, str], tmp_path: Path, port: int
) -> tuple[list[ReceivedSpan], list[str]]:
    with OtlpReceiver() as receiver:
        env = {
            **env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "JOINED_APP_ENDPOINT": receiver.endpoint + "/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        process = _serve(command, env, tmp_path / "server.log", port)
        try:
            with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=5) as client:
                for name in ("a", "b", "c"):
                    assert client.get(f"/v1/models/{name}").status_code == 200
            wait_for(
                lambda: sum(s.name.startswith("inference ") for s in receiver.spans) >= 3,
                10,
                message="inference spans",
            )
            time.sleep(0.5)  # a second pipeline would deliver its copies by now
        finally:
            stop_process(process)
        lines = (tmp_path / "server.log").read_text().splitlines()
        return receiver.spans, lines


def _assert_one_pipeline(spans: list[ReceivedSpan]) -> None:
    ids = [span.span_id for span in spans]
    assert len(ids) == len(set(ids)), "a span arrived twice: two export pipelines"
    servers = [span for span in spans if span.kind == "SERVER"]
    assert len(servers) == 3, [(span.name, span.attributes.get("http.target")) for span in servers]
    inferences = [span for span in spans if span.name.startswith("inference ")]
    assert len(inferences) == 3
    by_id = {span.span_id: span for span in servers}
    for inference in inferences:
        assert inference.parent_span_id in by_id


@pytest.mark.slow
def test_under_opentelemetry_instrument(tmp_path: Path) -> None:
    """`opentelemetry-instrument uvicorn app` (the launcher auto-instrumentation and the
    OpenTelemetry Operator use): one server span per request, made by the auto-instrumentation,
    aiobs's inference spans its children, every span exported once."""
    launcher = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert launcher is not None
    port = free_port()
    spans, _lines = _requests_and_spans(
        [
            launcher,
            sys.executable,
            "-m",
            "uvicorn",
            "tests.support.joined_app:app",
            "--host",
            HOST,
            "--port",
            str(port),
        ],
        {
            "OTEL_SERVICE_NAME": "auto-svc",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            # As docs/drop-in.md advises: probes and scrapes make no spans.
            "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "/health,/metrics",
        },
        tmp_path,
        port,
    )
    _assert_one_pipeline(spans)
    assert {span.resource.get("service.name") for span in spans} == {"auto-svc"}
    assert {span.scope for span in spans if span.kind == "SERVER"} != {"aiobs"}


@pytest.mark.slow
def test_after_the_services_own_sdk_set_up(tmp_path: Path) -> None:
    """The service set its own TracerProvider before aiobs.instrument, with OTLP endpoint
    variables that aiobs would read too: aiobs exports nothing itself; its server and
    inference spans arrive once, through the service's exporter (its resource)."""
    port = free_port()
    spans, _lines = _requests_and_spans(
        [
            sys.executable,
            "-m",
            "tests.support.run_server",
            "tests.support.joined_app:app",
            HOST,
            str(port),
        ],
        {"JOINED_APP_OWN_SDK": "1"},
        tmp_path,
        port,
    )
    _assert_one_pipeline(spans)
    assert {span.resource.get("service.name") for span in spans} == {"own-sdk-svc"}
    assert {span.scope for span in spans if span.kind == "SERVER"} == {"aiobs"}
