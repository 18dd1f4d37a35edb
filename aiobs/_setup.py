"""The set-up functions: the only code that creates the process-wide Observability."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Link

from aiobs._inference import InferenceRecord, track
from aiobs._observability import Observability
from aiobs._settings import Settings, SettingsOptions

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from typing_extensions import Unpack

_lock = threading.Lock()
_current: Observability | None = None
F = TypeVar("F", bound=Callable[..., Any])


def setup(
    *,
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Unpack[SettingsOptions],
) -> Observability:
    """Set up metrics, traces and logs for this process, once; later calls return the same
    object. ``options`` are :class:`~aiobs.Settings` fields (``service_name=...``, see
    :class:`~aiobs.SettingsOptions`) and win over ``environ`` (default ``os.environ``) and the
    YAML file; ``settings``, a :class:`~aiobs.Settings` built by the caller, is used as it is
    (with ``options`` applied over it) and the environment is not read.

    A tracer provider already set globally (``opentelemetry-instrument``, the OpenTelemetry
    Operator's auto-instrumentation, Logfire, or the service's own SDK set-up) is joined:
    aiobs's spans go through it, with its exporter, sampler and propagator, and aiobs adds
    no export pipeline of its own.
    """
    global _current
    with _lock:
        if _current is None:
            if settings is None:
                resolved = Settings.load(options, environ)
            else:
                resolved = settings.replace(**options) if options else settings
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
    app: Starlette,
    *,
    observability: Observability | None = None,
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Unpack[SettingsOptions],
) -> Observability:
    """Give a FastAPI (or Starlette) app metrics, traces, JSON logs and health endpoints.

    Call it before the app serves its first request. Idempotent: instrumenting the same app
    again returns its Observability unchanged. The process's Observability comes from
    :func:`setup` (``settings``, ``environ`` and ``options`` as there), or pass
    ``observability`` to use one built elsewhere (tests inject registries this way).
    """
    existing = getattr(app.state, "aiobs", None)
    if isinstance(existing, Observability):
        return existing
    if observability is not None:
        obs = observability
    else:
        obs = setup(settings=settings, environ=environ, **options)
    if obs.settings.instrumentation == "opentelemetry" and obs.tracer_provider is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,  # type: ignore[arg-type]  # typed for FastAPI; its middleware fits Starlette
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
