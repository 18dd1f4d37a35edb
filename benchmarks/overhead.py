"""What aiobs costs per request: throughput and p99 latency of one trivial FastAPI endpoint
under wrk, uninstrumented, with aiobs in several configurations, with the libraries a service
would use instead (a hand-made Prometheus + OpenTelemetry + structlog set-up,
starlette-exporter, prometheus-fastapi-instrumentator, Pydantic Logfire), and on two uvicorn
workers. Plus a ``/metrics``-under-load check.

    .venv/bin/python benchmarks/overhead.py [--rounds N] [--duration S] [--warmup S]
                                            [--connections C] [--server {uvloop,h11}]
                                            [--workers N]
    .venv/bin/python benchmarks/overhead.py --quick

Every measurement starts a fresh uvicorn server (uvloop and httptools unless ``--server h11``;
one worker, pinned to its own core when the machine has two) and loads it with ``wrk -t1`` on
another; the two-worker cases are not pinned. The cases are alternated within each round, in
an order rotated per round, so drift and noise reach all of them; the report is the median
over rounds. Results go to ``benchmarks/results/overhead-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_support import free_port, git_revision, machine
from overhead_app import SERVERS, VARIANTS, missing_requirements

HERE = Path(__file__).resolve().parent
APP = HERE / "overhead_app.py"
RESULTS = HERE / "results"
BODY = '{"x": [1.0, 2.0, 3.0]}'
EXTRA_SERIES = 1000
SCRAPE_INTERVAL_S = 0.1
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
STARTUP_S = 2.5
"""About what starting and stopping a server takes, for the time estimate."""
TARGETS = {"aiobs-metrics": 0.95, "aiobs-full": 0.70, "aiobs-full-10pct": 0.85}
"""Throughput targets: the least ``ratio_to_bare`` of each case."""
P99_TARGETS = {"aiobs-full": 2.0}
"""Latency targets: the most ``p99_ratio_to_bare`` of each case."""
PEERS = {
    "handmade": "metrics, traces, access log",
    "starlette-exporter": "metrics",
    "instrumentator": "metrics",
    "logfire": "traces",
}
"""The set-ups a service would pick instead of aiobs, and what each of them records."""
WORKER_VARIANTS = ("bare", "aiobs-full", "starlette-exporter")
"""The variants run again on several uvicorn workers (``--workers``)."""
SELF_MONITORING = (
    "aiobs_spans_exported_total",
    "aiobs_spans_dropped_total",
    "aiobs_span_export_failures_total",
    "aiobs_log_lines_dropped_total",
)
LOSSES = SELF_MONITORING[1:]
"""The counters that must stay at zero for a measurement to count everything it should."""
PACKAGES = (
    "aiobs", "fastapi", "starlette", "uvicorn", "h11", "uvloop", "httptools", "pydantic",
    "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation-fastapi", "protobuf", "prometheus_client",
    "prometheus-fastapi-instrumentator", "structlog", "starlette-exporter", "logfire",
)  # fmt: skip
"""Versions recorded with the results (``null``: not installed)."""
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {{"requests": %.0f, "duration_us": %.0f, "p50_us": %.1f, "p99_us": %.1f, '
    .. '"errors": %.0f}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Case:
    """One row of the benchmark: a variant of the app, optionally with extra series and a
    side loop scraping ``/metrics``, on one uvicorn worker (pinned to its core) or several
    (not pinned)."""

    name: str
    variant: str
    extra_series: int = 0
    scrape: bool = False
    workers: int = 1

    @property
    def baseline(self) -> str:
        """The case this one's ratios are computed against, in the same round."""
        return "bare" if self.workers == 1 else workers_name("bare", self.workers)


def workers_name(variant: str, workers: int) -> str:
    return f"{variant}-{workers}w"


def build_cases(workers: int) -> tuple[Case, ...]:
    """Every variant on one worker, the ``/metrics`` cases, and ``WORKER_VARIANTS`` on
    ``workers`` workers (none when ``workers`` is below 2)."""
    return (
        *(Case(variant, variant) for variant in VARIANTS),
        Case("aiobs-full+1k-series", "aiobs-full", EXTRA_SERIES),
        Case("aiobs-full+1k-series+scrape", "aiobs-full", EXTRA_SERIES, scrape=True),
        *(
            Case(workers_name(variant, workers), variant, workers=workers)
            for variant in (WORKER_VARIANTS if workers > 1 else ())
        ),
    )


@dataclass
class Measurement:
    case: str
    round: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu_us_per_request: float
    server_core_share: float
    worker_core_shares: list[float] = field(default_factory=list)
    self_monitoring: dict[str, float] = field(default_factory=dict)
    scrape_ms: list[float] = field(default_factory=list)
    scrape_bytes: int = 0
    scrape_failures: int = 0


@dataclass(frozen=True)
class Pinning:
    """The core wrk (and this script, and the OTLP receiver) runs on and the one the server
    runs on; empty when not pinned (fewer than two cores, or no ``taskset``). ``every`` is
    every core this script may use: what the cases on several workers share."""

    load: tuple[int, ...]
    server: tuple[int, ...]
    every: tuple[int, ...]

    @staticmethod
    def choose() -> Pinning:
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            return Pinning((), (), cpus)
        return Pinning((cpus[0],), (cpus[1],), cpus)

    def apply(self, case: Case, receiver_pid: int) -> None:
        """Puts this thread (and so wrk, which it starts) and the OTLP receiver on the load
        core, or on every core for a case on several workers."""
        cpus = self.every if case.workers > 1 or not self.load else self.load
        os.sched_setaffinity(0, cpus)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(receiver_pid, cpus)

    def server_prefix(self, case: Case) -> list[str]:
        if case.workers > 1 or not self.server:
            return []  # the affinity of this thread: every core
        return ["taskset", "-c", ",".join(map(str, self.server))]


# --- the OTLP receiver ----------------------------------------------------------------------


class _OtlpHandler(BaseHTTPRequestHandler):
    """Accepts ``POST /v1/traces`` and answers 200 with an empty body."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects
    counters: Any = None  # multiprocessing.Array("q", 2): requests, bytes

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.counters.get_lock():
            self.counters[0] += 1
            self.counters[1] += length

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the receiver must not spend the load generator's core on logging."""


def _serve_otlp(ready: Any, counters: Any) -> None:
    _OtlpHandler.counters = counters
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpHandler)
    ready.send(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, Any, int]]:
    """A receiver in its own process; yields its base URL, its counters and its pid."""
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", 2)
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_serve_otlp, args=(child, counters), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not parent.poll(0.1):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OTLP receiver did not start")
        yield f"http://127.0.0.1:{parent.recv()}", counters, process.pid
    finally:
        process.terminate()
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()


# --- the server under test ------------------------------------------------------------------


def http_request(port: int, method: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = BODY if method == "POST" else None
        connection.request(method, path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def server_environment(
    case: Case, otlp_endpoint: str, server: str, multiprocess_dir: Path | None
) -> dict[str, str]:
    """This process's environment without any OpenTelemetry or aiobs settings, plus the
    case's (``overhead_app`` adds the variant's own)."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "AIOBS_", "BENCH_", "PROMETHEUS_MULTIPROC"))
    }
    return {
        **inherited,
        "BENCH_VARIANT": case.variant,
        "BENCH_EXTRA_SERIES": str(case.extra_series),
        "BENCH_SERVER": server,
        "BENCH_WORKERS": str(case.workers),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "PYTHONUNBUFFERED": "1",
        **({"PROMETHEUS_MULTIPROC_DIR": str(multiprocess_dir)} if multiprocess_dir else {}),
    }


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, their own children too (Linux: /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    level = [pid]
    while level:
        level = [child for child, parent in parents.items() if parent in level]
        found += level
    return found


def process_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of one process so far; 0 once it is gone (Linux: /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stops the server and, should any outlive it, its worker processes."""
    children = descendants(process.pid)
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in children:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)


@dataclass(frozen=True)
class Server:
    port: int
    pid: int

    def processes(self) -> list[int]:
        """The server's process and its workers' (uvicorn's supervisor starts them)."""
        return [self.pid, *descendants(self.pid)]

    def cpu_seconds(self, processes: list[int]) -> list[float]:
        """CPU time of every thread of each of ``processes`` so far."""
        return [process_cpu_seconds(pid) for pid in processes]

    @staticmethod
    def is_worker(pid: int) -> bool:
        """Whether ``pid`` is a worker uvicorn started (multiprocessing's spawn), not its
        resource tracker."""
        with contextlib.suppress(OSError):
            return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        return False


@contextlib.contextmanager
def serving(
    case: Case, otlp_endpoint: str, pinning: Pinning, server: str, logs: Path
) -> Iterator[Server]:
    """A fresh server for ``case``; yields it once it answers, stops it afterwards. Its
    stdout (the JSON logs) goes to /dev/null, its stderr to a file under ``logs``. Several
    workers get a fresh, empty ``PROMETHEUS_MULTIPROC_DIR`` (aiobs refuses several workers
    without one)."""
    port = free_port()
    stderr_path = logs / f"{case.name}-{port}.stderr"
    multiprocess_dir = None
    if case.workers > 1:
        multiprocess_dir = logs / f"{case.name}-{port}.prometheus"
        multiprocess_dir.mkdir()
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*pinning.server_prefix(case), sys.executable, str(APP), str(port)],
            env=server_environment(case, otlp_endpoint, server, multiprocess_dir),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                tail = stderr_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{case.name}: the server exited at start-up:\n{tail}")
            with contextlib.suppress(OSError):
                if http_request(port, "POST", "/v1/predict", timeout=1.0)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{case.name}: no answer within {READY_TIMEOUT_S:g} s")
            time.sleep(0.1)
        yield Server(port, process.pid)  # taskset execs the server: same process id
    finally:
        stop(process)


def read_self_monitoring(port: int) -> dict[str, float]:
    """aiobs's own counters (spans exported and dropped, log lines dropped) from /metrics."""
    with contextlib.suppress(OSError):
        status, body = http_request(port, "GET", "/metrics")
        if status == 200:
            values = {}
            for line in body.decode().splitlines():
                name, _, value = line.partition(" ")
                if name in SELF_MONITORING:
                    values[name] = float(value)
            return values
    return {}


# --- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def run_wrk(port: int, duration: float, connections: int, script: Path) -> WrkResult:
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "5s",
        "-s", str(script), f"http://127.0.0.1:{port}/v1/predict",
    ]  # fmt: skip
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    line = next((x for x in output.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    return WrkResult(
        requests=int(data["requests"]),
        requests_per_s=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=int(data["errors"]),
    )


class Scraper(threading.Thread):
    """GETs /metrics every ``interval`` seconds on one keep-alive connection until stopped."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(name="scraper", daemon=True)
        self.port = port
        self.interval = interval
        self.durations_ms: list[float] = []
        self.last_size = 0
        self.failures = 0
        self._stopped = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        next_at = time.monotonic()
        try:
            while not self._stopped.is_set():
                started = time.perf_counter()
                try:
                    connection.request("GET", "/metrics")
                    response = connection.getresponse()
                    body = response.read()
                except OSError:
                    self.failures += 1
                    connection.close()
                else:
                    if response.status == 200:
                        self.durations_ms.append((time.perf_counter() - started) * 1000)
                        self.last_size = len(body)
                    else:
                        self.failures += 1
                next_at += self.interval
                self._stopped.wait(max(0.0, next_at - time.monotonic()))
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(10)


def measure(
    case: Case, round_: int, server: Server, args: argparse.Namespace, script: Path
) -> Measurement:
    port = server.port
    run_wrk(port, args.warmup, args.connections, script)
    scraper = Scraper(port, SCRAPE_INTERVAL_S) if case.scrape else None
    if scraper is not None:
        scraper.start()
    processes = server.processes()
    cpu_before, started = server.cpu_seconds(processes), time.monotonic()
    try:
        result = run_wrk(port, args.duration, args.connections, script)
    finally:
        if scraper is not None:
            scraper.stop()
    elapsed = time.monotonic() - started
    per_process = [
        after - before
        for after, before in zip(server.cpu_seconds(processes), cpu_before, strict=True)
    ]
    cpu = sum(per_process)
    return Measurement(
        case=case.name,
        round=round_,
        requests_per_s=result.requests_per_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        requests=result.requests,
        errors=result.errors,
        server_cpu_us_per_request=cpu / max(result.requests, 1) * 1e6,
        # Near 1.0 when the server had its core to itself; less when something else ran there.
        # Several workers: cores used in all (the sum of the workers' shares, below).
        server_core_share=cpu / elapsed,
        # The workers' own (not the supervisor's): each near 1/workers of the load or more.
        worker_core_shares=[
            cpu / elapsed
            for pid, cpu in zip(processes, per_process, strict=True)
            if pid != server.pid and server.is_worker(pid)
        ],
        self_monitoring=read_self_monitoring(port) if case.variant.startswith("aiobs") else {},
        scrape_ms=scraper.durations_ms if scraper else [],
        scrape_bytes=scraper.last_size if scraper else 0,
        scrape_failures=scraper.failures if scraper else 0,
    )


# --- report ---------------------------------------------------------------------------------


def summarize(
    cases: tuple[Case, ...], measurements: list[Measurement]
) -> dict[str, dict[str, Any]]:
    """Per case: median req/s and p99 over rounds, and the median over rounds of the ratios
    to its baseline (``bare``, or ``bare`` on as many workers) measured in the same round."""
    by_round = {(m.case, m.round): m for m in measurements}
    no_scrape = {m.round: m.p99_ms for m in measurements if m.case == "aiobs-full+1k-series"}
    summary: dict[str, dict[str, Any]] = {}
    for case in cases:
        rows = [m for m in measurements if m.case == case.name]
        if not rows:
            continue
        pairs = [
            (m, by_round[case.baseline, m.round])
            for m in rows
            if (case.baseline, m.round) in by_round
        ]
        ratios = [m.requests_per_s / base.requests_per_s for m, base in pairs]
        p99_ratios = [m.p99_ms / base.p99_ms for m, base in pairs]
        cpu_ratios = [
            base.server_cpu_us_per_request / m.server_cpu_us_per_request for m, base in pairs
        ]
        entry: dict[str, Any] = {
            "workers": case.workers,
            "baseline": case.baseline,
            "requests_per_s": statistics.median(m.requests_per_s for m in rows),
            "p99_ms": statistics.median(m.p99_ms for m in rows),
            "p50_ms": statistics.median(m.p50_ms for m in rows),
            "server_cpu_us_per_request": statistics.median(
                m.server_cpu_us_per_request for m in rows
            ),
            "ratio_to_bare": statistics.median(ratios) if ratios else None,
            "ratio_to_bare_range": [min(ratios), max(ratios)] if ratios else None,
            "p99_ratio_to_bare": statistics.median(p99_ratios) if p99_ratios else None,
            "p99_ratio_to_bare_range": [min(p99_ratios), max(p99_ratios)] if p99_ratios else None,
            "cpu_ratio_to_bare": statistics.median(cpu_ratios) if cpu_ratios else None,
            "errors": sum(m.errors for m in rows),
            "server_core_share_min": min(m.server_core_share for m in rows),
            "worker_core_share_min": min(
                (share for m in rows for share in m.worker_core_shares), default=None
            ),
            "rounds": len(rows),
        }
        entry["losses"] = {
            name: sum(m.self_monitoring.get(name, 0.0) for m in rows)
            for name in LOSSES
            if any(name in m.self_monitoring for m in rows)
        }
        if case.name in TARGETS:
            target = TARGETS[case.name]
            entry["target"] = target
            entry["pass"] = entry["ratio_to_bare"] is not None and entry["ratio_to_bare"] >= target
        if case.name in P99_TARGETS:
            target = P99_TARGETS[case.name]
            entry["p99_target"] = target
            entry["p99_pass"] = (
                entry["p99_ratio_to_bare"] is not None and entry["p99_ratio_to_bare"] <= target
            )
        if case.scrape:
            scrapes = [ms for m in rows for ms in m.scrape_ms]
            scrape_ratios = [m.p99_ms / no_scrape[m.round] for m in rows if m.round in no_scrape]
            entry.update(
                scrapes=len(scrapes),
                scrape_failures=sum(m.scrape_failures for m in rows),
                scrape_median_ms=statistics.median(scrapes) if scrapes else None,
                scrape_max_ms=max(scrapes) if scrapes else None,
                scrape_bytes=max(m.scrape_bytes for m in rows),
                p99_ratio_to_no_scrape=statistics.median(scrape_ratios) if scrape_ratios else None,
            )
        summary[case.name] = entry
    return summary


def verdicts(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target, PASS or MISS: the throughput and p99 targets, and whether ``aiobs-full``
    is ahead of every peer on both ratios (more throughput and a lower p99, relative to
    ``bare`` in the same round)."""
    found: list[dict[str, Any]] = []
    for name, target in TARGETS.items():
        value = summary.get(name, {}).get("ratio_to_bare")
        found.append(
            {
                "target": f"{name} throughput ratio >= {target:.2f}",
                "value": value,
                "pass": value is not None and value >= target,
            }
        )
    for name, target in P99_TARGETS.items():
        value = summary.get(name, {}).get("p99_ratio_to_bare")
        found.append(
            {
                "target": f"{name} p99 ratio <= {target:.2f}",
                "value": value,
                "pass": value is not None and value <= target,
            }
        )
    full = summary.get("aiobs-full")
    peers = [name for name in PEERS if name in summary]
    if full is not None and peers:
        behind = []
        for peer in peers:
            other = summary[peer]
            if not full["ratio_to_bare"] > other["ratio_to_bare"]:
                behind.append(f"{peer} on throughput")
            if not full["p99_ratio_to_bare"] < other["p99_ratio_to_bare"]:
                behind.append(f"{peer} on p99")
        found.append(
            {
                "target": "aiobs-full ahead of every peer on both ratios",
                "peers": peers,
                "value": None,
                "pass": not behind,
                "behind": behind,
            }
        )
    # The same comparison between set-ups that record the same: a metrics-only peer against
    # aiobs-metrics, a peer that traces against aiobs-full.
    like = []
    for peer in peers:
        ours_name = "aiobs-full" if "traces" in PEERS[peer] else "aiobs-metrics"
        ours, other = summary.get(ours_name), summary[peer]
        if ours is None:
            continue
        if not ours["ratio_to_bare"] > other["ratio_to_bare"]:
            like.append(f"{peer} on throughput ({ours_name})")
        if not ours["p99_ratio_to_bare"] < other["p99_ratio_to_bare"]:
            like.append(f"{peer} on p99 ({ours_name})")
    if peers:
        found.append(
            {
                "target": "aiobs ahead of the peers that record the same",
                "peers": peers,
                "value": None,
                "pass": not like,
                "behind": like,
            }
        )
    return found


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_rows(summary: dict[str, dict[str, Any]], names: list[str]) -> None:
    header = (
        f"{'variant':<30} {'req/s':>8} {'p99_ms':>8} {'cpu_us/req':>10} {'cpu_ratio':>9} "
        f"{'ratio_to_bare':>13} {'p99_ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        entry = summary[name]
        print(
            f"{name:<30} {entry['requests_per_s']:>8.0f} {entry['p99_ms']:>8.2f} "
            f"{entry['server_cpu_us_per_request']:>10.1f} "
            f"{_number(entry['cpu_ratio_to_bare'], '.3f'):>9} "
            f"{_number(entry['ratio_to_bare'], '.3f'):>13} "
            f"{_number(entry['p99_ratio_to_bare'], '.2f'):>9}"
        )


def print_table(
    summary: dict[str, dict[str, Any]],
    targets: list[dict[str, Any]],
    args: argparse.Namespace,
    cores: int,
) -> None:
    print()
    loop, http = SERVERS[args.server]["loop"], SERVERS[args.server]["http"]
    print(
        f"{args.rounds} round(s) x {args.duration:g} s per case, wrk -t1 -c{args.connections}, "
        f"uvicorn with {loop} + {http}; medians over rounds of per-round values"
    )
    print(
        "ratio_to_bare = req/s / bare's req/s, p99_ratio = p99 / bare's p99, "
        "cpu_ratio = bare's cpu_us/req / the variant's, each in the same round"
    )
    single = [name for name, entry in summary.items() if entry["workers"] == 1]
    several = [name for name, entry in summary.items() if entry["workers"] > 1]
    print()
    print("One worker, pinned to its core (wrk, this script and the OTLP receiver on the other):")
    _print_rows(summary, single)
    print(
        "cpu_us/req: CPU time of the server process (all its threads) per request; "
        "cpu_ratio is less sensitive to noise"
    )
    print("peers: " + "; ".join(f"{name} ({what})" for name, what in PEERS.items()))
    if several:
        workers = summary[several[0]]["workers"]
        print()
        print(
            f"{workers} uvicorn workers, not pinned: wrk, the OTLP receiver and the {workers} "
            f"workers share the machine's {cores} cores "
            f"(PROMETHEUS_MULTIPROC_DIR set, a fresh directory per server); ratios to "
            f"{workers_name('bare', workers)}, same round:"
        )
        _print_rows(summary, several)
        print(
            "cpu_us/req: CPU time of the supervisor and all workers per request; p99 here "
            "depends on how the scheduler interleaves wrk and the workers: noisy"
        )
        idle = {
            name: round(share, 2)
            for name in several
            if (share := summary[name]["worker_core_share_min"]) is not None
            and share < 0.5 / workers
        }
        if idle:
            print(f"warning: a worker got little of the load in some rounds: {idle}")
    print()
    print("Targets:")
    for target in targets:
        value = "" if target["value"] is None else f"  {target['value']:.3f}"
        line = f"  {target['target']:<50}{value:>8}  {'PASS' if target['pass'] else 'MISS'}"
        print(line)
        if target.get("behind"):
            print(f"    not ahead of {', '.join(target['behind'])}")
    shared = [
        name
        for name, entry in summary.items()
        if entry["workers"] == 1 and entry["server_core_share_min"] < 0.9
    ]
    if shared:
        print(
            f"warning: the server had less than 90% of its core in some rounds of {shared}: "
            "other processes ran on it, so req/s and p99 are noisy (cpu_us/req less so)"
        )
    errors = {name: entry["errors"] for name, entry in summary.items() if entry["errors"]}
    if errors:
        print(f"wrk errors (non-2xx, socket errors, timeouts): {errors}")
    losses = {
        name: lost
        for name, entry in summary.items()
        if (lost := {counter: value for counter, value in entry["losses"].items() if value})
    }
    if losses:
        print(f"aiobs lost telemetry (spans dropped, export failures, log lines dropped): {losses}")
    scrape = next((e for e in summary.values() if "scrapes" in e), None)
    if scrape is not None:
        print()
        print(
            f"/metrics under load (aiobs-full, {EXTRA_SERIES} extra series, a scrape every "
            f"{SCRAPE_INTERVAL_S * 1000:.0f} ms during the wrk run):"
        )
        baseline = summary.get("aiobs-full+1k-series", {}).get("p99_ms")
        print(f"  p99 without scraping  {_number(baseline, '.2f')} ms")
        print(
            f"  p99 with scraping     {scrape['p99_ms']:.2f} ms   "
            f"ratio {_number(scrape['p99_ratio_to_no_scrape'], '.2f')}"
        )
        print(
            f"  {scrape['scrapes']} scrapes ({scrape['scrape_failures']} failed), "
            f"{scrape['scrape_bytes'] / 1024:.0f} KiB each, "
            f"median {_number(scrape['scrape_median_ms'], '.1f')} ms, "
            f"max {_number(scrape['scrape_max_ms'], '.1f')} ms"
        )


def aiobs_revision() -> dict[str, Any]:
    """The commit measured and whether aiobs/ had uncommitted changes."""
    commit, dirty = git_revision("aiobs")
    return {"commit": commit, "aiobs_dirty": dirty}


# --- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds over every case (default 3)")
    parser.add_argument("--duration", type=float, help="seconds measured per case (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds of load before each (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--server",
        choices=tuple(SERVERS),
        default="uvloop",
        help="uvicorn's loop and HTTP parser: uvloop + httptools (default) or asyncio + h11",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help=f"uvicorn workers of the multi-worker cases ({', '.join(WORKER_VARIANTS)}; "
        "not pinned); 0 or 1: none (default 2)",
    )
    parser.add_argument("--quick", action="store_true", help="1 round x 3 s: about 1.5 min")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: print the table of an earlier run from its results file",
    )
    args = parser.parse_args()
    if args.report is not None:
        return args
    quick = {"rounds": 1, "duration": 3.0, "warmup": 1.0}
    full = {"rounds": 3, "duration": 10.0, "warmup": 2.0}
    for name, default in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.rounds < 1 or args.duration <= 0 or args.warmup <= 0 or args.connections < 1:
        parser.error("rounds, duration, warmup and connections must be positive")
    if args.workers < 0:
        parser.error("workers must be 0 or more")
    return args


def print_report(path: Path) -> int:
    """Prints the table of an earlier run from its results file."""
    data = json.loads(path.read_text())
    settings = data["settings"]
    args = argparse.Namespace(
        **{"server": "h11", "workers": 0, **settings}  # runs before both options: h11, one worker
    )
    cases = build_cases(args.workers)
    known = {name for name in Measurement.__dataclass_fields__}
    measurements = [
        Measurement(**{key: value for key, value in m.items() if key in known})
        for m in data["measurements"]
    ]
    summary = summarize(cases, measurements)
    print(f"{path}: started {data['started']}, aiobs {(data['aiobs']['commit'] or '?')[:10]}")
    print_table(summary, verdicts(summary), args, len(data["pinning"].get("every", ())) or 1)
    receiver = data["otlp_receiver"]
    print(
        f"\nOTLP receiver: {receiver['export_requests']} export requests, "
        f"{receiver['bytes'] / 1e6:.1f} MB"
    )
    return 0


def main() -> int:
    args = parse_args()
    if args.report is not None:
        return print_report(args.report)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    cases = build_cases(args.workers)
    modules = [
        "prometheus_fastapi_instrumentator",
        "opentelemetry.instrumentation.fastapi",
        "logfire",
        "starlette_exporter",
        *(("uvloop", "httptools") if args.server == "uvloop" else ()),
    ]
    message = missing_requirements(modules)
    if message:
        if args.server == "uvloop":
            message += " (or --server h11 for asyncio + h11 without uvloop and httptools)"
        sys.exit(message)
    # SIGTERM unwinds like Ctrl-C, so that every child process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pinning = Pinning.choose()
    if pinning.load:
        os.sched_setaffinity(0, pinning.load)  # wrk and the receiver inherit it
    started = datetime.datetime.now(datetime.timezone.utc)
    # Before the run: both may change during it.
    host, revision = machine(PACKAGES), aiobs_revision()
    estimate = len(cases) * args.rounds * (args.duration + args.warmup + STARTUP_S)
    dirty = " + local changes" if revision["aiobs_dirty"] else ""
    print(
        f"{len(cases)} cases x {args.rounds} round(s), about {estimate / 60:.1f} min; "
        f"uvicorn with {SERVERS[args.server]['loop']} + {SERVERS[args.server]['http']}; "
        f"wrk on cpu {pinning.load or 'any'}, server on cpu {pinning.server or 'any'}"
        + (f" ({args.workers} workers: any cpu)" if args.workers > 1 else "")
        + f"; aiobs {(revision['commit'] or '?')[:10]}{dirty}; "
        f"load average {host['load_average_at_start'][0]:.2f}",
        flush=True,
    )
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="aiobs-bench-") as scratch:
        script = Path(scratch) / "post.lua"
        script.write_text(WRK_SCRIPT)
        with otlp_receiver() as (endpoint, counters, receiver_pid):
            for round_ in range(args.rounds):
                offset = round_ * len(cases) // args.rounds
                for case in cases[offset:] + cases[:offset]:
                    pinning.apply(case, receiver_pid)
                    with serving(case, endpoint, pinning, args.server, Path(scratch)) as server:
                        m = measure(case, round_, server, args, script)
                    measurements.append(m)
                    share = (
                        f"cores used {m.server_core_share:.2f}"
                        if case.workers > 1
                        else f"core share {m.server_core_share:.2f}"
                    )
                    print(
                        f"round {round_ + 1}/{args.rounds}  {case.name:<30} "
                        f"{m.requests_per_s:8.0f} req/s  p99 {m.p99_ms:7.2f} ms  "
                        f"{m.server_cpu_us_per_request:6.1f} cpu_us/req  {share}"
                        + (f"  errors {m.errors}" if m.errors else ""),
                        flush=True,
                    )
            exports, exported_bytes = counters[0], counters[1]
    summary = summarize(cases, measurements)
    targets = verdicts(summary)
    print_table(summary, targets, args, len(pinning.every))
    print(f"\nOTLP receiver: {exports} export requests, {exported_bytes / 1e6:.1f} MB")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"overhead-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report = {
        "started": started.isoformat(),
        "command": [Path(sys.executable).name, *sys.argv],
        "settings": {
            key: getattr(args, key)
            for key in ("rounds", "duration", "warmup", "connections", "server", "workers")
        },
        "pinning": asdict(pinning),
        "machine": host,
        "aiobs": revision,
        "otlp_receiver": {"export_requests": exports, "bytes": exported_bytes},
        "summary": summary,
        "targets": targets,
        "measurements": [asdict(m) for m in measurements],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
