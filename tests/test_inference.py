"""Inference telemetry: every ai_* metric's labels and values, spans, errors, tokens, the
cardinality guard — sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from opentelemetry.trace import Link, StatusCode

import aiobs
from aiobs import catalog
from tests.conftest import Harness


def test_inference_counts_times_and_spans(make_harness: Callable[..., Harness]) -> None:
    """One call: total, duration, batch size, stages, confidence, and a child span with the
    model attributes and a duration attribute per stage."""
    harness = make_harness()
    assert harness.obs.tracer is not None
    tracer = harness.obs.tracer
    with (
        tracer.start_as_current_span("request") as parent,
        harness.obs.inference("resnet50", "v1", batch_size=4) as rec,
    ):
        assert harness.sample("ai_inference_in_flight", model="resnet50") == 1
        with rec.stage("preprocess"):
            pass
        with rec.stage("compute"):
            aiobs.get_logger("model").info("computing")
        rec.observe_confidence([0.95, 0.5, 0.99, 0.05])
        rec.observe_confidence(0.7)
    labels = {"model": "resnet50", "model_version": "v1"}
    assert harness.sample("ai_inference_total", **labels) == 1
    assert harness.sample("ai_inference_duration_seconds_count", **labels) == 1
    assert harness.sample("ai_inference_in_flight", model="resnet50") == 0
    assert harness.sample("ai_inference_batch_size_sum", **labels) == 4
    for stage in ("preprocess", "compute"):
        assert (
            harness.sample("ai_inference_stage_duration_seconds_count", stage=stage, **labels) == 1
        )
    assert harness.sample("ai_inference_stage_duration_seconds_count", stage="queue", **labels) == 0
    assert harness.sample("ai_prediction_confidence_count", **labels) == 5
    assert harness.sample("ai_prediction_confidence_bucket", le="0.1", **labels) == 1
    assert harness.sample("ai_prediction_confidence_sum", **labels) == pytest.approx(3.19)
    spans = {span.name: span for span in harness.spans()}
    child = spans["inference resnet50"]
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id
    assert child.attributes is not None
    assert child.attributes["gen_ai.request.model"] == "resnet50"
    assert child.attributes["aiobs.model.version"] == "v1"
    assert child.attributes["aiobs.inference.batch_size"] == 4
    assert child.attributes["aiobs.stage.preprocess.duration_ms"] >= 0
    assert child.attributes["aiobs.stage.compute.duration_ms"] >= 0
    assert "aiobs.stage.queue.duration_ms" not in child.attributes
    (log_line,) = [line for line in harness.log_lines() if line["event"] == "computing"]
    assert child.context is not None
    assert log_line["span_id"] == format(child.context.span_id, "016x")


def test_a_batch_links_the_requests_it_serves(make_harness: Callable[..., Harness]) -> None:
    """Spans passed as links appear on the batch's inference span."""
    harness = make_harness()
    assert harness.obs.tracer is not None
    requests = [harness.obs.tracer.start_span(f"request {n}") for n in range(3)]
    links = [Link(span.get_span_context()) for span in requests]
    with harness.obs.inference("resnet50", "v1", batch_size=3, links=links):
        pass
    for span in requests:
        span.end()
    (batch,) = [span for span in harness.spans() if span.name == "inference resnet50"]
    assert [link.context.span_id for link in batch.links] == [
        span.get_span_context().span_id for span in requests
    ]


def test_errors_are_counted_by_class_and_reraised(make_harness: Callable[..., Harness]) -> None:
    """The exception leaves unchanged; it is counted by class and marks the span ERROR."""
    harness = make_harness()
    error = KeyError("missing input")
    with pytest.raises(KeyError) as raised, harness.obs.inference("m", "1"):
        raise error
    assert raised.value is error
    labels = {"model": "m", "model_version": "1"}
    assert harness.sample("ai_inference_errors_total", error_type="KeyError", **labels) == 1
    assert harness.sample("ai_inference_total", **labels) == 1
    assert harness.sample("ai_inference_in_flight", model="m") == 0
    (span,) = harness.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "KeyError"
    assert [event.name for event in span.events] == ["exception"]


def test_decorator_on_sync_and_async_functions(make_harness: Callable[..., Harness]) -> None:
    """track_inference wraps sync and async functions, keeps their results and errors."""
    harness = make_harness()

    @harness.obs.track_inference("embedder", "3")
    def embed(text: str) -> list[float]:
        return [float(len(text))]

    @harness.obs.track_inference("embedder", "3")
    async def embed_async(text: str) -> list[float]:
        await asyncio.sleep(0)
        if not text:
            raise ValueError("empty")
        return [float(len(text))]

    assert embed("abc") == [3.0]
    assert asyncio.run(embed_async("ab")) == [2.0]
    with pytest.raises(ValueError, match="empty"):
        asyncio.run(embed_async(""))
    assert embed.__name__ == "embed"
    labels = {"model": "embedder", "model_version": "3"}
    assert harness.sample("ai_inference_total", **labels) == 3
    assert harness.sample("ai_inference_errors_total", error_type="ValueError", **labels) == 1


def test_async_context_manager(make_harness: Callable[..., Harness]) -> None:
    """``async with`` records the same as ``with``, across awaits."""
    harness = make_harness()

    async def call() -> None:
        async with harness.obs.inference("m", "1") as rec:
            await asyncio.sleep(0.01)
            with rec.stage("compute"):
                await asyncio.sleep(0)

    asyncio.run(call())
    assert harness.sample("ai_inference_total", model="m", model_version="1") == 1
    duration = harness.sample("ai_inference_duration_seconds_sum", model="m", model_version="1")
    assert duration is not None
    assert duration >= 0.01


def test_generative_tokens_and_timings(make_harness: Callable[..., Harness]) -> None:
    """token() marks time to first token; tokens() counts in bulk; time per output token is
    observed once per call; the span gets GenAI usage attributes."""
    harness = make_harness()
    with harness.obs.inference("tiny-llm", "2") as rec:
        for _ in range(5):
            rec.token()
        rec.tokens(input=12)
    labels = {"model": "tiny-llm", "model_version": "2"}
    assert harness.sample("ai_tokens_total", type="output", **labels) == 5
    assert harness.sample("ai_tokens_total", type="input", **labels) == 12
    assert harness.sample("ai_time_to_first_token_seconds_count", **labels) == 1
    assert harness.sample("ai_time_per_output_token_seconds_count", **labels) == 1
    assert harness.sample("ai_time_to_first_token_seconds_bucket", le="0.001", **labels) == 1
    (span,) = harness.spans()
    assert span.attributes is not None
    assert span.attributes["gen_ai.usage.input_tokens"] == 12
    assert span.attributes["gen_ai.usage.output_tokens"] == 5


def test_batch_size_known_only_inside_the_call(make_harness: Callable[..., Harness]) -> None:
    """set_batch_size records the size a call learned while it ran."""
    harness = make_harness()
    with harness.obs.inference("m", "1") as rec:
        rec.set_batch_size(12)
    assert harness.sample("ai_inference_batch_size_sum", model="m", model_version="1") == 12
    (span,) = harness.spans()
    assert span.attributes is not None
    assert span.attributes["aiobs.inference.batch_size"] == 12


def test_bad_stage_and_token_counts_are_rejected(make_harness: Callable[..., Harness]) -> None:
    """A stage outside the four names, or a negative count, is a clear ValueError."""
    harness = make_harness()
    with harness.obs.inference("m", "1") as rec:
        with pytest.raises(ValueError, match="unknown stage 'inference'"):
            rec.stage("inference")
        with pytest.raises(ValueError, match="negative"):
            rec.tokens(input=-1)


def test_unsampled_parent_makes_no_span(make_harness: Callable[..., Harness]) -> None:
    """Under a parent that is not sampled no inference span is made; metrics still are."""
    harness = make_harness(sampler="parentbased_always_off")
    assert harness.obs.tracer is not None
    with harness.obs.tracer.start_as_current_span("request"), harness.obs.inference("m", "1"):
        pass
    assert harness.spans() == []
    assert harness.sample("ai_inference_total", model="m", model_version="1") == 1


def test_cardinality_guard_folds_and_counts(make_harness: Callable[..., Harness]) -> None:
    """Past the limit, new model names fold into 'other', each fold is counted, and the
    first fold is logged once."""
    harness = make_harness(max_label_values=3)
    for number in range(10):
        with harness.obs.inference(f"model-{number}", "1"):
            pass
    for number in range(3):
        assert harness.sample("ai_inference_total", model=f"model-{number}", model_version="1") == 1
    assert harness.sample("ai_inference_total", model="other", model_version="1") == 7
    folded = harness.sample(
        "aiobs_label_values_folded_total", metric="ai_inference_total", label="model"
    )
    assert folded == 7
    warnings = [line for line in harness.log_lines() if line["event"] == "label_values_folded"]
    assert len(warnings) == 1
    assert warnings[0]["label"] == "model"


def test_error_types_are_bounded_too(make_harness: Callable[..., Harness]) -> None:
    """error_type values come from callers' exception classes: they are bounded as well."""
    harness = make_harness(max_label_values=1)
    for error in (KeyError, ValueError, TypeError):
        with pytest.raises(error), harness.obs.inference("m", "1"):
            raise error()
    labels = {"model": "m", "model_version": "1"}
    assert harness.sample("ai_inference_errors_total", error_type="KeyError", **labels) == 1
    assert harness.sample("ai_inference_errors_total", error_type="other", **labels) == 2


def test_queue_depth_and_model_lifecycle(make_harness: Callable[..., Harness]) -> None:
    """Queue depth is a gauge per model; loading sets info, load time and cache size;
    unloading removes the info series and shrinks the cache."""
    harness = make_harness()
    obs = harness.obs
    obs.set_queue_depth("resnet50", 7)
    assert harness.sample("ai_inference_queue_depth", model="resnet50") == 7
    obs.model_loaded("resnet50", "v1", runtime="onnxruntime", device="cpu", load_seconds=1.5)
    obs.model_loaded("resnet50", "v2", runtime="onnxruntime", device="cuda:0")
    info = {"model": "resnet50", "model_version": "v1", "runtime": "onnxruntime", "device": "cpu"}
    assert harness.sample("ai_model_info", **info) == 1
    assert (
        harness.sample("ai_model_load_duration_seconds", model="resnet50", model_version="v1")
        == 1.5
    )
    assert harness.sample("ai_model_cache_size") == 2
    obs.model_unloaded("resnet50", "v1")
    assert harness.sample("ai_model_info", **info) is None
    assert harness.sample("ai_model_cache_size") == 1


def test_set_attribute_reaches_the_inference_span(make_harness: Callable[..., Harness]) -> None:
    """GenAI attributes known only during a generation land on its span."""
    harness = make_harness()
    with harness.obs.inference("tiny-lm", "v1") as rec:
        rec.set_attribute(catalog.ATTR_GEN_AI_FINISH_REASONS, ("length",))
        rec.set_attribute(catalog.ATTR_GEN_AI_REQUEST_TEMPERATURE, 0.7)
    (span,) = harness.spans()
    assert span.attributes is not None
    assert span.attributes[catalog.ATTR_GEN_AI_FINISH_REASONS] == ("length",)
    assert span.attributes[catalog.ATTR_GEN_AI_REQUEST_TEMPERATURE] == 0.7


def test_inference_histograms_carry_the_inference_spans_trace(
    make_harness: Callable[..., Harness],
) -> None:
    """The inference latency, time to first token and time per output token buckets carry the
    trace of the inference span as exemplar (the dashboards' latency panels link to it); an
    unsampled inference leaves none."""
    harness = make_harness()
    with harness.obs.inference("tiny-lm", "1") as rec:
        for _ in range(3):
            rec.token()
    (span,) = [span for span in harness.spans() if span.name == "inference tiny-lm"]
    assert span.context is not None
    trace_id = format(span.context.trace_id, "032x")
    metrics = harness.capture.metrics()
    for name in (
        "ai_inference_duration_seconds_bucket",
        "ai_time_to_first_token_seconds_bucket",
        "ai_time_per_output_token_seconds_bucket",
    ):
        exemplars = [s.exemplar for s in metrics.samples(name, model="tiny-lm") if s.exemplar]
        assert [exemplar.labels for exemplar in exemplars] == [{"trace_id": trace_id}], name
    harness.close()

    unsampled = make_harness(sampler="always_off")
    with unsampled.obs.inference("tiny-lm", "1") as rec:
        rec.token()
    assert "trace_id" not in unsampled.capture.metrics().text
