"""JSON log lines: keys, trace correlation, redaction, truncation, one line per event."""

from __future__ import annotations

import gc
import io
import json
import logging
import threading
import time
from collections.abc import Callable

import pytest
import structlog
from opentelemetry import trace
from prometheus_client import CollectorRegistry

import aiobs
from aiobs.logs.pipeline import REDACTED, AccessLog, Sanitizer, _encode, is_secret_key, redact_text
from aiobs.logs.sink import LogSink
from tests.conftest import Harness


def test_every_line_has_the_contract_keys(make_harness: Callable[..., Harness]) -> None:
    """structlog and standard-library events both carry timestamp, level, event, logger,
    service, with an RFC 3339 UTC timestamp."""
    harness = make_harness(service_name="keys-svc")
    aiobs.get_logger("my.module").info("model_loaded", model="resnet50")
    logging.getLogger("stdlib.module").warning("disk %s", "low")
    lines = harness.log_lines()
    assert [line["event"] for line in lines] == ["model_loaded", "disk low"]
    for line in lines:
        assert {"timestamp", "level", "event", "logger", "service"} <= line.keys()
        assert line["service"] == "keys-svc"
        assert line["timestamp"].endswith("Z")
        assert time.strptime(line["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")
    assert lines[0]["logger"] == "my.module"
    assert lines[0]["level"] == "info"
    assert lines[1]["logger"] == "stdlib.module"
    assert lines[1]["level"] == "warning"


def test_trace_ids_match_the_current_span(make_harness: Callable[..., Harness]) -> None:
    """Inside a span the line carries that span's ids, in the exported span's hex form."""
    harness = make_harness()
    assert harness.obs.tracer is not None
    with harness.obs.tracer.start_as_current_span("work") as span:
        aiobs.get_logger("x").info("inside")
        logging.getLogger("x").info("inside stdlib")
    aiobs.get_logger("x").info("outside")
    inside, inside_stdlib, outside = harness.log_lines()
    exported = harness.spans()[0]
    assert exported.context is not None
    for line in (inside, inside_stdlib):
        assert line["trace_id"] == format(exported.context.trace_id, "032x")
        assert line["span_id"] == format(exported.context.span_id, "016x")
    assert span.get_span_context().trace_id == exported.context.trace_id
    assert "trace_id" not in outside


def test_secrets_are_redacted_by_key_and_by_value(make_harness: Callable[..., Harness]) -> None:
    """Secret keys (also nested, also header pairs) and secret-looking values never reach
    the output."""
    harness = make_harness()
    aiobs.get_logger("x").info(
        "request",
        headers={"Authorization": "Bearer canary1", "X-Api-Key": "canary2", "accept": "*/*"},
        raw_headers=[(b"cookie", b"session=canary3")],
        password="canary4",
        url="https://user:canary5@example.com/path",
        note="called with token=canary6 and Bearer canary7.part",
        input_tokens=12,
    )
    logging.getLogger("x").info("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnk4In0.c2ln seen")
    output = harness.stream.getvalue() if harness.obs._log_sink.flush(5) else ""
    assert "canary" not in output
    first = json.loads(output.splitlines()[0])
    assert first["headers"]["Authorization"] == REDACTED
    assert first["headers"]["accept"] == "*/*"
    assert first["password"] == REDACTED
    assert first["input_tokens"] == 12


SECRET_KEYS = (
    "token", "access_token", "refresh_token", "id_token", "auth_token", "api_token",
    "bearer_token", "session_token", "csrf_token", "github_token", "hf_token", "slack_token",
    "slack_bot_token", "x-auth-token", "X-Auth-Token", "X-Api-Key", "password", "db_password",
    "client_secret", "api_key", "authorization", "cookie",
)  # fmt: skip
LANGUAGE_MODEL_KEYS = (
    "time_to_first_token", "next_token", "first_token", "last_token", "eos_token", "bos_token",
    "pad_token", "output_token", "input_token", "prompt_token", "completion_token",
    "stop_token", "special_token", "time_per_output_token", "generated_token", "output_tokens",
    "max_tokens", "num_tokens", "total_tokens", "input_tokens", "prompt_tokens",
    "eos_token_id", "tokens",
)  # fmt: skip


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_credential_keys_are_secret(key: str) -> None:
    """Names of credentials are secret, whatever their case or separator."""
    assert is_secret_key(key)


@pytest.mark.parametrize("key", LANGUAGE_MODEL_KEYS)
def test_language_model_token_keys_are_not_secret(key: str) -> None:
    """Token positions and counts of a language model are ordinary fields."""
    assert not is_secret_key(key)


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_credential_fields_are_redacted_in_log_lines(
    make_harness: Callable[..., Harness], key: str
) -> None:
    """A field named like a credential reaches the log line redacted."""
    harness = make_harness()
    aiobs.get_logger("x").info("call", **{key: "canary-secret"})
    (line,) = harness.log_lines()
    assert line[key] == REDACTED


@pytest.mark.parametrize("key", LANGUAGE_MODEL_KEYS)
def test_language_model_fields_keep_their_values_in_log_lines(
    make_harness: Callable[..., Harness], key: str
) -> None:
    """A token timing or count keeps its value, as a number."""
    harness = make_harness()
    aiobs.get_logger("x").info("generated", **{key: 0.12})
    (line,) = harness.log_lines()
    assert line[key] == 0.12


def test_exception_tracebacks_have_no_locals(make_harness: Callable[..., Harness]) -> None:
    """A logged exception is a plain traceback string: frame locals never appear."""
    harness = make_harness()

    def fail() -> None:
        secret_local = "canary-local"  # noqa: F841 - the value must not be logged
        raise ValueError("bad input")

    try:
        fail()
    except ValueError:
        aiobs.get_logger("x").exception("failed")
    (line,) = harness.log_lines()
    assert "ValueError: bad input" in line["exception"]
    assert "canary-local" not in json.dumps(line)


def test_hostile_field_contents_stay_on_one_line(make_harness: Callable[..., Harness]) -> None:
    """Newlines, carriage returns, ANSI escapes, U+2028 and huge strings give exactly one
    parseable line per event, truncated to the configured length."""
    harness = make_harness(log_max_field_length=1000)
    hostile = "a\nb\rc\x1b[31mred\x1b[0m\u2028d\u2029e\x00"
    aiobs.get_logger("x").info(hostile, field=hostile, big="z" * 1_000_000)
    raw = harness.stream.getvalue() if harness.obs._log_sink.flush(5) else ""
    assert raw.count("\n") == 1
    assert "\u2028" not in raw
    assert "\x1b" not in raw
    line = json.loads(raw)
    assert line["event"] == hostile
    assert line["big"].startswith("z" * 1000)
    assert "truncated 999000 chars" in line["big"]
    assert len(raw) < 3000


def test_sanitizer_keeps_the_tail_of_long_tracebacks() -> None:
    """The end of a traceback says what failed: it survives truncation."""
    sanitize = Sanitizer(max_length=100)
    event = sanitize(None, "info", {"exception": "x" * 10_000 + "KeyError: 'model'"})
    assert event["exception"].endswith("KeyError: 'model'")
    assert len(event["exception"]) < 200


def test_redact_text_patterns() -> None:
    """The value patterns catch the usual shapes of credentials and nothing else."""
    assert redact_text("Authorization: Basic dXNlcjpwYXNz") == f"Authorization: Basic {REDACTED}"
    assert "sk-" not in redact_text("key sk-abcdefghijklmnopqrstuv used")
    assert redact_text("plain text with tokens=3") == "plain text with tokens=3"


class _BlockedStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


def test_blocked_output_drops_and_counts_instead_of_stalling() -> None:
    """When stdout blocks, writers never wait: lines past the buffer are dropped and counted."""
    dropped: list[int] = []
    stream = _BlockedStream()
    sink = LogSink(capacity=10, on_drop=lambda: dropped.append(1), stream=stream)
    started = time.perf_counter()
    for number in range(1000):
        sink.write(f"line {number}")
    elapsed = time.perf_counter() - started
    stream.release.set()
    assert sink.flush(5)
    assert elapsed < 0.5
    assert len(dropped) >= 1000 - 11
    assert stream.getvalue().startswith("line 0\n")


def test_dropped_lines_are_counted_on_metrics() -> None:
    """The drop counter is aiobs_log_lines_dropped_total."""
    registry = CollectorRegistry()
    stream = _BlockedStream()
    obs = aiobs.Observability(
        aiobs.Settings.load({"log_queue_size": 1}, environ={}),
        registry=registry,
        log_stream=stream,
        environ={},
    )
    for _ in range(50):
        obs._log_sink.write("x")
    stream.release.set()
    value = registry.get_sample_value("aiobs_log_lines_dropped_total")
    assert value is not None
    assert value >= 48
    obs.shutdown(timeout=1)


def test_uvicorn_access_log_is_replaced(make_harness: Callable[..., Harness]) -> None:
    """uvicorn's own loggers flow through the pipeline; its access logger is silenced."""
    harness = make_harness()
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
    lines = harness.log_lines()
    assert [line["logger"] for line in lines] == ["uvicorn.error"]
    assert trace.get_current_span().get_span_context().is_valid is False


def test_queued_access_lines_are_left_alone_by_the_garbage_collector() -> None:
    """An access line waits for the writer as a tuple of numbers and strings (the span's ids,
    not its context): after one pass the cyclic garbage collector no longer tracks it, so
    lines waiting for a slow writer add nothing to its full collections."""
    stream = _BlockedStream()
    sink = LogSink(capacity=100, on_drop=lambda: None, stream=stream)
    access = AccessLog(aiobs.Settings.load({}, environ={}), sink).write
    span_context = trace.SpanContext(0x1, 0x2, is_remote=False)
    sink.write("first")  # the writer takes it and blocks on the stream
    deadline = time.monotonic() + 5
    while sink._lines and time.monotonic() < deadline:
        time.sleep(0.001)
    for status in (200, 503):
        access("POST", "/v1/predict", status, 0.01, span_context)
    queued = list(sink._lines)
    assert len(queued) == 2
    gc.collect()
    assert [item for item in queued if gc.is_tracked(item)] == []
    stream.release.set()
    assert sink.flush(5)
    lines = stream.getvalue().splitlines()[1:]
    assert [json.loads(line)["trace_id"] for line in lines] == [f"{1:032x}"] * 2


def test_access_line_formats_exactly_as_the_encoder_would() -> None:
    """The access line's direct formatting gives, byte for byte after the timestamp, what the
    JSON encoder gives for the same fields (quotes and non-ASCII in routes included), and the
    same fields as the path taken when context variables are bound."""
    stream = io.StringIO()
    sink = LogSink(capacity=100, on_drop=lambda: None, stream=stream)
    settings = aiobs.Settings.load({"service_name": 'svc "ü"'}, environ={})
    access = AccessLog(settings, sink).write
    span_context = trace.SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=False
    )
    access("POST", '/v1/"odd"/ü/{name}', 503, 0.0123456, span_context)
    access("GET", "/health-ish", 200, 0.5, trace.INVALID_SPAN_CONTEXT)
    structlog.contextvars.bind_contextvars(request_id="r-1")
    try:
        access("POST", '/v1/"odd"/ü/{name}', 503, 0.0123456, span_context)
    finally:
        structlog.contextvars.clear_contextvars()
    assert sink.flush(5)
    direct, unsampled, through_encoder = stream.getvalue().splitlines()
    expected = {
        "level": "error",
        "event": "http_request",
        "logger": "aiobs.access",
        "service": 'svc "ü"',
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "method": "POST",
        "route": '/v1/"odd"/ü/{name}',
        "status": 503,
        "duration_ms": 12.346,
    }
    timestamp_end = direct.index('Z"') + 2
    assert direct[timestamp_end:] == "," + _encode(expected)[1:]
    parsed = json.loads(through_encoder)
    assert parsed.pop("request_id") == "r-1"
    assert parsed.keys() == json.loads(direct).keys()
    assert "trace_id" not in json.loads(unsampled)
    assert json.loads(unsampled)["level"] == "info"


def test_bound_values_read_as_structlog_reads_them() -> None:
    """aiobs reads the values bound with ``structlog.contextvars`` from structlog's registry of
    variables, not from a copy of the whole context: the same values in every case structlog
    has (bound, unbound, restored, cleared, another task's context, a fresh thread)."""
    import asyncio
    import contextvars

    from aiobs.logs.pipeline import bound_contextvars

    def same() -> dict[str, object]:
        ours = bound_contextvars()
        assert ours == structlog.contextvars.get_contextvars()
        return ours

    cv = structlog.contextvars
    try:
        assert same() == {}
        tokens = cv.bind_contextvars(request_id="r-1", user="u")
        assert same() == {"request_id": "r-1", "user": "u"}
        cv.unbind_contextvars("user")
        assert same() == {"request_id": "r-1"}
        with cv.bound_contextvars(request_id="inner", model="m"):
            assert same() == {"request_id": "inner", "model": "m"}
        assert same() == {"request_id": "r-1"}
        elsewhere = contextvars.Context().run(same)
        assert elsewhere == {}
        seen: list[dict[str, object]] = []
        thread = threading.Thread(target=lambda: seen.append(same()))
        thread.start()
        thread.join()
        assert seen == [{}]

        async def task() -> dict[str, object]:
            cv.bind_contextvars(step="decode")
            return same()

        assert asyncio.run(task()) == {"request_id": "r-1", "step": "decode"}
        assert same() == {"request_id": "r-1"}
        cv.reset_contextvars(**tokens)
        assert same() == {}
    finally:
        cv.clear_contextvars()


def test_lines_queued_as_values_are_formatted_by_the_writer_in_order() -> None:
    """``write_later`` lines come out formatted by the writer thread, in the order they were
    queued with plain lines; one whose formatting raises is dropped and counted, the others
    are written."""
    stream = io.StringIO()
    dropped: list[None] = []
    sink = LogSink(capacity=100, on_drop=lambda: dropped.append(None), stream=stream)
    threads: list[str] = []

    def render(number: int) -> str:
        threads.append(threading.current_thread().name)
        if number == 3:
            raise ValueError("a bad line")
        return f"rendered {number}"

    sink.write("plain 0")
    render_number = sink.add_render(render)
    for number in (1, 2, 3, 4):
        sink.write_later(render_number, number)
    sink.write("plain 5")
    assert sink.flush(5)
    assert stream.getvalue().splitlines() == [
        "plain 0", "rendered 1", "rendered 2", "rendered 4", "plain 5"
    ]  # fmt: skip
    assert len(dropped) == 1
    assert set(threads) == {"aiobs-log-writer"}
