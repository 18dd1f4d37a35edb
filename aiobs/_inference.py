"""Inference telemetry: ``inference()`` records one model call, its stages, quality and tokens.

The per-call path is kept short: label children are resolved once per (model, version), and
no span is made when the caller's trace is not sampled and the sampler follows the parent.
A call ends in one of three outcomes: success, error (an ``Exception``) or cancelled (any
other ``BaseException``: the caller went away).

The time to first token is counted from the arrival of the HTTP request the generation serves
(the middleware sets :data:`current_request`), as the client waits for it, and from the start
of the record when there is no request, or its response has already ended (a background task).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from aiobs import catalog
from aiobs.metrics.cardinality import LabelGuard
from aiobs.metrics.instruments import Instruments
from aiobs.metrics.recorders import HistogramRecorder, adder, incrementer
from aiobs.tracing.provider import record_error
from aiobs.tracing.spans import Spans

F = TypeVar("F", bound=Callable[..., Any])


class RequestClock:
    """When the HTTP request being served arrived (``time.perf_counter()``), and whether its
    response has ended."""

    __slots__ = ("arrival", "ended")

    def __init__(self, arrival: float) -> None:
        self.arrival = arrival
        self.ended = False


current_request: ContextVar[RequestClock | None] = ContextVar("aiobs_request", default=None)
"""The clock of the request being served; set by the ASGI middleware for each request."""


class _ModelSeries:
    """The label children of one (model, version): resolved once, reused by every call."""

    __slots__ = (
        "batch_size",
        "cancelled",
        "confidence",
        "duration",
        "in_flight",
        "input_tokens",
        "model",
        "output_tokens",
        "span_attributes",
        "stages",
        "time_per_output_token",
        "time_to_first_token",
        "total",
        "version",
    )

    def __init__(
        self, instruments: Instruments, model: str, version: str, exemplars: bool
    ) -> None:
        get = instruments.get
        self.model = model
        self.version = version
        self.total = incrementer(get(catalog.INFERENCE).labels(model, version))
        self.cancelled = incrementer(get(catalog.INFERENCE_CANCELLED).labels(model, version))
        self.duration = HistogramRecorder(
            get(catalog.INFERENCE_DURATION).labels(model, version), exemplars
        )
        self.in_flight = adder(get(catalog.INFERENCE_IN_FLIGHT).labels(model))
        self.batch_size = HistogramRecorder(
            get(catalog.INFERENCE_BATCH_SIZE).labels(model, version), exemplars=False
        )
        self.confidence = HistogramRecorder(
            get(catalog.PREDICTION_CONFIDENCE).labels(model, version), exemplars=False
        )
        tokens = get(catalog.TOKENS)
        self.input_tokens = adder(tokens.labels(model, version, "input"))
        self.output_tokens = adder(tokens.labels(model, version, "output"))
        self.time_to_first_token = HistogramRecorder(
            get(catalog.TIME_TO_FIRST_TOKEN).labels(model, version), exemplars
        )
        self.time_per_output_token = HistogramRecorder(
            get(catalog.TIME_PER_OUTPUT_TOKEN).labels(model, version), exemplars
        )
        stage = get(catalog.INFERENCE_STAGE_DURATION)
        self.stages = {
            name: HistogramRecorder(stage.labels(model, version, name), exemplars=False)
            for name in catalog.STAGES
        }
        self.span_attributes = {
            catalog.ATTR_GEN_AI_REQUEST_MODEL: model,
            catalog.ATTR_MODEL_VERSION: version,
        }


class Stage:
    """Times one stage of an inference; use as ``with rec.stage("compute"):``."""

    __slots__ = ("_name", "_record", "_started")

    def __init__(self, record: InferenceRecord, name: str) -> None:
        self._record = record
        self._name = name
        self._started = 0.0

    def __enter__(self) -> Stage:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._record.observe_stage(self._name, time.perf_counter() - self._started)


class InferenceRecord:
    """One model call. Enter it (``with`` or ``async with``) around the call."""

    __slots__ = (
        "_batch_size",
        "_first_token",
        "_first_token_origin",
        "_input_tokens",
        "_last_token",
        "_links",
        "_output_tokens",
        "_owner",
        "_series",
        "_span",
        "_spans",
        "_started",
        "_token",
    )

    def __init__(
        self,
        owner: InferenceTelemetry,
        series: _ModelSeries,
        spans: Spans | None,
        batch_size: int | None,
        links: Sequence[trace.Link] | None = None,
    ) -> None:
        self._owner = owner
        self._links = links
        self._series = series
        self._spans = spans
        self._batch_size = batch_size
        self._span: trace.Span | None = None
        self._token: Token[Context] | None = None
        self._started = 0.0
        self._first_token_origin = 0.0
        self._first_token = 0.0
        self._last_token = 0.0
        self._input_tokens = 0
        self._output_tokens = 0

    # --- the call ------------------------------------------------------------------------
    def __enter__(self) -> InferenceRecord:
        self._token = _attach(self._start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._finish(exc)
        _detach(self._token)

    async def __aenter__(self) -> InferenceRecord:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def _start(self) -> Context | None:
        """Start timing and the span; the context that makes the span current (None without
        a span) is the caller's to attach."""
        series = self._series
        context = None
        if self._spans is not None:
            span = self._spans.start(
                catalog.INFERENCE_SPAN_PREFIX + series.model,
                otel_context.get_current(),
                series.span_attributes,
                self._links,
            )
            self._span = span
            context = trace.set_span_in_context(span)
        series.in_flight(1)
        self._started = time.perf_counter()
        request = current_request.get()
        if request is not None and not request.ended:
            self._first_token_origin = request.arrival
        else:
            self._first_token_origin = self._started
        return context

    def _trace(self) -> trace.SpanContext:
        """The span the call's exemplars point to: its own, else the one current."""
        span = self._span if self._span is not None else trace.get_current_span()
        return span.get_span_context()

    def _finish(self, exc: BaseException | None) -> None:
        """Record the call's outcome (``exc`` is what left it, if anything); end the span."""
        now = time.perf_counter()
        elapsed = now - self._started
        series = self._series
        series.in_flight(-1)
        series.total()
        context = self._trace()
        series.duration.observe(elapsed, context, now)
        if self._batch_size is not None:
            series.batch_size.count(self._batch_size)
        error = exc if isinstance(exc, Exception) else None
        if error is not None:
            outcome = catalog.OUTCOME_ERROR
            self._owner.count_error(series, type(error).__name__)
        elif exc is not None:
            outcome = catalog.OUTCOME_CANCELLED
            series.cancelled()
        else:
            outcome = catalog.OUTCOME_SUCCESS
            if self._output_tokens > 1:
                per_token = (self._last_token - self._first_token) / (self._output_tokens - 1)
                series.time_per_output_token.observe(per_token, context, now)
        span = self._span
        if span is not None and self._spans is not None:
            if not span.is_recording():
                span.end()
                return
            if error is not None:
                record_error(span, error)
            self._spans.finish(span, None, self._end_attributes(outcome, error), error is not None)

    def _end_attributes(
        self, outcome: str, error: Exception | None
    ) -> dict[str, str | int | float]:
        """What the span learns at the end of the call."""
        attributes: dict[str, str | int | float] = {catalog.ATTR_INFERENCE_OUTCOME: outcome}
        if self._input_tokens:
            attributes[catalog.ATTR_GEN_AI_INPUT_TOKENS] = self._input_tokens
        if self._output_tokens:
            attributes[catalog.ATTR_GEN_AI_OUTPUT_TOKENS] = self._output_tokens
            attributes[catalog.ATTR_TIME_TO_FIRST_TOKEN] = round(
                (self._first_token - self._first_token_origin) * 1000, 3
            )
        if self._batch_size is not None:
            attributes[catalog.ATTR_BATCH_SIZE] = self._batch_size
        if error is not None:
            attributes[catalog.ATTR_ERROR_TYPE] = type(error).__name__
        return attributes

    # --- what happens inside -------------------------------------------------------------
    def stage(self, name: str) -> Stage:
        """Time a stage: ``queue``, ``preprocess``, ``compute`` or ``postprocess``."""
        if name not in self._series.stages:
            raise ValueError(f"unknown stage {name!r}; use one of {', '.join(catalog.STAGES)}")
        return Stage(self, name)

    def observe_stage(self, name: str, seconds: float) -> None:
        """Record a stage measured elsewhere (a batcher's queue wait, say)."""
        child = self._series.stages.get(name)
        if child is None:
            raise ValueError(f"unknown stage {name!r}; use one of {', '.join(catalog.STAGES)}")
        child.count(seconds)
        span = self._span
        if span is not None and span.is_recording():
            span.set_attribute(catalog.STAGE_DURATION_ATTRIBUTES[name], round(seconds * 1000, 3))

    def set_batch_size(self, items: int) -> None:
        """Items in the batch this call executed (when only known inside the call)."""
        self._batch_size = items

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """An attribute of the inference span (when it is recorded), e.g. the GenAI
        semantic conventions' ``gen_ai.response.finish_reasons`` or
        ``gen_ai.request.temperature`` (their names are in :mod:`aiobs.catalog`)."""
        span = self._span
        if span is not None and span.is_recording():
            span.set_attribute(key, value)

    def observe_confidence(self, scores: float | Iterable[float]) -> None:
        """Top-1 confidence of one prediction, or of each prediction of a batch."""
        histogram = self._series.confidence
        if isinstance(scores, (int, float)):
            histogram.count(float(scores))
            return
        for score in scores:
            histogram.count(float(score))

    def token(self) -> None:
        """One output token generated; the first call marks the time to first token (since
        the request's arrival, see the module's description)."""
        now = time.perf_counter()
        if not self._output_tokens:
            self._first_token = now
            self._series.time_to_first_token.observe(
                now - self._first_token_origin, self._trace(), now
            )
        self._last_token = now
        self._output_tokens += 1
        self._series.output_tokens(1)

    def tokens(self, input: int = 0, output: int = 0) -> None:
        """Count prompt (``input``) and generated (``output``) tokens in bulk."""
        if input < 0 or output < 0:
            raise ValueError("token counts must not be negative")
        if input:
            self._input_tokens += input
            self._series.input_tokens(input)
        if output:
            if not self._output_tokens:
                self._first_token = time.perf_counter()
            self._output_tokens += output
            self._last_token = time.perf_counter()
            self._series.output_tokens(output)


class InferenceTelemetry:
    """Makes :class:`InferenceRecord` objects for one Observability."""

    def __init__(
        self,
        instruments: Instruments,
        tracer: trace.Tracer | None,
        guard: LabelGuard,
        follows_parent: bool,
        exemplars: bool = False,
    ) -> None:
        self._instruments = instruments
        self._exemplars = exemplars
        self._spans = Spans(tracer, SpanKind.INTERNAL) if tracer is not None else None
        self._guard = guard
        self._follows_parent = follows_parent
        self._series: dict[tuple[str, str], _ModelSeries] = {}
        self._errors = instruments.get(catalog.INFERENCE_ERRORS)
        self._queue_depth = instruments.get(catalog.INFERENCE_QUEUE_DEPTH)

    def record(
        self,
        model: str,
        model_version: str = "unknown",
        batch_size: int | None = None,
        links: Sequence[trace.Link] | None = None,
    ) -> InferenceRecord:
        series = self._series.get((model, model_version))
        if series is None:
            series = self._new_series(model, model_version)
        spans = self._spans
        if spans is not None and self._follows_parent:
            parent = trace.get_current_span().get_span_context()
            if parent.is_valid and not parent.trace_flags.sampled:
                spans = None  # the sampler would drop the span: skip making it
        return InferenceRecord(self, series, spans, batch_size, links)

    def count_error(self, series: _ModelSeries, error_type: str) -> None:
        bounded = self._guard.bound(catalog.INFERENCE_ERRORS.name, catalog.ERROR_TYPE, error_type)
        self._errors.labels(series.model, series.version, bounded).inc()

    def set_queue_depth(self, model: str, depth: int) -> None:
        bounded = self._guard.bound(catalog.INFERENCE_QUEUE_DEPTH.name, catalog.MODEL, model)
        self._queue_depth.labels(bounded).set(depth)

    def _new_series(self, model: str, model_version: str) -> _ModelSeries:
        name = catalog.INFERENCE.name
        bounded_model = self._guard.bound(name, catalog.MODEL, model)
        bounded_version = self._guard.bound(name, catalog.MODEL_VERSION, model_version)
        series = self._series.get((bounded_model, bounded_version))
        if series is None:
            series = _ModelSeries(
                self._instruments, bounded_model, bounded_version, self._exemplars
            )
            self._series[(bounded_model, bounded_version)] = series
        if bounded_model == model and bounded_version == model_version:
            self._series[(model, model_version)] = series
        return series


def _attach(context: Context | None) -> Token[Context] | None:
    return None if context is None else otel_context.attach(context)


def _detach(token: Token[Context] | None) -> None:
    if token is not None:
        otel_context.detach(token)


def track(make_record: Callable[[], InferenceRecord], *, tokens: bool = False) -> Callable[[F], F]:
    """A decorator making each call of a function one inference.

    A sync or async function is one inference per call. A generator or async generator
    function is one inference per iteration, from the first item asked for until it is
    exhausted, closed or fails (closed early: cancelled); with ``tokens=True`` each yielded
    item is one output token.
    """

    def decorate(function: F) -> F:
        if inspect.isasyncgenfunction(function):
            return cast(F, _track_async_generator(function, make_record, tokens))
        if inspect.isgeneratorfunction(function):
            return cast(F, _track_generator(function, make_record, tokens))
        if tokens:
            raise TypeError(
                f"tokens=True counts yielded items; {function.__qualname__} is no generator "
                "function (count tokens with rec.token() inside aiobs.inference() instead)"
            )
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with make_record():
                    return await function(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with make_record():
                return function(*args, **kwargs)

        return cast(F, run)

    return decorate


# The two drivers below delegate every step (next/send/throw/close) to the wrapped
# generator, as ``yield from`` would, and make the inference span current around each step
# only: a generator's frame resumes in whatever context its consumer has, so no context may
# stay attached across a yield.


def _track_generator(
    function: Callable[..., Generator[Any, Any, Any]],
    make_record: Callable[[], InferenceRecord],
    tokens: bool,
) -> Callable[..., Generator[Any, Any, Any]]:
    @functools.wraps(function)
    def run_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        generator = function(*args, **kwargs)  # runs none of its body: nothing to record
        record = make_record()
        context = record._start()
        left: BaseException | None = None
        try:
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                token = _attach(context)
                try:
                    item = generator.send(sent) if thrown is None else generator.throw(thrown)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _detach(token)
                if tokens:
                    record.token()
                try:
                    sent, thrown = (yield item), None
                except GeneratorExit:
                    token = _attach(context)
                    try:
                        generator.close()
                    finally:
                        _detach(token)
                    raise
                except BaseException as error:  # noqa: BLE001 - thrown in: passed on, as yield from does
                    sent, thrown = None, error
        except BaseException as error:
            left = error
            raise
        finally:
            record._finish(left)

    return run_generator


def _track_async_generator(
    function: Callable[..., AsyncGenerator[Any, Any]],
    make_record: Callable[[], InferenceRecord],
    tokens: bool,
) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(function)
    async def run_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        generator = function(*args, **kwargs)  # runs none of its body: nothing to record
        record = make_record()
        context = record._start()
        left: BaseException | None = None
        try:
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                token = _attach(context)
                try:
                    step = generator.asend(sent) if thrown is None else generator.athrow(thrown)
                    item = await step
                except StopAsyncIteration:
                    return
                finally:
                    _detach(token)
                if tokens:
                    record.token()
                try:
                    sent, thrown = (yield item), None
                except GeneratorExit:
                    token = _attach(context)
                    try:
                        await generator.aclose()
                    finally:
                        _detach(token)
                    raise
                except BaseException as error:  # noqa: BLE001 - thrown in: passed on, as yield from does
                    sent, thrown = None, error
        except BaseException as error:
            left = error
            raise
        finally:
            record._finish(left)

    return run_async_generator
