"""How :func:`aiobs.instrument` attaches to a Starlette or FastAPI application.

The middleware goes outside the application's whole middleware stack, Starlette's
``ServerErrorMiddleware`` included, as OpenTelemetry's FastAPI instrumentation puts its own:
it then records the status the client actually got (the app's error handlers' answers, what
middleware added after :func:`aiobs.instrument` changed, the 500 for an unhandled exception)
and its span is current while those handlers run. An application that OpenTelemetry's
instrumentation already wraps gets the middleware inside that wrapping instead, so that its
span is the one server span of each request.

Imported by :func:`aiobs.instrument` only: the rest of aiobs runs without Starlette.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import trace
from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aiobs._observability import Observability
from aiobs.http.middleware import ObservabilityMiddleware


def attach(app: Starlette, obs: Observability) -> None:
    """Observe every request of ``app`` through ``obs``; before the app starts serving."""
    if app.middleware_stack is not None:
        raise RuntimeError(
            "aiobs.instrument(app) must run before the application serves (or starts) "
            "its first request: Starlette has built its middleware stack already"
        )
    _stand_aside_fastapi_telemetry(app)
    if obs.settings.json_errors and not {Exception, 500} & app.exception_handlers.keys():
        app.add_exception_handler(Exception, json_server_error)
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        # Its middleware wraps the whole stack and makes the server span: aiobs joins it.
        app.add_middleware(ObservabilityMiddleware, observability=obs)
        return
    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return StackTop(ObservabilityMiddleware(build_stack(), observability=obs))

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


class StackTop(ServerErrorMiddleware):
    """The top of the stack in the shape Starlette builds it, a ``ServerErrorMiddleware``:
    OpenTelemetry's FastAPI instrumentation, applied after aiobs, requires one there and
    rebuilds the stack around its ``app``. It only passes each request on: the application's
    own ``ServerErrorMiddleware``, inside, answers an unhandled exception (with the app's
    handler and debug setting), and the server answers whatever is raised outside it.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def json_server_error(request: Request, exc: Exception) -> Response:
    """The answer to an unhandled exception when the application has no handler of its own:
    JSON, no internals, and the trace id to find the request's trace and log lines by."""
    body: dict[str, str] = {"error": "internal_server_error", "detail": "Internal Server Error"}
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        body["trace_id"] = format(context.trace_id, "032x")
    return Response(
        json.dumps(body, separators=(",", ":")), 500, media_type="application/json"
    )


def _stand_aside_fastapi_telemetry(app: Any) -> None:
    """FastAPI 0.165+ makes its own server span as soon as a global SDK tracer provider
    exists; aiobs makes exactly one per request, so FastAPI's own telemetry is turned off
    for this app (its config dict is read per request)."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and {"tracing", "metrics", "logs"} <= config.keys():
        config.update(tracing=False, metrics=False, logs=False, auto_configure=False)
