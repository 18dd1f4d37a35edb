"""``python -m demo_service.loadgen``: traffic for the demo, so that every dashboard panel and
alert has something to show.

    python -m demo_service.loadgen --rps 20 --duration 60 \\
        --bad-ratio 0.05 --slow-ratio 0.02 --versions v1=0.9,v2=0.1

Open loop: requests start at ``--rps`` per second whatever the answers take (as real users
do), at most ``--max-in-flight`` at once (past that a request is skipped and counted), for
``--duration`` seconds; then it waits for the last answers and prints a summary. The mix:

* normal requests: ``--items`` synthetic PNG images (or raw float32 with ``--raw``);
* ``--bad-ratio``: malformed requests, each a different kind (malformed JSON, NaN, bad
  base64, wrong shape, undecodable PNG, unknown version, empty or too many items) — 422s;
* ``--slow-ratio``: large requests (``--slow-items`` images, default 32) uploaded slowly
  over ``--slow-upload-seconds`` — the latency tail;
* ``--versions``: model versions and their shares (``v1,v2`` is half and half;
  ``v1=0.9,v2=0.1`` a canary; ``any`` names no version: the service or a mesh chooses) —
  the canary comparison;
* ``--generate-ratio``: generations on the OpenAI-compatible endpoints instead of images —
  completions and chat (``--chat-ratio``), streamed or not (``--stream-ratio``), prompts of
  varied length and ``max_tokens`` drawn from ``--max-tokens`` (``8-64``); a share of the
  streams (``--disconnect-ratio``) closes after a few chunks, as a user who stops reading;
  their bad requests (with ``--bad-ratio``) are a prompt too long, ``max_tokens`` out of
  range, an unknown model, malformed JSON and a NaN temperature — 4xx.

Only loopback targets unless ``--allow-remote`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np

from demo_service.example_request import encode_png, encode_raw
from demo_service.model import VERSION_SEEDS, synthetic_images
from demo_service.textgen_model import MODEL_NAME as GENERATIVE_MODEL

COMPLETIONS_PATH = "/v1/completions"
CHAT_PATH = "/v1/chat/completions"
DISCONNECT_AFTER_CHUNKS = 3

BAD_KINDS = (
    "malformed_json",
    "nan_literal",
    "nan_pixel",
    "bad_base64",
    "wrong_shape",
    "bad_png",
    "unknown_version",
    "empty_data",
    "too_many_items",
)
GENERATIVE_BAD_KINDS = (
    "prompt_too_long",
    "max_tokens_out_of_range",
    "unknown_model",
    "malformed_generation_json",
    "nan_temperature",
)
POOL_SIZE = 16
WORDS = (
    "model", "token", "latency", "batch", "stream", "queue", "trace", "metric", "cache",
    "prompt", "sample", "layer", "kernel", "tensor", "the", "a", "of", "and", "with", "fast",
)


@dataclass
class Summary:
    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    skipped: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def record(self, kind: str, status: str, seconds: float) -> None:
        self.latencies.append(seconds)
        self.statuses[status] += 1
        self.kinds[kind] += 1

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items())) or "-"
        latencies = sorted(self.latencies)

        def quantile(q: float) -> str:
            if not latencies:
                return "-"
            return f"{latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000:.1f}"

        return (
            f"{elapsed:6.1f}s sent {self.sent} ({self.sent / max(elapsed, 1e-9):.1f}/s) "
            f"skipped {self.skipped} status {statuses} latency ms p50 {quantile(0.5)} "
            f"p95 {quantile(0.95)} p99 {quantile(0.99)}"
        )


class Traffic:
    """Builds request bodies: pre-encoded images, so the generator itself stays cheap."""

    def __init__(self, rng: random.Random, raw: bool, items: int, slow_items: int) -> None:
        pictures = synthetic_images(np.random.default_rng(rng.randrange(2**32)), POOL_SIZE)
        encode = encode_raw if raw else encode_png
        self._rng = rng
        self._images = [encode(picture) for picture in pictures]
        self._items = items
        self._slow_items = slow_items
        nan = pictures[0].copy()
        nan[0, 0, 0] = np.nan
        self._nan_pixel = encode_raw(nan)
        self._small = base64.b64encode(np.zeros((3, 32, 32), "<f4").tobytes()).decode()

    def normal(self, version: str, slow: bool = False) -> bytes:
        count = self._slow_items if slow else self._items
        data = [{"image": self._rng.choice(self._images)} for _ in range(count)]
        return json.dumps({"data": data, **_version_field(version)}).encode()

    def bad(self, kind: str, version: str) -> bytes:
        def body(data: object, **extra: object) -> bytes:
            return json.dumps({"data": data, **_version_field(version), **extra}).encode()

        if kind == "malformed_json":
            return b'{"data": [{"image": "'
        if kind == "nan_literal":
            return b'{"data": [{"image": NaN}]}'
        if kind == "nan_pixel":
            return body([{"image": self._nan_pixel}])
        if kind == "bad_base64":
            return body([{"image": "this is not base64!"}])
        if kind == "wrong_shape":
            return body([{"image": self._small}])
        if kind == "bad_png":
            junk = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(200)).decode()
            return body([{"image": junk}])
        if kind == "unknown_version":
            return body([{"image": self._images[0]}], model_version="v0")
        if kind == "empty_data":
            return body([])
        if kind == "too_many_items":
            return body([{"image": ""}] * 1025)
        raise ValueError(kind)


class Generations:
    """Builds generation requests: OpenAI-shaped bodies for the demo's generative model."""

    def __init__(self, rng: random.Random, model: str, max_tokens: tuple[int, int]) -> None:
        self._rng = rng
        self._model = model
        self._max_tokens = max_tokens

    def prompt(self) -> str:
        return " ".join(self._rng.choices(WORDS, k=self._rng.randint(2, 40)))

    def normal(self, chat: bool, stream: bool) -> tuple[str, bytes]:
        body: dict[str, object] = {
            "model": self._model,
            "max_tokens": self._rng.randint(*self._max_tokens),
            "temperature": self._rng.choice((0.0, 0.7, 1.0)),
            "stream": stream,
        }
        if chat:
            body["messages"] = [{"role": "user", "content": self.prompt()}]
        else:
            body["prompt"] = self.prompt()
        return (CHAT_PATH if chat else COMPLETIONS_PATH), json.dumps(body).encode()

    def bad(self, kind: str) -> tuple[str, bytes]:
        body: dict[str, object] = {"model": self._model, "prompt": self.prompt()}
        if kind == "prompt_too_long":
            body["prompt"] = "x" * 100_000
        elif kind == "max_tokens_out_of_range":
            body["max_tokens"] = 100_000
        elif kind == "unknown_model":
            body["model"] = "no-such-model"
        elif kind == "malformed_generation_json":
            return COMPLETIONS_PATH, b'{"model": "'
        elif kind == "nan_temperature":
            return COMPLETIONS_PATH, json.dumps(body)[:-1].encode() + b', "temperature": NaN}'
        else:
            raise ValueError(kind)
        return COMPLETIONS_PATH, json.dumps(body).encode()


async def trickle(payload: bytes, seconds: float, pieces: int = 10) -> AsyncIterator[bytes]:
    """The body in ``pieces`` chunks spread over ``seconds``: a slow client's upload."""
    size = -(-len(payload) // pieces)
    for start in range(0, len(payload), size):
        yield payload[start : start + size]
        await asyncio.sleep(seconds / pieces)


async def run(args: argparse.Namespace) -> Summary:
    rng = random.Random(args.seed)  # noqa: S311 - traffic mix, not cryptography
    traffic = Traffic(rng, args.raw, args.items, args.slow_items)
    generations = Generations(rng, GENERATIVE_MODEL, args.max_tokens)
    versions, weights = zip(*args.versions, strict=True)
    summary = Summary()
    in_flight: set[asyncio.Task[None]] = set()
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=args.max_in_flight)

    async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout, limits=limits) as client:

        async def one(kind: str, payload: bytes, slow: bool) -> None:
            started = time.perf_counter()
            content = trickle(payload, args.slow_upload_seconds) if slow else payload
            try:
                response = await client.post("/v1/inference", content=content, headers=headers)
                status = str(response.status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            summary.record(kind, status, time.perf_counter() - started)

        async def generate(kind: str, path: str, payload: bytes, disconnect: bool) -> None:
            started = time.perf_counter()
            try:
                async with client.stream("POST", path, content=payload, headers=headers) as answer:
                    status = str(answer.status_code)
                    chunks = 0
                    async for _line in answer.aiter_lines():
                        chunks += 1
                        if disconnect and chunks >= DISCONNECT_AFTER_CHUNKS:
                            status = "disconnected"
                            break  # leaving the block closes the connection mid-stream
            except httpx.HTTPError as error:
                status = type(error).__name__
            summary.record(kind, status, time.perf_counter() - started)

        def pick_image() -> tuple[str, bytes, bool]:
            version = rng.choices(versions, weights)[0]
            draw = rng.random()
            if draw < args.bad_ratio:
                kind = rng.choice(BAD_KINDS)
                return kind, traffic.bad(kind, version), False
            if draw < args.bad_ratio + args.slow_ratio:
                return "slow", traffic.normal(version, slow=True), True
            return f"normal_{version}", traffic.normal(version), False

        def pick_generation() -> tuple[str, str, bytes, bool]:
            if rng.random() < args.bad_ratio:
                kind = rng.choice(GENERATIVE_BAD_KINDS)
                return (kind, *generations.bad(kind), False)
            chat = rng.random() < args.chat_ratio
            stream = rng.random() < args.stream_ratio
            disconnect = stream and rng.random() < args.disconnect_ratio
            kind = ("chat" if chat else "completion") + ("_stream" if stream else "")
            if disconnect:
                kind += "_disconnect"
            return (kind, *generations.normal(chat, stream), disconnect)

        loop = asyncio.get_running_loop()
        start = loop.time()
        next_report = start + args.report_every
        number = 0
        while True:
            due = start + number / args.rps
            if due >= start + args.duration:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            number += 1
            if loop.time() >= next_report:
                print(summary.line(), file=sys.stderr, flush=True)
                next_report += args.report_every
            if len(in_flight) >= args.max_in_flight:
                summary.skipped += 1
                continue
            summary.sent += 1
            if args.generate_ratio and rng.random() < args.generate_ratio:
                job = generate(*pick_generation())
            else:
                job = one(*pick_image())
            task = asyncio.ensure_future(job)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight, timeout=args.timeout + args.slow_upload_seconds + 1)
    return summary


def _version_field(version: str) -> dict[str, str]:
    """``model_version`` for the body, or nothing with ``--versions any`` (the service, or a
    mesh routing between versions, chooses)."""
    return {"model_version": version} if version else {}


def parse_versions(text: str) -> list[tuple[str, float]]:
    if text.strip() == "any":
        return [("", 1.0)]
    shares = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in VERSION_SEEDS:
            raise argparse.ArgumentTypeError(
                f"unknown version {name!r}; the demo serves {', '.join(VERSION_SEEDS)}"
            )
        try:
            share = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: the share is not a number") from None
        if not share > 0:
            raise argparse.ArgumentTypeError(f"{part!r}: the share must be positive")
        shares.append((name, share))
    if not shares:
        raise argparse.ArgumentTypeError("name at least one version")
    return shares


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a ratio is between 0 and 1")
    return value


def _token_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LOW-HIGH, e.g. 8-64") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError("expected 1 <= LOW <= HIGH")
    return bounds


def _positive(kind: type[int] | type[float]) -> object:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo_service.loadgen",
        description="Open-loop traffic for the demo service (bounded in time).",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    parser.add_argument("--rps", type=_positive(float), default=10.0, help="requests/second")
    parser.add_argument("--duration", type=_positive(float), default=60.0, help="seconds")
    parser.add_argument("--bad-ratio", type=_ratio, default=0.0, help="share of bad requests")
    parser.add_argument("--slow-ratio", type=_ratio, default=0.0, help="share of slow ones")
    parser.add_argument(
        "--versions",
        type=parse_versions,
        default=parse_versions("v1"),
        help="versions and shares: v1,v2 or v1=0.9,v2=0.1 (default v1); 'any' names none "
        "and lets the service or the mesh choose (canary routing)",
    )
    parser.add_argument("--items", type=_positive(int), default=1, help="images per request")
    parser.add_argument(
        "--slow-items", type=_positive(int), default=32, help="images per slow request"
    )
    parser.add_argument(
        "--slow-upload-seconds",
        type=float,
        default=1.0,
        help="how long a slow request takes to upload",
    )
    parser.add_argument("--raw", action="store_true", help="raw float32 images, not PNG")
    parser.add_argument(
        "--generate-ratio", type=_ratio, default=0.0, help="share of generation requests"
    )
    parser.add_argument(
        "--stream-ratio", type=_ratio, default=0.7, help="share of generations streamed"
    )
    parser.add_argument(
        "--chat-ratio", type=_ratio, default=0.5, help="share of generations that are chats"
    )
    parser.add_argument(
        "--disconnect-ratio",
        type=_ratio,
        default=0.05,
        help="share of streams closed after a few chunks",
    )
    parser.add_argument(
        "--max-tokens", type=_token_range, default=(8, 64), help="max_tokens range: LOW-HIGH"
    )
    parser.add_argument("--max-in-flight", type=_positive(int), default=256)
    parser.add_argument("--timeout", type=_positive(float), default=10.0, help="per request")
    parser.add_argument(
        "--report-every",
        type=_positive(float),
        default=10.0,
        help="seconds between progress lines (on stderr)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a --url that is not on this machine"
    )
    args = parser.parse_args(argv)
    if args.bad_ratio + args.slow_ratio > 1:
        parser.error("--bad-ratio and --slow-ratio add up to more than 1")
    if not args.allow_remote and not is_loopback(args.url):
        parser.error(f"{args.url} is not a loopback address; add --allow-remote to target it")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    summary = asyncio.run(run(args))
    print(summary.line())
    print("by kind: " + " ".join(f"{k}:{v}" for k, v in sorted(summary.kinds.items())))
    return 0 if summary.statuses.get("200") else 1


if __name__ == "__main__":
    raise SystemExit(main())
