"""The OpenAI-compatible request and response shapes of the demo's generative endpoints:
``POST /v1/completions`` and ``POST /v1/chat/completions``, streamed (Server-Sent Events,
``data: {...}`` chunks, then ``data: [DONE]``) or not.

Every way a request can be wrong is a 4xx in OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``) whose message names the field, never
its value: prompts are never logged nor echoed.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from demo_service.textgen import MAX_STOP_CHARS, MAX_STOP_SEQUENCES

DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for completions."""
_IGNORED = frozenset(
    {"user", "top_p", "presence_penalty", "frequency_penalty", "logit_bias", "metadata", "store"}
)
"""OpenAI parameters accepted and not applied (their defaults are what the demo does)."""
_SHARED_KEYS = frozenset(
    {"model", "max_tokens", "temperature", "stream", "stream_options", "stop", "seed", "n",
     "logprobs"}
) | _IGNORED  # fmt: skip
_COMPLETION_KEYS = _SHARED_KEYS | {"prompt", "echo", "best_of", "suffix"}
_CHAT_KEYS = _SHARED_KEYS | {"messages", "max_completion_tokens"}
CHAT_ROLES = ("system", "user", "assistant", "developer")


class RequestError(ValueError):
    """A request the endpoint cannot serve: answered ``status`` in OpenAI's error shape."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class Limits:
    """What the served model accepts."""

    models: tuple[str, ...]
    max_prompt_chars: int
    max_tokens: int
    max_temperature: float = 2.0


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request, either kind."""

    chat: bool
    model: str
    prompt: str
    max_tokens: int
    temperature: float
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]
    seed: int | None


def parse(body: bytes, *, chat: bool, limits: Limits) -> GenerationRequest:
    """The request in ``body`` checked against ``limits``, or :class:`RequestError`."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError("the body is not valid JSON", code="invalid_json") from None
    except _NonFinite as error:
        raise RequestError(f"{error} is not a JSON number", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object", code="invalid_json")
    unknown = sorted(set(data) - (_CHAT_KEYS if chat else _COMPLETION_KEYS))
    if unknown:
        raise RequestError(
            f"unrecognized request argument: {unknown[0]}",
            param=unknown[0],
            code="unknown_parameter",
        )
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required: a model name", param="model")
    if model not in limits.models:
        raise RequestError(
            f"the model does not exist; this service serves {', '.join(limits.models)}",
            param="model",
            code="model_not_found",
            status=404,
        )
    prompt = _chat_prompt(data.get("messages")) if chat else _prompt(data.get("prompt"))
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError(
            f"the prompt is {len(prompt)} characters; this model accepts at most "
            f"{limits.max_prompt_chars}",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )
    key = "max_completion_tokens" if chat and "max_completion_tokens" in data else "max_tokens"
    max_tokens = _integer(data.get(key, DEFAULT_MAX_TOKENS), key, 1, limits.max_tokens)
    temperature = _number(data.get("temperature", 1.0), "temperature", 0.0, limits.max_temperature)
    _only_one(data.get("n", 1), "n")
    if not chat:
        _only_one(data.get("best_of", 1), "best_of")
        for name in ("echo", "suffix", "logprobs"):
            if data.get(name) not in (None, False, 0):
                raise RequestError(f"'{name}' is not supported by this model", param=name)
    elif data.get("logprobs") not in (None, False):
        raise RequestError("'logprobs' is not supported by this model", param="logprobs")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", param="stream")
    options = data.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise RequestError(
            "'stream_options' needs 'stream': true and an object", param="stream_options"
        )
    include_usage = bool((options or {}).get("include_usage", False))
    seed = data.get("seed")
    if seed is not None:
        seed = _integer(seed, "seed", -(2**63), 2**63 - 1)
    return GenerationRequest(
        chat=chat,
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        stream=stream,
        include_usage=include_usage,
        stop=_stop(data.get("stop")),
        seed=seed,
    )


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list):
        raise RequestError(
            "'prompt' must be one string (batches of prompts are not served)", param="prompt"
        )
    if not isinstance(value, str):
        raise RequestError("'prompt' is required: a string", param="prompt")
    return value


def _chat_prompt(messages: Any) -> str:
    """The conversation as the model reads it: one ``role: content`` line per message, then
    ``assistant:`` for the model to continue."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' is required: a non-empty list", param="messages")
    lines = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RequestError(f"'{where}' must be an object", param=where)
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise RequestError(
                f"'{where}.role' must be one of {', '.join(CHAT_ROLES)}", param=f"{where}.role"
            )
        if isinstance(content, list):  # content parts: text only
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                for p in content
            ):
                raise RequestError(
                    f"'{where}.content' parts must be text", param=f"{where}.content"
                )
            content = "".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise RequestError(f"'{where}.content' must be a string", param=f"{where}.content")
        lines.append(f"{role}: {content}\n")
    return "".join(lines) + "assistant:"


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{name}' must be an integer", param=name)
    if not low <= value <= high:
        raise RequestError(f"'{name}' must be between {low} and {high}", param=name)
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"'{name}' must be a finite number", param=name)
    if not low <= value <= high:
        raise RequestError(f"'{name}' must be between {low:g} and {high:g}", param=name)
    return float(value)


def _only_one(value: Any, name: str) -> None:
    if value != 1 or isinstance(value, bool):
        raise RequestError(f"'{name}' must be 1: one choice per request", param=name)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_STOP_SEQUENCES:
        raise RequestError(
            f"'stop' must be a string or a list of at most {MAX_STOP_SEQUENCES}", param="stop"
        )
    for item in items:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_STOP_CHARS:
            raise RequestError(
                f"each 'stop' sequence must be 1 to {MAX_STOP_CHARS} characters", param="stop"
            )
    return tuple(items)


# --- responses -----------------------------------------------------------------------------------
@dataclass
class Response:
    """The ids and metadata every chunk of one response shares."""

    request: GenerationRequest
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.id = ("chatcmpl-" if self.request.chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def _base(self, chunk: bool) -> dict[str, Any]:
        if self.request.chat:
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            kind = "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.request.model}

    def whole(self, text: str, finish_reason: str, usage: Mapping[str, int]) -> dict[str, Any]:
        """The answer of ``"stream": false``."""
        body = self._base(chunk=False)
        if self.request.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        body.update(choices=[choice], usage=dict(usage))
        return body

    def chunk(self, text: str, finish_reason: str | None = None, *, first: bool = False) -> bytes:
        """One ``data:`` event of a stream."""
        body = self._base(chunk=True)
        if self.request.chat:
            delta: dict[str, Any] = (
                {"role": "assistant", "content": text}
                if first
                else ({"content": text} if text else {})
            )
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        body["choices"] = [choice]
        if self.request.include_usage:
            body["usage"] = None
        return event(body)

    def usage_chunk(self, usage: Mapping[str, int]) -> bytes:
        """The last event before ``[DONE]`` with ``stream_options.include_usage``."""
        body = self._base(chunk=True)
        body.update(choices=[], usage=dict(usage))
        return event(body)


DONE = b"data: [DONE]\n\n"


def event(body: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
