"""Generator and async generator inferences (streams) and the cancelled outcome: a caller
that goes away is neither a success nor an error."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator

import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import aiobs
from tests.conftest import Harness, client_for

LABELS = {"model": "llm", "model_version": "1"}
ITEMS = ["a", "b", "c"]
STEP = 0.1


def _the_span(harness: Harness) -> ReadableSpan:
    (span,) = [span for span in harness.spans() if span.name == "inference llm"]
    return span


def _seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None
    assert span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


def _outcome(span: ReadableSpan) -> object:
    assert span.attributes is not None
    return span.attributes.get("aiobs.inference.outcome")


def _sync_stream(harness: Harness, tokens: bool = False) -> Callable[[], Iterator[str]]:
    @harness.obs.track_inference("llm", "1", tokens=tokens)
    def stream() -> Iterator[str]:
        for item in ITEMS:
            time.sleep(STEP)
            yield item

    return stream


def _async_stream(
    harness: Harness, tokens: bool = False
) -> Callable[[], AsyncGenerator[str, None]]:
    @harness.obs.track_inference("llm", "1", tokens=tokens)
    async def stream() -> AsyncGenerator[str, None]:
        for item in ITEMS:
            await asyncio.sleep(STEP)
            yield item

    return stream


async def _collect(stream: AsyncIterator[str]) -> list[str]:
    return [item async for item in stream]


def _assert_one_whole_stream(harness: Harness) -> None:
    assert harness.sample("ai_inference_total", **LABELS) == 1
    duration = harness.sample("ai_inference_duration_seconds_sum", **LABELS)
    assert duration is not None
    assert duration >= len(ITEMS) * STEP
    assert harness.sample("ai_inference_in_flight", model="llm") == 0
    assert harness.sample("ai_inference_cancelled_total", **LABELS) == 0
    span = _the_span(harness)
    assert _seconds(span) >= len(ITEMS) * STEP
    assert _outcome(span) == "success"
    assert span.status.status_code is StatusCode.UNSET


def test_a_sync_generator_is_timed_from_first_item_to_exhaustion(
    make_harness: Callable[..., Harness],
) -> None:
    """A decorated generator is one inference that starts at the first next() and lasts
    until it is exhausted; its span covers the whole iteration."""
    harness = make_harness()
    stream = _sync_stream(harness)()
    time.sleep(STEP)  # made but not iterated yet: nothing recorded, nothing timed
    assert harness.sample("ai_inference_total", **LABELS) is None
    assert list(stream) == ITEMS
    _assert_one_whole_stream(harness)
    duration = harness.sample("ai_inference_duration_seconds_sum", **LABELS)
    assert duration is not None
    assert duration < (len(ITEMS) + 1) * STEP


def test_an_async_generator_is_timed_from_first_item_to_exhaustion(
    make_harness: Callable[..., Harness],
) -> None:
    """A decorated async generator is one inference lasting until it is exhausted."""
    harness = make_harness()
    assert asyncio.run(_collect(_async_stream(harness)())) == ITEMS
    _assert_one_whole_stream(harness)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_tokens_true_counts_each_item_as_an_output_token(
    make_harness: Callable[..., Harness], kind: str
) -> None:
    """With tokens=True each yielded item is one output token: the first marks time to
    first token, the rest give a time per output token."""
    harness = make_harness()
    if kind == "sync":
        assert list(_sync_stream(harness, tokens=True)()) == ITEMS
    else:
        assert asyncio.run(_collect(_async_stream(harness, tokens=True)())) == ITEMS
    assert harness.sample("ai_tokens_total", type="output", **LABELS) == 3
    assert harness.sample("ai_time_to_first_token_seconds_count", **LABELS) == 1
    first = harness.sample("ai_time_to_first_token_seconds_sum", **LABELS)
    assert first is not None
    assert STEP <= first < 2 * STEP
    assert harness.sample("ai_time_per_output_token_seconds_count", **LABELS) == 1
    per_token = harness.sample("ai_time_per_output_token_seconds_sum", **LABELS)
    assert per_token is not None
    assert per_token >= STEP
    span = _the_span(harness)
    assert span.attributes is not None
    assert span.attributes["gen_ai.usage.output_tokens"] == 3


def test_without_tokens_items_are_not_counted(make_harness: Callable[..., Harness]) -> None:
    """Items are tokens only when asked for: by default nothing is counted as a token."""
    harness = make_harness()
    assert list(_sync_stream(harness)()) == ITEMS
    assert harness.sample("ai_tokens_total", type="output", **LABELS) == 0
    assert harness.sample("ai_time_to_first_token_seconds_count", **LABELS) == 0


def test_tokens_true_on_a_plain_function_is_refused(make_harness: Callable[..., Harness]) -> None:
    """tokens=True means "each yielded item": on a function that yields nothing it is a
    TypeError at decoration time, not a silent no-op."""
    harness = make_harness()
    with pytest.raises(TypeError, match="generator"):

        @harness.obs.track_inference("llm", "1", tokens=True)
        def predict() -> int:
            return 1


def _assert_cancelled(harness: Harness) -> None:
    """One inference, cancelled after STEP seconds: not an error, no time per token."""
    assert harness.sample("ai_inference_total", **LABELS) == 1
    assert harness.sample("ai_inference_cancelled_total", **LABELS) == 1
    errors = [
        sample
        for family in harness.registry.collect()
        if family.name == "ai_inference_errors"
        for sample in family.samples
        if sample.name == "ai_inference_errors_total"
    ]
    assert errors == []
    assert harness.sample("ai_inference_in_flight", model="llm") == 0
    assert harness.sample("ai_inference_duration_seconds_count", **LABELS) == 1
    duration = harness.sample("ai_inference_duration_seconds_sum", **LABELS)
    assert duration is not None
    assert STEP <= duration < 2 * STEP
    assert harness.sample("ai_time_per_output_token_seconds_count", **LABELS) == 0
    span = _the_span(harness)
    assert _outcome(span) == "cancelled"
    assert span.status.status_code is StatusCode.UNSET
    assert [event.name for event in span.events] == []


def test_closing_a_sync_generator_early_is_cancelled(
    make_harness: Callable[..., Harness],
) -> None:
    """A consumer that closes the stream after one item (a client that went away) makes a
    cancelled inference: counted, timed, not an error, span status left UNSET; the
    generator's own clean-up runs."""
    harness = make_harness()
    cleaned_up = []

    @harness.obs.track_inference("llm", "1", tokens=True)
    def stream() -> Generator[str, None, None]:
        try:
            for item in ITEMS:
                time.sleep(STEP)
                yield item
        finally:
            cleaned_up.append(True)

    items = stream()
    assert next(items) == "a"
    items.close()
    assert cleaned_up == [True]
    _assert_cancelled(harness)


def test_leaving_an_async_generator_early_is_cancelled(
    make_harness: Callable[..., Harness],
) -> None:
    """Breaking out of ``async for`` and closing the stream is a cancelled inference."""
    harness = make_harness()
    stream = _async_stream(harness, tokens=True)

    async def consume() -> None:
        items = stream()
        async for _item in items:
            break
        await items.aclose()

    asyncio.run(consume())
    _assert_cancelled(harness)


def test_a_cancelled_task_inside_async_with_is_cancelled(
    make_harness: Callable[..., Harness],
) -> None:
    """A task cancelled inside ``async with obs.inference(...)`` is counted as cancelled,
    timed until the cancellation, and CancelledError propagates."""
    harness = make_harness()

    async def cancel_it() -> None:
        started = asyncio.Event()

        async def call() -> None:
            async with harness.obs.inference("llm", "1"):
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(call())
        await started.wait()
        await asyncio.sleep(STEP)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    _assert_cancelled(harness)


def test_async_with_in_a_generator_closed_early_is_cancelled(
    make_harness: Callable[..., Harness],
) -> None:
    """``async with obs.inference(...)`` inside an async generator sees GeneratorExit when
    the consumer closes it early: cancelled, not a success."""
    harness = make_harness()

    async def stream() -> AsyncGenerator[str, None]:
        async with harness.obs.inference("llm", "1") as rec:
            for item in ITEMS:
                await asyncio.sleep(STEP)
                rec.token()
                yield item

    async def consume() -> None:
        items = stream()
        assert await items.__anext__() == "a"
        await items.aclose()

    asyncio.run(consume())
    _assert_cancelled(harness)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupts_inside_with_are_cancelled_and_reraised(
    make_harness: Callable[..., Harness], interrupt: type[BaseException]
) -> None:
    """KeyboardInterrupt and SystemExit leave ``with`` unchanged, counted as cancelled."""
    harness = make_harness()

    def call() -> None:
        with harness.obs.inference("llm", "1"):
            time.sleep(STEP)
            raise interrupt()

    with pytest.raises(interrupt):
        call()
    _assert_cancelled(harness)


def test_success_and_error_set_the_outcome_attribute(
    make_harness: Callable[..., Harness],
) -> None:
    """Every inference span says how it ended: success or error (cancelled above)."""
    harness = make_harness()
    with harness.obs.inference("ok", "1"):
        pass
    with pytest.raises(KeyError), harness.obs.inference("broken", "1"):
        raise KeyError("x")
    outcomes = {span.name: _outcome(span) for span in harness.spans()}
    assert outcomes == {"inference ok": "success", "inference broken": "error"}
    assert harness.sample("ai_inference_cancelled_total", model="broken", model_version="1") == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_error_inside_a_generator_is_counted_and_reraised(
    make_harness: Callable[..., Harness], kind: str
) -> None:
    """An exception raised by the stream is an error by class, re-raised unchanged."""
    harness = make_harness()
    error = LookupError("model went away")

    @harness.obs.track_inference("llm", "1")
    def stream() -> Iterator[str]:
        yield "a"
        raise error

    @harness.obs.track_inference("llm", "1")
    async def async_stream() -> AsyncIterator[str]:
        yield "a"
        raise error

    def consume() -> list[str]:
        return list(stream()) if kind == "sync" else asyncio.run(_collect(async_stream()))

    with pytest.raises(LookupError) as raised:
        consume()
    assert raised.value is error
    assert harness.sample("ai_inference_errors_total", error_type="LookupError", **LABELS) == 1
    assert harness.sample("ai_inference_total", **LABELS) == 1
    assert harness.sample("ai_inference_cancelled_total", **LABELS) == 0
    span = _the_span(harness)
    assert span.status.status_code is StatusCode.ERROR
    assert _outcome(span) == "error"


def test_wrapped_generators_keep_name_docstring_and_kind(
    make_harness: Callable[..., Harness],
) -> None:
    """The decorated function is still a (async) generator function with its name and
    docstring, so frameworks (Starlette's StreamingResponse) treat it the same."""
    harness = make_harness()
    sync_stream = _sync_stream(harness)
    async_stream = _async_stream(harness)
    assert sync_stream.__name__ == "stream"
    assert inspect.isgeneratorfunction(sync_stream)
    assert not inspect.isasyncgenfunction(sync_stream)
    assert inspect.isasyncgenfunction(async_stream)
    assert not inspect.isgeneratorfunction(async_stream)

    @harness.obs.track_inference("llm", "1")
    def documented() -> Iterator[int]:
        """Yields one."""
        yield 1

    assert documented.__doc__ == "Yields one."


class Retry(Exception):
    """Thrown into a generator to ask it for another answer."""


def test_send_throw_and_return_pass_through_a_sync_generator(
    make_harness: Callable[..., Harness],
) -> None:
    """send() values reach the generator, a throw() it handles keeps it going, and its
    return value ends the iteration, as with ``yield from``."""
    harness = make_harness()

    @harness.obs.track_inference("llm", "1", tokens=True)
    def echo() -> Generator[str, str, int]:
        received = yield "ready"
        answers = 0
        while received != "stop":
            try:
                received = yield f"echo {received}"
            except Retry:
                received = yield "retried"
            answers += 1
        return answers

    items = echo()
    assert next(items) == "ready"
    assert items.send("x") == "echo x"
    assert items.throw(Retry()) == "retried"
    assert items.send("y") == "echo y"
    with pytest.raises(StopIteration) as stopped:
        items.send("stop")
    assert stopped.value.value == 2
    assert harness.sample("ai_inference_total", **LABELS) == 1
    assert harness.sample("ai_tokens_total", type="output", **LABELS) == 4
    assert _outcome(_the_span(harness)) == "success"


def test_asend_and_athrow_pass_through_an_async_generator(
    make_harness: Callable[..., Harness],
) -> None:
    """asend() values and a handled athrow() reach the async generator."""
    harness = make_harness()

    @harness.obs.track_inference("llm", "1")
    async def echo() -> AsyncGenerator[str, str]:
        received = yield "ready"
        while received != "stop":
            try:
                received = yield f"echo {received}"
            except Retry:
                received = yield "retried"

    async def talk() -> None:
        items = echo()
        assert await items.__anext__() == "ready"
        assert await items.asend("x") == "echo x"
        assert await items.athrow(Retry()) == "retried"
        with pytest.raises(StopAsyncIteration):
            await items.asend("stop")

    asyncio.run(talk())
    assert harness.sample("ai_inference_total", **LABELS) == 1
    assert _outcome(_the_span(harness)) == "success"


def _assert_parentage(harness: Harness, consumer: trace.Span, seen: list[trace.Span]) -> None:
    spans = {span.name: span for span in harness.spans()}
    inference, inner = spans["inference llm"], spans["inner"]
    assert inference.parent is not None
    assert inference.parent.span_id == consumer.get_span_context().span_id
    assert inner.parent is not None
    assert inference.context is not None
    assert inner.parent.span_id == inference.context.span_id
    assert {span.get_span_context().span_id for span in seen} == {inference.context.span_id}


def test_the_inference_span_is_current_only_inside_a_sync_generator(
    make_harness: Callable[..., Harness],
) -> None:
    """While the body runs its span is current (a span started there is its child); between
    items the consumer's own span is current again."""
    harness = make_harness()
    assert harness.obs.tracer is not None
    tracer = harness.obs.tracer
    seen: list[trace.Span] = []

    @harness.obs.track_inference("llm", "1")
    def stream() -> Iterator[str]:
        with tracer.start_as_current_span("inner"):
            pass
        for item in ITEMS:
            seen.append(trace.get_current_span())
            yield item

    with tracer.start_as_current_span("consumer") as consumer:
        for _item in stream():
            assert trace.get_current_span() is consumer
        assert trace.get_current_span() is consumer
    _assert_parentage(harness, consumer, seen)


def test_the_inference_span_is_current_only_inside_an_async_generator(
    make_harness: Callable[..., Harness],
) -> None:
    """The same for an async generator consumed with ``async for``."""
    harness = make_harness()
    assert harness.obs.tracer is not None
    tracer = harness.obs.tracer
    seen: list[trace.Span] = []

    @harness.obs.track_inference("llm", "1")
    async def stream() -> AsyncIterator[str]:
        with tracer.start_as_current_span("inner"):
            await asyncio.sleep(0)
        for item in ITEMS:
            seen.append(trace.get_current_span())
            await asyncio.sleep(0)
            yield item

    async def consume() -> trace.Span:
        with tracer.start_as_current_span("consumer") as consumer:
            async for _item in stream():
                assert trace.get_current_span() is consumer
                await asyncio.sleep(0)
            assert trace.get_current_span() is consumer
        return consumer

    consumer = asyncio.run(consume())
    _assert_parentage(harness, consumer, seen)


def test_each_step_in_its_own_context_detaches_cleanly(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    """Each next() run in a fresh copy of the context (as a thread pool iterating a sync
    stream does) attaches and detaches within that step: no context is left attached and
    OpenTelemetry reports no failed detach."""
    harness = make_harness()
    stream = _sync_stream(harness)()
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    items = []
    while True:
        try:
            items.append(contextvars.copy_context().run(next, stream))
        except StopIteration:
            break
    assert items == ITEMS
    assert caplog.records == []
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert _outcome(_the_span(harness)) == "success"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_streaming_response_serves_a_decorated_generator(
    make_harness: Callable[..., Harness], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette's StreamingResponse streams a decorated generator (a sync one stepped on its
    thread pool): one inference, a child of the request's server span, detached cleanly."""
    harness = make_harness()
    app = FastAPI()
    stream = _sync_stream(harness, tokens=True) if kind == "sync" else _async_stream(harness)

    @app.get("/stream")
    async def serve() -> StreamingResponse:
        return StreamingResponse(stream())

    aiobs.instrument(app, observability=harness.obs)
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    async with client_for(app) as client:
        response = await client.get("/stream")
    assert response.text == "".join(ITEMS)
    assert caplog.records == []
    assert harness.sample("ai_inference_total", **LABELS) == 1
    spans = {span.name: span for span in harness.spans()}
    server, inference = spans["GET /stream"], spans["inference llm"]
    assert inference.parent is not None
    assert server.context is not None
    assert inference.parent.span_id == server.context.span_id
    assert _outcome(inference) == "success"


# --- where the time to first token starts ---------------------------------------------------

BEFORE = 0.05
"""Time a handler spends before its generation starts (parsing, retrieval, a queue)."""


def _time_to_first_token(harness: Harness) -> tuple[float, float]:
    """The metric's one observation and the span's attribute, in seconds."""
    assert harness.sample("ai_time_to_first_token_seconds_count", **LABELS) == 1
    observed = harness.sample("ai_time_to_first_token_seconds_sum", **LABELS)
    assert observed is not None
    attributes = _the_span(harness).attributes
    assert attributes is not None
    attribute = attributes["aiobs.inference.time_to_first_token_ms"]
    assert isinstance(attribute, float)
    return observed, attribute / 1000


@pytest.mark.anyio
async def test_time_to_first_token_counts_from_the_requests_arrival(
    make_harness: Callable[..., Harness],
) -> None:
    """Inside a request the clock starts when the request arrived, as the client's does: the
    handler's work before the generation counts."""
    harness = make_harness()
    app = FastAPI()

    @app.get("/stream")
    async def serve() -> StreamingResponse:
        await asyncio.sleep(BEFORE)

        async def generate() -> AsyncIterator[str]:
            async with harness.obs.inference("llm", "1") as record:
                record.token()
                yield "a"

        return StreamingResponse(generate())

    aiobs.instrument(app, observability=harness.obs)
    async with client_for(app) as client:
        assert (await client.get("/stream")).text == "a"
    observed, attribute = _time_to_first_token(harness)
    assert observed >= BEFORE
    assert attribute == pytest.approx(observed, abs=1e-3)


def test_time_to_first_token_outside_a_request_counts_from_the_record(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    time.sleep(BEFORE)
    with harness.obs.inference("llm", "1") as record:
        record.token()
    observed, attribute = _time_to_first_token(harness)
    assert observed < BEFORE
    assert attribute < BEFORE


@pytest.mark.anyio
async def test_a_background_task_after_the_response_counts_from_the_record(
    make_harness: Callable[..., Harness],
) -> None:
    """A generation in a background task runs after the response ended: the request's
    arrival is not its origin."""
    harness = make_harness()
    app = FastAPI()
    done = asyncio.Event()

    async def later() -> None:
        await asyncio.sleep(BEFORE)
        async with harness.obs.inference("llm", "1") as record:
            record.token()
        done.set()

    @app.get("/later")
    async def serve(background: BackgroundTasks) -> dict[str, str]:
        background.add_task(later)
        return {"status": "queued"}

    aiobs.instrument(app, observability=harness.obs)
    async with client_for(app) as client:
        assert (await client.get("/later")).status_code == 200
    await asyncio.wait_for(done.wait(), 5)
    observed, _attribute = _time_to_first_token(harness)
    assert observed < BEFORE
