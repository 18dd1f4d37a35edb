"""The request path's metric updates: the same exposition as prometheus_client's own methods,
and exemplars at most one per bucket per interval, read back from the OpenMetrics text."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.openmetrics.exposition import generate_latest

from aiobs.metrics.recorders import EXEMPLAR_INTERVAL, HistogramRecorder, adder, incrementer

VALUES = (0.0, 0.004, 0.01, 0.0100001, 0.3, 1.0, 7.5, 1e9, -1.0)


def _context(trace_id: int, sampled: bool = True) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(trace_id, 1, is_remote=False, trace_flags=flags)


def _metrics(registry: CollectorRegistry) -> tuple[Any, Any, Any]:
    counter = Counter("requests_total", "Requests.", ["route"], registry=registry)
    gauge = Gauge("in_flight", "In flight.", registry=registry)
    histogram = Histogram(
        "latency_seconds", "Latency.", ["route"], buckets=(0.01, 0.1, 1.0), registry=registry
    )
    return counter.labels("/a"), gauge, histogram.labels("/a")


def _samples(registry: CollectorRegistry) -> list[str]:
    """The OpenMetrics text's lines but the ``_created`` ones (when each metric was made)."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def _bucket_lines(registry: CollectorRegistry) -> dict[str, str]:
    """``le`` of each bucket line -> the line, from the OpenMetrics text."""
    lines = generate_latest(registry).decode().splitlines()
    return {line.split('le="')[1].split('"')[0]: line for line in lines if "_bucket{" in line}


def test_recorders_expose_what_the_public_methods_do() -> None:
    public, direct = CollectorRegistry(), CollectorRegistry()
    counter, gauge, histogram = _metrics(public)
    count, add, recorder = _metrics(direct)
    count, add = incrementer(count), adder(add)
    recorder = HistogramRecorder(recorder, exemplars=False)
    for value in VALUES:
        counter.inc()
        gauge.inc()
        histogram.observe(value)
        count()
        add(1)
        recorder.observe(value, INVALID_SPAN_CONTEXT, 0.0)
    gauge.dec()
    add(-1)
    assert _samples(direct) == _samples(public)
    assert "in_flight 8.0" in _samples(direct)


def test_a_metric_of_another_shape_gets_its_public_methods() -> None:
    class Counted:
        def __init__(self) -> None:
            self.calls: list[tuple[str, tuple[Any, ...]]] = []

        def inc(self, amount: float = 1) -> None:
            self.calls.append(("inc", (amount,)))

        def observe(self, value: float, exemplar: Any = None) -> None:
            self.calls.append(("observe", (value, exemplar)))

    metric = Counted()
    incrementer(metric)()
    adder(metric)(-1)
    HistogramRecorder(metric, exemplars=True).observe(0.5, _context(0xA), 0.0)
    assert metric.calls == [("inc", (1,)), ("inc", (-1,)), ("observe", (0.5, None))]


def test_a_bucket_takes_one_exemplar_per_interval() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "latency_seconds", "Latency.", buckets=(0.01, 0.1, 1.0), registry=registry
    )
    recorder = HistogramRecorder(histogram, exemplars=True)
    recorder.observe(0.005, _context(0xA), now=100.0)
    recorder.observe(0.006, _context(0xB), now=100.05)  # same bucket, too soon
    recorder.observe(0.5, _context(0xC), now=100.06)  # a slow one: its own bucket
    recorder.observe(0.05, _context(0xD, sampled=False), now=100.07)
    buckets = _bucket_lines(registry)
    assert buckets["0.01"].startswith('latency_seconds_bucket{le="0.01"} 2.0 # {trace_id="')
    assert f'trace_id="{0xA:032x}"}} 0.005' in buckets["0.01"]
    assert f'trace_id="{0xC:032x}"}} 0.5' in buckets["1.0"]
    assert "#" not in buckets["0.1"]  # counted, no exemplar: its span was not sampled
    assert buckets["0.1"].startswith('latency_seconds_bucket{le="0.1"} 3.0')

    recorder.observe(0.007, _context(0xE), now=100.0 + EXEMPLAR_INTERVAL)
    buckets = _bucket_lines(registry)
    assert f'trace_id="{0xE:032x}"}} 0.007' in buckets["0.01"]
    assert buckets["0.01"].startswith('latency_seconds_bucket{le="0.01"} 3.0')


def test_exemplars_on_a_bound_and_past_the_last_bucket() -> None:
    """A value on a bound is in that bucket (``le``), as prometheus_client counts it; one past
    every finite bound is in ``+Inf``."""
    registry = CollectorRegistry()
    histogram = Histogram("size_bytes", "Size.", buckets=(1.0, 2.0), registry=registry)
    recorder = HistogramRecorder(histogram, exemplars=True)
    recorder.observe(1.0, _context(0x1), now=0.0)
    recorder.observe(7.0, _context(0x2), now=0.0)
    buckets = _bucket_lines(registry)
    assert f'trace_id="{0x1:032x}"}} 1.0' in buckets["1.0"]
    assert "#" not in buckets["2.0"]
    assert f'trace_id="{0x2:032x}"}} 7.0' in buckets["+Inf"]


def test_without_exemplars_none_is_attached() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("latency_seconds", "Latency.", buckets=(0.1,), registry=registry)
    HistogramRecorder(histogram, exemplars=False).observe(0.05, _context(0xA), now=0.0)
    assert "trace_id" not in generate_latest(registry).decode()
