"""Exemplars: one per bucket per interval, read back from the OpenMetrics exposition."""

from __future__ import annotations

from opentelemetry.trace import SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.openmetrics.exposition import generate_latest

from aiobs.metrics.exemplars import EXEMPLAR_INTERVAL, Exemplars


def _context(trace_id: int, sampled: bool = True) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(trace_id, 1, is_remote=False, trace_flags=flags)


def _bucket_lines(registry: CollectorRegistry) -> dict[str, str]:
    """``le`` of each bucket line -> the line, from the OpenMetrics text."""
    lines = generate_latest(registry).decode().splitlines()
    return {
        line.split('le="')[1].split('"')[0]: line for line in lines if "_bucket{" in line
    }


def test_a_bucket_takes_one_exemplar_per_interval() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "latency_seconds", "Latency.", buckets=(0.01, 0.1, 1.0), registry=registry
    )
    exemplars = Exemplars()
    exemplars.observe(histogram, 0.005, _context(0xA), now=100.0)
    exemplars.observe(histogram, 0.006, _context(0xB), now=100.05)  # same bucket, too soon
    exemplars.observe(histogram, 0.5, _context(0xC), now=100.06)  # a slow one: its own bucket
    exemplars.observe(histogram, 0.05, _context(0xD, sampled=False), now=100.07)
    buckets = _bucket_lines(registry)
    assert buckets["0.01"].startswith('latency_seconds_bucket{le="0.01"} 2.0 # {trace_id="')
    assert f'trace_id="{0xA:032x}"}} 0.005' in buckets["0.01"]
    assert f'trace_id="{0xC:032x}"}} 0.5' in buckets["1.0"]
    assert "#" not in buckets["0.1"]  # counted, no exemplar: its span was not sampled
    assert buckets["0.1"].startswith('latency_seconds_bucket{le="0.1"} 3.0')

    exemplars.observe(histogram, 0.007, _context(0xE), now=100.0 + EXEMPLAR_INTERVAL)
    buckets = _bucket_lines(registry)
    assert f'trace_id="{0xE:032x}"}} 0.007' in buckets["0.01"]
    assert buckets["0.01"].startswith('latency_seconds_bucket{le="0.01"} 3.0')


def test_values_on_a_bound_and_past_the_last_bucket() -> None:
    """A value on a bound is in that bucket (``le``), as prometheus_client counts it; one past
    every finite bound is in ``+Inf``."""
    registry = CollectorRegistry()
    histogram = Histogram("size_bytes", "Size.", buckets=(1.0, 2.0), registry=registry)
    exemplars = Exemplars()
    exemplars.observe(histogram, 1.0, _context(0x1), now=0.0)
    exemplars.observe(histogram, 7.0, _context(0x2), now=0.0)
    buckets = _bucket_lines(registry)
    assert f'trace_id="{0x1:032x}"}} 1.0' in buckets["1.0"]
    assert "#" not in buckets["2.0"]
    assert f'trace_id="{0x2:032x}"}} 7.0' in buckets["+Inf"]
