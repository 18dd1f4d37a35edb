"""A service that runs an inference per request, for the tests that start it under
``opentelemetry-instrument`` (auto-instrumentation) or after its own SDK set-up."""

from __future__ import annotations

import os

from fastapi import FastAPI

import aiobs

if os.environ.get("JOINED_APP_OWN_SDK"):
    # The service's own OpenTelemetry set-up, made before aiobs's.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource({"service.name": "own-sdk-svc"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ["JOINED_APP_ENDPOINT"]))
    )
    trace.set_tracer_provider(provider)

app = FastAPI()
obs = aiobs.instrument(app, service_name="joined-svc")


@app.get("/v1/models/{name}")
async def predict(name: str) -> dict[str, str]:
    with aiobs.inference(name, "v1"):
        aiobs.get_logger("joined_app").info("predicted", model=name)
    return {"model": name}
