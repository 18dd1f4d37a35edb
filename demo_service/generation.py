"""The demo's generative endpoints, OpenAI-compatible: ``POST /v1/completions`` and
``POST /v1/chat/completions`` served by ``tiny-lm`` through the continuous-batching engine
(:mod:`demo_service.textgen`), streamed by Server-Sent Events or answered whole.

Telemetry goes through aiobs's public API only: each generation is one ``aiobs.inference``
record (tokens in and out, time to first token, time per output token, the queue wait as the
``queue`` stage, GenAI attributes on its span); the engine's queue is
``ai_inference_queue_depth``. A client that goes away mid-stream (or before a whole answer is
ready) cancels its generation: the engine drops it before its next step, and the record's
outcome is ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

import aiobs
from aiobs import catalog
from demo_service import inputs, openai_api, textgen
from demo_service.config import DemoSettings
from demo_service.textgen_model import DEFAULT_VERSION, MODEL_NAME, TOKENIZER, LoadedTextModel, load

log = aiobs.get_logger("demo_service.generation")
RUNTIME = "onnxruntime"
LIMITS = openai_api.Limits(
    models=(MODEL_NAME,),
    max_prompt_chars=textgen.MAX_PROMPT_CHARS,
    max_tokens=textgen.MAX_MAX_TOKENS,
    max_temperature=textgen.MAX_TEMPERATURE,
)


class GenerativeService:
    """``tiny-lm`` loaded, warmed up and decoding; ``ready`` once its engine runs."""

    def __init__(self, settings: DemoSettings, obs: aiobs.Observability) -> None:
        self.settings = settings
        self.obs = obs
        self.version = DEFAULT_VERSION
        self.model: LoadedTextModel | None = None
        self.engine: textgen.Engine | None = None
        self.load_error: str | None = None
        self._loading: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.running

    async def is_ready(self) -> bool:
        return self.ready

    def start_loading(self) -> None:
        """Load and warm up the model off the event loop, then start the engine; the server
        answers meanwhile (``/health/ready`` is 503 until then)."""
        self._loading = asyncio.get_running_loop().create_task(self.start(), name="load-tiny-lm")

    async def start(self) -> None:
        settings = self.settings
        try:
            model = await asyncio.to_thread(
                load,
                settings.model_path,
                self.version,
                settings.device,
                (1, settings.generation_max_batch),
            )
        except Exception as error:
            self.load_error = f"{type(error).__name__}: {error}"
            log.exception("model_load_failed", model=MODEL_NAME)
            return
        self.model = model
        self.obs.model_loaded(
            MODEL_NAME,
            self.version,
            runtime=RUNTIME,
            device=model.device,
            load_seconds=model.load_seconds,
        )
        log.info(
            "model_loaded",
            model=MODEL_NAME,
            model_version=self.version,
            provider=model.provider,
            device=model.device,
            load_seconds=round(model.load_seconds, 3),
        )
        self.engine = textgen.Engine(
            model, max_batch=settings.generation_max_batch, on_step=self._on_step
        )
        await self.engine.start()

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self.engine is not None:
            await self.engine.stop()

    def _on_step(self, _batch_size: int, _seconds: float) -> None:
        assert self.engine is not None
        self.obs.set_queue_depth(MODEL_NAME, self.engine.waiting)

    def describe(self) -> dict[str, Any]:
        return {
            "id": MODEL_NAME,
            "object": "model",
            "owned_by": "aiobs-demo",
            "version": self.version,
            "ready": self.ready,
            "device": self.model.device if self.model is not None else None,
        }

    # --- a request ------------------------------------------------------------------------
    async def answer(self, request: Request, *, chat: bool) -> Any:
        try:
            body = await inputs.read_body(
                request.headers.get("content-length"),
                request.stream(),
                self.settings.max_body_bytes,
            )
            parsed = openai_api.parse(body, chat=chat, limits=LIMITS)
        except ClientDisconnect:
            return _error(400, "the client went away", code="client_disconnected")
        except inputs.BodyTooLarge as error:
            return _rejected(
                openai_api.RequestError(str(error), code="payload_too_large", status=413)
            )
        except inputs.InvalidInput as error:
            return _rejected(openai_api.RequestError(str(error)))
        except openai_api.RequestError as error:
            return _rejected(error)
        if self.engine is None or not self.engine.running:
            reason = "the model failed to load" if self.load_error else "the model is loading"
            return _error(503, reason, kind="server_error", code="not_ready")
        response = openai_api.Response(parsed)
        if parsed.stream:
            return StreamingResponse(
                self._stream(parsed, response),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        return await self._whole(request, parsed, response)

    def _submit(self, parsed: openai_api.GenerationRequest) -> textgen.Generation:
        assert self.engine is not None
        params = textgen.SamplingParams(
            max_tokens=parsed.max_tokens,
            temperature=parsed.temperature,
            seed=parsed.seed,
            stop=parsed.stop,
        )
        return self.engine.submit(TOKENIZER.encode(parsed.prompt), params)

    @contextlib.asynccontextmanager
    async def _generation(
        self, parsed: openai_api.GenerationRequest
    ) -> AsyncIterator[tuple[aiobs.InferenceRecord, textgen.Generation]]:
        """One inference record around one generation, started just before the generation is
        queued (its time to first token counts the queue); the generation is dropped from
        the engine however the block ends."""
        async with self.obs.inference(MODEL_NAME, self.version) as record:
            generation = self._submit(parsed)
            record.tokens(input=generation.prompt_tokens)
            record.set_attribute(
                catalog.ATTR_GEN_AI_OPERATION, "chat" if parsed.chat else "text_completion"
            )
            record.set_attribute(catalog.ATTR_GEN_AI_REQUEST_MAX_TOKENS, parsed.max_tokens)
            record.set_attribute(catalog.ATTR_GEN_AI_REQUEST_TEMPERATURE, parsed.temperature)
            record.set_attribute(catalog.ATTR_GEN_AI_RESPONSE_MODEL, MODEL_NAME)
            try:
                yield record, generation
            finally:
                generation.cancel()  # nothing when it finished
                if generation.queue_seconds is not None:
                    record.observe_stage("queue", generation.queue_seconds)
                if generation.finish_reason in (textgen.FINISH_STOP, textgen.FINISH_LENGTH):
                    record.set_attribute(
                        catalog.ATTR_GEN_AI_FINISH_REASONS, (generation.finish_reason,)
                    )

    async def _stream(
        self, parsed: openai_api.GenerationRequest, response: openai_api.Response
    ) -> AsyncIterator[bytes]:
        # Runs when the response starts streaming: a client gone before then leaves no work.
        async with self._generation(parsed) as (record, generation):
            if parsed.chat:
                yield response.chunk("", first=True)
            async for piece in generation:
                record.token()
                if piece:
                    yield response.chunk(piece)
            yield response.chunk("", generation.finish_reason)
            if parsed.include_usage:
                yield response.usage_chunk(_usage(generation))
            yield openai_api.DONE

    async def _whole(
        self, request: Request, parsed: openai_api.GenerationRequest, response: openai_api.Response
    ) -> JSONResponse:
        async def generate() -> tuple[str, str | None, dict[str, int]]:
            async with self._generation(parsed) as (record, generation):
                async for _piece in generation:
                    record.token()
                return generation.text, generation.finish_reason, _usage(generation)

        work = asyncio.ensure_future(generate())
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():  # the client left: stop generating for it
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return _error(400, "the client went away", code="client_disconnected")
        try:
            text, finish_reason, usage = work.result()
        except textgen.EngineStopped:
            return _error(503, "the service is stopping", kind="server_error", code="stopping")
        assert finish_reason is not None
        return JSONResponse(response.whole(text, finish_reason, usage))


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next message the
    server has for this request is its disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _usage(generation: textgen.Generation) -> dict[str, int]:
    return openai_api.usage(generation.prompt_tokens, generation.completion_tokens)


def _rejected(error: openai_api.RequestError) -> JSONResponse:
    # Field names and codes only: the prompt is never logged.
    detail = error.body["error"]
    log.info("generation_rejected", status=error.status, param=detail["param"], code=detail["code"])
    return JSONResponse(error.body, error.status)


def _error(
    status: int, message: str, *, kind: str = "invalid_request_error", code: str
) -> JSONResponse:
    error = openai_api.RequestError(message, code=code, status=status, kind=kind)
    return JSONResponse(error.body, status)


def add_routes(app: FastAPI, service: GenerativeService) -> None:
    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        """OpenAI-compatible text completion (``stream`` for Server-Sent Events)."""
        return await service.answer(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        """OpenAI-compatible chat completion (``stream`` for Server-Sent Events)."""
        return await service.answer(request, chat=True)
