"""The service the end-to-end tests run under uvicorn: FastAPI plus ``aiobs.instrument``,
settings from the environment."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request

import aiobs
from tests.support import BOOM_MESSAGE

app = FastAPI()
obs = aiobs.instrument(app, service_name="e2e-svc")
log = aiobs.get_logger("sample_app")



@app.get("/v1/models/{name}")
async def model(name: str) -> dict[str, str]:
    log.info("model_requested", model=name)
    return {"model": name, "status": "ready"}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError(BOOM_MESSAGE)


@app.post("/echo")
async def echo(request: Request) -> dict[str, int]:
    """Logs every request header (secrets must come out redacted) and the body: parsed when
    it is JSON, else as text."""
    body = (await request.body()).decode("utf-8", errors="replace")
    if request.headers.get("content-type") == "application/json":
        log.info("echo", headers=dict(request.headers), payload=json.loads(body))
    else:
        log.info("echo", headers=dict(request.headers), body=body)
    return {"length": len(body)}
