"""Trace exemplars on histograms: at most one per bucket per interval.

Prometheus keeps, per bucket, only the exemplar it finds at a scrape, so setting one on every
observation (a validated label set, a formatted trace id, a timestamp) is spent on values that
are replaced before anyone reads them. A bucket takes a new exemplar once its last is
``interval`` seconds old: every bucket that saw a sampled request still shows one of them, and
a rare slow request gets its own bucket's exemplar however busy the fast buckets are.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import SpanContext

EXEMPLAR_INTERVAL = 0.1
"""Seconds between two exemplars of one bucket: far under any scrape interval."""


class Exemplars:
    """Observes histogram children, attaching the trace of a sampled span as exemplar when its
    bucket is due for one. For one thread (the event loop's)."""

    def __init__(self, interval: float = EXEMPLAR_INTERVAL) -> None:
        self._interval = interval
        self._due: dict[Any, tuple[Sequence[float], list[float]]] = {}

    def observe(self, histogram: Any, value: float, context: SpanContext, now: float) -> None:
        """``histogram.observe(value)``, with ``context``'s trace id as exemplar when the span is
        sampled and ``value``'s bucket has taken none since ``now - interval`` (``now``: a
        ``time.perf_counter()`` reading)."""
        if context.trace_flags.sampled:
            entry = self._due.get(histogram)
            if entry is None:
                bounds = histogram._upper_bounds  # prometheus_client's, one per bucket
                entry = self._due[histogram] = (bounds, [float("-inf")] * len(bounds))
            bounds, due = entry
            bucket = bisect_left(bounds, value)  # the bucket observe() counts value in
            if bucket < len(due) and now >= due[bucket]:
                due[bucket] = now + self._interval
                histogram.observe(value, {"trace_id": format(context.trace_id, "032x")})
                return
        histogram.observe(value)
