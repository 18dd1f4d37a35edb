"""Dynamic batching: concurrent callers share model calls yet each gets its own answer;
batches fill up to MAX_BATCH_SIZE, a lone item waits at most BATCH_TIMEOUT_MS; queue depth,
batch sizes and the four stage timings are recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI

from demo_service import model as demo_model
from demo_service.batcher import Batcher, ServiceStopping, make_batchers
from tests.conftest import Harness, client_for
from tests.demo.conftest import body, images, raw_b64, running

pytestmark = pytest.mark.anyio
MODEL = demo_model.MODEL_NAME


@asynccontextmanager
async def batcher_for(
    harness: Harness, model_dir: Path, *, max_batch_size: int, timeout: float, threads: int = 1
) -> AsyncIterator[Batcher]:
    models = {"v1": demo_model.load(model_dir, "v1", "cpu", ())}
    with ThreadPoolExecutor(threads) as executor:
        batchers = make_batchers(
            models,
            harness.obs,
            executor,
            max_batch_size=max_batch_size,
            timeout=timeout,
            threads=threads,
        )
        try:
            yield batchers["v1"]
        finally:
            await batchers["v1"].stop()


async def test_concurrent_callers_get_their_own_results(
    make_harness: Callable[..., Harness], model_dir: Path
) -> None:
    """40 callers at once: each answer is that caller's image's own prediction, and the
    model ran far fewer, fuller batches than there were callers."""
    harness = make_harness()
    batch = images(40, seed=11)
    expected = demo_model.load(model_dir, "v1", "cpu", ()).predict(batch)
    async with batcher_for(harness, model_dir, max_batch_size=8, timeout=0.05) as batcher:
        predictions = await asyncio.gather(*(batcher.submit(image) for image in batch))
    for index, prediction in enumerate(predictions):
        assert prediction.class_id == int(expected[index].argmax())
        assert prediction.label == demo_model.LABELS[prediction.class_id]
        assert prediction.confidence == pytest.approx(float(expected[index].max()), rel=1e-4)
    labels = {"model": MODEL, "model_version": "v1"}
    batches = harness.sample("ai_inference_batch_size_count", **labels)
    assert harness.sample("ai_inference_batch_size_sum", **labels) == 40
    assert batches is not None
    assert 5 <= batches <= 10  # 40 items, at most 8 per batch
    assert harness.sample("ai_inference_total", **labels) == batches
    assert harness.sample("ai_prediction_confidence_count", **labels) == 40
    for stage in ("queue", "preprocess", "compute", "postprocess"):
        count = harness.sample("ai_inference_stage_duration_seconds_count", stage=stage, **labels)
        assert count == batches, stage
    assert harness.sample("ai_inference_queue_depth", model=MODEL) == 0


async def test_a_full_batch_runs_without_waiting_for_the_timeout(
    make_harness: Callable[..., Harness], model_dir: Path
) -> None:
    """MAX_BATCH_SIZE items run at once even with a long BATCH_TIMEOUT_MS."""
    harness = make_harness()
    async with batcher_for(harness, model_dir, max_batch_size=4, timeout=30.0) as batcher:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(batcher.submit(image) for image in images(4))), 10)
        assert time.perf_counter() - started < 5
    assert harness.sample("ai_inference_batch_size_sum", model=MODEL, model_version="v1") == 4


async def test_a_lone_item_waits_for_the_timeout_then_runs(
    make_harness: Callable[..., Harness], model_dir: Path
) -> None:
    """A single item waits BATCH_TIMEOUT_MS for company, then runs alone; its queue stage
    shows the wait."""
    harness = make_harness()
    async with batcher_for(harness, model_dir, max_batch_size=8, timeout=0.2) as batcher:
        started = time.perf_counter()
        await batcher.submit(images(1)[0])
        elapsed = time.perf_counter() - started
    assert 0.2 <= elapsed < 3
    labels = {"model": MODEL, "model_version": "v1"}
    assert harness.sample("ai_inference_batch_size_sum", **labels) == 1
    queued = harness.sample("ai_inference_stage_duration_seconds_sum", stage="queue", **labels)
    assert queued is not None
    assert queued >= 0.2


async def test_queue_depth_counts_waiting_items(
    make_harness: Callable[..., Harness], model_dir: Path
) -> None:
    """While items wait for their batch, ai_inference_queue_depth says how many."""
    harness = make_harness()
    async with batcher_for(harness, model_dir, max_batch_size=8, timeout=0.5) as batcher:
        waiting = [asyncio.ensure_future(batcher.submit(image)) for image in images(3)]
        await asyncio.sleep(0.1)
        assert harness.sample("ai_inference_queue_depth", model=MODEL) == 3
        await asyncio.gather(*waiting)
    assert harness.sample("ai_inference_queue_depth", model=MODEL) == 0


async def test_stopping_fails_waiting_items(
    make_harness: Callable[..., Harness], model_dir: Path
) -> None:
    """Items still queued when the service stops get ServiceStopping, not a hang."""
    harness = make_harness()
    async with batcher_for(harness, model_dir, max_batch_size=8, timeout=30.0) as batcher:
        waiting = asyncio.ensure_future(batcher.submit(images(1)[0]))
        await asyncio.sleep(0.05)
        await batcher.stop()
        with pytest.raises(ServiceStopping):
            await waiting
        with pytest.raises(ServiceStopping):
            await batcher.submit(images(1)[0])


async def test_http_callers_get_their_own_results_in_shared_batches(
    make_app: Callable[..., tuple[FastAPI, Harness]], model_dir: Path
) -> None:
    """Concurrent HTTP requests, each with its own image: each response carries that
    image's prediction and its own trace id; /metrics shows batches of more than one; the
    batches' inference spans link every request's trace."""
    app, harness = make_app(max_batch_size=16, batch_timeout_ms=100)
    batch = images(12, seed=12)
    expected = demo_model.load(model_dir, "v1", "cpu", ()).predict(batch)
    async with running(app), client_for(app) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/inference", content=body(raw_b64(image))) for image in batch)
        )
        metrics = (await client.get("/metrics")).text
    trace_ids = set()
    for index, response in enumerate(responses):
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert prediction["class_id"] == int(expected[index].argmax())
        assert prediction["confidence"] == pytest.approx(float(expected[index].max()), abs=1e-5)
        trace_ids.add(response.json()["trace_id"])
    assert len(trace_ids) == 12
    labels = {"model": MODEL, "model_version": "v1"}
    batches = harness.sample("ai_inference_batch_size_count", **labels)
    assert batches is not None
    assert batches < 12, "concurrent requests shared model calls"
    assert harness.sample("ai_inference_batch_size_bucket", le="1.0", **labels) < batches
    assert 'ai_inference_batch_size_count{model="demo-cnn",model_version="v1"}' in metrics
    linked = {
        f"{link.context.trace_id:032x}"
        for span in harness.spans()
        if span.name == f"inference {MODEL}"
        for link in span.links
    }
    assert trace_ids <= linked


async def test_unbatched_service_runs_one_item_per_call(
    make_app: Callable[..., tuple[FastAPI, Harness]],
) -> None:
    """MAX_BATCH_SIZE=1 turns batching off: every model call has one item."""
    app, harness = make_app(max_batch_size=1)
    async with running(app), client_for(app) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/inference", content=body(raw_b64(i))) for i in images(5))
        )
    assert all(response.status_code == 200 for response in responses)
    labels = {"model": MODEL, "model_version": "v1"}
    assert harness.sample("ai_inference_batch_size_count", **labels) == 5
    assert harness.sample("ai_inference_batch_size_sum", **labels) == 5
