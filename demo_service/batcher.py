"""Dynamic batching: items queue on the event loop and run together, off the loop.

One :class:`Batcher` per model version. A worker task takes up to ``max_batch_size`` queued
items, waiting at most ``timeout`` after the oldest one arrived for others to join, and runs
the batch on a thread pool of ``threads`` workers; each caller's future gets its own row of
the result. A batch is formed only once a thread is free to run it, so while every thread is
busy items keep accumulating and the next batch is fuller: under load batches grow by
themselves, and a lone request waits at most ``timeout``.

Telemetry, per executed batch: one ``inference`` record (``ai_inference_total`` counts
batches, ``ai_inference_batch_size`` their items), the four stage timings and the top-1
confidence of every item. ``queue`` is the wait of the batch's oldest item (the longest
wait in it); ``preprocess`` is the decoding of the batch's items (done by their request
handlers) plus stacking them into one tensor. The queue depth gauge counts items waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace

from aiobs import Observability
from demo_service.model import LABELS, MODEL_NAME, LoadedModel


@dataclass(frozen=True)
class Prediction:
    label: str
    class_id: int
    confidence: float


class ServiceStopping(RuntimeError):
    """The batcher stopped before the item ran."""


@dataclass
class _Item:
    image: np.ndarray
    decode_seconds: float
    future: asyncio.Future[Prediction]
    caller: trace.SpanContext
    """The request's span: the batch's inference span links to it."""
    enqueued: float = field(default_factory=time.perf_counter)


class QueueDepth:
    """Items waiting in every batcher of one model: ``ai_inference_queue_depth``."""

    def __init__(self, obs: Observability, model: str = MODEL_NAME) -> None:
        self._obs = obs
        self._model = model
        self._depth = 0
        obs.set_queue_depth(model, 0)

    def add(self, change: int) -> None:
        self._depth += change
        self._obs.set_queue_depth(self._model, self._depth)


class Batcher:
    """Queue and run the items of one model version. Start with :meth:`start` on the loop."""

    def __init__(
        self,
        model: LoadedModel,
        obs: Observability,
        executor: Executor,
        *,
        max_batch_size: int,
        timeout: float,
        slots: asyncio.Semaphore,
        depth: QueueDepth,
    ) -> None:
        self.model = model
        self._obs = obs
        self._executor = executor
        self._max_batch_size = max_batch_size
        self._timeout = timeout
        self._slots = slots
        self._depth = depth
        self._queue: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(
            self._work(), name=f"batcher-{self.model.version}"
        )

    async def submit(self, image: np.ndarray, decode_seconds: float = 0.0) -> Prediction:
        """Queue one image (3x64x64 float32) and wait for its prediction."""
        if self._stopping:
            raise ServiceStopping("the service is stopping")
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        caller = trace.get_current_span().get_span_context()
        self._queue.append(_Item(image, decode_seconds, future, caller))
        self._depth.add(1)
        self._arrived.set()
        return await future

    async def stop(self) -> None:
        """Fail what still waits, let running batches finish, stop the worker."""
        self._stopping = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._depth.add(-len(self._queue))
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(ServiceStopping("the service is stopping"))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # --- the worker ------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()  # form the batch only once a thread can run it
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _collect(self) -> list[_Item]:
        """Wait for the batch to fill or for the oldest item's deadline; take it (empty when
        every queued caller went away)."""
        if self._queue:
            deadline = self._queue[0].enqueued + self._timeout
            while len(self._queue) < self._max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
        batch: list[_Item] = []
        while self._queue and len(batch) < self._max_batch_size:
            item = self._queue.popleft()
            if not item.future.done():  # its caller went away: skip it
                batch.append(item)
            self._depth.add(-1)
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        try:
            loop = asyncio.get_running_loop()
            try:
                predictions = await loop.run_in_executor(self._executor, self._execute, batch)
            except Exception as error:  # noqa: BLE001 - handed to every caller of the batch
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            for item, prediction in zip(batch, predictions, strict=True):
                if not item.future.done():
                    item.future.set_result(prediction)
        finally:
            self._slots.release()

    def _execute(self, batch: Sequence[_Item]) -> list[Prediction]:
        """On a worker thread: one model call for the whole batch, recorded with aiobs."""
        started = time.perf_counter()
        model = self.model
        # The batch runs on a worker thread, in a trace of its own: it links every request.
        links = [trace.Link(item.caller) for item in batch if item.caller.is_valid]
        with self._obs.inference(
            MODEL_NAME, model.version, batch_size=len(batch), links=links
        ) as record:
            record.observe_stage("queue", started - batch[0].enqueued)
            images = np.stack([item.image for item in batch])
            stacked = time.perf_counter()
            decoding = sum(item.decode_seconds for item in batch)
            record.observe_stage("preprocess", decoding + stacked - started)
            with record.stage("compute"):
                probabilities = model.predict(images)
            with record.stage("postprocess"):
                classes = probabilities.argmax(axis=1)
                confidences = probabilities[np.arange(len(batch)), classes]
                predictions = [
                    Prediction(LABELS[int(class_id)], int(class_id), float(confidence))
                    for class_id, confidence in zip(classes, confidences, strict=True)
                ]
            record.observe_confidence(confidences.tolist())
        return predictions


def make_batchers(
    models: dict[str, LoadedModel],
    obs: Observability,
    executor: Executor,
    *,
    max_batch_size: int,
    timeout: float,
    threads: int,
) -> dict[str, Batcher]:
    """One started batcher per version, sharing the executor, its ``threads`` slots and the
    queue depth gauge."""
    depth = QueueDepth(obs)
    slots = asyncio.Semaphore(threads)
    batchers = {
        version: Batcher(
            model,
            obs,
            executor,
            max_batch_size=max_batch_size,
            timeout=timeout,
            slots=slots,
            depth=depth,
        )
        for version, model in models.items()
    }
    for batcher in batchers.values():
        batcher.start()
    return batchers
