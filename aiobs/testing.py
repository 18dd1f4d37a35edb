"""Test an instrumented service without a collector: :func:`capture`.

>>> with aiobs.testing.capture(app, service_name="resnet50-svc") as cap:  # doctest: +SKIP
...     cap.test_client().get("/predict")
...     assert cap.span("GET /predict").status.is_ok
...     assert cap.metrics().value("http_requests_total", route="/predict") == 1

A capture is a real :class:`aiobs.Observability`, built as in production but writing into
memory: metrics into a fresh ``prometheus_client.CollectorRegistry``, spans through aiobs's
own span processor into the OpenTelemetry SDK's ``InMemorySpanExporter``, log lines as the
JSON text aiobs writes. While it is open it is the process's Observability (what
``aiobs.setup()``, ``aiobs.instrument(app)`` and ``aiobs.track_inference`` use), the global
tracer provider records into it (a module's ``trace.get_tracer(__name__)`` included) and the
process's logging goes through it; closing it puts all of that back as it was. One capture
may be open at a time.

The test clients need ``httpx`` (and Starlette): ``pip install 'aiobs[testing]'``.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.samples import Sample

from aiobs import _setup
from aiobs._observability import Observability
from aiobs._settings import Settings

if TYPE_CHECKING:
    import httpx
    from starlette.applications import Starlette
    from starlette.testclient import TestClient
    from typing_extensions import Unpack

    from aiobs._settings import SettingsOptions

    AppT = TypeVar("AppT", bound=Starlette)

__all__ = ["Capture", "Metrics", "capture"]

FLUSH_TIMEOUT = 5.0
"""Seconds a read waits for queued spans and log lines."""
SHUTDOWN_TIMEOUT = 2.0
"""Seconds :meth:`Capture.close` gives the Observability to shut down."""

# Loggers aiobs configures besides the root one (uvicorn's are routed into the root
# pipeline, the SDK's export loggers are quietened); restored on close even when they did
# not exist before the capture.
_TOUCHED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.asgi",
    "uvicorn.access",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)
_EXTRA = "pip install 'aiobs[testing]'"

_active_lock = threading.Lock()
_active: Capture | None = None


def capture(
    app: Starlette | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **settings: Unpack[SettingsOptions],
) -> Capture:
    """Open a :class:`Capture`: an Observability on in-memory outputs, installed for the
    process until :meth:`Capture.close` (or the end of a ``with`` block).

    ``settings`` are :class:`~aiobs.Settings` fields (``service_name="svc"``), resolved over
    ``environ``, which defaults to an empty environment: the test process's own
    ``AIOBS_*``/``OTEL_*`` variables do not leak in. ``app`` (FastAPI or Starlette, not yet
    serving) is instrumented with it; an app that instruments itself with
    ``aiobs.instrument(app)`` while the capture is open gets it too.
    """
    resolved = Settings.load(settings, environ={} if environ is None else environ)
    return Capture(resolved, app)


@dataclass(frozen=True)
class Metrics:
    """What ``/metrics`` served at one moment, parsed (OpenMetrics text, exemplars
    included). Names are sample names (``http_requests_total``,
    ``http_request_duration_seconds_bucket``); label values compare as strings."""

    text: str
    """The exposition as rendered."""
    families: tuple[Metric, ...]
    """The parsed metric families (``prometheus_client.metrics_core.Metric``)."""

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls(text, tuple(parse_openmetrics(text)))  # type: ignore[no-untyped-call]

    def samples(self, name: str, **labels: object) -> list[Sample]:
        """The samples named ``name`` whose labels include ``labels``; for a family name
        (``http_request_duration_seconds``), every sample of that family."""
        found = [sample for sample in self._all() if sample.name == name]
        if not found:
            found = [s for family in self.families if family.name == name for s in family.samples]
        wanted = {key: str(value) for key, value in labels.items()}
        return [s for s in found if all(s.labels.get(k) == v for k, v in wanted.items())]

    def value(self, name: str, **labels: object) -> float | None:
        """The sum of the samples named ``name`` whose labels include ``labels`` (as PromQL's
        ``sum(name{labels})``): one series when every label is given. ``None`` when no
        sample matches."""
        wanted = {key: str(value) for key, value in labels.items()}
        values = [
            sample.value
            for sample in self._all()
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items())
        ]
        return sum(values) if values else None

    def names(self) -> set[str]:
        """Every sample name and family name exposed."""
        return {sample.name for sample in self._all()} | {f.name for f in self.families}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def _all(self) -> Iterator[Sample]:
        for family in self.families:
            yield from family.samples


class _LogBuffer(io.StringIO):
    """The stream aiobs's log writer thread writes lines into."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return super().write(text)

    def text(self) -> str:
        with self._lock:
            return self.getvalue()

    def clear(self) -> None:
        with self._lock:
            self.seek(0)
            self.truncate()


class Capture:
    """One :class:`aiobs.Observability` writing into memory, installed until :meth:`close`.

    Build it with :func:`capture`; usable as a context manager or as a plain object.
    """

    def __init__(self, settings: Settings, app: Starlette | None = None) -> None:
        global _active
        if app is not None:
            _check_not_instrumented(app)
        saved = _GlobalState.save()
        with _active_lock:
            if _active is not None:
                raise RuntimeError(
                    "another capture is open (aiobs.testing): close it first "
                    "(one capture at a time per process)"
                )
            _active = self
        self._settings = settings
        self._target: Any = None
        self._registry = CollectorRegistry()
        self._exporter = InMemorySpanExporter()
        self._log_buffer = _LogBuffer()
        self._closed = False
        self._saved = saved
        try:
            self._observability = Observability(
                settings,
                registry=self._registry,
                span_exporter=self._exporter,
                log_stream=self._log_buffer,
                environ={},
            )
            self._observability.install()
            self._make_global()
            if app is not None:
                self.instrument(app)
        except BaseException:
            try:
                if hasattr(self, "_observability"):
                    self._observability.uninstall()
                    self._observability.shutdown(timeout=SHUTDOWN_TIMEOUT)
            finally:
                self._release()
            raise

    @property
    def settings(self) -> Settings:
        """The capture's settings."""
        return self._settings

    @property
    def observability(self) -> Observability:
        """The capture's :class:`aiobs.Observability` (the process's while it is open)."""
        return self._observability

    @property
    def registry(self) -> CollectorRegistry:
        """The registry the capture's metrics are registered on."""
        return self._registry

    @property
    def exporter(self) -> InMemorySpanExporter:
        """Where exported spans land (read them with :meth:`spans`)."""
        return self._exporter

    @property
    def app(self) -> Any:
        """The app the clients call (None until one is given)."""
        return self._target

    # --- set-up ---------------------------------------------------------------------------
    def instrument(self, app: AppT) -> AppT:
        """Instrument ``app`` (FastAPI or Starlette, not yet serving) with this capture's
        Observability and make it the app the clients call; returns ``app``."""
        self._check_open()
        _check_not_instrumented(app, self._observability)
        _setup.instrument(app, observability=self._observability)
        self._target = app
        return app

    def _make_global(self) -> None:
        obs = self._observability
        if obs.tracer_provider is not None:
            _GlobalState.set_tracer_provider(_FOLLOWING_PROVIDER, done=True)
            propagate.set_global_textmap(obs._propagator)
        with _setup._lock:
            _setup._current = obs

    # --- reading --------------------------------------------------------------------------
    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """The finished spans exported so far, oldest first (those named ``name`` only)."""
        self._flush_spans()
        spans = list(self._exporter.get_finished_spans())
        return spans if name is None else [span for span in spans if span.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span named ``name``; ``AssertionError`` (listing the names
        seen) when there is none or more than one."""
        spans = self.spans()
        found = [span for span in spans if span.name == name]
        if len(found) != 1:
            seen = sorted({span.name for span in spans})
            raise AssertionError(
                f"expected one span named {name!r}, found {len(found)}; spans seen: {seen}"
            )
        return found[0]

    def metrics(self) -> Metrics:
        """What ``/metrics`` serves now (the OpenMetrics rendering), parsed."""
        registry = self._observability.exposition_registry()
        text = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
        return Metrics.parse(text.decode("utf-8"))

    def log_lines(self) -> list[str]:
        """Every log line written so far, as text (JSON objects unless
        ``log_format="console"``)."""
        self._observability._log_sink.flush(FLUSH_TIMEOUT)
        return self._log_buffer.text().splitlines()

    def logs(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """The JSON log lines written so far as dicts, oldest first: those whose ``event``
        is ``event`` and whose fields equal ``fields`` (``logs("http_request", status=500)``).
        Lines that are not JSON objects are left out (see :meth:`log_lines`)."""
        events: list[dict[str, Any]] = []
        for line in self.log_lines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if not isinstance(parsed, dict):
                continue
            if event is not None and parsed.get("event") != event:
                continue
            if all(key in parsed and parsed[key] == value for key, value in fields.items()):
                events.append(parsed)
        return events

    def clear(self) -> None:
        """Forget the spans and log lines captured so far. Metrics keep their values
        (Prometheus counters only go up): compare before and after instead."""
        self._flush_spans()
        self._observability._log_sink.flush(FLUSH_TIMEOUT)
        self._exporter.clear()
        self._log_buffer.clear()

    # --- clients --------------------------------------------------------------------------
    def client(
        self, *, base_url: str = "http://test", raise_app_exceptions: bool = True, **kwargs: Any
    ) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` calling the captured app in process (no lifespan: run
        ``app.router.lifespan_context(app)`` yourself if the app needs it). With
        ``raise_app_exceptions=False`` an exception the app raised after its 500 was sent
        stays in the app, as with a real server."""
        try:
            import httpx
        except ImportError:
            raise ImportError(f"Capture.client() needs httpx: {_EXTRA}") from None
        transport = httpx.ASGITransport(
            app=self._app(), raise_app_exceptions=raise_app_exceptions
        )
        return httpx.AsyncClient(transport=transport, base_url=base_url, **kwargs)

    def test_client(self, *, raise_server_exceptions: bool = True, **kwargs: Any) -> TestClient:
        """A ``starlette.testclient.TestClient`` on the captured app (synchronous; runs the
        app's lifespan when used as a context manager)."""
        try:
            from starlette.testclient import TestClient
        except ImportError:  # Starlette's test client imports httpx
            needs = "Capture.test_client() needs Starlette and httpx"
            raise ImportError(f"{needs}: {_EXTRA}") from None
        return TestClient(
            self._app(), raise_server_exceptions=raise_server_exceptions, **kwargs
        )

    def _app(self) -> Any:
        if self._target is None:
            raise RuntimeError(
                "no app captured: pass it to aiobs.testing.capture(app) or Capture.instrument(app)"
            )
        return self._target

    # --- closing --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Shut the Observability down (what it had queued stays readable) and put back the
        process state the capture changed. Idempotent."""
        if self._closed:
            return
        try:
            self._flush_spans()
            self._observability.uninstall()
            self._observability.shutdown(timeout=SHUTDOWN_TIMEOUT)
            self._observability._log_sink.flush(FLUSH_TIMEOUT)
        finally:
            self._release()

    def _release(self) -> None:
        global _active
        self._closed = True
        self._saved.restore()
        with _active_lock:
            if _active is self:
                _active = None

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _flush_spans(self) -> None:
        provider = self._observability.tracer_provider
        if not self._closed and isinstance(provider, TracerProvider):
            provider.force_flush(int(FLUSH_TIMEOUT * 1000))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this capture is closed")


def _open_provider() -> trace.TracerProvider | None:
    """The tracer provider of the capture open now, if any."""
    capture = _active
    if capture is None or capture.closed:
        return None
    return capture.observability.tracer_provider


class _FollowingTracer(trace.ProxyTracer):
    """A tracer that starts each span with the provider of the capture open at that moment
    (with none open, the global provider of the moment, like the API's proxy): a tracer a
    module took once with ``trace.get_tracer(__name__)`` records into every capture."""

    _bound: tuple[trace.TracerProvider, trace.Tracer] | None = None

    @property
    def _tracer(self) -> trace.Tracer:
        provider = _open_provider()
        if provider is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, (_FollowingTracerProvider, trace.ProxyTracerProvider)):
                return self._noop_tracer
        bound = self._bound
        if bound is None or bound[0] is not provider:
            tracer = provider.get_tracer(
                self._instrumenting_module_name,
                self._instrumenting_library_version,
                self._schema_url,
                self._attributes,
            )
            bound = self._bound = (provider, tracer)
        return bound[1]


class _FollowingTracerProvider(TracerProvider):
    """The global tracer provider while a capture is open, the same object for every
    capture (the SDK's class, for code that checks for it): its tracers follow whichever
    capture is open, its other methods go to that capture's provider. Shutting it down is
    the capture's business (:meth:`Capture.close`)."""

    def __init__(self) -> None:
        super().__init__(shutdown_on_exit=False)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _FollowingTracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )

    @property
    def resource(self) -> Resource:
        provider = _open_provider()
        return provider.resource if isinstance(provider, TracerProvider) else super().resource

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        provider = _open_provider()
        if isinstance(provider, TracerProvider):
            provider.add_span_processor(span_processor)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        provider = _open_provider()
        return not isinstance(provider, TracerProvider) or provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        pass


_FOLLOWING_PROVIDER = _FollowingTracerProvider()


def _check_not_instrumented(app: Any, allowed: Observability | None = None) -> None:
    state = getattr(app, "state", None)
    existing = getattr(state, "aiobs", None)
    if isinstance(existing, Observability) and existing is not allowed:
        raise RuntimeError(
            "the app is instrumented already (aiobs.instrument ran on it before the capture): "
            "build the app inside the capture, or hand capture() an app not yet instrumented"
        )


@dataclass
class _LoggerState:
    handlers: list[logging.Handler]
    level: int
    propagate: bool
    disabled: bool

    @classmethod
    def of(cls, logger: logging.Logger) -> _LoggerState:
        return cls(logger.handlers[:], logger.level, logger.propagate, logger.disabled)

    def apply(self, logger: logging.Logger) -> None:
        logger.handlers = self.handlers[:]
        logger.setLevel(self.level)
        logger.propagate = self.propagate
        logger.disabled = self.disabled


@dataclass
class _GlobalState:
    """The process-wide state an installed Observability changes, saved to be put back."""

    tracer_provider: trace.TracerProvider | None
    tracer_provider_set: bool
    textmap: TextMapPropagator
    loggers: dict[str, _LoggerState]
    structlog_configured: bool
    structlog_config: dict[str, Any]
    current: Observability | None

    @classmethod
    def save(cls) -> _GlobalState:
        for name in _TOUCHED_LOGGERS:
            logging.getLogger(name)  # created now, so that its default state is saved
        config = structlog.get_config()
        config["processors"] = list(config["processors"])
        with _setup._lock:
            current = _setup._current
        return cls(
            tracer_provider=getattr(trace, "_TRACER_PROVIDER", None),
            tracer_provider_set=bool(trace._TRACER_PROVIDER_SET_ONCE._done),
            textmap=propagate.get_global_textmap(),
            loggers={name: _LoggerState.of(logger) for name, logger in _loggers()},
            structlog_configured=structlog.is_configured(),
            structlog_config=config,
            current=current,
        )

    def restore(self) -> None:
        with _setup._lock:
            _setup._current = self.current
        if self.structlog_configured:
            structlog.configure(**self.structlog_config)
        else:
            structlog.reset_defaults()
        for name, logger in _loggers():
            state = self.loggers.get(name)
            if state is not None:
                state.apply(logger)
        propagate.set_global_textmap(self.textmap)
        self.set_tracer_provider(self.tracer_provider, done=self.tracer_provider_set)

    @staticmethod
    def set_tracer_provider(provider: trace.TracerProvider | None, *, done: bool) -> None:
        # The API lets a provider be set once per process; a capture sets its own and puts
        # the previous one (or none) back, so it reaches past that guard.
        trace._TRACER_PROVIDER = provider
        trace._TRACER_PROVIDER_SET_ONCE._done = done


def _loggers() -> Iterable[tuple[str, logging.Logger]]:
    yield "", logging.getLogger()
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            yield name, logger
