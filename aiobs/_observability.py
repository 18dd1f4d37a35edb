"""The :class:`Observability` object: every component of one process, built from settings."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO, TypeVar

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import REGISTRY, CollectorRegistry

from aiobs import catalog
from aiobs._inference import InferenceRecord, InferenceTelemetry, track
from aiobs._settings import ConfigError, Settings
from aiobs.http.health import Readiness, ReadinessCheck
from aiobs.logs import pipeline
from aiobs.logs.sink import LogSink
from aiobs.metrics.cardinality import LabelGuard
from aiobs.metrics.gpu import open_gpu_collector
from aiobs.metrics.instruments import Instruments, serve_metrics
from aiobs.metrics.multiprocess import check_multiprocess_dir, compact_dead_workers
from aiobs.metrics.workers import check_workers, server_workers
from aiobs.tracing.provider import build_propagator, build_tracer_provider

_log = logging.getLogger("aiobs")
F = TypeVar("F", bound=Callable[..., Any])


class Observability:
    """Metrics, traces, logs and health of one process.

    Build it with :func:`aiobs.setup` or :func:`aiobs.instrument`; tests may construct it
    directly with their own registry, span exporter and log stream, and call :meth:`install`
    only if they want the process-wide parts (logging routes, the global tracer provider).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        span_exporter: SpanExporter | None = None,
        log_stream: TextIO | None = None,
        environ: Any = None,
        nvml: Any = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self._settings = settings
        check_multiprocess_dir(
            settings.multiprocess_dir, os.environ if environ is None else environ
        )
        check_workers(server_workers(), settings.multiprocess_dir)
        if settings.multiprocess_dir:
            # uvicorn --workers has no hooks: each worker folds in what dead ones left.
            try:
                compact_dead_workers(settings.multiprocess_dir)
            except TimeoutError:
                _log.warning("another process is compacting the metrics directory; skipped")
        self._instruments = Instruments(
            registry if registry is not None else REGISTRY, settings.multiprocess_dir
        )
        # The tracer provider aiobs built and owns (exporter, flush, shutdown), or None when
        # it joins the service's own (``tracer_provider``): one export pipeline per process.
        self._own_provider: TracerProvider | None = None
        self._tracer_provider: trace.TracerProvider | None = tracer_provider
        self._tracer: trace.Tracer | None = None
        if settings.tracing and tracer_provider is None:
            self._own_provider = build_tracer_provider(settings, self._instruments, span_exporter)
            self._tracer_provider = self._own_provider
        if settings.tracing and self._tracer_provider is not None:
            self._tracer = self._tracer_provider.get_tracer("aiobs")
        # Joining a set-up means keeping its propagator too.
        self._propagator = (
            propagate.get_global_textmap() if tracer_provider else build_propagator(settings)
        )
        # Read at scrape time by whichever process serves /metrics: once per scrape.
        self._gpu_collector = open_gpu_collector(nvml) if settings.gpu_metrics else None
        if self._gpu_collector is not None and not settings.multiprocess_dir:
            self._instruments.registry.register(self._gpu_collector)
        self._log_sink = LogSink(
            settings.log_queue_size, self._instruments.log_lines_dropped.inc, log_stream
        )
        self._access_log = pipeline.access_log(settings, self._log_sink)
        self._readiness = Readiness(settings.readiness_timeout, self._set_ready)
        folded = self._instruments.get(catalog.LABEL_VALUES_FOLDED)
        self._label_guard = LabelGuard(
            settings.max_label_values, lambda metric, label: folded.labels(metric, label).inc()
        )
        self._inference = InferenceTelemetry(
            self._instruments,
            self._tracer,
            self._label_guard,
            follows_parent=settings.sampler.startswith("parentbased"),
            exemplars=settings.exemplars and not settings.multiprocess_dir,
        )
        self._instruments.service_ready.set(1)
        self._undo_logging: Any = None
        self._shutdown_lock = threading.Lock()
        self._shut_down = False
        self._metrics_server: Any = None
        self._loaded_models: set[tuple[str, str, str, str]] = set()

    # --- process-wide set-up -----------------------------------------------------------
    def install(self) -> Observability:
        """Route logging through aiobs (unless ``configure_logging`` is off), make aiobs's
        tracer provider and propagator the global ones when it owns them, flush at exit.
        The only method that touches process globals."""
        if self._settings.configure_logging:
            self._undo_logging = pipeline.configure(self._settings, self._log_sink)
        # The API allows one global provider per process; an existing one is kept.
        global_provider = trace.get_tracer_provider()
        if self._own_provider is not None and isinstance(
            global_provider, trace.ProxyTracerProvider
        ):
            propagate.set_global_textmap(self._propagator)
            trace.set_tracer_provider(self._own_provider)
        if self._settings.metrics_port:
            self.start_metrics_server()
        atexit.register(self._at_exit)
        return self

    def uninstall(self) -> None:
        """Undo :meth:`install`'s logging changes (the OpenTelemetry API allows one global
        tracer provider per process, so that one stays)."""
        atexit.unregister(self._at_exit)
        if self._undo_logging is not None:
            self._undo_logging()
            self._undo_logging = None

    def exposition_registry(self) -> CollectorRegistry:
        """What ``/metrics`` renders: this process's registry, or in multiprocess mode every
        worker's files merged, plus the GPU readings."""
        registry = self._instruments.exposition_registry()
        if self._gpu_collector is not None and self._settings.multiprocess_dir:
            registry.register(self._gpu_collector)
        return registry

    def start_metrics_server(self) -> None:
        """Serve ``/metrics`` on its own port (``AIOBS_METRICS_PORT``) from a thread; in
        multiprocess mode every worker shares the port and serves the merged view."""
        try:
            self._metrics_server = serve_metrics(
                self._settings.metrics_port,
                self._settings.metrics_addr,
                self.exposition_registry(),
                shared=bool(self._settings.multiprocess_dir),
            )
        except OSError as error:
            raise ConfigError(
                f"AIOBS_METRICS_PORT={self._settings.metrics_port}: cannot listen on "
                f"{self._settings.metrics_addr} ({error.strerror})"
            ) from None

    # --- public API ----------------------------------------------------------------------
    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Make ``/health/ready`` (and ``ai_service_ready``) depend on ``check``."""
        self._readiness.add(name, check)
        self._instruments.service_ready.set(0)

    def inference(
        self,
        model: str,
        model_version: str = "unknown",
        batch_size: int | None = None,
        links: Sequence[trace.Link] | None = None,
    ) -> InferenceRecord:
        """Record one model call: ``with obs.inference("resnet50", "v1") as rec: ...``.

        Counts it, times it and its stages, counts errors by exception class (re-raised
        unchanged) and cancellations (``asyncio.CancelledError``, ``GeneratorExit`` and other
        non-``Exception`` exits, re-raised too), and opens a child span ``inference <model>``.
        A batch that serves several requests passes their span contexts as ``links``, so each
        request's trace finds it.
        """
        return self._inference.record(model, model_version, batch_size, links)

    def track_inference(
        self, model: str, model_version: str = "unknown", *, tokens: bool = False
    ) -> Callable[[F], F]:
        """Decorate a function: each call is one :meth:`inference`.

        Sync and async functions are timed per call; generator and async generator
        functions from the first item asked for until the last (a consumer that closes the
        stream early makes a cancelled inference). With ``tokens=True`` (generators only)
        each yielded item counts as one output token, the first marking time to first token.
        """
        return track(lambda: self._inference.record(model, model_version), tokens=tokens)

    def set_queue_depth(self, model: str, depth: int) -> None:
        """Requests of ``model`` waiting for a batch slot (``ai_inference_queue_depth``)."""
        self._inference.set_queue_depth(model, depth)

    def model_loaded(
        self,
        model: str,
        model_version: str,
        *,
        runtime: str,
        device: str,
        load_seconds: float | None = None,
    ) -> None:
        """Record that a model is loaded (``ai_model_info``, load time, cache size)."""
        guard = self._label_guard.bound
        model = guard(catalog.MODEL_INFO.name, catalog.MODEL, model)
        model_version = guard(catalog.MODEL_INFO.name, catalog.MODEL_VERSION, model_version)
        info = self._instruments.get(catalog.MODEL_INFO)
        info.labels(model, model_version, runtime, device).set(1)
        if load_seconds is not None:
            load = self._instruments.get(catalog.MODEL_LOAD_DURATION)
            load.labels(model, model_version).set(load_seconds)
        self._loaded_models.add((model, model_version, runtime, device))
        self._instruments.get(catalog.MODEL_CACHE_SIZE).set(len(self._loaded_models))

    def model_unloaded(self, model: str, model_version: str) -> None:
        """Record that a model left memory."""
        info = self._instruments.get(catalog.MODEL_INFO)
        for key in [k for k in self._loaded_models if k[:2] == (model, model_version)]:
            self._loaded_models.discard(key)
            info.remove(*key)
        self._instruments.get(catalog.MODEL_CACHE_SIZE).set(len(self._loaded_models))

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export queued spans and write queued log lines (blocking: not on the event loop)."""
        deadline = time.monotonic() + timeout
        spans = True
        if self._own_provider is not None:
            spans = self._own_provider.force_flush(int(timeout * 1000))
        return self._log_sink.flush(max(0.0, deadline - time.monotonic())) and spans

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop within ``timeout`` seconds (default ``AIOBS_SHUTDOWN_TIMEOUT``).

        Never blocks longer than the budget, whatever the collector does: the exporter's
        shutdown runs on a daemon thread that is abandoned when the budget is spent.
        Returns whether everything was flushed in time. Idempotent.
        """
        with self._shutdown_lock:
            if self._shut_down:
                return True
            self._shut_down = True
        budget = self._settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        finished = True
        if self._own_provider is not None:  # a joined provider is its owner's to shut down
            provider = self._own_provider
            worker = threading.Thread(
                target=lambda: provider.shutdown(), name="aiobs-shutdown", daemon=True
            )
            worker.start()
            worker.join(max(0.0, deadline - time.monotonic() - 0.05))
            finished = not worker.is_alive()
            if not finished:
                _log.warning("trace export did not finish within the shutdown budget")
        if self._metrics_server is not None:
            server, _thread = self._metrics_server
            server.shutdown()
            server.server_close()
        # The sink stays open, writing through: the server logs its last lines afterwards.
        return self._log_sink.finish(max(0.0, deadline - time.monotonic())) and finished

    def _at_exit(self) -> None:
        self.shutdown()
        self._log_sink.flush(1.0)

    @property
    def settings(self) -> Settings:
        """The resolved settings (frozen)."""
        return self._settings

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry aiobs's metrics are on (a service may add its own)."""
        return self._instruments.registry

    @property
    def tracer_provider(self) -> trace.TracerProvider | None:
        """The tracer provider aiobs's spans go through (its own, or the one it joined);
        None with tracing off."""
        return self._tracer_provider

    @property
    def tracer(self) -> trace.Tracer | None:
        """aiobs's tracer (for spans of the service's own); None with tracing off."""
        return self._tracer

    @property
    def installed(self) -> bool:
        """Whether :meth:`install` routed the process's logging through aiobs."""
        return self._undo_logging is not None

    @property
    def joined_tracing(self) -> bool:
        """Whether spans go through a tracer provider the service set up before aiobs."""
        return self._tracer_provider is not None and self._own_provider is None

    @property
    def is_shut_down(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._shut_down

    def _set_ready(self, ready: bool) -> None:
        self._instruments.service_ready.set(1 if ready else 0)
