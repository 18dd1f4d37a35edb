"""The four dashboards: Service overview, Inference, GPU and Telemetry health. Every query
comes from :mod:`aiobs.ops.dashboards.promql` over :mod:`aiobs.catalog` metrics."""

from __future__ import annotations

from collections.abc import Callable

from grafanalib import core

from aiobs import catalog as c
from aiobs.ops.dashboards.panels import GREEN_ORANGE_RED, heatmap, layout, stat, timeseries
from aiobs.ops.dashboards.promql import (
    buckets,
    gauge,
    mean,
    quantile,
    rate,
    ratio_or_zero,
    unit_of,
)

TAGS = ["aiobs"]
MV = (c.MODEL, c.MODEL_VERSION)
LATENCY_STEPS = (("green", None), ("orange", 0.5), ("red", 1.0))
ERROR_STEPS = (("green", None), ("orange", 0.01), ("red", 0.05))
READY_MAPPINGS = (
    {
        "type": "value",
        "options": {
            "0": {"text": "NOT READY", "color": "red", "index": 0},
            "1": {"text": "READY", "color": "green", "index": 1},
        },
    },
)


def _percentiles(metric: c.Metric, by: tuple[str, ...], legend: str) -> list[tuple[str, str]]:
    return [(quantile(q, metric, by), f"p{round(q * 100)} {legend}") for q in (0.5, 0.95, 0.99)]


def service_overview() -> list[core.Panel]:
    requests, duration = c.HTTP_REQUESTS, c.HTTP_REQUEST_DURATION
    first_byte = c.HTTP_RESPONSE_FIRST_BYTE
    by_route = (c.ROUTE,)
    return layout(
        [
            [
                stat(
                    "Ready",
                    "ai_service_ready: 1 while every readiness check passes (the lowest "
                    "of the job's processes).",
                    [(gauge(c.SERVICE_READY, (), "min"), "ready")],
                    "short",
                    thresholds=(("red", None), ("green", 1)),
                    mappings=READY_MAPPINGS,
                ),
                stat(
                    "Targets up",
                    "Share of the job's scrape targets Prometheus reached on its last scrape.",
                    [('avg(up{job=~"$job"})', "up")],
                    "percentunit",
                    thresholds=(("red", None), ("orange", 0.5), ("green", 1)),
                ),
                stat(
                    "Requests in flight",
                    "HTTP requests being served now, all processes.",
                    [(gauge(c.HTTP_REQUESTS_IN_FLIGHT), "in flight")],
                    "short",
                    thresholds=(("green", None), ("orange", 50), ("red", 200)),
                ),
                stat(
                    "5xx ratio",
                    "Share of requests answered 5xx over the rate window.",
                    [(ratio_or_zero(rate(requests, status="5.."), rate(requests)), "5xx")],
                    "percentunit",
                    thresholds=ERROR_STEPS,
                ),
            ],
            [
                timeseries(
                    "Request rate by route",
                    "HTTP requests per second by route template.",
                    [(rate(requests, by_route), "{{route}}")],
                    "reqps",
                ),
                timeseries(
                    "Responses by status",
                    "HTTP responses per second by status code: "
                    "4xx are the clients' mistakes, 5xx the service's.",
                    [(rate(requests, (c.STATUS,)), "{{status}}")],
                    "reqps",
                    stacked=True,
                ),
            ],
            [
                timeseries(
                    "Error ratio (5xx) by route",
                    "Share of each route's requests answered 5xx; 0 while there are none.",
                    [
                        (
                            ratio_or_zero(
                                rate(requests, by_route, status="5.."), rate(requests, by_route)
                            ),
                            "{{route}}",
                        )
                    ],
                    "percentunit",
                    thresholds=ERROR_STEPS,
                ),
                timeseries(
                    "Latency by route (p50, p95, p99)",
                    "Server-side request latency "
                    "percentiles by route; exemplar dots link to the trace in Jaeger.",
                    _percentiles(duration, by_route, "{{route}}"),
                    unit_of(duration),
                    thresholds=LATENCY_STEPS,
                    exemplars=True,
                ),
            ],
            [
                timeseries(
                    "Time to first byte, streamed responses (p50, p95, p99)",
                    "From a request's arrival to the first chunk of its streamed response "
                    "(the first token of a token stream), by route.",
                    _percentiles(first_byte, by_route, "{{route}}"),
                    unit_of(first_byte),
                    thresholds=LATENCY_STEPS,
                    exemplars=True,
                ),
                timeseries(
                    "Client disconnects (499) by route",
                    "Share of each route's requests whose client went away before the "
                    "response ended (status 499); 0 while there are none.",
                    [
                        (
                            ratio_or_zero(
                                rate(requests, by_route, status="499"), rate(requests, by_route)
                            ),
                            "{{route}}",
                        )
                    ],
                    "percentunit",
                ),
            ],
            [
                timeseries(
                    "In-flight requests",
                    "HTTP requests being served, per process.",
                    [(gauge(c.HTTP_REQUESTS_IN_FLIGHT, ("instance",)), "{{instance}}")],
                    "short",
                ),
                timeseries(
                    "Scrape health",
                    "up (1: scraped) and scrape duration per target.",
                    [
                        ('up{job=~"$job"}', "up {{instance}}"),
                        ('scrape_duration_seconds{job=~"$job"}', "scrape s {{instance}}"),
                    ],
                    "short",
                    thresholds=(("red", None), ("green", 1)),
                ),
            ],
        ]
    )


def inference() -> list[core.Panel]:
    total, errors, duration = c.INFERENCE, c.INFERENCE_ERRORS, c.INFERENCE_DURATION
    stages, confidence = c.INFERENCE_STAGE_DURATION, c.PREDICTION_CONFIDENCE
    version = (c.MODEL_VERSION,)
    return layout(
        [
            [
                timeseries(
                    "Throughput",
                    "Inferences per second by model and version.",
                    [(rate(total, MV), "{{model}} {{model_version}}")],
                    "ops",
                ),
                timeseries(
                    "Error ratio by error_type",
                    "Failed inferences over attempted, by "
                    "exception class (A); all error types together, 0 while none (B).",
                    [
                        (
                            f"{rate(errors, (*MV, c.ERROR_TYPE))} / ignoring ({c.ERROR_TYPE}) "
                            f"group_left {rate(total, MV)}",
                            "{{model}} {{model_version}} {{error_type}}",
                        ),
                        (
                            ratio_or_zero(rate(errors, MV), rate(total, MV)),
                            "{{model}} {{model_version}} all",
                        ),
                    ],
                    "percentunit",
                    thresholds=ERROR_STEPS,
                ),
            ],
            [
                timeseries(
                    "Inference latency (p50, p95, p99)",
                    "End-to-end inference time by "
                    "model and version; exemplar dots link to the trace in Jaeger.",
                    _percentiles(duration, MV, "{{model}} {{model_version}}"),
                    unit_of(duration),
                    thresholds=LATENCY_STEPS,
                    exemplars=True,
                ),
                timeseries(
                    "Stage breakdown (mean)",
                    "Mean time per inference in each stage "
                    "(queue, preprocess, compute, postprocess), stacked.",
                    [(mean(stages, (c.STAGE,)), "{{stage}}")],
                    unit_of(stages),
                    stacked=True,
                ),
            ],
            [
                timeseries(
                    "Stage latency p95",
                    "95th percentile of each stage's time; exemplar dots link to the trace.",
                    [(quantile(0.95, stages, (c.STAGE,)), "{{stage}}")],
                    unit_of(stages),
                    thresholds=LATENCY_STEPS,
                    exemplars=True,
                ),
                heatmap(
                    "Batch size distribution",
                    "Items per executed batch: how full the dynamic batcher's batches are.",
                    buckets(c.INFERENCE_BATCH_SIZE),
                    unit_of(c.INFERENCE_BATCH_SIZE),
                ),
            ],
            [
                timeseries(
                    "Queue depth",
                    "Requests waiting for a batch slot, by model.",
                    [(gauge(c.INFERENCE_QUEUE_DEPTH, (c.MODEL,)), "{{model}}")],
                    "short",
                    thresholds=(("green", None), ("orange", 32), ("red", 128)),
                ),
                timeseries(
                    "Inferences in flight",
                    "Model calls running now, by model.",
                    [(gauge(c.INFERENCE_IN_FLIGHT, (c.MODEL,)), "{{model}}")],
                    "short",
                ),
            ],
            [
                heatmap(
                    "Prediction confidence distribution",
                    "Top-1 confidence of predictions; a shift down is the first sign of drift.",
                    buckets(confidence),
                    "percentunit",
                ),
                timeseries(
                    "Confidence shift vs a day earlier",
                    "Mean top-1 confidence now (A) and 24 h earlier (B), by model version.",
                    [
                        (mean(confidence, version), "now {{model_version}}"),
                        (mean(confidence, version, offset="1d"), "1d ago {{model_version}}"),
                    ],
                    "percentunit",
                ),
            ],
            [
                timeseries(
                    "Canary: p95 latency by version",
                    "model_version side by side: 95th percentile inference time.",
                    [(quantile(0.95, duration, version), "{{model_version}}")],
                    unit_of(duration),
                    thresholds=LATENCY_STEPS,
                    exemplars=True,
                    width=8,
                ),
                timeseries(
                    "Canary: traffic share by version",
                    "Share of inferences each model_version serves.",
                    [(f"{rate(total, version)} / scalar({rate(total)})", "{{model_version}}")],
                    "percentunit",
                    width=8,
                ),
                timeseries(
                    "Canary: mean confidence by version",
                    "Mean top-1 confidence per model_version.",
                    [(mean(confidence, version), "{{model_version}}")],
                    "percentunit",
                    width=8,
                ),
            ],
            [
                timeseries(
                    "Token rate (generative)",
                    "Tokens per second by type (input, output), generative models only.",
                    [(rate(c.TOKENS, (*MV, c.TOKEN_TYPE)), "{{model}} {{model_version}} {{type}}")],
                    "cps",
                ),
                timeseries(
                    "Time to first token (p50, p95)",
                    "Generative models: time to the "
                    "first output token; exemplar dots link to the trace.",
                    [
                        (
                            quantile(q, c.TIME_TO_FIRST_TOKEN, MV),
                            f"p{round(q * 100)} {{{{model}}}} {{{{model_version}}}}",
                        )
                        for q in (0.5, 0.95)
                    ],
                    unit_of(c.TIME_TO_FIRST_TOKEN),
                    thresholds=LATENCY_STEPS,
                    exemplars=True,
                    width=6,
                ),
                timeseries(
                    "Time per output token p95",
                    "Generative models: time per output token after the first.",
                    [(quantile(0.95, c.TIME_PER_OUTPUT_TOKEN, MV), "{{model}} {{model_version}}")],
                    unit_of(c.TIME_PER_OUTPUT_TOKEN),
                    exemplars=True,
                    width=6,
                ),
            ],
        ]
    )


def gpu() -> list[core.Panel]:
    by_gpu = (c.GPU,)
    return layout(
        [
            [
                timeseries(
                    "GPU utilization",
                    "Share of time a kernel ran, per GPU (NVML).",
                    [(gauge(c.GPU_UTILIZATION, (c.GPU, c.GPU_NAME), "max"), "{{gpu}} {{name}}")],
                    "percentunit",
                    thresholds=GREEN_ORANGE_RED,
                ),
                timeseries(
                    "Inference throughput",
                    "Inferences per second next to utilization: "
                    "flat throughput at high utilization is saturation.",
                    [(rate(c.INFERENCE, MV), "{{model}} {{model_version}}")],
                    "ops",
                ),
            ],
            [
                timeseries(
                    "GPU memory used",
                    "Device memory in use and in total, per GPU.",
                    [
                        (gauge(c.GPU_MEMORY_USED, by_gpu, "max"), "used {{gpu}}"),
                        (gauge(c.GPU_MEMORY_TOTAL, by_gpu, "max"), "total {{gpu}}"),
                    ],
                    unit_of(c.GPU_MEMORY_USED),
                    width=8,
                ),
                timeseries(
                    "GPU memory held by the service",
                    "Device memory this job's processes hold, per GPU.",
                    [(gauge(c.GPU_PROCESS_MEMORY_USED, by_gpu), "{{gpu}}")],
                    unit_of(c.GPU_PROCESS_MEMORY_USED),
                    width=8,
                ),
                timeseries(
                    "GPU memory used ratio",
                    "Used over total device memory per GPU.",
                    [
                        (
                            f"{gauge(c.GPU_MEMORY_USED, by_gpu, 'max')} / "
                            f"{gauge(c.GPU_MEMORY_TOTAL, by_gpu, 'max')}",
                            "{{gpu}}",
                        )
                    ],
                    "percentunit",
                    thresholds=GREEN_ORANGE_RED,
                    width=8,
                ),
            ],
            [
                timeseries(
                    "GPU temperature",
                    "Per GPU; most throttle past 85 °C.",
                    [(gauge(c.GPU_TEMPERATURE, by_gpu, "max"), "{{gpu}}")],
                    unit_of(c.GPU_TEMPERATURE),
                    thresholds=(("green", None), ("orange", 80), ("red", 90)),
                ),
                timeseries(
                    "GPU power",
                    "Power draw per GPU.",
                    [(gauge(c.GPU_POWER, by_gpu, "max"), "{{gpu}}")],
                    unit_of(c.GPU_POWER),
                ),
            ],
        ]
    )


def telemetry_health() -> list[core.Panel]:
    per_second = "cps"  # counts per second
    return layout(
        [
            [
                timeseries(
                    "Spans exported",
                    "Spans per second the trace endpoint accepted.",
                    [(rate(c.SPANS_EXPORTED), "exported")],
                    per_second,
                ),
                timeseries(
                    "Span export failures",
                    "Spans per second in export batches that "
                    "failed (collector down, timeout, rejected).",
                    [(rate(c.SPAN_EXPORT_FAILURES), "failed")],
                    per_second,
                    thresholds=(("green", None), ("red", 0.001)),
                ),
            ],
            [
                timeseries(
                    "Spans dropped",
                    "Spans per second dropped because the span queue was full.",
                    [(rate(c.SPANS_DROPPED), "dropped")],
                    per_second,
                    thresholds=(("green", None), ("red", 0.001)),
                ),
                timeseries(
                    "Log lines dropped",
                    "Log lines per second dropped because stdout could not keep up.",
                    [(rate(c.LOG_LINES_DROPPED), "dropped")],
                    per_second,
                    thresholds=(("green", None), ("red", 0.001)),
                ),
            ],
            [
                timeseries(
                    "Label values folded into 'other'",
                    "Caller label values folded by the cardinality guard, per metric and label.",
                    [(rate(c.LABEL_VALUES_FOLDED, (c.METRIC, c.LABEL)), "{{metric}} {{label}}")],
                    per_second,
                    width=24,
                    thresholds=(("green", None), ("orange", 0.001)),
                ),
            ],
        ]
    )


DASHBOARDS: dict[str, tuple[str, str, Callable[[], list[core.Panel]]]] = {
    "aiobs-service-overview": (
        "aiobs / Service overview",
        "Is the service up, how busy, how many errors, how slow?",
        service_overview,
    ),
    "aiobs-inference": (
        "aiobs / Inference",
        "Per model and version: throughput, errors, "
        "latency and its stages, batching, confidence, canary.",
        inference,
    ),
    "aiobs-gpu": (
        "aiobs / GPU",
        "GPU utilization, memory, temperature and power next to inference throughput.",
        gpu,
    ),
    "aiobs-telemetry-health": (
        "aiobs / Telemetry health",
        "Is aiobs itself losing spans, log lines or label values?",
        telemetry_health,
    ),
}
"""uid -> (title, description, panels). The uids are fixed: links and imports rely on them."""
