"""Shared fixtures: an Observability built on real components by ``aiobs.testing`` (a fresh
CollectorRegistry, the SDK's in-memory span exporter, the log lines) and an ASGI client."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from aiobs import Settings
from aiobs.testing import Capture


class Harness:
    """One capture (``aiobs.testing``) read by the names the suite's tests use."""

    def __init__(self, settings: Settings) -> None:
        self.capture = Capture(settings)
        self.obs = self.capture.observability
        self.registry = self.capture.registry

    def spans(self) -> list[ReadableSpan]:
        return self.capture.spans()

    def log_lines(self) -> list[dict[str, Any]]:
        return self.capture.logs()

    @property
    def stream(self) -> io.StringIO:
        """The log output as text."""
        return io.StringIO("".join(line + "\n" for line in self.capture.log_lines()))

    def sample(self, name: str, **labels: str) -> float | None:
        """One series, all of its labels given (``Capture.metrics().value`` sums instead)."""
        return self.registry.get_sample_value(name, labels)

    def close(self) -> None:
        self.capture.close()


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**settings: Any) -> Harness:
        settings.setdefault("service_name", "test-svc")
        harness = Harness(Settings.load(settings, environ={}))
        made.append(harness)
        return harness

    yield make
    for harness in reversed(made):
        harness.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_for(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    """An in-process client; with ``raise_app_exceptions=False`` an exception the app raised
    (after its 500 was sent) does not reach the caller, as with a real server."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")
