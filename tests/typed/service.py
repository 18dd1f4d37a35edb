"""A service as a user writes it, using every public name of aiobs: ``mypy --strict`` on
this file must pass (tests/test_typing.py). It is type-checked, never run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import structlog
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry import trace
from prometheus_client import Counter
from starlette.applications import Starlette

import aiobs
from aiobs import catalog, multiprocess
from aiobs.logging import add_trace_ids, processors
from aiobs.ops import (
    DashboardsConfig,
    DeployConfig,
    RulesConfig,
    dashboard_files,
    manifest_files,
    rule_files,
)
from aiobs.testing import Capture, Metrics, capture

app = FastAPI()
settings = aiobs.Settings(service_name="typed-svc", sampler="parentbased_traceidratio")
options: aiobs.SettingsOptions = {"service_name": "typed-svc", "log_level": "INFO"}
obs: aiobs.Observability = aiobs.instrument(app, service_name="typed-svc", sampler_arg=0.5)
also: aiobs.Observability = aiobs.instrument(Starlette(), settings=settings)
same: aiobs.Observability = aiobs.setup(**options)
log = aiobs.get_logger("typed", component="api")
version: str = aiobs.__version__

requests_seen = Counter("typed_requests_seen", "Requests seen.", registry=obs.registry)
service_name: str = obs.settings.service_name
tracer: trace.Tracer | None = obs.tracer
provider: trace.TracerProvider | None = obs.tracer_provider


def model_ready() -> bool:
    return True


ready: aiobs.ReadinessCheck = model_ready
obs.add_readiness_check("model", ready)
obs.model_loaded("tiny", "1", runtime="onnxruntime", device="cpu", load_seconds=0.5)
obs.set_queue_depth("tiny", 0)

structlog.configure(processors=[*processors(max_field_length=1024), add_trace_ids])
label: str = catalog.MODEL
hooks = (multiprocess.on_starting, multiprocess.child_exit)


@aiobs.track_inference("tiny", model_version="1", tokens=True)
def stream(prompt: str) -> Iterator[str]:
    yield from prompt


@obs.track_inference("tiny", "1")
async def classify(x: list[float]) -> float:
    record: aiobs.InferenceRecord
    with aiobs.inference("tiny", model_version="1", batch_size=1) as record:
        with record.stage("compute"):
            score = sum(x)
        record.observe_confidence(score)
        record.set_attribute(catalog.ATTR_GEN_AI_REQUEST_MODEL, "tiny")
    return score


@app.get("/stream")
async def serve(prompt: str) -> StreamingResponse:
    async def generate() -> AsyncIterator[str]:
        async with obs.inference("tiny", "1") as record:
            for piece in stream(prompt):
                record.token()
                yield piece
            record.tokens(input=len(prompt))

    log.info("streaming", prompt_chars=len(prompt))
    return StreamingResponse(generate())


def bad_setting() -> None:
    try:
        aiobs.Settings(sampler_arg=2.0)
    except aiobs.ConfigError as error:
        log.warning("bad setting", error=str(error))


middleware = aiobs.ObservabilityMiddleware(app, obs)
flushed: bool = obs.force_flush(1.0) and obs.shutdown(1.0)


def generated_files() -> dict[str, str]:
    rules = RulesConfig(job="typed-svc", namespace="prod", slo_target=0.999)
    dashboards = DashboardsConfig(job="typed-svc", uid_prefix="typed")
    return {
        **rule_files(rules),
        **dashboard_files(config=dashboards),
        **manifest_files(deploy=DeployConfig(namespace="prod"), rules=rules),
    }


def test_the_service() -> None:
    captured: Capture
    with capture(FastAPI(), service_name="typed-svc", tracing=True) as captured:
        response = captured.test_client().get("/stream", params={"prompt": "hi"})
        metrics: Metrics = captured.metrics()
        count: float | None = metrics.value("http_requests_total", route="/stream")
        spans = [span.name for span in captured.spans()]
        events = captured.logs("http_request", status=response.status_code)
        assert count is not None
        assert spans
        assert events
