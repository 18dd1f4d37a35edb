"""Shared fixtures: an Observability built on real components (a fresh CollectorRegistry,
the SDK's in-memory span exporter, a log stream) and an ASGI client for an app."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from aiobs import Observability, Settings


class Harness:
    """One Observability with handles on everything it writes."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.exporter = InMemorySpanExporter()
        self.stream = io.StringIO()
        self.obs = Observability(
            settings,
            registry=self.registry,
            span_exporter=self.exporter,
            log_stream=self.stream,
            environ={},
        )

    def spans(self) -> list[ReadableSpan]:
        self.obs.force_flush()
        return list(self.exporter.get_finished_spans())

    def log_lines(self) -> list[dict[str, Any]]:
        self.obs._log_sink.flush(5)
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**settings: Any) -> Harness:
        settings.setdefault("service_name", "test-svc")
        harness = Harness(Settings.load(settings, environ={}))
        harness.obs.install()
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.obs.uninstall()
        harness.obs.shutdown(timeout=2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_for(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    """An in-process client; with ``raise_app_exceptions=False`` an exception the app raised
    (after its 500 was sent) does not reach the caller, as with a real server."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")
