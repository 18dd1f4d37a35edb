"""The endpoints the middleware answers itself: ``/metrics`` and the health checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiobs._observability import Observability
from aiobs.metrics.instruments import render, wants_openmetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_PATH = "/metrics"
HEALTH_PATH = "/health"
LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"


class Endpoints:
    """``/metrics`` (unless it has its own port) and ``/health``, ``/health/live``,
    ``/health/ready``: no spans, not counted."""

    def __init__(self, observability: Observability) -> None:
        self._obs = observability
        self._exposition_lock = asyncio.Lock()

    def by_path(self) -> dict[str, Endpoint]:
        paths: dict[str, Endpoint] = {
            HEALTH_PATH: self._health,
            LIVE_PATH: self._live,
            READY_PATH: self._ready,
        }
        if not self._obs.settings.metrics_port:
            paths[METRICS_PATH] = self._metrics
        return paths

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Never waits on a readiness check: ai_service_ready is what the last evaluation
        # found, and this scrape starts a fresh one in the background for the next.
        self._obs._readiness.refresh()
        accept = _header(scope, b"accept")
        registry = self._obs.exposition_registry()
        openmetrics = wants_openmetrics(accept) and self._obs.settings.exemplars
        # Exposition is synchronous and grows with the series count: run it on a thread,
        # one at a time, so neither the event loop nor a scrape storm stalls requests.
        async with self._exposition_lock:
            payload, content_type = await asyncio.to_thread(render, registry, openmetrics)
        await _send_bytes(send, 200, payload, content_type)

    async def _live(self, scope: Scope, receive: Receive, send: Send) -> None:
        alive = not self._obs.is_shut_down
        await send_json(send, 200 if alive else 503, {"status": "pass" if alive else "fail"})

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        ready, checks = await self._readiness()
        body = {"status": "pass" if ready else "fail", "checks": checks}
        await send_json(send, 200 if ready else 503, body)

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        ready, checks = await self._readiness()
        body = {
            "status": "pass" if ready else "fail",
            "service": self._obs.settings.service_name,
            "live": not self._obs.is_shut_down,
            "ready": ready,
            "checks": checks,
        }
        await send_json(send, 200 if ready else 503, body)

    async def _readiness(self) -> tuple[bool, dict[str, Any]]:
        results = await self._obs._readiness.evaluate()
        ready = not self._obs.is_shut_down and all(result.ok for result in results)
        return ready, {result.name: result.as_json() for result in results}


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await _send_bytes(send, status, payload, "application/json")


async def _send_bytes(send: Send, status: int, payload: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(payload)).encode("latin-1")),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
