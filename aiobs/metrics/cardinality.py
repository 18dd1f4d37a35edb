"""The cardinality guard: caller-supplied label values are bounded per metric and label."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from aiobs import catalog


class LabelGuard:
    """Admits the first ``limit`` distinct values of each (metric, label); later ones become
    ``other``. Each fold is counted through ``on_fold``; the first fold of a (metric, label)
    is logged once."""

    def __init__(self, limit: int, on_fold: Callable[[str, str], None]) -> None:
        self._limit = limit
        self._on_fold = on_fold
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def bound(self, metric: str, label: str, value: str) -> str:
        """``value`` if admitted, else ``other``."""
        key = (metric, label)
        seen = self._seen.get(key)
        if seen is not None and value in seen:
            return value
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if value in seen or len(seen) < self._limit:
                seen.add(value)
                return value
            first = key not in self._warned
            self._warned.add(key)
        self._on_fold(metric, label)
        if first:
            structlog.get_logger("aiobs.cardinality").warning(
                "label_values_folded", metric=metric, label=label, limit=self._limit
            )
        return catalog.OTHER
