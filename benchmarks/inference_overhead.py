"""Per-call cost of ``aiobs.inference()`` with two stages, against a bare function call.

    .venv/bin/python benchmarks/inference_overhead.py [--calls N] [--rounds R]

Variants run interleaved, several rounds, on one Observability with a real registry and a
batch span processor feeding an exporter that counts and discards spans (export cost is the
exporter thread's, as in production; a retaining in-memory exporter would add garbage
collection of every span kept). "not sampled" runs under a request span that was not
sampled, with a parent-based sampler, the usual production case. Prints the median
microseconds per call and the overhead over bare.
Targets: not sampled <= 6 us, sampled (with its span) <= 25 us.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry

from aiobs import Observability, Settings


def model(x: int) -> int:
    return x + 1


class DiscardingExporter(SpanExporter):
    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def build() -> Observability:
    settings = Settings.load({"span_queue_size": 100_000}, environ={})
    return Observability(
        settings, registry=CollectorRegistry(), span_exporter=DiscardingExporter(), environ={}
    )


def variants() -> dict[str, Callable[[int], int]]:
    obs = build()
    unsampled_request = NonRecordingSpan(
        SpanContext(
            0x0AF7651916CD43DD8448EB211C80319C,
            0xB7AD6B7169203331,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
        )
    )

    def bare(x: int) -> int:
        y = model(x)
        return model(y)

    def sampled(x: int) -> int:
        with obs.inference("resnet50", "v1", batch_size=8) as rec:
            with rec.stage("preprocess"):
                y = model(x)
            with rec.stage("compute"):
                return model(y)

    def not_sampled(x: int) -> int:
        with trace.use_span(unsampled_request):
            return sampled(x)

    def request_context_only(x: int) -> int:
        with trace.use_span(unsampled_request):
            return bare(x)

    return {
        "bare": bare,
        "bare_in_request": request_context_only,
        "not_sampled": not_sampled,
        "sampled": sampled,
    }


def measure(function: Callable[[int], int], calls: int) -> float:
    started = time.perf_counter()
    for number in range(calls):
        function(number)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    functions = variants()
    for function in functions.values():
        measure(function, 2_000)  # warm up: label children, code paths
    results: dict[str, list[float]] = {name: [] for name in functions}
    for round_number in range(arguments.rounds):
        names = list(functions)
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(measure(functions[name], arguments.calls))
    baselines = {
        name: statistics.median(results["bare_in_request" if name == "not_sampled" else "bare"])
        for name in results
    }
    targets = {"not_sampled": 6.0, "sampled": 25.0}
    print(f"{'variant':<12} {'us/call':>9} {'overhead_us':>12} {'target_us':>10}")
    for name, samples in results.items():
        median = statistics.median(samples)
        overhead = median - baselines[name]
        target = targets.get(name)
        verdict = "" if target is None else ("PASS" if overhead <= target else "MISS")
        target_text = "" if target is None else f"<= {target:g}"
        print(f"{name:<12} {median:>9.2f} {overhead:>12.2f} {target_text:>10} {verdict}")


if __name__ == "__main__":
    main()
