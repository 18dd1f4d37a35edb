"""The demo service's FastAPI app, instrumented with one line.

This first version serves a stand-in model (it reports the mean of the numbers it gets);
the ONNX image classifier, dynamic batching and the load generator replace it next.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel, Field

import aiobs

app = FastAPI(title="aiobs demo service")
obs = aiobs.instrument(app, service_name=os.environ.get("OTEL_SERVICE_NAME", "aiobs-demo"))
log = aiobs.get_logger("demo_service")


class InferenceRequest(BaseModel):
    data: list[list[float]] = Field(min_length=1, max_length=32)


@app.get("/v1/models")
def models() -> dict[str, list[dict[str, str]]]:
    return {"models": [{"name": "mean", "version": "0"}]}


@app.post("/v1/inference")
def inference(request: InferenceRequest) -> dict[str, list[float]]:
    outputs = [sum(item) / len(item) if item else 0.0 for item in request.data]
    log.info("inference", items=len(outputs))
    return {"outputs": outputs}
