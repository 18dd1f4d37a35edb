"""Where log lines go: a bounded buffer drained to a stream by one background thread.

A blocked or slow stdout must never stall the service: the request path only appends to the
buffer; when the buffer is full the line is dropped and counted. A line may also be queued as
the values it is made of and the number of a function that formats them (the access line):
the writer formats it, in a batch, off the request path.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TextIO

WRITE_INTERVAL = 0.05
"""Seconds the writer sleeps between batches: waking it per line would cost the serving
thread a GIL hand-off per log line."""
WRITE_BATCH = 256
"""Lines that wake the writer before its interval is up."""


class LogSink:
    """A bounded line buffer written to ``stream`` by a daemon thread, in batches."""

    def __init__(
        self,
        capacity: int,
        on_drop: Callable[[], None],
        stream: TextIO | None = None,
    ) -> None:
        self._capacity = capacity
        self._on_drop = on_drop
        self._stream = stream
        self._lines: collections.deque[str | tuple[Any, ...]] = collections.deque()
        self._renders: list[Callable[..., str]] = []
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._wait_per_line: float | None = None
        self._start()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _restart(ref))

    @property
    def stream(self) -> TextIO:
        # Resolved at write time so that a replaced sys.stdout (pytest, daemons) is honoured.
        return self._stream if self._stream is not None else sys.stdout

    def write(self, line: str) -> None:
        """Queue one line (without its newline); never blocks."""
        self._queue(line)

    def add_render(self, render: Callable[..., str]) -> int:
        """Register a function that formats a line from its values: the number to queue
        such lines under (:meth:`write_later`)."""
        self._renders.append(render)
        return len(self._renders) - 1

    def write_later(self, *item: Any) -> None:
        """Queue ``item``, ``(number, *values)``: the writer writes the line that the
        ``render`` registered as ``number`` returns for ``values``; one that raises drops its
        line, counted. ``values`` must be numbers, strings or ``None``: they must not change
        once queued, and a tuple of them is one the garbage collector stops tracking at its
        first pass (lines waiting for the writer then add nothing to its full collections)."""
        self._queue(item)

    def _queue(self, item: str | tuple[Any, ...]) -> None:
        if len(self._lines) >= self._capacity:
            self._on_drop()
            return
        self._lines.append(item)
        if len(self._lines) >= WRITE_BATCH and not self._wake.is_set():
            self._wake.set()
        if self._wait_per_line is not None:
            self.flush(self._wait_per_line)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued line to be written."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._lines or not self._idle.is_set():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def finish(self, timeout: float, wait_per_line: float = 0.2) -> bool:
        """Write what is queued (within ``timeout``); from then on each ``write`` waits up to
        ``wait_per_line`` seconds for its line to be out. For the last lines of a process:
        servers may end it by re-raising SIGTERM, and then no exit hook runs."""
        flushed = self.flush(timeout)
        self._wait_per_line = wait_per_line
        return flushed

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aiobs-log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lines, renders = self._lines, self._renders
        while True:
            self._wake.wait(WRITE_INTERVAL)
            self._wake.clear()
            while lines:
                self._idle.clear()
                batch: list[str] = []
                while lines and len(batch) < 512:
                    item = lines.popleft()
                    if not isinstance(item, str):
                        try:
                            item = renders[item[0]](*item[1:])
                        except Exception:  # noqa: BLE001 - one bad line, not the writer
                            self._on_drop()
                            continue
                    batch.append(item)
                try:
                    stream = self.stream
                    stream.write("\n".join(batch) + "\n")
                    stream.flush()
                except (OSError, ValueError):
                    for _ in batch:
                        self._on_drop()
            self._idle.set()


def _restart(ref: weakref.ReferenceType[LogSink]) -> None:
    """In a forked child the writer thread is gone: start a new one."""
    sink = ref()
    if sink is not None:
        sink._start()
