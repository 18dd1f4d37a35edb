"""``python -m tests.support.sentry_check``: what Sentry's SDK captures from one app, bare and
then instrumented (Sentry patches Starlette process-wide, so this runs in its own process).
Prints one JSON object: per variant, the status of a raising request and the events Sentry
would have sent (exception type, log message)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import httpx
import sentry_sdk
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

import aiobs
from aiobs import Observability, Settings

events: list[dict[str, Any]] = []


class CapturingTransport(Transport):
    """Keeps the events instead of sending them anywhere."""

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type == "event" and item.payload.json is not None:
                events.append(item.payload.json)


def build(instrumented: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("sentry-canary")

    @app.get("/logged")
    async def logged() -> dict[str, str]:
        logging.getLogger("service").error("payment provider down")
        return {}

    if instrumented:
        settings = Settings.load({"service_name": "sentry-check"}, environ={})
        obs = Observability(
            settings, registry=CollectorRegistry(), log_stream=io.StringIO(), environ={}
        ).install()
        aiobs.instrument(app, observability=obs)
    return app


async def variant(instrumented: bool) -> dict[str, Any]:
    events.clear()
    sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=CapturingTransport)
    transport = httpx.ASGITransport(app=build(instrumented), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        status = (await client.get("/boom")).status_code
        await client.get("/logged")
    sentry_sdk.flush()
    captured = [
        {
            "exception": [
                value.get("type") for value in event.get("exception", {}).get("values", [])
            ],
            "message": event.get("logentry", {}).get("message"),
        }
        for event in events
    ]
    return {"status": status, "events": captured}


async def main() -> None:
    print(json.dumps({"bare": await variant(False), "instrumented": await variant(True)}))


if __name__ == "__main__":
    asyncio.run(main())
