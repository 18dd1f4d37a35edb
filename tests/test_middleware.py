"""The ASGI middleware: http_* metrics, one server span per request, access lines, errors,
health and metrics endpoints — driven through a real FastAPI app."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable

import pytest
import structlog
from fastapi import FastAPI
from opentelemetry import baggage
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.routing import Mount

import aiobs
from tests.conftest import Harness, client_for

pytestmark = pytest.mark.anyio

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


def build_app(harness: Harness) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, str]:
        aiobs.get_logger("app").info("looked_up", name=name)
        return {"name": name}

    @app.post("/v1/models/{name}/predict")
    def predict(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail canary-boom")

    sub = FastAPI()

    @sub.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    app.router.routes.append(Mount("/sub", app=sub))
    aiobs.instrument(app, observability=harness.obs)
    return app


async def test_requests_are_counted_by_route_template(
    make_harness: Callable[..., Harness],
) -> None:
    """route is the template, never the raw path; unrouted paths share 'unmatched'; unknown
    methods fold into _OTHER; mounted apps get the mount prefix."""
    harness = make_harness()
    async with client_for(build_app(harness)) as client:
        for name in ("a", "b", "c"):
            assert (await client.get(f"/v1/models/{name}")).status_code == 200
        assert (await client.post("/v1/models/a/predict")).status_code == 200
        for number in range(5):
            assert (await client.get(f"/random/{number}")).status_code == 404
        assert (await client.request("BREW", "/v1/models/a")).status_code == 405
        assert (await client.get("/sub/items/7")).status_code == 200
    assert (
        harness.sample("http_requests_total", method="GET", route="/v1/models/{name}", status="200")
        == 3
    )
    assert (
        harness.sample(
            "http_requests_total", method="POST", route="/v1/models/{name}/predict", status="200"
        )
        == 1
    )
    assert harness.sample("http_requests_total", method="GET", route="unmatched", status="404") == 5
    assert (
        harness.sample(
            "http_requests_total", method="_OTHER", route="/v1/models/{name}", status="405"
        )
        == 1
    )
    assert (
        harness.sample(
            "http_requests_total", method="GET", route="/sub/items/{item_id}", status="200"
        )
        == 1
    )
    assert (
        harness.sample(
            "http_request_duration_seconds_count", method="GET", route="/v1/models/{name}"
        )
        == 3
    )
    assert harness.sample("http_requests_in_flight") == 0


async def test_one_server_span_per_request(make_harness: Callable[..., Harness]) -> None:
    """Each request yields exactly one SERVER span named by method and route template, even
    though FastAPI could make its own; health and metrics paths make none."""
    harness = make_harness()
    async with client_for(build_app(harness)) as client:
        await client.get("/v1/models/a")
        await client.get("/nowhere")
        for path in ("/metrics", "/health", "/health/live", "/health/ready"):
            assert (await client.get(path)).status_code == 200
    spans = harness.spans()
    assert [(span.name, span.kind) for span in spans] == [
        ("GET /v1/models/{name}", SpanKind.SERVER),
        ("GET", SpanKind.SERVER),
    ]
    first = spans[0]
    assert first.attributes is not None
    assert first.attributes["http.route"] == "/v1/models/{name}"
    assert first.attributes["http.response.status_code"] == 200
    assert first.resource.attributes["service.name"] == "test-svc"
    assert (
        harness.sample("http_requests_total", method="GET", route="unmatched", status="200") is None
    )


async def test_incoming_trace_is_continued(make_harness: Callable[..., Harness]) -> None:
    """By default (behind a gateway or mesh) the caller's traceparent is the parent."""
    harness = make_harness()
    async with client_for(build_app(harness)) as client:
        await client.get("/v1/models/a", headers={"traceparent": TRACEPARENT})
    (span,) = harness.spans()
    assert span.context is not None
    assert span.parent is not None
    assert format(span.context.trace_id, "032x") == CALLER_TRACE
    assert format(span.parent.span_id, "016x") == CALLER_SPAN
    lines = [line for line in harness.log_lines() if line["event"] == "looked_up"]
    assert lines[0]["trace_id"] == CALLER_TRACE


async def test_public_edge_starts_a_new_trace_linked_to_the_caller(
    make_harness: Callable[..., Harness],
) -> None:
    """At a public edge callers cannot choose the trace: a new root links to theirs."""
    harness = make_harness(public_edge=True)
    async with client_for(build_app(harness)) as client:
        await client.get("/v1/models/a", headers={"traceparent": TRACEPARENT})
    (span,) = harness.spans()
    assert span.parent is None
    assert span.context is not None
    assert format(span.context.trace_id, "032x") != CALLER_TRACE
    assert [format(link.context.trace_id, "032x") for link in span.links] == [CALLER_TRACE]


async def test_routes_past_the_label_limit_fold_into_other_each_time(
    make_harness: Callable[..., Harness],
) -> None:
    """The first route templates up to the limit keep their own series; each request to a
    later one is counted as ``other`` and counted as a fold."""
    harness = make_harness(max_label_values=2)
    app = FastAPI()
    for name in ("a", "b", "c"):
        app.add_api_route(f"/{name}/{{item}}", lambda item: {"item": item}, methods=["GET"])
    aiobs.instrument(app, observability=harness.obs)
    async with client_for(app) as client:
        for _ in range(2):
            for name in ("a", "b", "c"):
                assert (await client.get(f"/{name}/1")).status_code == 200
    counts = {
        route: harness.sample("http_requests_total", method="GET", route=route, status="200")
        for route in ("/a/{item}", "/b/{item}", "/c/{item}", "other")
    }
    assert counts == {"/a/{item}": 2, "/b/{item}": 2, "/c/{item}": None, "other": 2}
    folds = harness.sample(
        "aiobs_label_values_folded_total", metric="http_requests_total", label="route"
    )
    assert folds == 2


@pytest.mark.parametrize("public_edge", [False, True])
async def test_the_requests_baggage_reaches_the_app(
    make_harness: Callable[..., Harness], public_edge: bool
) -> None:
    """What the propagators read from the request besides its trace (W3C baggage) is in the
    context the app runs in, for its own use and its downstream calls; a public edge takes
    none from its callers."""
    harness = make_harness(public_edge=public_edge)
    app = FastAPI()

    @app.get("/baggage")
    async def read_baggage() -> dict[str, object]:
        return dict(baggage.get_all())

    aiobs.instrument(app, observability=harness.obs)
    async with client_for(app) as client:
        with_trace = await client.get(
            "/baggage", headers={"traceparent": TRACEPARENT, "baggage": "tenant=t-1,plan=pro"}
        )
        alone = await client.get("/baggage", headers={"baggage": "tenant=t-2"})
        none = await client.get("/baggage")
    if public_edge:
        assert with_trace.json() == alone.json() == none.json() == {}
    else:
        assert with_trace.json() == {"tenant": "t-1", "plan": "pro"}
        assert alone.json() == {"tenant": "t-2"}
        assert none.json() == {}
    assert baggage.get_all() == {}  # nothing left behind in the caller's context


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-" + "a" * 10_000,
    ],
)
async def test_malformed_traceparent_starts_a_new_trace(
    make_harness: Callable[..., Harness], value: str
) -> None:
    """Malformed or oversized headers never cause an error: a new root span is started."""
    harness = make_harness()
    async with client_for(build_app(harness)) as client:
        response = await client.get(
            "/v1/models/a", headers={"traceparent": value, "baggage": "k=" + "v" * 10_000}
        )
    assert response.status_code == 200
    (span,) = harness.spans()
    assert span.parent is None


@pytest.mark.parametrize("propagators", ["b3multi", "b3"])
async def test_b3_propagation_is_selectable(
    make_harness: Callable[..., Harness], propagators: str
) -> None:
    """With OTEL_PROPAGATORS=b3multi or b3 the Envoy/Istio headers carry the trace, in
    either of B3's forms."""
    harness = make_harness(propagators=propagators)
    multi = {"X-B3-TraceId": CALLER_TRACE, "X-B3-SpanId": CALLER_SPAN, "X-B3-Sampled": "1"}
    single = {"b3": f"{CALLER_TRACE}-{CALLER_SPAN}-1"}
    async with client_for(build_app(harness)) as client:
        await client.get("/v1/models/a", headers=multi)
        await client.get("/v1/models/a", headers=single)
    spans = harness.spans()
    assert len(spans) == 2
    for span in spans:
        assert span.context is not None
        assert format(span.context.trace_id, "032x") == CALLER_TRACE


async def test_unhandled_exception_is_a_json_500_logged_once(
    make_harness: Callable[..., Harness],
) -> None:
    """The 500 body has the trace id and no internals; the error is logged once with its
    traceback and the same trace id; it is counted, the span is marked ERROR, and the
    exception still reaches whatever runs the app."""
    harness = make_harness()
    app = build_app(harness)
    async with client_for(app) as client:
        with pytest.raises(RuntimeError, match="canary-boom"):
            await client.get("/boom")
    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"error", "detail", "trace_id"}
    assert "canary" not in response.text
    span = harness.spans()[-1]
    assert span.context is not None
    assert body["trace_id"] == format(span.context.trace_id, "032x")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "RuntimeError"
    errors = [line for line in harness.log_lines() if "exception" in line]
    assert len(errors) == 2  # one per request
    assert errors[-1]["trace_id"] == body["trace_id"]
    assert "RuntimeError" in errors[-1]["exception"]
    assert harness.sample("http_requests_total", method="GET", route="/boom", status="500") == 2


async def test_access_line_per_request(make_harness: Callable[..., Harness]) -> None:
    """One http_request line per observed request, with method, route, status and
    duration_ms, carrying the request span's ids."""
    harness = make_harness()
    async with client_for(build_app(harness)) as client:
        await client.get("/v1/models/a")
        await client.get("/health")
    access = [line for line in harness.log_lines() if line["event"] == "http_request"]
    assert len(access) == 1
    (line,) = access
    assert (line["method"], line["route"], line["status"]) == ("GET", "/v1/models/{name}", 200)
    assert line["duration_ms"] > 0
    (span,) = harness.spans()
    assert span.context is not None
    assert line["span_id"] == format(span.context.span_id, "016x")


async def test_access_line_has_the_pipeline_shape_and_bound_context(
    make_harness: Callable[..., Harness],
) -> None:
    """The access line carries exactly the keys every line has, in the same formats, plus
    values bound with structlog.contextvars (cleaned like any field)."""
    harness = make_harness()
    app = build_app(harness)

    @app.get("/bound")
    async def bound() -> dict[str, str]:
        structlog.contextvars.bind_contextvars(request_id="r-1", token="canary-bound")
        aiobs.get_logger("app").info("handled")
        return {}

    try:
        async with client_for(app) as client:
            await client.get("/bound")
    finally:
        structlog.contextvars.clear_contextvars()
    handled, access = [
        line for line in harness.log_lines() if line["event"] in ("handled", "http_request")
    ]
    assert list(access)[:7] == list(handled)[:7]
    assert set(access) - set(handled) == {"method", "route", "status", "duration_ms"}
    assert len(access["timestamp"]) == len(handled["timestamp"])
    assert access["request_id"] == "r-1"
    assert access["token"] == "[REDACTED]"


async def test_access_log_can_be_turned_off(make_harness: Callable[..., Harness]) -> None:
    """AIOBS_ACCESS_LOG=false writes no access lines; metrics are still recorded."""
    harness = make_harness(access_log=False)
    async with client_for(build_app(harness)) as client:
        await client.get("/v1/models/a")
    assert not [line for line in harness.log_lines() if line["event"] == "http_request"]
    assert (
        harness.sample("http_requests_total", method="GET", route="/v1/models/{name}", status="200")
        == 1
    )


async def test_openmetrics_exposition_carries_trace_exemplars(
    make_harness: Callable[..., Harness],
) -> None:
    """Asked for OpenMetrics, /metrics serves histogram exemplars with the request's trace
    id; the plain text format has none."""
    harness = make_harness()
    async with client_for(build_app(harness)) as client:
        await client.get("/v1/models/a", headers={"traceparent": TRACEPARENT})
        openmetrics = await client.get(
            "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
        text = await client.get("/metrics")
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert f'# {{trace_id="{CALLER_TRACE}"}}' in openmetrics.text
    assert openmetrics.text.rstrip().endswith("# EOF")
    assert text.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in text.text


class _SlowCollector:
    """A collector whose collect() blocks, like a big registry or a slow NVML call."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    def collect(self) -> Iterable[Metric]:
        self.entered.set()
        time.sleep(0.5)
        yield GaugeMetricFamily("slow_gauge", "slow", value=1)


async def test_exposition_runs_off_the_event_loop(make_harness: Callable[..., Harness]) -> None:
    """While a scrape is rendering, requests on the same event loop are still served."""
    harness = make_harness()
    collector = _SlowCollector()
    harness.registry.register(collector)
    async with client_for(build_app(harness)) as client:
        scrape = asyncio.ensure_future(client.get("/metrics"))
        await asyncio.to_thread(collector.entered.wait, 5)
        started = time.perf_counter()
        response = await client.get("/v1/models/a")
        served_in = time.perf_counter() - started
        assert not scrape.done()
        assert "slow_gauge 1.0" in (await scrape).text
    assert response.status_code == 200
    assert served_in < 0.25


async def test_readiness_checks_drive_ready_and_the_gauge(
    make_harness: Callable[..., Harness],
) -> None:
    """/health/ready is 503 naming the failing checks until all pass (sync, async, slow);
    ai_service_ready follows."""
    harness = make_harness(readiness_timeout=0.2)
    state = {"loaded": False}

    async def cache_ok() -> bool:
        return True

    def hangs() -> bool:
        time.sleep(1)
        return True

    harness.obs.add_readiness_check("model", lambda: state["loaded"])
    harness.obs.add_readiness_check("cache", cache_ok)
    harness.obs.add_readiness_check("slow", hangs)
    async with client_for(build_app(harness)) as client:
        not_ready = await client.get("/health/ready")
        assert not_ready.status_code == 503
        checks = not_ready.json()["checks"]
        assert checks["model"]["status"] == "fail"
        assert checks["cache"]["status"] == "pass"
        assert (checks["slow"]["status"], checks["slow"]["error"]) == ("fail", "timeout")
        assert harness.sample("ai_service_ready") == 0
        assert (await client.get("/health/live")).status_code == 200
        state["loaded"] = True
        harness.obs._readiness.remove("slow")
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "pass"
        assert harness.sample("ai_service_ready") == 1
        health = (await client.get("/health")).json()
        assert health["ready"] is True
        assert health["service"] == "test-svc"


async def test_instrument_is_idempotent(make_harness: Callable[..., Harness]) -> None:
    """Instrumenting twice adds nothing: one count and one span per request."""
    harness = make_harness()
    app = build_app(harness)
    assert aiobs.instrument(app, observability=harness.obs) is harness.obs
    async with client_for(app) as client:
        await client.get("/v1/models/a")
    assert len(harness.spans()) == 1
    assert (
        harness.sample("http_requests_total", method="GET", route="/v1/models/{name}", status="200")
        == 1
    )


async def test_opentelemetry_instrumentation_is_selectable(
    make_harness: Callable[..., Harness],
) -> None:
    """With instrumentation=opentelemetry the contrib instrumentor makes the one server
    span; aiobs still records metrics and the access line with its ids."""
    harness = make_harness(instrumentation="opentelemetry")
    app = build_app(harness)
    async with client_for(app) as client:
        await client.get("/v1/models/a")
        await client.get("/health")
    spans = harness.spans()
    server = [span for span in spans if span.kind is SpanKind.SERVER]
    assert len(server) == 1
    assert server[0].name == "GET /v1/models/{name}"
    assert (
        harness.sample("http_requests_total", method="GET", route="/v1/models/{name}", status="200")
        == 1
    )
    (access,) = [line for line in harness.log_lines() if line["event"] == "http_request"]
    assert server[0].context is not None
    assert access["trace_id"] == format(server[0].context.trace_id, "032x")
