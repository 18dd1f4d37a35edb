"""Reliability: the service keeps serving, bounded in time, when the trace collector is down,
black-holed or slow to shut down, and when callers send hostile headers or log content.

Every server is a real uvicorn subprocess running the sample app; every collector is the
real OTLP/HTTP receiver of ``tests.support.otlp_receiver``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.support.otlp_receiver import OtlpReceiver, RefusingPort, wait_for
from tests.support.servers import SAMPLE_APP, Server, child_env, metrics_text, sample_value

pytestmark = pytest.mark.slow

Launch = Callable[..., Server]
MakeReceiver = Callable[..., OtlpReceiver]
INTERPRETER_SLACK = 1.5  # seconds for uvicorn's own shutdown and interpreter teardown


def _launch_factory(log_dir: Path) -> tuple[Launch, list[Server]]:
    started: list[Server] = []

    def launch(env: Mapping[str, str], name: str = "server") -> Server:
        server = Server(SAMPLE_APP, env, log_dir, name=name)
        started.append(server)
        return server.start()

    return launch, started


def _stop_all(servers: list[Server]) -> None:
    for server in servers:
        try:
            server.stop(timeout=15)
        except Exception:
            server.kill()


@pytest.fixture
def receivers() -> Iterator[MakeReceiver]:
    """Start OTLP receivers; every one is stopped after the test."""
    made: list[OtlpReceiver] = []

    def make(port: int = 0, mode: str = "normal") -> OtlpReceiver:
        receiver = OtlpReceiver(port=port, mode=mode)
        made.append(receiver)
        return receiver.start()

    yield make
    for receiver in made:
        receiver.stop()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start sample-app servers; every one is stopped (or killed) after the test."""
    start, started = _launch_factory(tmp_path)
    yield start
    _stop_all(started)


def _self_metric(client: httpx.Client, name: str) -> float:
    return sample_value(metrics_text(client), name)


def _traceparent(trace_id: str, span_id: str, flags: str = "01", version: str = "00") -> str:
    return f"{version}-{trace_id}-{span_id}-{flags}"


# --- collector down, then back ----------------------------------------------------------------
def test_collector_down_requests_succeed_spans_counted_then_recovery(
    receivers: MakeReceiver, launch: Launch
) -> None:
    """With the collector refusing connections every request still succeeds and every span
    is counted as failed or dropped; once a collector listens on that port, new spans arrive
    without restarting the service."""
    with RefusingPort() as refusing:
        server = launch(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": refusing.endpoint,
                "OTEL_BSP_MAX_QUEUE_SIZE": "64",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5",
            },
            name="collector-down",
        )
        with httpx.Client(base_url=server.url, timeout=5) as client:
            statuses = [client.get(f"/v1/models/m{i % 7}").status_code for i in range(300)]
            assert statuses == [200] * 300

            def lost() -> float:
                text = metrics_text(client)
                return sample_value(text, "aiobs_span_export_failures_total") + sample_value(
                    text, "aiobs_spans_dropped_total"
                )

            # Every one of the 300 spans is accounted for as failed or dropped.
            wait_for(lambda: lost() >= 300, 15, message="spans failed + dropped")
            exported_during_outage = _self_metric(client, "aiobs_spans_exported_total")
            assert exported_during_outage == 0

            # Recovery: a collector comes up on the very endpoint the service exports to.
            refusing.release()
            receiver = receivers(port=refusing.port)
            for i in range(20):
                assert client.get(f"/v1/models/after-recovery-{i}").status_code == 200
            wait_for(
                lambda: all(
                    receiver.spans_for_path(f"/v1/models/after-recovery-{i}") for i in range(20)
                ),
                15,
                message="spans after recovery",
            )
            wait_for(
                lambda: _self_metric(client, "aiobs_spans_exported_total") >= 20,
                5,
                message="aiobs_spans_exported_total",
            )
        assert server.returncode is None
    lines = server.log_lines()  # still one JSON object per line during the outage
    export_complaints = [line for line in lines if line["logger"].startswith("opentelemetry")]
    assert len(export_complaints) < 150, "the outage logged about as many lines as spans"


# --- black-holed collector --------------------------------------------------------------------
def test_blackholed_collector_does_not_delay_requests(
    receivers: MakeReceiver, launch: Launch
) -> None:
    """A collector that accepts but never answers does not slow requests down, and the
    failed export is counted within a few seconds."""
    receiver = receivers(mode="blackhole")
    server = launch(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
        name="blackhole",
    )
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/v1/models/warmup").status_code == 200
        wait_for(lambda: receiver.requests, 5, message="an export reached the black hole")
        durations = []
        for i in range(50):
            started = time.perf_counter()
            assert client.get(f"/v1/models/m{i}").status_code == 200
            durations.append(time.perf_counter() - started)
        assert max(durations) < 0.5, f"slowest request took {max(durations):.3f} s"
        wait_for(
            lambda: _self_metric(client, "aiobs_span_export_failures_total") > 0,
            6,
            message="aiobs_span_export_failures_total",
        )


# --- SIGTERM with spans stuck ------------------------------------------------------------------
@pytest.mark.parametrize(("shutdown_timeout", "budget"), [(None, 5.0), ("1", 1.0)])
def test_sigterm_exits_within_shutdown_budget_with_collector_blackholed(
    receivers: MakeReceiver, launch: Launch, shutdown_timeout: str | None, budget: float
) -> None:
    """SIGTERM ends the process within ``AIOBS_SHUTDOWN_TIMEOUT`` (default 5 s) even while an
    export hangs on a black-holed collector with more spans queued behind it."""
    receiver = receivers(mode="blackhole")
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        # Far beyond the budget: an unbounded flush would hang for this long.
        "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    if shutdown_timeout is not None:
        env["AIOBS_SHUTDOWN_TIMEOUT"] = shutdown_timeout
    server = launch(env, name=f"sigterm-{budget:g}")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for i in range(10):
            assert client.get(f"/v1/models/first-{i}").status_code == 200
        wait_for(lambda: receiver.requests, 5, message="an export stuck in the black hole")
        for i in range(30):  # queued behind the stuck export
            assert client.get(f"/v1/models/queued-{i}").status_code == 200
    elapsed = server.stop(timeout=budget + 20)
    assert elapsed < budget + INTERPRETER_SLACK, f"exit took {elapsed:.2f} s"
    # uvicorn re-raises the SIGTERM it captured once it has shut down.
    assert server.returncode in (0, -signal.SIGTERM), server.describe()
    events = [line["event"] for line in server.log_lines()]
    assert "trace export did not finish within the shutdown budget" in events


_EXIT_SCRIPT = """
import logging, signal, sys, time
import aiobs

class SlowStdout:  # a log shipper that takes 50 ms per write: slow, never blocked
    def __init__(self, stream):
        self._stream = stream
    def write(self, text):
        time.sleep(0.05)
        return self._stream.write(text)
    def flush(self):
        self._stream.flush()

sys.stdout = SlowStdout(sys.stdout)
obs = aiobs.setup(service_name="exit-svc")
server_log = logging.getLogger("uvicorn.error")
server_log.info("Waiting for application shutdown.")
obs.shutdown()  # what aiobs's lifespan hook runs on lifespan.shutdown.complete
# What uvicorn.Server does next: log its last lines, leave capture_signals(), which
# restores the default SIGTERM handler and re-raises the captured signal.
server_log.info("Application shutdown complete.")
server_log.info("Finished server process [1]")
signal.raise_signal(signal.SIGTERM)
"""


def test_server_lines_logged_after_shutdown_reach_stdout_on_sigterm(tmp_path: Path) -> None:
    """The server's last lines, logged after the lifespan flush ("Application shutdown
    complete.", "Finished server process"), reach stdout although uvicorn ends the process
    by re-raising SIGTERM."""
    result = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT],
        env=child_env(),
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr.decode()
    events = [json.loads(line)["event"] for line in result.stdout.decode().splitlines()]
    assert events == [
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Finished server process [1]",
    ]


# --- hostile input on a plain server ----------------------------------------------------------
@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, OtlpReceiver]]:
    """One sample-app server exporting to a healthy receiver, shared by the input tests."""
    start, started = _launch_factory(tmp_path_factory.mktemp("plain"))
    with OtlpReceiver() as receiver:
        try:
            server = start(
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "50",
                },
                name="plain",
            )
            yield server, receiver
        finally:
            _stop_all(started)


_TID = "0af7651916cd43dd8448eb211c80319c"
_SID = "b7ad6b7169203331"
# Each case: (name, headers, whether the caller's trace must be continued or not, or None
# when either is acceptable; the trace id a continuation would carry)
_HEADER_CASES: list[tuple[str, dict[str, str | bytes], bool | None, str]] = [
    ("garbage", {"traceparent": "garbage"}, False, ""),
    ("empty", {"traceparent": ""}, False, ""),
    ("forbidden-version-ff", {"traceparent": _traceparent("1" * 32, _SID, version="ff")},
     False, "1" * 32),
    ("version-00-trailing-data", {"traceparent": _traceparent("2" * 32, _SID) + "-extra"},
     False, "2" * 32),
    ("zero-trace-id", {"traceparent": _traceparent("0" * 32, _SID)}, False, "0" * 32),
    ("zero-span-id", {"traceparent": _traceparent("3" * 32, "0" * 16)}, False, "3" * 32),
    ("short-ids", {"traceparent": "00-abc-def-01"}, False, ""),
    ("non-ascii-bytes", {"traceparent": b"00-\xff\xfe" + b"a" * 40}, False, ""),
    # 10 KB: a future version (whose trailing data the W3C grammar allows) padded far past
    # any sane length; it must be ignored (aiobs's 8 KB header cap, the SDK's 512 limit).
    ("oversized-10KB", {"traceparent": _traceparent("4" * 32, _SID, version="01")
                        + "-" + "a" * 10240}, False, "4" * 32),
    ("uppercase-hex", {"traceparent": _traceparent("ABCDEF" * 5 + "AB", _SID.upper())},
     None, "abcdef" * 5 + "ab"),
    ("valid-with-garbage-tracestate",
     {"traceparent": _traceparent("5" * 32, _SID), "tracestate": "=,=,\x01junk"}, None, "5" * 32),
    ("valid-with-10KB-baggage",
     {"traceparent": _traceparent("6" * 32, _SID), "baggage": "k=" + "v" * 10240}, None, "6" * 32),
    ("valid-sampled", {"traceparent": _traceparent(_TID, _SID)}, True, _TID),
]


def test_malformed_traceparent_never_causes_5xx(plain: tuple[Server, OtlpReceiver]) -> None:
    """Garbage, wrong-version, zero-id, non-ASCII and 10 KB ``traceparent`` headers are
    answered normally and start new traces; the valid sampled one is continued."""
    server, receiver = plain
    paths = {}
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for number, (name, headers, _, _) in enumerate(_HEADER_CASES):
            path = f"/v1/models/tp-{number}"
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (name, response.status_code, response.text)
            paths[name] = path
    wait_for(
        lambda: all(receiver.spans_for_path(path) for path in paths.values()),
        10,
        message="one span per header case",
    )
    for name, _, continued, trace_id in _HEADER_CASES:
        spans = receiver.spans_for_path(paths[name])
        assert len(spans) == 1, (name, spans)
        span = spans[0]
        if continued is True:
            assert (span.trace_id, span.parent_span_id) == (trace_id, _SID), name
        elif continued is False:
            assert span.parent_span_id == "", name
            assert span.trace_id != trace_id, name
        assert len(span.trace_id) == 32, name
        assert span.trace_id != "0" * 32, name
    assert server.returncode is None


def test_public_edge_starts_new_trace_linked_to_caller(
    receivers: MakeReceiver, launch: Launch
) -> None:
    """With ``AIOBS_PUBLIC_EDGE=true`` a valid incoming ``traceparent`` does not choose the
    trace: the server span is a new root with a link to the caller's span context."""
    receiver = receivers()
    server = launch(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "AIOBS_PUBLIC_EDGE": "true",
        },
        name="public-edge",
    )
    with httpx.Client(base_url=server.url, timeout=5) as client:
        response = client.get("/v1/models/edge", headers={"traceparent": _traceparent(_TID, _SID)})
        assert response.status_code == 200
        assert client.get("/v1/models/edge-no-caller").status_code == 200
    spans = wait_for(lambda: receiver.spans_for_path("/v1/models/edge"), 10, message="span")
    assert len(spans) == 1
    span = spans[0]
    assert span.trace_id != _TID
    assert span.parent_span_id == ""
    assert [(link.trace_id, link.span_id) for link in span.links] == [(_TID, _SID)]
    unlinked = wait_for(
        lambda: receiver.spans_for_path("/v1/models/edge-no-caller"), 10, message="span"
    )
    assert unlinked[0].links == ()


def test_hostile_log_fields_stay_one_bounded_json_line(plain: tuple[Server, OtlpReceiver]) -> None:
    """Logged values with newlines, carriage returns, ANSI escapes, U+2028 or 1 MB of text
    produce exactly one parseable JSON line each, long values truncated (line < 20 KB)."""
    server, _ = plain
    cases = {
        "newline": "first line\nINJECTED {\"level\": \"critical\"}\nthird",
        "carriage-return": "visible\rOVERWRITTEN\r\n",
        "ansi": "\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J",
        "line-separator": "before\u2028after\u2029para\x85nel",
        "nul-and-controls": "a\x00b\x08c\x0bd\x0ce",
        "one-megabyte": "x" * ((1 << 20) - 20) + "\ntail",
    }
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for name, text in cases.items():
            response = client.post(
                "/echo", content=text.encode("utf-8"), headers={"x-case": name}
            )
            assert response.status_code == 200, name
        wait_for(
            lambda: server.stdout().count('"event":"echo"') >= len(cases), 10, message="lines"
        )
    raw = server.stdout()
    for control in ("\x1b", "\u2028", "\u2029", "\r", "\x00", "\x85"):
        assert control not in raw, f"{control!r} written raw to stdout"
    raw_lines = raw.splitlines()
    lines = [json.loads(line) for line in raw_lines]  # every line is JSON
    for name, text in cases.items():
        matching = [
            (raw_line, line)
            for raw_line, line in zip(raw_lines, lines, strict=True)
            if line["event"] == "echo" and line["headers"].get("x-case") == name
        ]
        assert len(matching) == 1, (name, len(matching))
        raw_line, line = matching[0]
        assert len(raw_line.encode("utf-8")) < 20_000, (name, len(raw_line))
        if len(text) <= 4096:
            assert line["body"] == text, name
        else:
            assert line["body"].startswith("x" * 4096), name
            assert "truncated" in line["body"], name
            assert "tail" not in line["body"], name


def test_huge_json_key_in_logged_payload_is_truncated(plain: tuple[Server, OtlpReceiver]) -> None:
    """A logged mapping whose key is 1 MB of client text still yields one line under 20 KB."""
    server, _ = plain
    key = "k" * (1 << 20)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post(
            "/echo",
            content=json.dumps({key: 1}).encode(),
            headers={"content-type": "application/json", "x-case": "huge-key"},
        )
        assert response.status_code == 200
        wait_for(lambda: '"x-case":"huge-key"' in server.stdout(), 10, message="echo line")
    (raw_line,) = [line for line in server.stdout().splitlines() if '"huge-key"' in line]
    assert len(raw_line) < 20_000, f"{len(raw_line)} character log line"
