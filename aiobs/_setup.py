"""The set-up functions: the only code that creates the process-wide Observability."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Link

from aiobs._inference import InferenceRecord, track
from aiobs._observability import Observability
from aiobs._settings import Settings

_lock = threading.Lock()
_current: Observability | None = None
F = TypeVar("F", bound=Callable[..., Any])


def setup(*, environ: Mapping[str, str] | None = None, **settings: Any) -> Observability:
    """Set up metrics, traces and logs for this process, once; later calls return the same
    object. ``settings`` are :class:`~aiobs.Settings` fields (``service_name=...``) and win
    over the environment and the YAML file.

    A tracer provider already set globally (``opentelemetry-instrument``, the OpenTelemetry
    Operator's auto-instrumentation, Logfire, or the service's own SDK set-up) is joined:
    aiobs's spans go through it, with its exporter, sampler and propagator, and aiobs adds
    no export pipeline of its own.
    """
    global _current
    with _lock:
        if _current is None:
            resolved = Settings.load(settings, environ)
            provider = trace.get_tracer_provider()
            existing = None if isinstance(provider, trace.ProxyTracerProvider) else provider
            _current = Observability(
                resolved, environ=environ, tracer_provider=existing
            ).install()
        return _current


def current() -> Observability:
    """This process's Observability, set up from the environment on first use."""
    return _current if _current is not None else setup()


def inference(
    model: str,
    model_version: str = "unknown",
    batch_size: int | None = None,
    links: Sequence[Link] | None = None,
) -> InferenceRecord:
    """Record one model call with the process's Observability (see
    :meth:`Observability.inference`)."""
    return current().inference(model, model_version, batch_size, links)


def track_inference(
    model: str, model_version: str = "unknown", *, tokens: bool = False
) -> Callable[[F], F]:
    """Decorate a function so that each call is one :func:`inference` (see
    :meth:`Observability.track_inference`: generators, ``tokens=True``)."""
    return track(lambda: current().inference(model, model_version), tokens=tokens)


def instrument(
    app: Any,
    *,
    observability: Observability | None = None,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> Observability:
    """Give a FastAPI (or Starlette) app metrics, traces, JSON logs and health endpoints.

    Call it before the app serves its first request. Idempotent: instrumenting the same app
    again returns its Observability unchanged. Pass ``observability`` to use one built
    elsewhere (tests inject registries this way).
    """
    existing = getattr(app.state, "aiobs", None)
    if isinstance(existing, Observability):
        return existing
    obs = observability if observability is not None else setup(environ=environ, **settings)
    if obs.settings.instrumentation == "opentelemetry" and obs.tracer_provider is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=obs.tracer_provider,
            excluded_urls="/metrics$,/health$,/health/live$,/health/ready$",
            exclude_spans=["send", "receive"],
        )
    # Starlette is needed here only: setup() serves processes without it.
    from aiobs.http.starlette import attach

    attach(app, obs)
    app.state.aiobs = obs
    global _current
    with _lock:
        if _current is None:
            _current = obs
    return obs
