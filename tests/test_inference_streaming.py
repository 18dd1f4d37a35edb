"""Generator and async generator inferences (streams) and the cancelled outcome: a caller
that goes away is neither a success nor an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tests.conftest import Harness

LABELS = {"model": "llm", "model_version": "1"}
ITEMS = ["a", "b", "c"]
STEP = 0.1


def _the_span(harness: Harness) -> ReadableSpan:
    (span,) = [span for span in harness.spans() if span.name == "inference llm"]
    return span


def _outcome(span: ReadableSpan) -> object:
    assert span.attributes is not None
    return span.attributes.get("aiobs.inference.outcome")


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
