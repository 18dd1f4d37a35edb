"""Readiness checks: small callables, sync or async, each run under a timeout.

A check is never evaluated twice at once. Probes that arrive while it runs share that
evaluation until its timeout; after that they are answered ``"timeout"`` at once, without
starting another, until it returns. A sync check runs on a daemon thread of its own, never on
the event loop's default executor (the shutdown flush and ``/metrics`` need that one), so a
check that hangs holds one thread however many probes come. An async check is cancelled at
its timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

ReadinessCheck = Callable[[], bool | Awaitable[bool]]
"""Returns (or resolves to) ``True`` when ready; ``False`` or an exception means not ready."""

TIMEOUT = "timeout"


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


@dataclass
class _Evaluation:
    """One run of one check: its result once it returns, and when it started."""

    name: str
    started: float
    result: concurrent.futures.Future[CheckResult]
    loop: asyncio.AbstractEventLoop
    task: asyncio.Task[None] | None = None
    """An async check's task (the loop keeps only a weak reference to it)."""

    def finish(self, ok: bool, error: str | None = None) -> None:
        if not self.result.done():
            elapsed = time.perf_counter() - self.started
            self.result.set_result(CheckResult(self.name, ok, elapsed, error))

    def in_progress(self) -> bool:
        # An evaluation whose loop is gone can never finish: it no longer counts.
        return not self.result.done() and not self.loop.is_closed()


class Readiness:
    """The registered checks; :meth:`evaluate` runs them concurrently."""

    def __init__(self, timeout: float, on_result: Callable[[bool], None]) -> None:
        self._timeout = timeout
        self._on_result = on_result
        self._checks: dict[str, ReadinessCheck] = {}
        self._running: dict[str, _Evaluation] = {}
        self._refresh: asyncio.Task[list[CheckResult]] | None = None

    def add(self, name: str, check: ReadinessCheck) -> None:
        if not callable(check):
            raise TypeError(f"readiness check {name!r} must be callable")
        self._checks[name] = check
        self._running.pop(name, None)

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)
        self._running.pop(name, None)

    async def evaluate(self) -> list[CheckResult]:
        """Every check's result (sharing evaluations under way); reports the outcome to
        ``on_result`` (``ai_service_ready``)."""
        checks = list(self._checks.items())
        results = list(await asyncio.gather(*(self._result(n, c) for n, c in checks)))
        self._on_result(all(result.ok for result in results))
        return results

    def refresh(self) -> None:
        """Start :meth:`evaluate` in the background unless one is under way, and return at
        once: ``/metrics`` calls it, so ``ai_service_ready`` follows the checks between
        probes (a scrape shows the outcome of an earlier refresh, never waits for one)."""
        refresh = self._refresh
        if refresh is None or refresh.done() or refresh.get_loop().is_closed():
            self._refresh = asyncio.get_running_loop().create_task(self.evaluate())

    async def _result(self, name: str, check: ReadinessCheck) -> CheckResult:
        evaluation = self._running.get(name)
        if evaluation is None or not evaluation.in_progress():
            evaluation = self._running[name] = self._start(name, check)
        remaining = evaluation.started + self._timeout - time.perf_counter()
        if remaining > 0:
            waiter = asyncio.wrap_future(evaluation.result)
            await asyncio.wait({waiter}, timeout=remaining)
            waiter.cancel()  # stops waiting only: the evaluation is marked running
        if evaluation.result.done():
            return evaluation.result.result()
        return CheckResult(name, False, time.perf_counter() - evaluation.started, TIMEOUT)

    def _start(self, name: str, check: ReadinessCheck) -> _Evaluation:
        result: concurrent.futures.Future[CheckResult] = concurrent.futures.Future()
        result.set_running_or_notify_cancel()
        loop = asyncio.get_running_loop()
        evaluation = _Evaluation(name, time.perf_counter(), result, loop)
        if inspect.iscoroutinefunction(check):
            evaluation.task = loop.create_task(_run_async(check, evaluation, self._timeout))
        else:
            # A sync check may block (a socket, a lock): keep it off the event loop.
            thread = threading.Thread(
                target=_run_sync,
                args=(check, evaluation, self._timeout),
                name=f"aiobs-readiness-{name}",
                daemon=True,
            )
            thread.start()
        return evaluation


async def _run_async(check: Callable[[], Any], evaluation: _Evaluation, timeout: float) -> None:
    try:
        outcome = await asyncio.wait_for(_awaited(check()), timeout)
    except asyncio.TimeoutError:
        evaluation.finish(False, TIMEOUT)
    except Exception as error:  # noqa: BLE001 - a failing check means "not ready"
        evaluation.finish(False, type(error).__name__)
    else:
        evaluation.finish(bool(outcome))
    finally:
        evaluation.finish(False, "cancelled")  # a no-op unless the task was cancelled


def _run_sync(check: ReadinessCheck, evaluation: _Evaluation, timeout: float) -> None:
    """The body of a sync check's thread; an awaitable it returns is handed to the loop,
    which finishes the evaluation within what is left of the timeout."""
    try:
        outcome = check()
        if inspect.isawaitable(outcome):
            remaining = evaluation.started + timeout - time.perf_counter()
            asyncio.run_coroutine_threadsafe(
                _run_async(lambda: outcome, evaluation, remaining), evaluation.loop
            )
            return
    except Exception as error:  # noqa: BLE001 - a failing check means "not ready"
        evaluation.finish(False, type(error).__name__)
        return
    evaluation.finish(bool(outcome))


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
