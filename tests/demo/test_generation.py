"""The OpenAI-compatible generative endpoints of the demo: answers, bad input in OpenAI's error
shape, telemetry through aiobs's API, and a client that leaves mid-stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from aiobs import catalog
from tests.conftest import Harness, client_for
from tests.demo.conftest import running

pytestmark = pytest.mark.anyio
MODEL = "tiny-lm"
CANARY = "prompt-canary-0815"
BAD_REQUESTS: list[tuple[str, str, bytes, int, str | None]] = [
    ("prompt too long", "/v1/completions",
     json.dumps({"model": MODEL, "prompt": "x" * 5000}).encode(), 400, "prompt"),
    ("max_tokens 0", "/v1/completions",
     json.dumps({"model": MODEL, "prompt": CANARY, "max_tokens": 0}).encode(), 400, "max_tokens"),
    ("max_tokens too large", "/v1/completions",
     json.dumps({"model": MODEL, "prompt": CANARY, "max_tokens": 513}).encode(), 400,
     "max_tokens"),
    ("max_tokens not a number", "/v1/chat/completions",
     json.dumps({"model": MODEL, "messages": [{"role": "user", "content": CANARY}],
                 "max_tokens": "ten"}).encode(), 400, "max_tokens"),
    ("unknown model", "/v1/completions",
     json.dumps({"model": "gpt-4", "prompt": CANARY}).encode(), 404, "model"),
    ("malformed JSON", "/v1/completions", b'{"model": "tiny-lm", "prompt": "' + CANARY.encode(),
     400, None),
    ("NaN temperature", "/v1/completions",
     b'{"model": "tiny-lm", "prompt": "' + CANARY.encode() + b'", "temperature": NaN}', 400, None),
    ("temperature too high", "/v1/completions",
     json.dumps({"model": MODEL, "prompt": CANARY, "temperature": 3}).encode(), 400,
     "temperature"),
    ("several choices", "/v1/completions",
     json.dumps({"model": MODEL, "prompt": CANARY, "n": 2}).encode(), 400, "n"),
    ("too many stop sequences", "/v1/completions",
     json.dumps({"model": MODEL, "prompt": CANARY, "stop": list("abcde")}).encode(), 400, "stop"),
    ("unknown parameter", "/v1/completions",
     json.dumps({"model": MODEL, "prompt": CANARY, "tempreature": 1}).encode(), 400,
     "tempreature"),
    ("no messages", "/v1/chat/completions", json.dumps({"model": MODEL}).encode(), 400,
     "messages"),
    ("bad role", "/v1/chat/completions",
     json.dumps({"model": MODEL, "messages": [{"role": "robot", "content": CANARY}]}).encode(),
     400, "messages[0].role"),
    ("not an object", "/v1/completions", b"[1, 2]", 400, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_requests_get_openai_errors_and_no_prompt_is_logged(
    make_app: Callable[..., tuple[FastAPI, Harness]],
    path: str,
    body: bytes,
    status: int,
    param: str | None,
) -> None:
    """Each bad request is a 4xx whose body is OpenAI's error shape naming the parameter;
    nothing is generated, and the prompt never reaches a log line."""
    app, harness = make_app()
    async with running(app), client_for(app) as client:
        response = await client.post(path, content=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert CANARY not in response.text
    assert harness.sample("ai_inference_total", model=MODEL, model_version="v1") in (None, 0.0)
    assert CANARY not in harness.stream.getvalue()


async def test_a_body_over_the_limit_is_413_before_it_is_read(
    make_app: Callable[..., tuple[FastAPI, Harness]],
) -> None:
    app, _harness = make_app(max_body_bytes=2048)
    async with running(app), client_for(app) as client:
        response = await client.post("/v1/completions", content=b"x" * 10_000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def sse_events(text: str) -> list[Any]:
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


async def test_a_stream_is_one_observed_generation(
    make_app: Callable[..., tuple[FastAPI, Harness]],
) -> None:
    """A streamed completion: SSE chunks then [DONE]; one inference span with the GenAI
    attributes as a child of the request's span; tokens, time to first token, time per
    output token and the request's first byte recorded."""
    app, harness = make_app()
    request = {"model": MODEL, "prompt": "Hello", "max_tokens": 12, "temperature": 0,
               "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    async with running(app), client_for(app) as client:
        response = await client.post("/v1/completions", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    usage = events[-1]["usage"]
    assert usage["prompt_tokens"] == 5
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    spans = harness.spans()
    (generation,) = [span for span in spans if span.name == f"inference {MODEL}"]
    (server,) = [span for span in spans if span.name == "POST /v1/completions"]
    assert generation.parent is not None
    assert server.context is not None
    assert generation.parent.span_id == server.context.span_id
    attributes = generation.attributes or {}
    assert attributes[catalog.ATTR_GEN_AI_REQUEST_MODEL] == MODEL
    assert attributes[catalog.ATTR_GEN_AI_INPUT_TOKENS] == 5
    assert attributes[catalog.ATTR_GEN_AI_OUTPUT_TOKENS] == usage["completion_tokens"]
    assert attributes[catalog.ATTR_GEN_AI_FINISH_REASONS] == (
        events[-2]["choices"][0]["finish_reason"],
    )
    assert attributes[catalog.ATTR_GEN_AI_REQUEST_MAX_TOKENS] == 12
    labels = {"model": MODEL, "model_version": "v1"}
    assert harness.sample("ai_tokens_total", type="output", **labels) == usage["completion_tokens"]
    assert harness.sample("ai_tokens_total", type="input", **labels) == 5
    assert harness.sample("ai_time_to_first_token_seconds_count", **labels) == 1
    if usage["completion_tokens"] > 1:
        assert harness.sample("ai_time_per_output_token_seconds_count", **labels) == 1
    first_byte = {"method": "POST", "route": "/v1/completions"}
    assert harness.sample("http_response_first_byte_seconds_count", **first_byte) == 1


async def drive_until_first_chunk(app: FastAPI, body: bytes) -> list[dict[str, Any]]:
    """A client that sends ``body``, reads the first body chunk and goes away (ASGI 2.3, as
    uvicorn says it: the next ``receive`` is the disconnect)."""
    sent: list[dict[str, Any]] = []
    got_chunk = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await got_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            got_chunk.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/completions", "raw_path": b"",
        "root_path": "", "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000), "server": ("test", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_a_client_leaving_mid_stream_cancels_its_generation(
    make_app: Callable[..., tuple[FastAPI, Harness]],
) -> None:
    """The stream stops at the disconnect: the generation is dropped from the engine (its
    steps stop), the inference is counted cancelled (not an error) and the request 499."""
    app, harness = make_app()
    body = json.dumps({"model": MODEL, "prompt": "Go", "max_tokens": 512, "temperature": 1,
                       "seed": 1, "stop": None, "stream": True}).encode()  # fmt: skip
    async with running(app):
        engine = app.state.generative.engine
        await drive_until_first_chunk(app, body)
        await asyncio.sleep(0.05)
        assert engine.active == 0
        steps = engine.steps
        await asyncio.sleep(0.1)
        assert engine.steps == steps  # no work for a client that left
    labels = {"model": MODEL, "model_version": "v1"}
    assert harness.sample("ai_inference_cancelled_total", **labels) == 1
    assert (
        harness.sample("ai_inference_errors_total", error_type="CancelledError", **labels) is None
    )
    assert harness.sample("ai_tokens_total", type="output", **labels) < 512
    assert (
        harness.sample("http_requests_total", method="POST", route="/v1/completions", status="499")
        == 1
    )
    (generation,) = [span for span in harness.spans() if span.name == f"inference {MODEL}"]
    assert (generation.attributes or {})[catalog.ATTR_INFERENCE_OUTCOME] == "cancelled"


async def test_concurrent_streams_are_decoded_together(
    make_app: Callable[..., tuple[FastAPI, Harness]],
) -> None:
    """Eight concurrent streams share decode steps (continuous batching): far fewer steps
    than tokens."""
    app, _harness = make_app()
    request = {"model": MODEL, "prompt": "Hi", "max_tokens": 40, "temperature": 0,
               "stream": True}  # fmt: skip
    async with running(app), client_for(app) as client:
        engine = app.state.generative.engine
        before = engine.steps
        responses = await asyncio.gather(
            *(client.post("/v1/completions", json=request) for _ in range(8))
        )
        steps = engine.steps - before
    assert all(response.status_code == 200 for response in responses)
    texts = {"".join(e["choices"][0]["text"] for e in sse_events(r.text)) for r in responses}
    assert len(texts) == 1  # greedy: the same text in every batch position
    assert steps < 8 * 40 / 2
