"""Other people's apps: aiobs is transparent to them. Each app of
tests/support/drop_in_apps.py is built twice, bare and instrumented, and driven in-process the
way a server drives it (lifespan, state in every scope, an outer layer that sees what the app
raises). The responses, side effects and escaping exceptions must be the same both ways; the
instrumented run must count, trace and log every request by its route template and by the
status the client actually got."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import aiobs
from aiobs import catalog
from tests.conftest import Harness
from tests.support.drop_in_apps import (
    APPS_BY_NAME,
    DROP_IN_APPS,
    STREAM_GAP,
    TICKER_ROUTE,
    UNMATCHED,
    Built,
    Call,
    DropInApp,
    Instrument,
)

pytestmark = pytest.mark.anyio

REQUESTS = catalog.HTTP_REQUESTS.name
DURATION = catalog.HTTP_REQUEST_DURATION.name
_first_byte = getattr(catalog, "HTTP_RESPONSE_FIRST_BYTE", None)
FIRST_BYTE = _first_byte.name if _first_byte is not None else "http_response_first_byte_seconds"
WATCHED = {
    REQUESTS,
    f"{DURATION}_count",
    f"{DURATION}_sum",
    f"{FIRST_BYTE}_count",
    f"{FIRST_BYTE}_sum",
}
LABELS = (catalog.METHOD, catalog.ROUTE, catalog.STATUS)
VARIABLE_HEADERS = {"date"}
ERROR_LEVELS = {"error", "critical"}


def bare(app: Any) -> None:
    """The bare build: no aiobs."""


def instrumented(harness: Harness) -> Instrument:
    return partial(aiobs.instrument, observability=harness.obs)


# --- what a server does around an app ---------------------------------------------------------
class Server:
    """The layer above the app: puts the lifespan state and ASGI 2.3 into each scope (as
    uvicorn does), records each exception passing through and re-raises it, and notes in the
    app's side effects ``sent PATH`` when a response has ended, ``returned without ending
    PATH`` when the app returned normally from a response it left open (which it then ends,
    as a server closes the message)."""

    def __init__(self, built: Built) -> None:
        self.app = built.app
        self.effects = built.effects
        self.state: dict[str, Any] = {}
        self.escaped: list[type[BaseException]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            asgi = {"version": "3.0", "spec_version": "2.3", **scope.get("asgi", {})}
            scope = {**scope, "asgi": asgi, "state": dict(self.state)}

        started = ended = False

        async def send_noted(message: Message) -> None:
            nonlocal started, ended
            await send(message)
            started = started or message["type"] == "http.response.start"
            if message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
                self.effects.append(f"sent {scope['path']}")

        try:
            await self.app(scope, receive, send_noted)
        except Exception as exc:
            self.escaped.append(type(exc))
            raise
        if started and not ended:
            self.effects.append(f"returned without ending {scope['path']}")
            with contextlib.suppress(Exception):  # the client may be gone
                await send({"type": "http.response.body", "body": b"", "more_body": False})


@contextlib.asynccontextmanager
async def lifespan(server: Server) -> AsyncIterator[None]:
    """Run the app's lifespan through the raw ASGI interface around the block."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {
        "type": "lifespan",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "state": server.state,
    }
    task = asyncio.ensure_future(server(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


# --- sending one call -------------------------------------------------------------------------
@dataclass(frozen=True)
class Exchange:
    """What the client saw: status, headers (``date`` dropped), body (gunzipped when the
    encoding is gzip: the gzip header carries a timestamp); websockets: the messages sent."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    messages: tuple[str, ...] = ()


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    pairs = ((name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw)
    return tuple((name, value) for name, value in pairs if name not in VARIABLE_HEADERS)


def client_request(call: Call) -> dict[str, Any]:
    return {
        "method": call.method,
        "url": call.path,
        "headers": dict(call.headers),
        "params": dict(call.params),
        "json": call.json,
    }


async def http_request(
    app: ASGIApp, call: Call, root_path: str = "", *, raise_app_exceptions: bool = False
) -> Exchange:
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=raise_app_exceptions, root_path=root_path
    )
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        client.stream(**client_request(call)) as response,
    ):
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    if response.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return Exchange(response.status_code, _headers(response.headers.raw), body)


def _scope(call: Call, kind: str, root_path: str, spec_version: str = "2.3") -> Scope:
    return {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": call.method,
        "scheme": "ws" if kind == "websocket" else "http",
        "path": call.path,
        "raw_path": call.path.encode(),
        "query_string": b"",
        "root_path": root_path,
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
        "subprotocols": [],
    }


async def websocket_session(app: ASGIApp, call: Call, root_path: str = "") -> Exchange:
    """Connect, send ``hello``, then go away; the messages the app sent are the exchange."""
    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
    ]
    sent: list[str] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(repr(sorted(message.items())))

    await app(_scope(call, "websocket", root_path), receive, send)
    return Exchange(0, messages=tuple(sent))


async def disconnect_mid_stream(
    app: ASGIApp, call: Call, root_path: str = "", *, spec_version: str = "2.3"
) -> Exchange:
    """A client that goes away once the first body chunk was sent. ASGI 2.3: ``receive``
    then answers ``http.disconnect`` (uvicorn's behaviour, Starlette's StreamingResponse
    listens for it); 2.4: every later ``send`` raises OSError. Exceptions end here, as in a
    server."""
    first_chunk_sent = asyncio.Event()
    requested = False
    start: Message = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_chunk_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal start
        if first_chunk_sent.is_set() and spec_version == "2.4":
            raise OSError("connection reset by peer")
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("body"):
                first_chunk_sent.set()

    with contextlib.suppress(Exception):
        await app(_scope(call, "http", root_path, spec_version), receive, send)
    return Exchange(start.get("status", 0), _headers(start.get("headers", [])), b"".join(chunks))


async def send_call(app: ASGIApp, call: Call, root_path: str) -> Exchange:
    if call.kind == "websocket":
        return await websocket_session(app, call, root_path)
    if call.kind == "disconnect":
        return await disconnect_mid_stream(app, call, root_path)
    return await http_request(app, call, root_path)


# --- what the instrumented app recorded for one call ------------------------------------------
def _http_samples(harness: Harness) -> dict[tuple[str, ...], float]:
    """Every watched http sample, keyed by (sample name, label values...)."""
    values: dict[tuple[str, ...], float] = {}
    for family in harness.registry.collect():
        for sample in family.samples:
            if sample.name in WATCHED:
                labels = tuple(sample.labels[name] for name in LABELS if name in sample.labels)
                values[(sample.name, *labels)] = sample.value
    return values


@dataclass
class Telemetry:
    """What one call added: metric sample changes, spans, log lines."""

    metrics: dict[tuple[str, ...], float] = field(default_factory=dict)
    spans: list[ReadableSpan] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    def changed(self, sample: str) -> dict[tuple[str, ...], float]:
        return {key[1:]: value for key, value in self.metrics.items() if key[0] == sample}

    @property
    def server_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans if span.kind is SpanKind.SERVER]

    @property
    def access_lines(self) -> list[dict[str, Any]]:
        return [line for line in self.logs if line.get("event") == catalog.ACCESS_LOG_EVENT]

    @property
    def error_lines(self) -> list[dict[str, Any]]:
        """Error lines other than the access line (which is at level error for a 5xx)."""
        return [
            line
            for line in self.logs
            if line.get("level") in ERROR_LEVELS and line.get("event") != catalog.ACCESS_LOG_EVENT
        ]


class Watch:
    """Snapshots a harness before a call; ``since()`` is what the call added."""

    def __init__(self, harness: Harness | None) -> None:
        self.harness = harness
        if harness is not None:
            self.samples = _http_samples(harness)
            self.span_count = len(harness.spans())
            self.line_count = len(harness.log_lines())

    def since(self) -> Telemetry:
        if self.harness is None:
            return Telemetry()
        now = _http_samples(self.harness)
        changes = {
            key: value - self.samples.get(key, 0.0)
            for key, value in now.items()
            if value != self.samples.get(key, 0.0)
        }
        return Telemetry(
            changes,
            self.harness.spans()[self.span_count :],
            self.harness.log_lines()[self.line_count :],
        )


@dataclass
class Outcome:
    call: Call
    exchange: Exchange
    escaped: list[type[BaseException]]
    telemetry: Telemetry


@dataclass
class Run:
    outcomes: list[Outcome]
    effects: list[str]


def build(spec: DropInApp, workdir: Path, harness: Harness | None = None) -> Built:
    """A fresh app of ``spec``, instrumented when a harness is given."""
    workdir.mkdir(parents=True, exist_ok=True)
    return spec.build(bare if harness is None else instrumented(harness), workdir)


async def run_app(
    spec: DropInApp, workdir: Path, harness: Harness | None = None, calls: tuple[Call, ...] = ()
) -> Run:
    """Build ``spec`` (instrumented when a harness is given), start its lifespan, send each
    call, stop it."""
    built = build(spec, workdir, harness)
    server = Server(built)
    outcomes = []
    async with lifespan(server):
        for call in calls or spec.calls:
            watch, already_escaped = Watch(harness), len(server.escaped)
            exchange = await send_call(server, call, spec.root_path)
            outcomes.append(
                Outcome(call, exchange, server.escaped[already_escaped:], watch.since())
            )
    return Run(outcomes, built.effects)


async def both_ways(spec: DropInApp, workdir: Path, harness: Harness) -> tuple[Run, Run]:
    return await run_app(spec, workdir / "bare"), await run_app(spec, workdir / "obs", harness)


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


APP_IDS: Callable[[DropInApp], str] = lambda spec: spec.name  # noqa: E731
ESCAPING = [
    pytest.param(spec, call, id=f"{spec.name}:{call.path}")
    for spec in DROP_IN_APPS
    for call in spec.calls
    if call.escapes is not None and call.kind == "http"
]


# --- A. identity --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", DROP_IN_APPS, ids=APP_IDS)
async def test_responses_and_side_effects_are_identical(
    spec: DropInApp, make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """With and without aiobs every response is the same (status, headers, body) and the app's
    side effects happen alike, except aiobs's documented JSON 500 for an unhandled exception."""
    plain, observed = await both_ways(spec, tmp_path, make_harness())
    for without, with_ in zip(plain.outcomes, observed.outcomes, strict=True):
        call = without.call
        assert without.exchange.status == call.status, f"fixture: {call}"
        if call.aiobs_default_500:
            assert with_.exchange.status == 500, call
        else:
            assert with_.exchange == without.exchange, call
    assert observed.effects == plain.effects, "side effects, or how responses ended, differ"
    if spec.effects is not None:
        assert plain.effects == list(spec.effects), "fixture: the bare app's side effects"


async def test_unhandled_exception_gets_the_default_json_500(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """An unhandled exception in an app with no handler of its own is answered 500 with
    aiobs's JSON body carrying the request's trace id."""
    harness = make_harness()
    run = await run_app(APPS_BY_NAME["unhandled_exception"], tmp_path, harness)
    answered = [outcome for outcome in run.outcomes if outcome.call.aiobs_default_500]
    assert answered
    for outcome in answered:
        exchange = outcome.exchange
        assert exchange.status == 500
        assert dict(exchange.headers)["content-type"].startswith("application/json")
        (span,) = outcome.telemetry.server_spans
        assert json.loads(exchange.body) == {
            "error": "internal_server_error",
            "detail": "Internal Server Error",
            "trace_id": trace_id(span),
        }


async def test_json_errors_off_leaves_even_the_500_untouched(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """With json_errors=False an unhandled exception gets byte for byte the response the app
    gives without aiobs."""
    spec = APPS_BY_NAME["unhandled_exception"]
    plain, observed = await both_ways(spec, tmp_path, make_harness(json_errors=False))
    assert [outcome.exchange for outcome in observed.outcomes] == [
        outcome.exchange for outcome in plain.outcomes
    ]


async def test_own_exception_handler_answers_with_and_without_aiobs(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """An app's own Exception handler runs and its answer reaches the client, with aiobs as
    without."""
    spec = APPS_BY_NAME["own_exception_handlers"]
    (crash,) = [call for call in spec.calls if call.path == "/crash/3"]
    for run in await both_ways(spec, tmp_path, make_harness()):
        (outcome,) = [outcome for outcome in run.outcomes if outcome.call is crash]
        assert outcome.exchange.status == 500
        assert json.loads(outcome.exchange.body) == {"message": "our own 500"}
        assert "handler ValueError" in run.effects


# --- B. errors still reach whatever wraps the app -------------------------------------------------
@pytest.mark.parametrize("spec", DROP_IN_APPS, ids=APP_IDS)
async def test_exceptions_reach_the_server_unchanged(
    spec: DropInApp, make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """Every exception that passes out of the bare app to the layer around it passes out of
    the instrumented app too, of the same class; no other does."""
    plain, observed = await both_ways(spec, tmp_path, make_harness())
    for without, with_ in zip(plain.outcomes, observed.outcomes, strict=True):
        call = without.call
        assert without.escaped == ([call.escapes] if call.escapes else []), f"fixture: {call}"
        assert with_.escaped == without.escaped, call


@pytest.mark.parametrize(("spec", "call"), ESCAPING)
async def test_exception_reaches_a_raising_test_client(
    spec: DropInApp, call: Call, make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """With httpx's raise_app_exceptions=True the test client gets the app's exception, of
    the same class, with and without aiobs."""
    harness = make_harness()
    for used, workdir in ((None, tmp_path / "bare"), (harness, tmp_path / "obs")):
        server = Server(build(spec, workdir, used))
        async with lifespan(server):
            with pytest.raises(call.escapes) as raised:
                await http_request(server, call, spec.root_path, raise_app_exceptions=True)
        assert raised.type is call.escapes


# --- C. metrics -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", DROP_IN_APPS, ids=APP_IDS)
async def test_each_request_is_counted_by_template_and_sent_status(
    spec: DropInApp, make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """Each HTTP request adds exactly one to http_requests_total{method, route template,
    status the client got} and one duration observation for (method, route); a websocket
    session adds none."""
    harness = make_harness()
    run = await run_app(spec, tmp_path, harness)
    for outcome in run.outcomes:
        call, telemetry = outcome.call, outcome.telemetry
        if call.kind == "websocket":
            assert telemetry.metrics == {}, call
            continue
        assert telemetry.changed(REQUESTS) == {
            (call.method, call.route, call.recorded_status): 1
        }, call
        assert telemetry.changed(f"{DURATION}_count") == {(call.method, call.route): 1}, call
    assert harness.sample(catalog.HTTP_REQUESTS_IN_FLIGHT.name) == 0


@pytest.mark.parametrize("spec", DROP_IN_APPS, ids=APP_IDS)
async def test_streaming_responses_observe_time_to_first_byte(
    spec: DropInApp, make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """Each streaming response adds one time-to-first-byte observation for its (method,
    route); other responses add none."""
    harness = make_harness()
    run = await run_app(spec, tmp_path, harness)
    for outcome in run.outcomes:
        call = outcome.call
        if call.streaming is None:
            continue
        expected = {(call.method, call.route): 1} if call.streaming else {}
        assert outcome.telemetry.changed(f"{FIRST_BYTE}_count") == expected, call


async def test_stream_duration_runs_to_the_last_byte(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """A stream with 0.05 s between its 3 chunks lasts at least 0.1 s, and its first byte
    came before its end."""
    spec = APPS_BY_NAME["streaming_responses"]
    slow = tuple(call for call in spec.calls if call.path == "/slow")
    (outcome,) = (await run_app(spec, tmp_path, make_harness(), slow)).outcomes
    key = ("GET", "/slow")
    duration = outcome.telemetry.changed(f"{DURATION}_sum")[key]
    first_byte = outcome.telemetry.changed(f"{FIRST_BYTE}_sum").get(key)
    assert duration >= 2 * STREAM_GAP
    assert first_byte is not None, f"no {FIRST_BYTE} observation"
    assert first_byte < duration


# --- D. spans ---------------------------------------------------------------------------------
def _expect_error(call: Call) -> bool:
    return call.unhandled or (call.status >= 500 and call.kind == "http")


@pytest.mark.parametrize("spec", DROP_IN_APPS, ids=APP_IDS)
async def test_one_server_span_per_request(
    spec: DropInApp, make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """Each HTTP request exports exactly one SERVER span, named '{METHOD} {template}' (just
    the method when unmatched), with http.route and the recorded status; 5xx and unhandled
    exceptions are ERROR (the latter with an exception event), 4xx and 499 UNSET; websocket
    sessions export none."""
    run = await run_app(spec, tmp_path, make_harness())
    for outcome in run.outcomes:
        call, spans = outcome.call, outcome.telemetry.server_spans
        if call.kind == "websocket":
            assert spans == [], call
            continue
        assert len(spans) == 1, (call, [span.name for span in spans])
        (span,) = spans
        attributes = dict(span.attributes or {})
        if call.route == UNMATCHED:
            assert span.name == call.method, call
            assert catalog.ATTR_HTTP_ROUTE not in attributes, call
        else:
            assert span.name == f"{call.method} {call.route}", call
            assert attributes.get(catalog.ATTR_HTTP_ROUTE) == call.route, call
        assert attributes.get(catalog.ATTR_HTTP_STATUS) == int(call.recorded_status), call
        if _expect_error(call):
            assert span.status.status_code is StatusCode.ERROR, call
        else:
            assert span.status.status_code is StatusCode.UNSET, call
        if call.unhandled:
            assert "exception" in [event.name for event in span.events], call


# --- E. logs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", DROP_IN_APPS, ids=APP_IDS)
async def test_one_access_line_per_request(
    spec: DropInApp, make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """Each HTTP request writes exactly one access line with the metric's method, route and
    status and its span's trace id; only an exception that reaches the server (none of the
    app's handlers took it, or Starlette raised it again after the app's own Exception
    handler answered) writes an error line (unhandled_exception, logger aiobs.http, same
    trace id)."""
    run = await run_app(spec, tmp_path, make_harness())
    for outcome in run.outcomes:
        call, telemetry = outcome.call, outcome.telemetry
        if call.kind == "websocket":
            assert telemetry.access_lines == [], call
            assert telemetry.error_lines == [], call
            continue
        assert len(telemetry.access_lines) == 1, call
        (line,) = telemetry.access_lines
        assert (line["method"], line["route"], str(line["status"])) == (
            call.method,
            call.route,
            call.recorded_status,
        ), call
        assert line.get("trace_id") in [trace_id(span) for span in telemetry.server_spans], call
        if call.escapes is not None:
            assert len(telemetry.error_lines) == 1, call
            (error,) = telemetry.error_lines
            assert (error["event"], error["logger"], error["level"]) == (
                "unhandled_exception",
                "aiobs.http",
                "error",
            ), call
            assert error.get("trace_id") == line["trace_id"], call
        else:
            assert telemetry.error_lines == [], call


# --- F. a client that disconnects mid-stream ------------------------------------------------------
def chunks(effects: list[str]) -> list[str]:
    return [effect for effect in effects if effect.startswith("chunk ")]


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_client_disconnect_mid_stream_is_499(
    spec_version: str, make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    """A client gone mid-stream (http.disconnect under ASGI 2.3, a failing send under 2.4) is
    recorded as 499 with an UNSET span and no error line; the generator stops producing and
    the server sees what it sees without aiobs."""
    harness = make_harness()
    spec = APPS_BY_NAME["client_disconnects_mid_stream"]
    (call,) = spec.calls
    chunks_before_disconnect = ["chunk 0"] if spec_version == "2.3" else ["chunk 0", "chunk 1"]
    seen: list[tuple[Exchange, list[type[BaseException]], Telemetry]] = []
    for used, workdir in ((None, tmp_path / "bare"), (harness, tmp_path / "obs")):
        built = build(spec, workdir, used)
        server = Server(built)
        async with lifespan(server):
            watch = Watch(used)
            exchange = await disconnect_mid_stream(server, call, spec_version=spec_version)
            telemetry = watch.since()
            produced = chunks(built.effects)
            await asyncio.sleep(0.1)  # five more ticks' worth
            assert chunks(built.effects) == produced == chunks_before_disconnect
        seen.append((exchange, server.escaped, telemetry))
    (plain, plain_escaped, _), (observed, observed_escaped, telemetry) = seen
    assert telemetry.changed(REQUESTS) == {("GET", TICKER_ROUTE, "499"): 1}
    (span,) = telemetry.server_spans
    assert dict(span.attributes or {}).get(catalog.ATTR_HTTP_STATUS) == 499
    assert span.status.status_code is StatusCode.UNSET
    assert telemetry.error_lines == []
    assert [str(line["status"]) for line in telemetry.access_lines] == ["499"]
    assert observed == plain
    assert observed_escaped == plain_escaped


def test_every_app_builds_fresh(tmp_path: Path) -> None:
    """Each factory builds a new app on every call, so bare and instrumented builds share
    nothing."""
    for spec in DROP_IN_APPS:
        first = spec.build(bare, tmp_path)
        second = spec.build(bare, tmp_path)
        assert first.app is not second.app, spec.name
        assert first.effects is not second.effects, spec.name
