"""aiobs.testing: a capture of what an instrumented service exports, read in its tests."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import aiobs
import aiobs.testing
from aiobs import _setup
from aiobs.testing import Capture, Metrics

TOKENS = ["Hello", ",", " world"]
log = aiobs.get_logger("shop")  # bound before any capture: resolved per call
tracer = trace.get_tracer("shop")  # likewise: a module's own tracer, taken once


class ModelFailed(RuntimeError):
    pass


@aiobs.track_inference("llm", "1", tokens=True)  # the process's Observability, per call
async def generate(prompt: str) -> AsyncIterator[str]:
    for token in TOKENS:
        await asyncio.sleep(0)
        yield token


def make_app() -> FastAPI:
    """A service as users write one: a plain route, a token stream, a route that fails."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        with tracer.start_as_current_span("look up"):
            log.info("item_served", item_id=item_id)
        return {"item_id": item_id}

    @app.get("/generate")
    async def stream() -> StreamingResponse:
        return StreamingResponse(generate("hi"), media_type="text/plain")

    @app.get("/fail")
    async def fail() -> None:
        raise ModelFailed("the model is gone")

    return app


@pytest.fixture
def cap() -> Iterator[Capture]:
    with aiobs.testing.capture(make_app(), service_name="shop-svc") as capture:
        yield capture


def _hex_trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def test_the_public_surface_is_pinned() -> None:
    assert aiobs.testing.__all__ == ["Capture", "Metrics", "capture"]


def test_a_request_makes_a_server_span_and_an_inference_child(cap: Capture) -> None:
    response = cap.test_client().get("/generate")
    assert response.text == "".join(TOKENS)

    server = cap.span("GET /generate")
    inference = cap.span("inference llm")
    assert server.kind is SpanKind.SERVER
    assert server.parent is None
    assert inference.parent is not None
    assert server.context is not None
    assert inference.parent.span_id == server.context.span_id
    assert _hex_trace_id(inference) == _hex_trace_id(server)
    assert [span.name for span in cap.spans("inference llm")] == ["inference llm"]


def test_metrics_are_read_from_the_rendered_exposition(cap: Capture) -> None:
    client = cap.test_client()
    client.get("/generate")
    client.get("/items/1")
    client.get("/items/2")

    metrics = cap.metrics()
    assert isinstance(metrics, Metrics)
    assert "# EOF" in metrics.text
    assert metrics.value("http_requests_total", route="/items/{item_id}", status=200) == 2
    assert metrics.value("http_requests_total", method="GET") == 3
    assert metrics.value("http_requests_total", route="/nowhere") is None
    assert metrics.value("ai_inference_total", model="llm", model_version="1") == 1
    assert metrics.value("ai_tokens_total", model="llm", type="output") == len(TOKENS)
    assert metrics.value("ai_time_to_first_token_seconds_count", model="llm") == 1
    assert "http_requests_total" in metrics
    assert "http_request_duration_seconds" in metrics  # a family name
    assert "no_such_metric" not in metrics
    buckets = metrics.samples("http_request_duration_seconds_bucket", route="/generate")
    assert buckets
    assert {sample.labels["le"] for sample in buckets} >= {"+Inf"}
    family = metrics.samples("http_request_duration_seconds")
    assert {sample.name for sample in family} >= {
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_count",
        "http_request_duration_seconds_sum",
    }


def test_histogram_exemplars_carry_the_trace_id(cap: Capture) -> None:
    cap.test_client().get("/items/7")
    trace_id = _hex_trace_id(cap.span("GET /items/{item_id}"))
    exemplars = [
        sample.exemplar
        for sample in cap.metrics().samples("http_request_duration_seconds_bucket")
        if sample.exemplar is not None
    ]
    assert [exemplar.labels["trace_id"] for exemplar in exemplars] == [trace_id]


def test_logs_hold_the_access_line_and_the_services_own_event(cap: Capture) -> None:
    cap.test_client().get("/items/3")
    trace_id = _hex_trace_id(cap.span("GET /items/{item_id}"))

    (access,) = cap.logs("http_request")
    assert access["route"] == "/items/{item_id}"
    assert access["status"] == 200
    assert access["service"] == "shop-svc"
    assert access["trace_id"] == trace_id

    (event,) = cap.logs("item_served", item_id=3)
    assert event["logger"] == "shop"
    assert event["level"] == "info"
    assert event["trace_id"] == trace_id
    look_up = cap.span("look up")  # the module's own span, current while it logged
    assert look_up.context is not None
    assert event["span_id"] == format(look_up.context.span_id, "016x")
    assert cap.logs("item_served", item_id=4) == []
    assert cap.logs("http_request", status=200, route="/items/{item_id}") == [access]
    assert any('"event":"http_request"' in line for line in cap.log_lines())


def test_an_error_propagates_and_is_recorded(cap: Capture) -> None:
    with pytest.raises(ModelFailed, match="the model is gone"):
        cap.test_client().get("/fail")

    span = cap.span("GET /fail")
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    assert cap.metrics().value("http_requests_total", route="/fail", status=500) == 1
    (access,) = cap.logs("http_request", status=500)
    assert access["level"] == "error"
    assert access["trace_id"] == _hex_trace_id(span)


def test_the_server_keeps_the_error_when_asked(cap: Capture) -> None:
    response = cap.test_client(raise_server_exceptions=False).get("/fail")
    assert response.status_code == 500
    assert response.json()["trace_id"] == _hex_trace_id(cap.span("GET /fail"))


@pytest.mark.anyio
async def test_the_async_client_calls_the_captured_app(cap: Capture) -> None:
    async with cap.client() as client:
        response = await client.get("/generate")
        assert response.text == "".join(TOKENS)
        with pytest.raises(ModelFailed):
            await client.get("/fail")
    async with cap.client(raise_app_exceptions=False) as client:
        assert (await client.get("/fail")).status_code == 500
    assert len(cap.spans("GET /fail")) == 2
    assert cap.metrics().value("ai_inference_total", model="llm") == 1


def test_the_lifespan_ends_with_the_shutdown_and_what_was_captured_stays(cap: Capture) -> None:
    with cap.test_client() as client:
        client.get("/generate")
    assert cap.observability.is_shut_down
    assert [span.name for span in cap.spans()] == ["inference llm", "GET /generate"]
    assert len(cap.logs("http_request")) == 1


def test_span_names_the_spans_it_saw_when_it_finds_none_or_several(cap: Capture) -> None:
    client = cap.test_client()
    client.get("/items/1")
    client.get("/items/2")
    seen = r"found 0; spans seen: \['GET /items/\{item_id\}', 'look up'\]"
    with pytest.raises(AssertionError, match=seen):
        cap.span("GET /missing")
    with pytest.raises(AssertionError, match="found 2"):
        cap.span("GET /items/{item_id}")


def test_clear_forgets_spans_and_logs_but_not_metrics(cap: Capture) -> None:
    client = cap.test_client()
    client.get("/items/1")
    assert cap.spans()
    cap.clear()
    assert cap.spans() == []
    assert cap.logs() == []
    client.get("/items/2")
    assert [span.name for span in cap.spans()] == ["look up", "GET /items/{item_id}"]
    assert len(cap.logs("http_request")) == 1
    assert cap.metrics().value("http_requests_total") == 2


def test_the_capture_is_the_process_observability_while_open(cap: Capture) -> None:
    assert aiobs.setup() is cap.observability
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    with trace.get_tracer("shop").start_as_current_span("own work"):
        aiobs.get_logger().info("inside")
    (own,) = cap.spans("own work")
    (line,) = cap.logs("inside")
    assert line["trace_id"] == _hex_trace_id(own)
    logging.getLogger("shop.stdlib").warning("careful")
    (warning,) = cap.logs("careful")
    assert warning["level"] == "warning"
    assert warning["logger"] == "shop.stdlib"


def test_an_app_instrumenting_itself_inside_a_capture_gets_it() -> None:
    with aiobs.testing.capture(service_name="factory-svc") as cap:
        app = make_app()
        obs = aiobs.instrument(app, service_name="ignored")  # as in the app's own factory
        assert obs is cap.observability
        cap.instrument(app)  # the app the clients call; already instrumented with it
        cap.test_client().get("/items/1")
        assert cap.logs("http_request")[0]["service"] == "factory-svc"


def test_a_capture_without_an_app_has_no_client() -> None:
    with aiobs.testing.capture() as cap, pytest.raises(RuntimeError, match="no app captured"):
        cap.test_client()


def test_an_app_instrumented_before_the_capture_is_refused() -> None:
    app = make_app()
    with aiobs.testing.capture() as first:
        first.instrument(app)
    with pytest.raises(RuntimeError, match="instrumented already"):
        aiobs.testing.capture(app)


def test_two_captures_one_after_another_are_independent() -> None:
    with aiobs.testing.capture(make_app(), service_name="first") as first:
        first.test_client().get("/items/1")
        first.test_client().get("/generate")
    with aiobs.testing.capture(make_app(), service_name="second") as second:
        assert second.spans() == []
        assert second.logs() == []
        assert second.metrics().value("http_requests_total") is None
        assert second.metrics().value("ai_inference_total") is None
        second.test_client().get("/generate")
        assert [span.name for span in second.spans()] == ["inference llm", "GET /generate"]
        assert second.metrics().value("ai_inference_total") == 1
        assert {line["service"] for line in second.logs()} == {"second"}
        assert aiobs.setup() is second.observability
    assert second.registry is not first.registry
    # What the first captured is still readable, and unchanged.
    assert [span.name for span in first.spans()] == [
        "look up",
        "GET /items/{item_id}",
        "inference llm",
        "GET /generate",
    ]
    assert first.metrics().value("http_requests_total") == 2
    assert {line["service"] for line in first.logs()} == {"first"}


def test_a_module_tracer_records_into_each_capture_in_turn() -> None:
    for service in ("first", "second"):
        with aiobs.testing.capture(make_app(), service_name=service) as cap:
            cap.test_client().get("/items/1")
            look_up = cap.span("look up")
            assert look_up.resource.attributes["service.name"] == service
            assert look_up.parent is not None
            server = cap.span("GET /items/{item_id}")
            assert server.context is not None
            assert look_up.parent.span_id == server.context.span_id
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        with tracer.start_as_current_span("no capture open") as span:
            assert not span.is_recording()


def test_one_capture_at_a_time() -> None:
    with aiobs.testing.capture() as open_one:
        with pytest.raises(RuntimeError, match="another capture is open"):
            aiobs.testing.capture()
        assert aiobs.setup() is open_one.observability
    aiobs.testing.capture().close()  # free again


def test_close_is_idempotent_and_works_without_with() -> None:
    cap = aiobs.testing.capture(make_app())
    cap.test_client().get("/items/1")
    cap.close()
    cap.close()
    assert cap.closed
    assert cap.observability.is_shut_down
    assert [span.name for span in cap.spans()] == ["look up", "GET /items/{item_id}"]
    with pytest.raises(RuntimeError, match="closed"):
        cap.instrument(make_app())


@dataclass
class _Globals:
    provider: object
    provider_set: bool
    textmap: object
    loggers: dict[str, tuple[object, ...]]
    structlog_configured: bool
    structlog_config: dict[str, Any]
    current: object


def _globals() -> _Globals:
    loggers = {
        name: (tuple(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for name, logger in [("", logging.getLogger())]
        + [(n, lg) for n, lg in logging.Logger.manager.loggerDict.items()]
        if isinstance(logger, logging.Logger)
    }
    return _Globals(
        provider=trace.get_tracer_provider(),
        provider_set=trace._TRACER_PROVIDER_SET_ONCE._done,
        textmap=propagate.get_global_textmap(),
        loggers=loggers,
        structlog_configured=structlog.is_configured(),
        structlog_config=structlog.get_config(),
        current=_setup._current,
    )


def _assert_same(before: _Globals, after: _Globals) -> None:
    # Loggers first created during the capture (the app's, uvicorn's) start at defaults.
    new = {name: after.loggers[name] for name in after.loggers.keys() - before.loggers.keys()}
    assert {name: state[1:] for name, state in new.items() if state[1:] != (0, True, False)} == {}
    assert {name: after.loggers[name] for name in before.loggers} == before.loggers
    assert (after.provider, after.provider_set) == (before.provider, before.provider_set)
    assert after.textmap is before.textmap
    assert after.structlog_configured == before.structlog_configured
    assert after.structlog_config == before.structlog_config
    assert after.current is before.current


def test_capture_leaves_the_process_as_it_found_it() -> None:
    before = _globals()
    with aiobs.testing.capture(make_app()) as cap:
        cap.test_client().get("/generate")
        during = _globals()
        assert isinstance(during.provider, TracerProvider)
        assert during.provider is not before.provider
        assert during.structlog_configured
        assert during.loggers[""] != before.loggers[""]
        assert during.current is cap.observability
    _assert_same(before, _globals())


def test_capture_puts_back_a_services_own_setup() -> None:
    """A process with its own logging, structlog configuration, tracer provider and
    Observability gets each back, even after a capture that failed to start."""
    handler = logging.NullHandler()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    own_provider = TracerProvider()
    own_spans = InMemorySpanExporter()
    own_provider.add_span_processor(SimpleSpanProcessor(own_spans))
    saved = _setup._current
    try:
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        structlog.configure(processors=[structlog.processors.JSONRenderer()])
        aiobs.testing._GlobalState.set_tracer_provider(own_provider, done=True)
        _setup._current = object()
        before = _globals()
        with aiobs.testing.capture(make_app()) as cap:
            cap.test_client().get("/items/1")
            # The service's structlog configuration is kept, as in production.
            assert cap.logs("item_served") == []
            with trace.get_tracer("shop").start_as_current_span("own work"):
                pass
            assert cap.span("own work")
        _assert_same(before, _globals())
        assert own_spans.get_finished_spans() == ()  # the capture had them all
        with tracer.start_as_current_span("after"):  # the module's tracer is back on it
            pass
        assert [span.name for span in own_spans.get_finished_spans()] == ["after"]
        served = make_app()
        served.middleware_stack = served.build_middleware_stack()  # as after a request
        with pytest.raises(RuntimeError, match="before the application serves"):
            aiobs.testing.capture(served)
        _assert_same(before, _globals())
        aiobs.testing.capture().close()  # a failed start leaves no capture open
    finally:
        _setup._current = saved
        structlog.reset_defaults()
        aiobs.testing._GlobalState.set_tracer_provider(None, done=False)
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def test_the_environment_does_not_leak_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.invalid:4318")
    with aiobs.testing.capture() as cap:
        assert cap.settings.service_name == "unknown_service"
        assert cap.settings.otlp_endpoint is None
    with aiobs.testing.capture(environ={"OTEL_SERVICE_NAME": "given"}) as cap:
        assert cap.settings.service_name == "given"


@pytest.mark.slow
def test_importable_with_the_core_dependencies_only() -> None:
    """aiobs.testing needs neither httpx nor Starlette until a client is asked for."""
    script = textwrap.dedent(
        """
        import sys

        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"httpx", "starlette", "fastapi"}:
                    raise ImportError(f"no {name} here")
                return None

        sys.meta_path.insert(0, Missing())
        import aiobs.testing

        with aiobs.testing.capture(service_name="worker") as cap:
            with cap.observability.inference("m", "1"):
                aiobs.get_logger().info("done")
            assert cap.span("inference m")
            assert cap.metrics().value("ai_inference_total", model="m") == 1
            assert cap.logs("done")[0]["service"] == "worker"
            cap._target = object()  # an app without Starlette installed
            try:
                cap.client()
            except ImportError as error:
                print(error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'aiobs[testing]'" in done.stdout


def test_the_documented_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/testing.md's code, against a service with the routes it calls."""
    import re
    import types
    from pathlib import Path

    def create_app() -> FastAPI:
        app = FastAPI()

        @app.post("/predict")
        async def predict(body: dict[str, str]) -> dict[str, str]:
            with aiobs.inference("resnet50", "v1"):
                return {"label": body["text"]}

        @app.get("/generate")
        async def stream() -> StreamingResponse:
            return StreamingResponse(generate("hi"), media_type="text/plain")

        return app

    package, module = types.ModuleType("myservice"), types.ModuleType("myservice.app")
    module.create_app = create_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "myservice", package)
    monkeypatch.setitem(sys.modules, "myservice.app", module)
    text = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text()
    fixture, factory, async_test = re.findall(r"```python\n(.*?)```", text, re.S)
    namespace: dict[str, Any] = {}
    # Run as pytest would: the fixture's generator around each test.
    exec(fixture.replace("@pytest.fixture\n", ""), namespace)  # noqa: S102
    exec(async_test.replace("@pytest.mark.anyio\n", ""), namespace)  # noqa: S102
    for run in (
        namespace["test_predict_is_observed"],
        lambda capture: asyncio.run(namespace["test_stream"](capture)),
    ):
        telemetry = namespace["telemetry"]()
        run(next(telemetry))
        with pytest.raises(StopIteration):
            next(telemetry)
    exec(factory, namespace)  # noqa: S102
    capture = namespace["capture"]
    assert capture.closed
    assert capture.app is not None
