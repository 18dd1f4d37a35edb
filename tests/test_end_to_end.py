"""End to end: the sample app under a real uvicorn, exporting over OTLP/HTTP to a real
receiver, checked through what an operator sees: /metrics, the collector's spans and the JSON
lines on stdout.

One module-scoped scenario sends the requests once; each test reads one aspect of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.support import BOOM_MESSAGE
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, wait_for
from tests.support.servers import SAMPLE_APP, Server

pytestmark = pytest.mark.slow

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
BEARER_CANARY = "canaryBearer7f3c9a1e5d2b"
COOKIE_CANARY = "canaryCookie0a8e6f4d2c1b"
QUERY_CANARY = "canaryQuery5e1d9c7b3a2f"
CANARIES = (BEARER_CANARY, COOKIE_CANARY, QUERY_CANARY)

# url.path of each observed request -> what the test expects of it
TRACED_PATH = "/v1/models/resnet50"
PLAIN_PATH = "/v1/models/bert"
UNKNOWN_PATH = "/no/such/route"
BOOM_PATH = "/boom"
ECHO_PATH = "/echo"
OBSERVED_PATHS = (TRACED_PATH, PLAIN_PATH, UNKNOWN_PATH, BOOM_PATH, ECHO_PATH)


@dataclass
class Scenario:
    responses: dict[str, httpx.Response] = field(default_factory=dict)
    metrics_text: str = ""
    metrics_openmetrics: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    log_lines: list[dict[str, Any]] = field(default_factory=list)

    def span(self, path: str) -> ReceivedSpan:
        matching = [s for s in self.spans if s.attributes.get("url.path") == path]
        assert len(matching) == 1, (path, matching)
        return matching[0]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    log_dir = tmp_path_factory.mktemp("e2e")
    result = Scenario()
    with OtlpReceiver() as receiver:
        server = Server(
            SAMPLE_APP,
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            },
            log_dir,
            name="e2e",
        )
        try:
            server.start()
            with httpx.Client(base_url=server.url, timeout=10) as client:
                responses = result.responses
                responses[TRACED_PATH] = client.get(
                    TRACED_PATH, headers={"traceparent": TRACEPARENT}
                )
                responses[PLAIN_PATH] = client.get(PLAIN_PATH)
                responses[UNKNOWN_PATH] = client.get(UNKNOWN_PATH)
                # The server closes a connection whose request raised (as without aiobs).
                responses[BOOM_PATH] = client.get(BOOM_PATH, headers={"connection": "close"})
                responses[ECHO_PATH] = client.post(
                    ECHO_PATH,
                    params={"api_key": QUERY_CANARY},
                    content=b"hello",
                    headers={
                        "Authorization": f"Bearer {BEARER_CANARY}",
                        "Cookie": f"session={COOKIE_CANARY}; theme=dark",
                    },
                )
                for path in ("/health", "/health/live", "/health/ready"):
                    assert client.get(path).status_code == 200
                wait_for(
                    lambda: len(receiver.spans) >= len(OBSERVED_PATHS), 10, message="spans"
                )
                wait_for(
                    lambda: sum(line["event"] == "http_request" for line in server.log_lines())
                    >= len(OBSERVED_PATHS),
                    10,
                    message="access lines",
                )
                result.metrics_text = client.get("/metrics").text
                result.metrics_openmetrics = client.get(
                    "/metrics", headers={"Accept": "application/openmetrics-text"}
                ).text
        finally:
            server.stop()
            result.spans = receiver.spans
            result.stdout = server.stdout()
            result.stderr = server.stderr()
    result.log_lines = [_parse(line) for line in result.stdout.splitlines()]
    return result


def _parse(line: str) -> dict[str, Any]:
    try:
        parsed = json.loads(line)
    except json.JSONDecodeError:
        return {"_not_json": line}
    return parsed if isinstance(parsed, dict) else {"_not_json": line}


# --- HTTP ------------------------------------------------------------------------------------
def test_requests_answered_as_the_app_defines(scenario: Scenario) -> None:
    """Instrumentation leaves the app's own answers alone (200s, 404 for an unknown path)."""
    codes = {path: response.status_code for path, response in scenario.responses.items()}
    assert codes == {
        TRACED_PATH: 200,
        PLAIN_PATH: 200,
        UNKNOWN_PATH: 404,
        BOOM_PATH: 500,
        ECHO_PATH: 200,
    }
    assert scenario.responses[TRACED_PATH].json() == {"model": "resnet50", "status": "ready"}


def test_500_body_is_json_with_trace_id_and_no_internals(scenario: Scenario) -> None:
    """An unhandled exception is answered with a JSON 500 that names the trace but leaks
    neither the traceback nor the exception's message."""
    response = scenario.responses[BOOM_PATH]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail", "trace_id"}
    assert body["trace_id"] == scenario.span(BOOM_PATH).trace_id
    for internal in ("Traceback", "RuntimeError", BOOM_MESSAGE, "sample_app", ".py"):
        assert internal not in response.text


# --- metrics ---------------------------------------------------------------------------------
def _samples(text: str, name: str) -> list[Any]:
    return [
        sample
        for family in parse_text(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_request_counter_series(scenario: Scenario) -> None:
    """``http_requests_total`` is labelled with the route template, ``unmatched`` for an
    unknown path, status 500 for the raising route, and counts nothing else."""
    series = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in _samples(scenario.metrics_text, "http_requests_total")
    }
    assert series == {
        ("GET", "/v1/models/{name}", "200"): 2.0,
        ("GET", "unmatched", "404"): 1.0,
        ("GET", "/boom", "500"): 1.0,
        ("POST", "/echo", "200"): 1.0,
    }


def test_no_series_for_metrics_or_health_paths(scenario: Scenario) -> None:
    """Scrapes and health probes are neither counted nor timed, and raw paths never become
    label values."""
    for family in parse_text(scenario.metrics_text):
        for sample in family.samples:
            route = sample.labels.get("route")
            if route is None:
                continue
            assert "metrics" not in route, sample
            assert "health" not in route, sample
            assert route != TRACED_PATH, sample


def test_openmetrics_exemplar_carries_an_exported_trace_id(scenario: Scenario) -> None:
    """With ``Accept: application/openmetrics-text`` the duration histogram carries a
    ``trace_id`` exemplar naming a trace the collector received."""
    exemplars = [
        sample.exemplar
        for family in parse_openmetrics(scenario.metrics_openmetrics)
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_bucket"
        and sample.labels.get("route") == "/v1/models/{name}"
        and sample.exemplar is not None
    ]
    assert exemplars, scenario.metrics_openmetrics[-3000:]
    model_traces = {scenario.span(TRACED_PATH).trace_id, scenario.span(PLAIN_PATH).trace_id}
    for exemplar in exemplars:
        assert exemplar.labels["trace_id"] in model_traces


# --- traces ----------------------------------------------------------------------------------
def test_exactly_one_server_span_per_request(scenario: Scenario) -> None:
    """Each observed request yields one SERVER span named after method and route template;
    health and metrics requests yield none."""
    assert sorted(s.attributes.get("url.path") for s in scenario.spans) == sorted(OBSERVED_PATHS)
    assert all(s.kind == "SERVER" for s in scenario.spans)
    assert scenario.span(TRACED_PATH).name == "GET /v1/models/{name}"
    assert scenario.span(PLAIN_PATH).name == "GET /v1/models/{name}"
    assert scenario.span(BOOM_PATH).name == "GET /boom"
    assert scenario.span(ECHO_PATH).name == "POST /echo"
    # The unmatched span is named from the method (plus the shared "unmatched" route).
    assert scenario.span(UNKNOWN_PATH).name == "GET"
    assert "http.route" not in scenario.span(UNKNOWN_PATH).attributes
    assert scenario.span(TRACED_PATH).attributes["http.route"] == "/v1/models/{name}"
    assert scenario.span(TRACED_PATH).attributes["http.response.status_code"] == 200
    assert scenario.span(UNKNOWN_PATH).attributes["http.response.status_code"] == 404


def test_incoming_traceparent_is_continued(scenario: Scenario) -> None:
    """A sampled W3C ``traceparent`` makes the server span a child of the caller's span."""
    span = scenario.span(TRACED_PATH)
    assert span.trace_id == CALLER_TRACE_ID
    assert span.parent_span_id == CALLER_SPAN_ID
    assert span.span_id not in ("", CALLER_SPAN_ID)
    # Requests without one start their own traces.
    others = [scenario.span(path) for path in OBSERVED_PATHS if path != TRACED_PATH]
    assert all(s.parent_span_id == "" for s in others)
    assert len({s.trace_id for s in scenario.spans}) == len(OBSERVED_PATHS)


def test_error_span_status_and_exception_event(scenario: Scenario) -> None:
    """The raising request's span has status ERROR, ``error.type`` and an exception event;
    the others are not errors."""
    span = scenario.span(BOOM_PATH)
    assert span.status_code == "ERROR"
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    assert [event.name for event in span.events] == ["exception"]
    for path in (TRACED_PATH, PLAIN_PATH, UNKNOWN_PATH, ECHO_PATH):
        assert scenario.span(path).status_code != "ERROR"


def test_resource_names_the_service(scenario: Scenario) -> None:
    """Every exported span carries ``service.name`` from ``aiobs.instrument``."""
    assert {span.resource.get("service.name") for span in scenario.spans} == {"e2e-svc"}


# --- logs ------------------------------------------------------------------------------------
def test_every_stdout_line_is_a_json_object_with_the_common_keys(scenario: Scenario) -> None:
    """stdout holds only JSON objects, each with timestamp, level, event, logger, service —
    uvicorn's own lines included."""
    assert scenario.log_lines
    assert [line for line in scenario.log_lines if "_not_json" in line] == []
    for line in scenario.log_lines:
        assert {"timestamp", "level", "event", "logger", "service"} <= line.keys(), line
        assert line["service"] == "e2e-svc"
    loggers = {line["logger"] for line in scenario.log_lines}
    assert "uvicorn.error" in loggers  # the server's lines go through the same pipeline


def test_one_access_line_per_observed_request(scenario: Scenario) -> None:
    """Each observed request gets one ``http_request`` line with method, route template,
    status and duration; health and metrics requests get none."""
    access = [line for line in scenario.log_lines if line["event"] == "http_request"]
    got = sorted((line["method"], line["route"], line["status"]) for line in access)
    assert got == sorted(
        [
            ("GET", "/v1/models/{name}", 200),
            ("GET", "/v1/models/{name}", 200),
            ("GET", "unmatched", 404),
            ("GET", "/boom", 500),
            ("POST", "/echo", 200),
        ]
    )
    for line in access:
        assert isinstance(line["duration_ms"], (int, float))
        assert line["duration_ms"] >= 0
    assert next(line for line in access if line["status"] == 500)["level"] == "error"


def test_log_lines_carry_the_exported_span_ids(scenario: Scenario) -> None:
    """The app's log line and the access line of the traced request carry the trace id and
    span id of the span the collector received."""
    span = scenario.span(TRACED_PATH)
    app_lines = [
        line
        for line in scenario.log_lines
        if line["event"] == "model_requested" and line.get("model") == "resnet50"
    ]
    assert len(app_lines) == 1
    assert app_lines[0]["trace_id"] == span.trace_id == CALLER_TRACE_ID
    assert app_lines[0]["span_id"] == span.span_id
    access = [
        line
        for line in scenario.log_lines
        if line["event"] == "http_request" and line.get("trace_id") == span.trace_id
    ]
    assert len(access) == 1
    assert access[0]["span_id"] == span.span_id


def test_unhandled_exception_logged_once_with_traceback(scenario: Scenario) -> None:
    """aiobs logs the raising request's exception exactly once, with its traceback, under the
    trace id of the 500 body and of the exported span; the exception still reaches the
    server, whose own error line is there too (as without aiobs), with the same trace id."""
    with_traceback = [
        line for line in scenario.log_lines if "Traceback" in str(line.get("exception", ""))
    ]
    assert {line["logger"] for line in with_traceback} == {"aiobs.http", "uvicorn.error"}
    (server_line,) = [line for line in with_traceback if line["logger"] == "uvicorn.error"]
    assert server_line["trace_id"] == scenario.span(BOOM_PATH).trace_id
    (line,) = [line for line in with_traceback if line["logger"] == "aiobs.http"]
    assert line["level"] == "error"
    assert "RuntimeError" in line["exception"]
    assert BOOM_MESSAGE in line["exception"]
    span = scenario.span(BOOM_PATH)
    assert line["trace_id"] == scenario.responses[BOOM_PATH].json()["trace_id"] == span.trace_id
    assert line["span_id"] == span.span_id
    assert "Traceback" not in scenario.stderr


def test_secrets_never_reach_stdout_or_spans(scenario: Scenario) -> None:
    """The bearer token, the cookie and a secret query parameter appear nowhere in stdout,
    stderr or any exported span, though the app logged every header."""
    echo = [line for line in scenario.log_lines if line["event"] == "echo"]
    assert len(echo) == 1
    assert echo[0]["headers"]["authorization"] == "[REDACTED]"
    assert echo[0]["headers"]["cookie"] == "[REDACTED]"
    assert echo[0]["headers"]["user-agent"].startswith("python-httpx")  # the rest is kept
    exported = repr(scenario.spans)
    for canary in CANARIES:
        assert canary not in scenario.stdout
        assert canary not in scenario.stderr
        assert canary not in exported
