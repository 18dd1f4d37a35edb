"""The app the overhead benchmark serves: one trivial inference endpoint, instrumented the way
``BENCH_VARIANT`` names. ``benchmarks/overhead.py`` starts it as ``python overhead_app.py PORT``;
by hand, set ``BENCH_VARIANT`` (and ``OTEL_EXPORTER_OTLP_ENDPOINT`` for the tracing variants).

``BENCH_EXTRA_SERIES=N`` registers N extra series on the default Prometheus registry, to make
``/metrics`` expensive to render. ``BENCH_SERVER`` chooses uvicorn's event loop and HTTP parser:
``uvloop`` (the default: uvloop and httptools, as a production server runs) or ``h11``
(asyncio and h11). ``BENCH_WORKERS=N`` runs N uvicorn worker processes (the app then comes from
:func:`create_app` in each of them).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

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
    "starlette-exporter": {},
    "instrumentator": {},
    "logfire": {},
}
"""Each variant and the environment it runs under (on top of ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""

SERVERS: dict[str, dict[str, str]] = {
    "uvloop": {"loop": "uvloop", "http": "httptools"},
    "h11": {"loop": "asyncio", "http": "h11"},
}
"""``BENCH_SERVER``: uvicorn's event loop and HTTP protocol implementation."""

BENCH_EXTRA = "pip install -e '.[dev,demo,bench]'"
REQUIREMENTS: dict[str, tuple[str, str]] = {
    "uvloop": ("uvloop", "bench"),
    "httptools": ("httptools", "bench"),
    "logfire": ("logfire", "bench"),
    "starlette_exporter": ("starlette-exporter", "bench"),
    "prometheus_fastapi_instrumentator": ("prometheus-fastapi-instrumentator", "dev"),
    "opentelemetry.instrumentation.fastapi": ("opentelemetry-instrumentation-fastapi", "dev"),
}
"""The modules the benchmark imports beyond aiobs's own dependencies: the distribution each
comes from and the extra of this project that installs it."""


def missing_requirements(modules: Iterable[str]) -> str | None:
    """A message naming what of ``modules`` is not installed and the extra that installs it;
    None when all of them are."""
    missing = [module for module in modules if not _importable(module)]
    if not missing:
        return None
    names = ", ".join(REQUIREMENTS[module][0] for module in missing)
    extras = sorted({REQUIREMENTS[module][1] for module in missing})
    which = f"{'extras' if len(extras) > 1 else 'extra'} {', '.join(extras)}"
    return f"the overhead benchmark needs {names} (not installed; {which}): {BENCH_EXTRA}"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


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
    elif variant == "starlette-exporter":
        from starlette_exporter import PrometheusMiddleware, handle_metrics

        app.add_middleware(PrometheusMiddleware)
        app.add_route("/metrics", handle_metrics)
    elif variant == "instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)
    elif variant == "logfire":
        _instrument_with_logfire(app)
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


def _instrument_with_logfire(app: FastAPI) -> None:
    """Pydantic Logfire, offline: nothing sent to its cloud, no console output, its spans
    exported over OTLP/HTTP by a batch processor to the benchmark's receiver (the one the
    aiobs variants export to), every request traced (Logfire's default)."""
    import logfire
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Logfire adds OTLP exporters of its own (traces, metrics, logs) when it finds this
    # variable: the one exporter below is given the endpoint instead.
    endpoint = os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    logfire.configure(
        send_to_logfire=False,
        console=False,
        service_name="bench",
        additional_span_processors=[
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
        ],
    )
    logfire.instrument_fastapi(app)


def create_app() -> FastAPI:
    """The app of ``BENCH_VARIANT`` (environment already set): uvicorn's factory for several
    workers, each of which builds its own."""
    variant = os.environ["BENCH_VARIANT"]
    return build_app(variant, int(os.environ.get("BENCH_EXTRA_SERIES", "0")))


def main() -> None:
    import uvicorn

    variant = os.environ.get("BENCH_VARIANT", "")
    server = os.environ.get("BENCH_SERVER", "uvloop")
    workers = int(os.environ.get("BENCH_WORKERS", "1"))
    if variant not in VARIANTS or server not in SERVERS or workers < 1 or len(sys.argv) != 2:
        sys.exit(
            f"usage: BENCH_VARIANT={{{','.join(VARIANTS)}}} [BENCH_SERVER={{{','.join(SERVERS)}}}]"
            f" [BENCH_WORKERS=N] {sys.argv[0]} PORT"
        )
    needed = [*(("uvloop", "httptools") if server == "uvloop" else ())]
    needed += {"logfire": ["logfire"], "starlette-exporter": ["starlette_exporter"]}.get(
        variant, []
    )
    message = missing_requirements(needed)
    if message:
        sys.exit(message)
    os.environ.update(VARIANTS[variant])
    # Neither uvicorn's access log nor its logging configuration.
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": int(sys.argv[1]),
        "access_log": False,
        "log_config": None,
        **SERVERS[server],
    }
    if workers == 1:
        uvicorn.run(create_app(), **options)
    else:
        # Several workers need the app by name; each worker process imports this module.
        uvicorn.run("overhead_app:create_app", factory=True, workers=workers, **options)


if __name__ == "__main__":
    main()
