"""Readiness checks under probes and scrapes: one evaluation of a check at a time, a hung
check holds at most one thread, and /metrics never waits on a check."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from fastapi import FastAPI

import aiobs
from tests.conftest import Harness, client_for

pytestmark = pytest.mark.anyio


def _app(harness: Harness) -> FastAPI:
    app = FastAPI()
    aiobs.instrument(app, observability=harness.obs)
    return app


async def test_a_hung_sync_check_holds_one_thread_and_never_stalls_metrics(
    make_harness: Callable[..., Harness],
) -> None:
    """50 probes of a sync check blocked forever: all 503 "timeout", one thread held, /metrics
    answers well within the readiness timeout and asyncio's default executor still works."""
    harness = make_harness(readiness_timeout=1.0)
    release = threading.Event()
    calls = []

    def hangs() -> bool:
        calls.append(1)
        release.wait()
        return True

    harness.obs.add_readiness_check("stuck", hangs)
    await asyncio.to_thread(lambda: None)  # the default executor's thread, used by /metrics
    threads_before = threading.active_count()
    try:
        async with client_for(_app(harness)) as client:
            started = time.perf_counter()
            first_scrape = await client.get("/metrics")
            assert time.perf_counter() - started < 0.5
            assert first_scrape.status_code == 200
            for _ in range(50):
                probe = await client.get("/health/ready")
                assert probe.status_code == 503
                check = probe.json()["checks"]["stuck"]
                assert (check["status"], check["error"]) == ("fail", "timeout")
            assert threading.active_count() <= threads_before + 1
            assert len(calls) == 1
            started = time.perf_counter()
            scrape = await client.get("/metrics")
            assert time.perf_counter() - started < 0.5
            assert "ai_service_ready 0.0" in scrape.text
            started = time.perf_counter()
            assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 1) == 42
            assert time.perf_counter() - started < 0.5
    finally:
        release.set()


async def test_concurrent_probes_share_one_evaluation_of_a_hung_async_check(
    make_harness: Callable[..., Harness],
) -> None:
    """Twenty probes at once of an async check that never answers start one evaluation; each
    gets 503 "timeout", and a scrape in between neither waits nor starts another."""
    harness = make_harness(readiness_timeout=0.5)
    running = {"now": 0, "most": 0, "calls": 0}

    async def hangs() -> bool:
        running["calls"] += 1
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        try:
            await asyncio.Event().wait()
        finally:
            running["now"] -= 1
        return True

    harness.obs.add_readiness_check("stuck", hangs)
    async with client_for(_app(harness)) as client:
        probes = [asyncio.ensure_future(client.get("/health/ready")) for _ in range(20)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        assert (await client.get("/metrics")).status_code == 200
        assert time.perf_counter() - started < 0.3
        for probe in await asyncio.gather(*probes):
            assert probe.status_code == 503
            assert probe.json()["checks"]["stuck"]["error"] == "timeout"
    assert running["calls"] == 1
    assert running["most"] == 1


async def test_a_scrape_refreshes_the_ready_gauge_in_the_background(
    make_harness: Callable[..., Harness],
) -> None:
    """Without probes, ai_service_ready follows the checks: a scrape starts an evaluation
    and a later scrape shows its outcome."""
    harness = make_harness(readiness_timeout=1.0)
    state = {"ready": False}
    harness.obs.add_readiness_check("model", lambda: state["ready"])
    async with client_for(_app(harness)) as client:
        await client.get("/metrics")
        state["ready"] = True
        for _ in range(100):
            await client.get("/metrics")
            await asyncio.sleep(0.01)
            if harness.sample("ai_service_ready") == 1:
                break
        assert harness.sample("ai_service_ready") == 1
