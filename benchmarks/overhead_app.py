"""The app the overhead benchmark serves: one trivial inference endpoint, instrumented the way
``BENCH_VARIANT`` names. ``benchmarks/overhead.py`` starts it as ``python overhead_app.py PORT``;
by hand, set ``BENCH_VARIANT`` (and ``OTEL_EXPORTER_OTLP_ENDPOINT`` for the tracing variants).

``BENCH_EXTRA_SERIES=N`` registers N extra series on the default Prometheus registry, to make
``/metrics`` expensive to render.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field

VARIANTS: dict[str, dict[str, str]] = {
    "bare": {},
    "aiobs-metrics": {"OTEL_SDK_DISABLED": "true", "AIOBS_ACCESS_LOG": "false"},
    "aiobs-full": {},
    "aiobs-full-10pct": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "aiobs-full-otel-instrumentor": {"AIOBS_INSTRUMENTATION": "opentelemetry"},
    "handmade": {},
}
"""Each variant and the environment it runs under (on top of ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""


class PredictRequest(BaseModel):
    x: list[float] = Field(min_length=1, max_length=64)


class PredictResponse(BaseModel):
    norm: float
    mean: float


def build_app(variant: str, extra_series: int = 0) -> FastAPI:
    """The benchmark app, instrumented as ``variant`` says (the environment already set)."""
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: PredictRequest) -> PredictResponse:
        values = request.x
        return PredictResponse(
            norm=math.sqrt(math.fsum(v * v for v in values)), mean=math.fsum(values) / len(values)
        )

    if variant.startswith("aiobs-"):
        import aiobs

        aiobs.instrument(app, service_name="bench")
    elif variant == "handmade":
        _instrument_by_hand(app)
    if extra_series:
        from prometheus_client import Gauge

        gauge = Gauge("bench_extra_series", "Synthetic series that enlarge /metrics.", ["key"])
        for index in range(extra_series):
            gauge.labels(f"key-{index:05d}").set(index)
    return app


def _instrument_by_hand(app: FastAPI) -> None:
    """What a service does without aiobs: prometheus-fastapi-instrumentator, the OpenTelemetry
    FastAPI instrumentation (default settings, 100% sampled, OTLP/HTTP batch export) and a
    structlog JSON line per request from an ``@app.middleware("http")`` function."""
    import structlog
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator().instrument(app).expose(app)

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    FastAPIInstrumentor.instrument_app(app)

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    access_log = structlog.get_logger("access")

    @app.middleware("http")
    async def log_request(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        context = trace.get_current_span().get_span_context()
        access_log.info(
            "http_request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            trace_id=format(context.trace_id, "032x"),
            span_id=format(context.span_id, "016x"),
        )
        return response


def main() -> None:
    import uvicorn

    variant = os.environ.get("BENCH_VARIANT", "")
    if variant not in VARIANTS or len(sys.argv) != 2:
        sys.exit(f"usage: BENCH_VARIANT={{{','.join(VARIANTS)}}} {sys.argv[0]} PORT")
    os.environ.update(VARIANTS[variant])
    app = build_app(variant, int(os.environ.get("BENCH_EXTRA_SERIES", "0")))
    # One worker; neither uvicorn's access log nor its logging configuration.
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_config=None)


if __name__ == "__main__":
    main()
