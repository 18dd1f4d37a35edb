"""Readiness checks: small callables, sync or async, each run under a timeout."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

ReadinessCheck = Callable[[], bool | Awaitable[bool]]
"""Returns (or resolves to) ``True`` when ready; ``False`` or an exception means not ready."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    duration_seconds: float
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": "pass" if self.ok else "fail",
            "duration_ms": round(self.duration_seconds * 1000, 3),
        }
        if self.error:
            data["error"] = self.error
        return data


class Readiness:
    """The registered checks; :meth:`evaluate` runs them concurrently."""

    def __init__(self, timeout: float, on_result: Callable[[bool], None]) -> None:
        self._timeout = timeout
        self._on_result = on_result
        self._checks: dict[str, ReadinessCheck] = {}

    def add(self, name: str, check: ReadinessCheck) -> None:
        if not callable(check):
            raise TypeError(f"readiness check {name!r} must be callable")
        self._checks[name] = check

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    async def evaluate(self) -> list[CheckResult]:
        results = list(await asyncio.gather(*(self._run(n, c) for n, c in self._checks.items())))
        self._on_result(all(result.ok for result in results))
        return results

    async def _run(self, name: str, check: ReadinessCheck) -> CheckResult:
        started = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(check):
                outcome = await asyncio.wait_for(check(), self._timeout)
            else:
                # A sync check may block (a socket, a lock): keep it off the event loop.
                outcome = await asyncio.wait_for(asyncio.to_thread(check), self._timeout)
                if inspect.isawaitable(outcome):
                    outcome = await asyncio.wait_for(outcome, self._timeout)
        except asyncio.TimeoutError:
            return CheckResult(name, False, time.perf_counter() - started, "timeout")
        except Exception as error:  # noqa: BLE001 - a failing check means "not ready"
            return CheckResult(name, False, time.perf_counter() - started, type(error).__name__)
        return CheckResult(name, bool(outcome), time.perf_counter() - started)
