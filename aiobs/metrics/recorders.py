"""The request path's metric updates: prometheus_client's values updated directly, and trace
exemplars at most one per bucket per interval.

prometheus_client's ``inc`` and ``observe`` check on every call what cannot change after a
child is made (that it is a child, that its buckets exist) and ``observe`` walks the buckets
in Python; a recorder does those once, then updates the same value objects (locked, or
memory-mapped in multiprocess mode) the exposition reads. Where a metric has another shape
the public methods are used.

Prometheus keeps, per bucket, only the exemplar it finds at a scrape, so setting one on every
observation (a validated label set, a formatted trace id, a timestamp) is spent on values that
are replaced before anyone reads them. A bucket takes a new exemplar once its last is
``interval`` seconds old: every bucket that saw a sampled request still shows one of them, and
a rare slow request gets its own bucket's exemplar however busy the fast buckets are.
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import SpanContext

EXEMPLAR_INTERVAL = 0.1
"""Seconds between two exemplars of one bucket: far under any scrape interval."""


def adder(metric: Any) -> Callable[[float], None]:
    """``metric.inc(amount)`` for a counter or gauge child (or an unlabelled one), as one
    call of its value's ``inc``."""
    inc = getattr(getattr(metric, "_value", None), "inc", None)
    return inc if callable(inc) else metric.inc  # type: ignore[no-any-return]


def incrementer(metric: Any) -> Callable[[], None]:
    """``metric.inc()``: :func:`adder` with 1."""
    return functools.partial(adder(metric), 1)


class HistogramRecorder:
    """Observes one histogram child; with ``exemplars``, a sampled span's trace id is attached
    to a bucket due for one. Counts are the child's own (locked); threads that observe at the
    same time may only pick a different exemplar."""

    __slots__ = ("_bounds", "_buckets", "_due", "_exemplars", "_histogram", "_interval", "_sum")

    def __init__(
        self, histogram: Any, exemplars: bool, interval: float = EXEMPLAR_INTERVAL
    ) -> None:
        self._histogram = histogram
        self._exemplars = exemplars
        self._interval = interval
        bounds = getattr(histogram, "_upper_bounds", None)
        buckets = getattr(histogram, "_buckets", None)
        total = getattr(getattr(histogram, "_sum", None), "inc", None)
        self._bounds: list[float] = list(bounds) if bounds else []
        shaped = (
            callable(total)
            and isinstance(buckets, list)
            and len(buckets) == len(self._bounds)
            and all(callable(getattr(bucket, "inc", None)) for bucket in buckets)
        )
        self._sum: Callable[[float], None] | None = total if shaped else None
        self._buckets = [bucket.inc for bucket in buckets] if shaped and buckets else []
        self._due = [float("-inf")] * len(self._bounds)

    def count(self, value: float) -> None:
        """Count ``value``, without an exemplar."""
        self._count(bisect_left(self._bounds, value), value)

    def observe(self, value: float, context: SpanContext, now: float) -> None:
        """Count ``value``; with ``context``'s trace id as exemplar when the span is sampled
        and ``value``'s bucket has taken none since ``now - interval`` (``now``: a
        ``time.perf_counter()`` reading)."""
        bucket = bisect_left(self._bounds, value)  # the bucket observe() counts value in
        if (
            self._exemplars
            and context.trace_flags.sampled
            and bucket < len(self._due)
            and now >= self._due[bucket]
        ):
            self._due[bucket] = now + self._interval
            self._histogram.observe(value, {"trace_id": format(context.trace_id, "032x")})
        else:
            self._count(bucket, value)

    def _count(self, bucket: int, value: float) -> None:
        """Count ``value`` in ``bucket``: on the child's values, or through ``observe``."""
        if self._sum is not None and bucket < len(self._buckets):
            self._sum(value)
            self._buckets[bucket](1)
        else:
            self._histogram.observe(value)
