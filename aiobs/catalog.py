"""Every metric, label and span attribute name aiobs emits.

This module is the single source of truth: the instruments are created from it, and the
dashboards, alert rules and docs are generated from it or checked against it, so a rename
breaks the build rather than a dashboard in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["counter", "gauge", "histogram"]

# --- label names -------------------------------------------------------------------------
METHOD = "method"
ROUTE = "route"
STATUS = "status"
MODEL = "model"
MODEL_VERSION = "model_version"
ERROR_TYPE = "error_type"
STAGE = "stage"
TOKEN_TYPE = "type"
RUNTIME = "runtime"
DEVICE = "device"
GPU = "gpu"
GPU_NAME = "name"
METRIC = "metric"
LABEL = "label"

# --- fixed label values ------------------------------------------------------------------
UNMATCHED_ROUTE = "unmatched"
"""``route`` of requests that matched no route of the application."""
OTHER = "other"
"""What caller-supplied label values fold into past the cardinality limit."""
STAGES = ("queue", "preprocess", "compute", "postprocess")
TOKEN_TYPES = ("input", "output")
OUTCOME_SUCCESS = "success"
OUTCOME_ERROR = "error"
"""An ``Exception`` left the inference: counted in ``ai_inference_errors_total``."""
OUTCOME_CANCELLED = "cancelled"
"""Anything else left it (``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``,
``SystemExit``): the caller went away; counted in ``ai_inference_cancelled_total``."""
OUTCOMES = (OUTCOME_SUCCESS, OUTCOME_ERROR, OUTCOME_CANCELLED)

# --- buckets -----------------------------------------------------------------------------
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Milliseconds to tens of seconds: a cache hit to a long generation."""
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
"""OpenTelemetry GenAI semantic conventions, ``gen_ai.server.time_to_first_token``."""
TIME_PER_OUTPUT_TOKEN_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)
"""OpenTelemetry GenAI semantic conventions, ``gen_ai.server.time_per_output_token``."""


@dataclass(frozen=True)
class Metric:
    """One Prometheus metric as exposed on ``/metrics``.

    ``name`` is the exposed family name (``_total`` included for counters, as Prometheus
    queries spell it). ``multiprocess_mode`` says how a gauge is aggregated across the
    worker processes of one service.
    """

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    multiprocess_mode: str = "livesum"
    unit: str = ""
    """Defaults to the unit the name ends with (``_seconds``...), else ``1``."""

    def __post_init__(self) -> None:
        if not self.unit:
            suffix = self.base_name.rsplit("_", 1)[-1]
            known = suffix in ("seconds", "bytes", "ratio", "celsius", "watts")
            object.__setattr__(self, "unit", suffix if known else "1")

    @property
    def base_name(self) -> str:
        """The name prometheus_client is given (it appends ``_total`` to counters)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def series_names(self) -> tuple[str, ...]:
        """Every sample name this metric exposes (what PromQL may select)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


# --- HTTP --------------------------------------------------------------------------------
HTTP_REQUESTS = Metric(
    "http_requests_total",
    "counter",
    "HTTP requests served, by route template and status code (499: the client went away "
    "before the response ended).",
    (METHOD, ROUTE, STATUS),
)
HTTP_REQUEST_DURATION = Metric(
    "http_request_duration_seconds",
    "histogram",
    "Server-side HTTP request latency, to the last byte of the response.",
    (METHOD, ROUTE),
    LATENCY_BUCKETS,
)
HTTP_RESPONSE_FIRST_BYTE = Metric(
    "http_response_first_byte_seconds",
    "histogram",
    "Time from a request's arrival to the first body chunk of its streamed response.",
    (METHOD, ROUTE),
    LATENCY_BUCKETS,
)
HTTP_REQUESTS_IN_FLIGHT = Metric(
    "http_requests_in_flight", "gauge", "HTTP requests being served now."
)

# --- inference ---------------------------------------------------------------------------
INFERENCE = Metric("ai_inference_total", "counter", "Inferences attempted.", (MODEL, MODEL_VERSION))
INFERENCE_ERRORS = Metric(
    "ai_inference_errors_total",
    "counter",
    "Failed inferences, by exception class.",
    (MODEL, MODEL_VERSION, ERROR_TYPE),
)
INFERENCE_CANCELLED = Metric(
    "ai_inference_cancelled_total",
    "counter",
    "Inferences cancelled before they finished (the caller went away).",
    (MODEL, MODEL_VERSION),
)
INFERENCE_DURATION = Metric(
    "ai_inference_duration_seconds",
    "histogram",
    "End-to-end inference time.",
    (MODEL, MODEL_VERSION),
    LATENCY_BUCKETS,
)
INFERENCE_STAGE_DURATION = Metric(
    "ai_inference_stage_duration_seconds",
    "histogram",
    "Time spent in one stage of an inference (queue, preprocess, compute, postprocess).",
    (MODEL, MODEL_VERSION, STAGE),
    LATENCY_BUCKETS,
)
INFERENCE_BATCH_SIZE = Metric(
    "ai_inference_batch_size",
    "histogram",
    "Items per executed batch.",
    (MODEL, MODEL_VERSION),
    BATCH_SIZE_BUCKETS,
    unit="items",
)
INFERENCE_IN_FLIGHT = Metric("ai_inference_in_flight", "gauge", "Inferences running now.", (MODEL,))
INFERENCE_QUEUE_DEPTH = Metric(
    "ai_inference_queue_depth", "gauge", "Requests waiting for a batch slot.", (MODEL,)
)
PREDICTION_CONFIDENCE = Metric(
    "ai_prediction_confidence",
    "histogram",
    "Top-1 confidence of predictions.",
    (MODEL, MODEL_VERSION),
    CONFIDENCE_BUCKETS,
)
TOKENS = Metric(
    "ai_tokens_total",
    "counter",
    "Tokens processed, by type (input, output).",
    (MODEL, MODEL_VERSION, TOKEN_TYPE),
    unit="tokens",
)
TIME_TO_FIRST_TOKEN = Metric(
    "ai_time_to_first_token_seconds",
    "histogram",
    "Time from the arrival of the request a generation serves (outside a request: from the "
    "generation's start) to its first output token.",
    (MODEL, MODEL_VERSION),
    TIME_TO_FIRST_TOKEN_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Metric(
    "ai_time_per_output_token_seconds",
    "histogram",
    "Time per output token after the first.",
    (MODEL, MODEL_VERSION),
    TIME_PER_OUTPUT_TOKEN_BUCKETS,
)
MODEL_INFO = Metric(
    "ai_model_info",
    "gauge",
    "Loaded models (value 1), with runtime and device.",
    (MODEL, MODEL_VERSION, RUNTIME, DEVICE),
    multiprocess_mode="livemax",
)
MODEL_LOAD_DURATION = Metric(
    "ai_model_load_duration_seconds",
    "gauge",
    "Duration of the last model load.",
    (MODEL, MODEL_VERSION),
    multiprocess_mode="livemax",
)
MODEL_CACHE_SIZE = Metric(
    "ai_model_cache_size", "gauge", "Models held in memory.", multiprocess_mode="livemax"
)
SERVICE_READY = Metric(
    "ai_service_ready",
    "gauge",
    "1 while every readiness check passes, else 0.",
    multiprocess_mode="livemin",
)

# --- GPU (read from NVML at scrape time) --------------------------------------------------
GPU_UTILIZATION = Metric(
    "ai_gpu_utilization_ratio", "gauge", "GPU utilization, 0 to 1.", (GPU, GPU_NAME)
)
GPU_MEMORY_USED = Metric("ai_gpu_memory_used_bytes", "gauge", "GPU device memory in use.", (GPU,))
GPU_MEMORY_TOTAL = Metric(
    "ai_gpu_memory_total_bytes", "gauge", "GPU device memory in total.", (GPU,)
)
GPU_PROCESS_MEMORY_USED = Metric(
    "ai_gpu_process_memory_used_bytes", "gauge", "GPU memory held by this process.", (GPU,)
)
GPU_TEMPERATURE = Metric("ai_gpu_temperature_celsius", "gauge", "GPU temperature.", (GPU,))
GPU_POWER = Metric("ai_gpu_power_watts", "gauge", "GPU power draw.", (GPU,))

# --- self-monitoring ---------------------------------------------------------------------
SPANS_EXPORTED = Metric(
    "aiobs_spans_exported_total", "counter", "Spans accepted by the trace exporter's endpoint."
)
SPAN_EXPORT_FAILURES = Metric(
    "aiobs_span_export_failures_total",
    "counter",
    "Spans in export batches that failed (endpoint down, timeout, rejected).",
)
SPANS_DROPPED = Metric(
    "aiobs_spans_dropped_total",
    "counter",
    "Spans dropped before export because the span queue was full.",
)
LOG_LINES_DROPPED = Metric(
    "aiobs_log_lines_dropped_total",
    "counter",
    "Log lines dropped because the output (stdout) could not keep up.",
)
LABEL_VALUES_FOLDED = Metric(
    "aiobs_label_values_folded_total",
    "counter",
    "Label values folded into 'other' by the cardinality guard.",
    (METRIC, LABEL),
)

METRICS: tuple[Metric, ...] = tuple(
    value for value in tuple(globals().values()) if isinstance(value, Metric)
)
"""Every metric of the catalog, in definition order."""

# --- span names and attributes -----------------------------------------------------------
ATTR_HTTP_METHOD = "http.request.method"
ATTR_HTTP_ROUTE = "http.route"
ATTR_HTTP_STATUS = "http.response.status_code"
ATTR_URL_PATH = "url.path"
ATTR_URL_SCHEME = "url.scheme"
ATTR_ERROR_TYPE = "error.type"
ATTR_GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
ATTR_GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
ATTR_GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ATTR_GEN_AI_OPERATION = "gen_ai.operation.name"
ATTR_GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
ATTR_GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
ATTR_GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
ATTR_GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
ATTR_MODEL_VERSION = "aiobs.model.version"
ATTR_BATCH_SIZE = "aiobs.inference.batch_size"
ATTR_TIME_TO_FIRST_TOKEN = "aiobs.inference.time_to_first_token_ms"
ATTR_INFERENCE_OUTCOME = "aiobs.inference.outcome"
"""One of :data:`OUTCOMES`, on every inference span."""
STAGE_DURATION_ATTRIBUTES = {stage: f"aiobs.stage.{stage}.duration_ms" for stage in STAGES}
"""Span attribute each stage sets on its inference span (an attribute costs a quarter of a
span event, measured by benchmarks/inference_overhead.py)."""
INFERENCE_SPAN_PREFIX = "inference "
ATTR_SERVICE_NAME = "service.name"
ATTR_SERVICE_VERSION = "service.version"
ATTR_SERVICE_INSTANCE_ID = "service.instance.id"
"""A random UUID per process unless ``OTEL_RESOURCE_ATTRIBUTES`` names the instance."""
ATTR_DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"
"""The current semantic convention; ``deployment.environment`` is deprecated."""

# --- log keys ----------------------------------------------------------------------------
LOG_KEYS = ("timestamp", "level", "event", "logger", "service")
"""Keys present on every log line."""
ACCESS_LOG_EVENT = "http_request"
