"""The demo service: an ONNX image classifier and a small text generator behind FastAPI,
instrumented with one line (the generative endpoints: :mod:`demo_service.generation`).

``create_app(settings)`` builds the app. At start-up the model versions are loaded (built
first when their files are missing) and warmed up on a thread while the server already
answers: ``/health/live`` is 200 at once, ``/health/ready`` 503 until every version is
loaded, then 200. Inference requests are decoded and checked by their handler, then queued
for the dynamic batcher (:mod:`demo_service.batcher`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from starlette.requests import ClientDisconnect

import aiobs
from demo_service import inputs
from demo_service.batcher import Batcher, ServiceStopping, make_batchers
from demo_service.config import DemoSettings
from demo_service.generation import GenerativeService, add_routes
from demo_service.model import (
    INPUT_NAME,
    INPUT_SHAPE,
    LABELS,
    MODEL_NAME,
    VERSION_SEEDS,
    LoadedModel,
    load,
)

log = aiobs.get_logger("demo_service")
RUNTIME = "onnxruntime"
INLINE_DECODE_BYTES = 256 * 1024
"""Bodies up to this size are decoded on the event loop; larger ones on a thread."""

_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {
                        "type": "string",
                        "description": "base64 of a PNG, or of 3x64x64 little-endian float32",
                    },
                    "dtype": {"type": "string", "enum": ["float32"]},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                },
            },
        },
        "model_version": {"type": "string", "enum": list(VERSION_SEEDS)},
    },
}


class DemoService:
    """The loaded models and their batchers; ``ready`` once every version is warmed up."""

    def __init__(self, settings: DemoSettings, obs: aiobs.Observability) -> None:
        self.settings = settings
        self.obs = obs
        self.models: dict[str, LoadedModel] = {}
        self.batchers: dict[str, Batcher] = {}
        self.executor = ThreadPoolExecutor(
            settings.inference_threads, thread_name_prefix="inference"
        )
        self.ready = False
        self.load_error: str | None = None
        self._loading: asyncio.Task[None] | None = None

    def start_loading(self) -> None:
        self._loading = asyncio.get_running_loop().create_task(self.load(), name="load-models")

    async def load(self) -> None:
        """Load and warm up every version off the event loop, then start the batchers."""
        settings = self.settings
        warmup = tuple(sorted({1, settings.max_batch_size}))
        try:
            for version in settings.model_versions:
                model = await asyncio.to_thread(
                    load, settings.model_path, version, settings.device, warmup
                )
                self.models[version] = model
                self.obs.model_loaded(
                    MODEL_NAME,
                    version,
                    runtime=RUNTIME,
                    device=model.device,
                    load_seconds=model.load_seconds,
                )
                log.info(
                    "model_loaded",
                    model=MODEL_NAME,
                    model_version=version,
                    provider=model.provider,
                    device=model.device,
                    load_seconds=round(model.load_seconds, 3),
                    path=str(model.path),
                )
        except Exception as error:
            self.load_error = f"{type(error).__name__}: {error}"
            log.exception("model_load_failed", model=MODEL_NAME)
            return
        self.batchers = make_batchers(
            self.models,
            self.obs,
            self.executor,
            max_batch_size=settings.max_batch_size,
            timeout=settings.batch_timeout_ms / 1000.0,
            threads=settings.inference_threads,
        )
        self.ready = True
        log.info(
            "service_ready",
            max_batch_size=settings.max_batch_size,
            batch_timeout_ms=settings.batch_timeout_ms,
            inference_threads=settings.inference_threads,
        )

    async def stop(self) -> None:
        self.ready = False
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await asyncio.gather(*(batcher.stop() for batcher in self.batchers.values()))
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def is_ready(self) -> bool:
        return self.ready

    def describe(self) -> list[dict[str, Any]]:
        described = []
        for version in self.settings.model_versions:
            model = self.models.get(version)
            entry: dict[str, Any] = {
                "name": MODEL_NAME,
                "version": version,
                "default": version == self.settings.model_versions[0],
                "ready": self.ready and model is not None,
                "runtime": RUNTIME,
                "input": {"name": INPUT_NAME, "shape": list(INPUT_SHAPE), "dtype": "float32"},
                "labels": list(LABELS),
            }
            if model is not None:
                entry.update(
                    device=model.device,
                    provider=model.provider,
                    load_seconds=round(model.load_seconds, 3),
                )
            described.append(entry)
        return described


def create_app(
    settings: DemoSettings | None = None, *, observability: aiobs.Observability | None = None
) -> FastAPI:
    """The demo app; ``observability`` lets tests inject their own (registry, exporter)."""
    settings = settings if settings is not None else DemoSettings.from_env()
    service: DemoService | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        assert service is not None
        service.start_loading()
        generative.start_loading()
        yield
        await generative.stop()
        await service.stop()

    app = FastAPI(
        title="aiobs demo inference service",
        version="1",
        lifespan=lifespan,
        summary="A small ONNX image classifier with dynamic batching, observed by aiobs.",
    )
    obs = aiobs.instrument(app, service_name=settings.service_name, observability=observability)
    service = DemoService(settings, obs)
    generative = GenerativeService(settings, obs)
    app.state.demo = service
    app.state.generative = generative
    obs.add_readiness_check("model", service.is_ready)
    obs.add_readiness_check("text_model", generative.is_ready)
    add_routes(app, generative)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The model versions served, their input and labels, where they run; the
        generative model (``/v1/completions``) too."""
        return {"models": service.describe(), "generative": [generative.describe()]}

    @app.post(
        "/v1/inference",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
            }
        },
    )
    async def inference(request: Request) -> JSONResponse:
        """Classify each image; per item the top label and its confidence."""
        trace_id = _current_trace_id()
        if not service.ready:
            reason = "the model failed to load" if service.load_error else "the model is loading"
            return _error(503, "not_ready", reason, trace_id)
        try:
            body = await inputs.read_body(
                request.headers.get("content-length"), request.stream(), settings.max_body_bytes
            )
            parsed = await _parse(body, settings)
        except ClientDisconnect:
            return _error(400, "client_disconnected", "the client went away", trace_id)
        except inputs.BodyTooLarge as error:
            log.info("inference_rejected", status=413, reason=str(error))
            return _error(413, "payload_too_large", str(error), trace_id)
        except inputs.InvalidInput as error:
            log.info("inference_rejected", status=422, reason=str(error))
            return _error(422, "invalid_input", str(error), trace_id)
        batcher = service.batchers[parsed.model_version]
        share = parsed.decode_seconds / len(parsed.images)
        started = time.perf_counter()
        try:
            predictions = await asyncio.gather(
                *(batcher.submit(image, share) for image in parsed.images)
            )
        except ServiceStopping:
            return _error(503, "stopping", "the service is stopping", trace_id)
        return JSONResponse(
            {
                "model": MODEL_NAME,
                "model_version": parsed.model_version,
                "trace_id": trace_id,
                "predictions": [
                    {
                        "label": prediction.label,
                        "class_id": prediction.class_id,
                        "confidence": round(prediction.confidence, 6),
                    }
                    for prediction in predictions
                ],
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    return app


async def _parse(body: bytes, settings: DemoSettings) -> inputs.ParsedRequest:
    def parse() -> inputs.ParsedRequest:
        return inputs.parse_request(
            body,
            versions=settings.model_versions,
            default_version=settings.model_versions[0],
            max_items=settings.max_items_per_request,
        )

    if len(body) <= INLINE_DECODE_BYTES:
        return parse()
    return await asyncio.to_thread(parse)


def _current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _error(status: int, error: str, detail: str, trace_id: str | None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "trace_id": trace_id}, status)
