"""Streaming generation through the demo service, against the raw decode loop, with the
token timings its clients see set beside those aiobs reports.

    .venv/bin/python benchmarks/generation.py                  # 3 rounds, 8 streams
    .venv/bin/python benchmarks/generation.py --quick          # 2 rounds x 64 generations, ~20 s
    .venv/bin/python benchmarks/generation.py --streams 1,8    # batching: 8 streams vs 1

One run starts ``python -m demo_service`` on 127.0.0.1 (``GENERATION_MAX_BATCH=8``, access
log and traces on as shipped, its JSON log to a file) and, per round and per concurrency
level, measures back to back:

(a) the raw loop: :func:`demo_service.textgen.raw_decode` in this process on the same model
    file, batch ``min(streams, 8)``, the same prompts and ``max_tokens``, while the service
    is idle;
(b) the service: ``streams`` concurrent clients (one keep-alive connection each, read straight
    off the socket: :class:`StreamConnection`; their starts spread over one generation)
    streaming ``POST /v1/completions`` (SSE, temperature 0, ``stream_options.include_usage``)
    until the round's fixed number of generations (8 x ``--generations``) is spent. Each generation
    records its time to first token (request sent -> first chunk) and its time per output
    token, ``(t_finish - t_first) / (completion_tokens - 1)``: ``t_finish`` is the chunk
    carrying the finish reason, which the service sends right after the last token whether
    that token released text or not (an end-of-sequence token sends no text chunk).
    ``/metrics`` is scraped before and after: the service's own mean TTFT and TPOT are
    Delta sum / Delta count of ``ai_time_to_first_token_seconds`` and
    ``ai_time_per_output_token_seconds`` for ``model="tiny-lm"``.

After the service stops, what aiobs adds per streamed token is timed in this process with a
real :class:`aiobs.Observability` (fresh registry, tracing on into the SDK's in-memory
exporter, access log on, as the tests' harness builds it): ``InferenceRecord.token()``; the
ASGI middleware's work on a stream of as many chunks as a generation sends (an ASGI app
driven directly, bare and wrapped in :class:`aiobs.ObservabilityMiddleware`); and the
inference record's own per-generation cost, spread over its tokens.

Targets (8 streams): service tokens/s >= 60 % of the raw loop; the service's mean TTFT and
TPOT within 10 % of the clients'; aiobs's work per token <= 5 % of the clients' mean TPOT.
Results go to ``benchmarks/results/generation-<UTC time>.json`` (the service's log beside
it). Every loop is bounded; the service is stopped at the end whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))

from bench_support import HOST, git_revision, machine, running_demo  # noqa: E402

import aiobs  # noqa: E402 - after the path set-up above
from demo_service import textgen  # noqa: E402
from demo_service.config import default_model_path  # noqa: E402
from demo_service.textgen_model import ALPHABET, DEFAULT_THREADS, MODEL_NAME, load  # noqa: E402

RESULTS = HERE / "results"
MAX_BATCH = 8
"""``GENERATION_MAX_BATCH`` of the service, and the raw loop's largest batch."""
BUDGET_STREAMS = 8
"""A round's work is ``BUDGET_STREAMS x --generations`` generations at every level."""
READY_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 60.0
QUEUE_SAMPLE_S = 1.0
TARGET_THROUGHPUT = 0.60
TARGET_AGREEMENT = 0.10
TARGET_SHARE = 0.05
PACKAGES = (
    "aiobs", "fastapi", "starlette", "uvicorn", "h11", "uvloop", "httptools", "httpx",
    "onnxruntime", "onnxruntime-gpu", "numpy", "opentelemetry-sdk", "prometheus_client",
)  # fmt: skip

TTFT = "ai_time_to_first_token_seconds"
TPOT = "ai_time_per_output_token_seconds"
TOKENS = "ai_tokens_total"
INFERENCES = "ai_inference_total"
STAGE = "ai_inference_stage_duration_seconds"
QUEUE_DEPTH = "ai_inference_queue_depth"
FIRST_BYTE = "http_response_first_byte_seconds"
ROUTE = "/v1/completions"


# --- the service --------------------------------------------------------------------------


@dataclass
class Service:
    url: str
    pid: int
    log: Path


@contextlib.contextmanager
def service(model_dir: Path, device: str, log_path: Path) -> Iterator[Service]:
    settings = {
        "MODEL_PATH": str(model_dir),
        "MODEL_VERSIONS": "v1",  # one classifier version: a shorter start; tiny-lm is v1 anyway
        "GENERATION_MAX_BATCH": str(MAX_BATCH),
        "INFERENCE_DEVICE": device,
    }
    with running_demo(settings, log_path, READY_TIMEOUT_S) as (url, process):
        yield Service(url, process.pid, log_path)


def thread_cpu(pid: int) -> dict[str, float]:
    """User + system CPU seconds of each thread of a process (Linux ``/proc``)."""
    times = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            times[task.name] = (int(fields[11]) + int(fields[12])) / tick
    return times


def cpu_split(pid: int, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two :func:`thread_cpu` readings: the event loop (the main thread),
    the decode thread (the busiest other one: the model runs there) and the rest."""
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = spent.pop(str(pid), 0.0)
    decode = max(spent.values(), default=0.0)
    return {"loop": loop, "decode": decode, "other": sum(spent.values()) - decode}


def scrape(text: str) -> dict[str, float]:
    """The tiny-lm samples this benchmark reads, summed over their other labels."""
    wanted = {
        f"{TTFT}_sum", f"{TTFT}_count", f"{TPOT}_sum", f"{TPOT}_count",
        f"{INFERENCES}", f"{STAGE}_sum", f"{STAGE}_count", QUEUE_DEPTH,
    }  # fmt: skip
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (f"{FIRST_BYTE}_sum", f"{FIRST_BYTE}_count"):
                if sample.labels.get("route") == ROUTE:
                    values[sample.name] = values.get(sample.name, 0.0) + sample.value
                continue
            if sample.labels.get("model") != MODEL_NAME:
                continue
            name = sample.name
            if name == TOKENS:
                name = f"{TOKENS}:{sample.labels.get('type')}"
            elif name.startswith(STAGE):
                if sample.labels.get("stage") != "queue":
                    continue
            elif name not in wanted:
                continue
            values[name] = values.get(name, 0.0) + sample.value
    return values


# --- the clients --------------------------------------------------------------------------


def make_prompts(count: int, seed: int = 0) -> list[str]:
    """Varied printable prompts, 8 to 48 characters."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(ALPHABET))
    return ["".join(rng.choice(letters, int(rng.integers(8, 49)))) for _ in range(count)]


@dataclass
class Generation:
    ttft_s: float
    tpot_s: float | None
    completion_tokens: int
    text_chunks: int
    finish_reason: str


class StreamConnection:
    """One keep-alive HTTP/1.1 connection that streams completions with as little client
    work as possible: the request's bytes are built before the clock starts, and the
    response is read straight off the socket (chunked transfer, SSE lines). An HTTP library
    in the same process costs hundreds of microseconds per request and per chunk, which the
    client would count as the service's time to first token."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str) -> StreamConnection:
        address = httpx.URL(url)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        return cls(reader, writer)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def generate(self, prompt: str, max_tokens: int) -> Generation:
        body = json.dumps(
            {
                "model": MODEL_NAME,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ).encode()
        request = (
            f"POST {ROUTE} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        first = finish = 0.0
        text_chunks = 0
        reason = ""
        usage: dict[str, int] | None = None
        reader = self._reader
        pending = b""
        started = time.perf_counter()
        self._writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200" or b"transfer-encoding: chunked" not in head.lower():
            raise RuntimeError(f"unexpected answer: {head[:500]!r}")
        while True:
            size = int(await reader.readuntil(b"\r\n"), 16)
            chunk = await reader.readexactly(size + 2)
            now = time.perf_counter()
            if not size:
                break
            *lines, pending = (pending + chunk[:-2]).split(b"\n")  # an event may span chunks
            for line in lines:
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                event = json.loads(line[6:])
                choices = event.get("choices")
                if choices:
                    if not first:
                        first = now
                    choice = choices[0]
                    if choice.get("text"):
                        text_chunks += 1
                    if choice.get("finish_reason") is not None:
                        finish, reason = now, choice["finish_reason"]
                elif event.get("usage"):
                    usage = event["usage"]
        if usage is None or not first or not finish:
            raise RuntimeError("a stream ended without its finish chunk or usage")
        tokens = int(usage["completion_tokens"])
        tpot = (finish - first) / (tokens - 1) if tokens > 1 else None
        return Generation(first - started, tpot, tokens, text_chunks, reason)


async def load_service(
    url: str, streams: int, prompts: list[str], max_tokens: int, stagger: float = 0.0
) -> tuple[list[Generation], float]:
    """``streams`` clients, one keep-alive connection each, share ``prompts`` (one
    generation each) until all are done; client ``i`` starts ``i * stagger`` seconds late."""
    queue = list(reversed(prompts))
    results: list[Generation] = []
    connections = [await StreamConnection.open(url) for _ in range(streams)]

    async def client(index: int, connection: StreamConnection) -> None:
        await asyncio.sleep(index * stagger)
        while queue:
            results.append(await connection.generate(queue.pop(), max_tokens))

    try:
        started = time.perf_counter()
        await asyncio.gather(*(client(*pair) for pair in enumerate(connections)))
        return results, time.perf_counter() - started
    finally:
        for connection in connections:
            await connection.close()


async def sample_queue_depth(client: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
    samples: list[float] = []
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), QUEUE_SAMPLE_S)
        if stop.is_set():
            break
        response = await client.get("/metrics")
        samples.append(scrape(response.text).get(QUEUE_DEPTH, 0.0))
    return samples


# --- one round at one level ---------------------------------------------------------------


@dataclass
class Measurement:
    round: int
    streams: int
    raw_batch: int
    raw_tokens: int
    raw_seconds: float
    raw_tokens_per_s: float
    service_tokens: int
    service_seconds: float
    service_tokens_per_s: float
    ratio: float
    generations: int
    finish_reasons: dict[str, int]
    text_chunks: int
    server_cpu_s: dict[str, float]
    client_cpu_s: float
    metrics_delta: dict[str, float]
    queue_depth_samples: list[float]
    ttft_s: list[float] = field(repr=False)
    tpot_s: list[float] = field(repr=False)


async def measure(
    model: Any,
    server: Service,
    client: httpx.AsyncClient,
    round_: int,
    streams: int,
    prompts: list[str],
    max_tokens: int,
) -> Measurement:
    raw_batch = min(streams, MAX_BATCH)
    raw_tokens, raw_seconds = textgen.raw_decode(model, prompts, max_tokens, max_batch=raw_batch)
    # Independent clients do not finish together: started at once, with equal lengths, the
    # streams would end on the same step and send their next requests in one burst for the
    # whole run. Spread their starts over one generation (as long as the raw loop takes).
    generation_seconds = raw_seconds / raw_tokens * raw_batch * max_tokens
    before = scrape((await client.get("/metrics")).text)
    cpu_before, client_before = thread_cpu(server.pid), time.process_time()
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample_queue_depth(client, stop))
    try:
        generations, seconds = await load_service(
            server.url, streams, prompts, max_tokens, generation_seconds / streams
        )
    finally:
        stop.set()
        depths = await sampler
    cpu_after, client_after = thread_cpu(server.pid), time.process_time()
    after = scrape((await client.get("/metrics")).text)
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    tokens = sum(g.completion_tokens for g in generations)
    reasons: dict[str, int] = {}
    for g in generations:
        reasons[g.finish_reason] = reasons.get(g.finish_reason, 0) + 1
    raw_rate, rate = raw_tokens / raw_seconds, tokens / seconds
    return Measurement(
        round=round_,
        streams=streams,
        raw_batch=raw_batch,
        raw_tokens=raw_tokens,
        raw_seconds=raw_seconds,
        raw_tokens_per_s=raw_rate,
        service_tokens=tokens,
        service_seconds=seconds,
        service_tokens_per_s=rate,
        ratio=rate / raw_rate,
        generations=len(generations),
        finish_reasons=reasons,
        text_chunks=sum(g.text_chunks for g in generations),
        server_cpu_s=cpu_split(server.pid, cpu_before, cpu_after),
        client_cpu_s=client_after - client_before,
        metrics_delta=delta,
        queue_depth_samples=depths,
        ttft_s=[g.ttft_s for g in generations],
        tpot_s=[g.tpot_s for g in generations if g.tpot_s is not None],
    )


# --- what aiobs adds per streamed token, in this process ----------------------------------


def harness() -> tuple[aiobs.Observability, Any]:
    """An Observability on real components, as tests/conftest.py's Harness builds it."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    exporter = InMemorySpanExporter()
    obs = aiobs.Observability(
        aiobs.Settings.load({"service_name": "bench-generation"}, environ={}),
        registry=CollectorRegistry(),
        span_exporter=exporter,
        log_stream=io.StringIO(),
        environ={},
    )
    return obs.install(), exporter


def _per_call(run: Callable[[], None], calls: int, repeats: int) -> float:
    """Median seconds per call of ``run`` (which makes ``calls`` calls) over ``repeats``."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) / calls)
    return statistics.median(times)


def time_token(obs: aiobs.Observability, calls: int, repeats: int) -> float:
    """Seconds per ``InferenceRecord.token()``, the loop's own cost taken off."""

    class Nothing:
        def token(self) -> None:
            pass

    def loop(record: Any) -> Callable[[], None]:
        def run() -> None:
            token = record.token
            for _ in range(calls):
                token()

        return run

    with obs.inference(MODEL_NAME, "v1") as record:
        spent = _per_call(loop(record), calls, repeats)
    return spent - _per_call(loop(Nothing()), calls, repeats)


def time_record(obs: aiobs.Observability, exporter: Any, calls: int, repeats: int) -> float:
    """Seconds per generation's inference record without its tokens: what the service's
    ``_observed`` does around a generation (span, counts, five attributes, a stage)."""
    from aiobs import catalog

    def run() -> None:
        for _ in range(calls):
            with obs.inference(MODEL_NAME, "v1") as record:
                record.tokens(input=24)
                record.set_attribute(catalog.ATTR_GEN_AI_OPERATION, "text_completion")
                record.set_attribute(catalog.ATTR_GEN_AI_REQUEST_MAX_TOKENS, 64)
                record.set_attribute(catalog.ATTR_GEN_AI_REQUEST_TEMPERATURE, 0.0)
                record.set_attribute(catalog.ATTR_GEN_AI_RESPONSE_MODEL, MODEL_NAME)
                record.observe_stage("queue", 0.002)
                record.set_attribute(catalog.ATTR_GEN_AI_FINISH_REASONS, ("length",))
        obs.force_flush()
        exporter.clear()

    return _per_call(run, calls, repeats)


def streaming_app(chunks: int) -> Callable[..., Awaitable[None]]:
    """An ASGI app answering with ``chunks`` SSE-sized body chunks, then the end."""
    piece = b'data: {"id":"cmpl-0123456789abcdef","object":"text_completion","choices":[]}\n\n'
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream")],
    }
    body = {"type": "http.response.body", "body": piece, "more_body": True}
    end = {"type": "http.response.body", "body": b"", "more_body": False}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(start)
        for _ in range(chunks):
            await send(body)
        await send(end)

    return app


def time_middleware(
    obs: aiobs.Observability, exporter: Any, chunks: int, requests: int, repeats: int
) -> tuple[float, float]:
    """Seconds per request of a ``chunks``-chunk stream, bare and wrapped (median of
    ``repeats``, the two interleaved)."""
    route = SimpleNamespace(path_format="/v1/completions")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions",
        "root_path": "", "query_string": b"", "headers": [(b"host", b"127.0.0.1")],
        "client": (HOST, 50000), "server": (HOST, 8000),
    }  # fmt: skip
    request = {"type": "http.request", "body": b"{}", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(_message: dict[str, Any]) -> None:
        return None

    bare = streaming_app(chunks)
    wrapped = aiobs.ObservabilityMiddleware(bare, observability=obs)

    async def drive(app: Any) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await app({**scope, "route": route}, receive, send)
        return (time.perf_counter() - started) / requests

    async def run() -> tuple[float, float]:
        bare_times, wrapped_times = [], []
        for _ in range(repeats):
            bare_times.append(await drive(bare))
            wrapped_times.append(await drive(wrapped))
            obs.force_flush()
            exporter.clear()
        return statistics.median(bare_times), statistics.median(wrapped_times)

    return asyncio.run(run())


def aiobs_costs(max_tokens: int, quick: bool) -> dict[str, float]:
    """Microseconds aiobs adds per streamed token, and the parts."""
    calls, generations, requests, repeats = (
        (20_000, 1_000, 500, 5) if quick else (100_000, 3_000, 1_500, 7)
    )
    chunks = max_tokens + 3  # text chunks, the finish chunk, the usage chunk, [DONE]
    obs, exporter = harness()
    try:
        token = time_token(obs, calls, repeats)
        record = time_record(obs, exporter, generations, repeats)
        bare_1, wrapped_1 = time_middleware(obs, exporter, 1, requests, repeats)
        bare_k, wrapped_k = time_middleware(obs, exporter, chunks, requests, repeats)
    finally:
        obs.uninstall()
        obs.shutdown(timeout=2)
    request_1, request_k = wrapped_1 - bare_1, wrapped_k - bare_k
    middleware_per_chunk = request_k / chunks
    per_token = token + middleware_per_chunk + record / max_tokens
    return {
        "token_us": token * 1e6,
        "middleware_request_1_chunk_us": request_1 * 1e6,
        "middleware_request_us": request_k * 1e6,
        "middleware_chunks": chunks,
        "middleware_marginal_chunk_us": (request_k - request_1) / (chunks - 1) * 1e6,
        "middleware_per_chunk_us": middleware_per_chunk * 1e6,
        "bare_request_us": bare_k * 1e6,
        "record_per_generation_us": record * 1e6,
        "brief_per_token_us": (token + middleware_per_chunk) * 1e6,
        "per_token_us": per_token * 1e6,
    }


# --- summary ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(rows: list[Measurement]) -> dict[str, Any]:
    """Per concurrency level: medians over rounds of the rates, timings pooled over them."""
    summary: dict[str, Any] = {}
    for streams in sorted({row.streams for row in rows}):
        mine = [row for row in rows if row.streams == streams]
        ttft = [value for row in mine for value in row.ttft_s]
        tpot = [value for row in mine for value in row.tpot_s]

        def total(key: str, mine: list[Measurement] = mine) -> float:
            return sum(row.metrics_delta.get(key, 0.0) for row in mine)

        client_ttft, client_tpot = statistics.fmean(ttft), statistics.fmean(tpot)
        service_ttft = total(f"{TTFT}_sum") / max(total(f"{TTFT}_count"), 1)
        service_tpot = total(f"{TPOT}_sum") / max(total(f"{TPOT}_count"), 1)
        tokens = sum(row.service_tokens for row in mine)
        seconds = sum(row.service_seconds for row in mine)
        summary[str(streams)] = {
            "raw_batch": mine[0].raw_batch,
            "raw_tokens_per_s": statistics.median(row.raw_tokens_per_s for row in mine),
            "service_tokens_per_s": statistics.median(row.service_tokens_per_s for row in mine),
            "ratio": statistics.median(row.ratio for row in mine),
            "ratios": [row.ratio for row in mine],
            "generations": sum(row.generations for row in mine),
            "completion_tokens": tokens,
            "client_ttft_p50_ms": percentile(ttft, 50) * 1e3,
            "client_ttft_p99_ms": percentile(ttft, 99) * 1e3,
            "client_ttft_mean_ms": client_ttft * 1e3,
            "client_tpot_p50_ms": percentile(tpot, 50) * 1e3,
            "client_tpot_p99_ms": percentile(tpot, 99) * 1e3,
            "client_tpot_mean_ms": client_tpot * 1e3,
            "service_ttft_mean_ms": service_ttft * 1e3,
            "service_tpot_mean_ms": service_tpot * 1e3,
            "ttft_difference": service_ttft / client_ttft - 1,
            "tpot_difference": service_tpot / client_tpot - 1,
            "service_ttft_count": total(f"{TTFT}_count"),
            "service_tpot_count": total(f"{TPOT}_count"),
            "service_inferences": total(INFERENCES),
            "service_output_tokens": total(f"{TOKENS}:output"),
            "service_queue_wait_mean_ms": total(f"{STAGE}_sum")
            / max(total(f"{STAGE}_count"), 1)
            * 1e3,
            "queue_depth_max": max((d for row in mine for d in row.queue_depth_samples), default=0),
            "queue_depth_samples": sum(len(row.queue_depth_samples) for row in mine),
            "server_cores": sum(sum(row.server_cpu_s.values()) for row in mine) / seconds,
            "server_cpu_us_per_token": {
                part: sum(row.server_cpu_s[part] for row in mine) / tokens * 1e6
                for part in ("loop", "decode", "other")
            },
            "service_first_byte_mean_ms": total(f"{FIRST_BYTE}_sum")
            / max(total(f"{FIRST_BYTE}_count"), 1)
            * 1e3,
            "client_cores": sum(row.client_cpu_s for row in mine) / seconds,
        }
    return summary


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def report(summary: dict[str, Any], costs: dict[str, float], max_tokens: int) -> list[str]:
    lines = []
    header = (
        f"{'streams':>7} {'raw tok/s':>9} {'svc tok/s':>9} {'ratio':>6} "
        f"{'TTFT p50':>8} {'p99':>7} {'TPOT p50':>8} {'p99':>6}  (client, ms)"
    )
    lines += [header, "-" * len(header)]
    for streams, row in summary.items():
        lines.append(
            f"{streams:>7} {row['raw_tokens_per_s']:9.0f} {row['service_tokens_per_s']:9.0f} "
            f"{row['ratio']:6.2f} {row['client_ttft_p50_ms']:8.2f} "
            f"{row['client_ttft_p99_ms']:7.2f} {row['client_tpot_p50_ms']:8.2f} "
            f"{row['client_tpot_p99_ms']:6.2f}"
        )
    for streams, row in summary.items():
        cpu = row["server_cpu_us_per_token"]
        first_byte, client_ttft = row["service_first_byte_mean_ms"], row["client_ttft_mean_ms"]
        ratios = ", ".join(f"{ratio:.2f}" for ratio in row["ratios"])
        lines += [
            "",
            f"{streams} stream(s): {row['generations']} generations, "
            f"{row['completion_tokens']} completion tokens (aiobs counted "
            f"{row['service_output_tokens']:.0f} output tokens, {row['service_inferences']:.0f} "
            f"inferences); raw loop at batch {row['raw_batch']}; per-round ratios {ratios}",
            f"  mean TTFT  client {row['client_ttft_mean_ms']:7.3f} ms   aiobs "
            f"{row['service_ttft_mean_ms']:7.3f} ms   difference {row['ttft_difference']:+.1%}",
            f"  mean TPOT  client {row['client_tpot_mean_ms']:7.3f} ms   aiobs "
            f"{row['service_tpot_mean_ms']:7.3f} ms   difference {row['tpot_difference']:+.1%}",
            f"  TTFT as the middleware sees it (request in -> first body chunk sent) "
            f"{first_byte:.3f} ms: of the client's, {client_ttft - first_byte:.2f} ms pass "
            f"outside the app (before the request reaches it, after the chunk leaves it), "
            f"{first_byte - row['service_ttft_mean_ms']:.2f} ms from aiobs's first token to "
            f"that chunk",
            f"  service: mean wait to join the batch {row['service_queue_wait_mean_ms']:.2f} ms; "
            f"ai_inference_queue_depth max {row['queue_depth_max']:.0f} over "
            f"{row['queue_depth_samples']} samples",
            f"  CPU: service {row['server_cores']:.2f} cores, per token: event loop "
            f"{cpu['loop']:.0f} us, decode thread {cpu['decode']:.0f} us, other threads "
            f"{cpu['other']:.0f} us; this client {row['client_cores']:.2f} cores",
        ]
    lines += [
        "",
        "aiobs per streamed token (in this process, tracing and access log on):",
        f"  InferenceRecord.token()                       {costs['token_us']:6.2f} us",
        f"  middleware, per chunk of a {costs['middleware_chunks']:.0f}-chunk stream      "
        f"{costs['middleware_per_chunk_us']:6.2f} us  (request {costs['middleware_request_us']:.1f}"
        f" us: {costs['middleware_request_1_chunk_us']:.1f} us with 1 chunk, "
        f"+{costs['middleware_marginal_chunk_us']:.2f} us per further chunk)",
        f"  inference record per generation / {max_tokens} tokens   "
        f"{costs['record_per_generation_us'] / max_tokens:6.2f} us  "
        f"({costs['record_per_generation_us']:.1f} us per generation)",
        f"  total                                         {costs['per_token_us']:6.2f} us",
    ]
    lines.append("")
    for streams, row in summary.items():
        tpot_us = row["client_tpot_mean_ms"] * 1e3
        share = costs["per_token_us"] / tpot_us
        loop = share * int(streams)
        lines.append(
            f"{streams} stream(s): aiobs share of client TPOT {share:.3%} "
            f"(x{streams} streams on one event loop: {loop:.2%} of its time)"
        )
    lines.append("")
    main = summary.get(str(MAX_BATCH))
    if main is not None:
        share = costs["per_token_us"] / (main["client_tpot_mean_ms"] * 1e3)
        lines += [
            f"targets at {MAX_BATCH} streams:",
            f"  service / raw tokens/s     {main['ratio']:6.2f}   >= {TARGET_THROUGHPUT:.2f}  "
            f"{verdict(main['ratio'] >= TARGET_THROUGHPUT)}",
            f"  aiobs TTFT vs client mean  {main['ttft_difference']:+6.1%}   within 10 %  "
            f"{verdict(abs(main['ttft_difference']) <= TARGET_AGREEMENT)}",
            f"  aiobs TPOT vs client mean  {main['tpot_difference']:+6.1%}   within 10 %  "
            f"{verdict(abs(main['tpot_difference']) <= TARGET_AGREEMENT)}",
            f"  aiobs share of TPOT        {share:6.2%}   <= 5 %  {verdict(share <= TARGET_SHARE)}",
        ]
    one = summary.get("1")
    if one is not None and main is not None:
        gain = main["service_tokens_per_s"] / one["service_tokens_per_s"]
        raw_gain = main["raw_tokens_per_s"] / one["raw_tokens_per_s"]
        lines.append(
            f"batching: service tokens/s at {MAX_BATCH} streams / at 1: {gain:.2f}x "
            f"(raw loop, batch {MAX_BATCH} / batch 1: {raw_gain:.2f}x)"
        )
    return lines


# --- main ---------------------------------------------------------------------------------


def aiobs_revision() -> dict[str, Any]:
    commit, dirty = git_revision("aiobs", "demo_service")
    return {"commit": commit, "dirty": bool(dirty)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="8", help="concurrency levels, e.g. 1,8")
    parser.add_argument("--rounds", type=int, help="rounds over every level (default 3)")
    parser.add_argument(
        "--generations", type=int, help="generations per round = 8 x this (default 16)"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--model-path", type=Path, help="model directory (default: the demo's)")
    parser.add_argument("--quick", action="store_true", help="2 rounds x 64 generations")
    args = parser.parse_args()
    for name, quick, full in (("rounds", 2, 3), ("generations", 8, 16)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    try:
        args.streams = sorted({int(part) for part in args.streams.split(",") if part.strip()})
    except ValueError:
        parser.error("--streams takes whole numbers separated by commas, e.g. 1,8")
    if not args.streams or min(args.streams) < 1 or max(args.streams) > 64:
        parser.error("--streams: 1 to 64 each")
    if args.rounds < 1 or args.generations < 1:
        parser.error("--rounds and --generations must be positive")
    if not textgen.MIN_MAX_TOKENS < args.max_tokens <= textgen.MAX_MAX_TOKENS:
        parser.error(f"--max-tokens: 2 to {textgen.MAX_MAX_TOKENS}")
    if args.model_path is None:
        args.model_path = default_model_path(os.environ)
    return args


async def run_service_rounds(
    args: argparse.Namespace, model: Any, server: Service
) -> list[Measurement]:
    count = BUDGET_STREAMS * args.generations
    rows = []
    limits = httpx.Limits(max_connections=max(args.streams) + 2)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
    async with httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits) as client:
        for streams in args.streams:  # warm-up: connections open, every code path run
            await load_service(
                server.url, streams, make_prompts(streams, seed=99), args.max_tokens
            )
        for round_ in range(1, args.rounds + 1):
            for streams in args.streams:
                prompts = make_prompts(count, seed=round_)
                row = await measure(
                    model, server, client, round_, streams, prompts, args.max_tokens
                )
                rows.append(row)
                print(
                    f"round {round_}/{args.rounds}  {streams} stream(s): raw (batch "
                    f"{row.raw_batch}) {row.raw_tokens_per_s:6.0f} tok/s | service "
                    f"{row.service_tokens_per_s:6.0f} tok/s | ratio {row.ratio:.2f} | "
                    f"TTFT p50 {percentile(row.ttft_s, 50) * 1e3:6.2f} ms | "
                    f"TPOT p50 {percentile(row.tpot_s, 50) * 1e3:5.2f} ms",
                    flush=True,
                )
    return rows


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the service stops
    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    host, revision = machine(PACKAGES), aiobs_revision()
    RESULTS.mkdir(exist_ok=True)
    log_path = RESULTS / f"generation-{stamp}.service.log"
    model = load(args.model_path, "v1", args.device, (1, MAX_BATCH), threads=DEFAULT_THREADS)
    dirty = " + local changes" if revision["dirty"] else ""
    print(
        f"tiny-lm v1 on {model.provider}; streams {','.join(map(str, args.streams))}; "
        f"{args.rounds} round(s) x {BUDGET_STREAMS * args.generations} generations of "
        f"{args.max_tokens} tokens; GENERATION_MAX_BATCH={MAX_BATCH}; "
        f"commit {(revision['commit'] or '?')[:10]}{dirty}; "
        f"load average {host['load_average_at_start'][0]:.2f}",
        flush=True,
    )
    with service(args.model_path, args.device, log_path) as server:
        rows = asyncio.run(run_service_rounds(args, model, server))
    costs = aiobs_costs(args.max_tokens, args.quick)
    summary = summarize(rows)
    print()
    for line in report(summary, costs, args.max_tokens):
        print(line)
    path = RESULTS / f"generation-{stamp}.json"
    document = {
        "started": started.isoformat(),
        "command": [Path(sys.executable).name, *sys.argv],
        "settings": {
            "streams": args.streams,
            "rounds": args.rounds,
            "generations_per_round": BUDGET_STREAMS * args.generations,
            "max_tokens": args.max_tokens,
            "device": args.device,
            "provider": model.provider,
            "generation_max_batch": MAX_BATCH,
        },
        "machine": host,
        "revision": revision,
        "load_average_at_end": os.getloadavg(),
        "summary": summary,
        "aiobs_costs": costs,
        "measurements": [asdict(row) for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(REPO_ROOT)} (service log: {log_path.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
