"""structlog processors for a logging set-up the service owns.

With ``configure_logging=False`` (``AIOBS_CONFIGURE_LOGGING=false``) aiobs leaves structlog
and the standard library's handlers alone; put its processors into your own chain to give
your lines the current span's ids and aiobs's redaction::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        *aiobs.logging.processors(),
        structlog.processors.add_log_level,
        structlog.processors.JSONRenderer(),
    ])
"""

from __future__ import annotations

from structlog.typing import Processor

from aiobs.logs.pipeline import Sanitizer, add_trace_ids

__all__ = ["add_trace_ids", "processors"]


def processors(*, max_field_length: int = 4096) -> list[Processor]:
    """Secrets redacted and long fields truncated (``max_field_length`` characters), then
    ``trace_id``/``span_id`` of the current span: the same ids the exported span carries."""
    return [Sanitizer(max_field_length), add_trace_ids]
