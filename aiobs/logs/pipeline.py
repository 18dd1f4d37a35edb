"""structlog JSON logs: one pipeline for the service's, the standard library's and uvicorn's.

Every line is one JSON object (``ensure_ascii`` escapes newlines, ANSI escapes and U+2028),
with ``timestamp``, ``level``, ``event``, ``logger`` and ``service``, plus ``trace_id`` and
``span_id`` inside a span. Secrets are redacted before fields are truncated.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from aiobs import catalog
from aiobs._settings import Settings
from aiobs.logs.sink import LogSink

REDACTED = "[REDACTED]"
ACCESS_LOGGER = "aiobs.access"

_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "token",
        "api_key",
        "apikey",
        "x_api_key",
        "cookie",
        "set_cookie",
        "session",
        "private_key",
        "credentials",
    }
)
_SECRET_KEY_SUFFIXES = ("_password", "_secret", "_api_key", "_apikey")
# "<word>_token" names a credential (access_token, github_token, x_auth_token) unless the word
# is one a language model uses for a token's position or role (time_to_first_token,
# eos_token, prompt_token). The list is of those words, not of credentials: a name it does not
# know is redacted, since hiding a number costs less than leaking a key. Counts are plural
# (output_tokens, max_tokens) and never match "_token".
_MODEL_TOKEN_WORDS = frozenset(
    {
        "first", "next", "last", "prev", "previous", "current",
        "output", "input", "prompt", "completion", "generated", "sampled", "decoded",
        "predicted", "target", "eos", "bos", "pad", "unk", "sep", "cls", "mask",
        "special", "stop", "start", "end", "per", "to",
    }
)  # fmt: skip
_SECRET_VALUES = (
    # Authorization schemes: "Bearer abc.def", "Basic dXNlcjpw..."
    (re.compile(r"\b((?i:bearer|basic|digest))\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),
    # JSON Web Tokens wherever they appear
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # credentials in URLs: scheme://user:password@host
    (re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@"), REDACTED + "@"),
    # key=value pairs in query strings and messages
    (
        re.compile(r"\b((?i:password|passwd|secret|token|access_token|api[_-]?key))=[^&\s\"']+"),
        r"\1=" + REDACTED,
    ),
    # well-known API key shapes
    (
        re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16})\b"),
        REDACTED,
    ),
)
# One pass over the text tells whether any pattern applies: most strings need no rewrite.
_ANY_SECRET_VALUE = re.compile("|".join(pattern.pattern for pattern, _ in _SECRET_VALUES))
_MAX_DEPTH = 4
_MAX_ITEMS = 100
"""Entries kept of a logged list or mapping; the rest are summarised."""
LINE_LIMIT_FACTOR = 8
"""A rendered line longer than this many field lengths keeps only its leading keys."""
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a field or header named ``key`` holds a secret."""
    normalized = key.lower().replace("-", "_")
    if normalized in _SECRET_KEYS or normalized.endswith(_SECRET_KEY_SUFFIXES):
        return True
    before, _, last = normalized.rpartition("_")
    return last == "token" and before.rpartition("_")[2] not in _MODEL_TOKEN_WORDS


def redact_text(text: str) -> str:
    """``text`` with bearer tokens, JWTs, URL credentials and API keys replaced."""
    # Every pattern needs one of these substrings: most strings skip the regexes entirely.
    if not (
        " " in text
        or "=" in text
        or "://" in text
        or "eyJ" in text
        or "sk-" in text
        or "gh" in text
        or "AKIA" in text
        or "\t" in text
    ):
        return text
    if _ANY_SECRET_VALUE.search(text) is None:
        return text
    for pattern, replacement in _SECRET_VALUES:
        text = pattern.sub(replacement, text)
    return text


class Sanitizer:
    """Redacts secrets, then truncates long strings; recurses into containers."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            if key.startswith("_"):  # structlog's own bookkeeping (the stdlib record)
                continue
            if is_secret_key(key):
                event_dict[key] = REDACTED
            elif key == "exception" and isinstance(value, str):
                event_dict[key] = self._truncate(redact_text(value), keep_tail=True)
            else:
                event_dict[key] = self._clean(value, 0)
        return event_dict

    def _clean(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            if len(value) <= self.max_length:
                return redact_text(value)
            # Redact a bounded prefix: a secret cut by the final truncation cannot survive.
            return self._truncate(redact_text(value[: 2 * self.max_length]), len(value))
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        if depth >= _MAX_DEPTH:
            return self._truncate(redact_text(repr(value)[: 2 * self.max_length]))
        if isinstance(value, Mapping):
            cleaned: dict[str, Any] = {}
            for key, item in itertools.islice(value.items(), _MAX_ITEMS):
                name = str(key)
                secret = is_secret_key(name)
                cleaned[self._clean(name, depth)] = (
                    REDACTED if secret else self._clean(item, depth + 1)
                )
            if len(value) > _MAX_ITEMS:
                cleaned["..."] = f"{len(value) - _MAX_ITEMS} more entries"
            return cleaned
        if isinstance(value, (list, tuple)):
            if len(value) == 2 and isinstance(value[0], (str, bytes)):
                name = value[0].decode("latin-1") if isinstance(value[0], bytes) else value[0]
                if is_secret_key(name):  # a (header, value) pair
                    return [name, REDACTED]
            items = [self._clean(item, depth + 1) for item in value[:_MAX_ITEMS]]
            if len(value) > _MAX_ITEMS:
                items.append(f"... {len(value) - _MAX_ITEMS} more items")
            return items
        return self._clean(str(value), depth)

    def _truncate(self, text: str, original: int | None = None, keep_tail: bool = False) -> str:
        limit = self.max_length
        total = len(text) if original is None else max(original, len(text))
        if total <= limit:
            return text
        cut = total - limit
        if keep_tail:  # a traceback's end says what failed
            head = limit // 4
            return f"{text[:head]}...[truncated {cut} chars]...{text[head - limit :]}"
        return f"{text[:limit]}...[truncated {cut} chars]"


SPAN_CONTEXT_ATTRIBUTE = "_aiobs_span_context"
"""Set on an exception that left a request's span: the server's own line about it (logged
after the span ended) still carries the request's trace id."""


def add_trace_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """``trace_id``/``span_id`` of the current span, as the exported span carries them; for
    a record of an exception that left a request (the server's error line), that request's."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        record = event_dict.get("_record")
        error = record.exc_info[1] if record is not None and record.exc_info else None
        context = getattr(error, SPAN_CONTEXT_ATTRIBUTE, context)
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def add_logger_name(logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    event_dict.setdefault("logger", name or "root")
    return event_dict


def _static(key: str, value: str) -> Processor:
    def add(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict[key] = value
        return event_dict

    return add


def _normalize_level(_logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    level = event_dict.get("level", method)
    event_dict["level"] = "warning" if level == "warn" else str(level).lower()
    return event_dict


def _json_default(value: Any) -> str:
    return repr(value)


# One encoder for every line: json.dumps with arguments builds a new one per call.
_encode = json.JSONEncoder(default=_json_default, ensure_ascii=True, separators=(",", ":")).encode

_second_cache: tuple[int, str] = (0, "")


def utc_timestamp(now: float | None = None) -> str:
    """``now`` (default: now; a ``time.time()`` reading) in RFC 3339, UTC, microseconds:
    ``2026-11-29T04:21:43.123456Z``. The part up to the second is formatted once a second."""
    global _second_cache
    if now is None:
        now = time.time()
    second = int(now)
    cached = _second_cache
    if cached[0] != second:
        cached = _second_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1e6):06d}Z"


def _contextvars_reader() -> Callable[[], dict[str, Any]]:
    """What ``structlog.contextvars.get_contextvars`` returns, read from the variables structlog
    registered rather than from a copy of the whole context, which under a server holds every
    library's variables (several microseconds per access line). structlog's own function where
    its registry is not the dict of ``ContextVar`` objects it has been since 21.1."""
    registry = getattr(structlog.contextvars, "_CONTEXT_VARS", None)
    prefix = getattr(structlog.contextvars, "STRUCTLOG_KEY_PREFIX", None)
    if not isinstance(registry, dict) or not isinstance(prefix, str):
        return structlog.contextvars.get_contextvars
    skip = len(prefix)

    def read() -> dict[str, Any]:
        if not registry:
            return {}
        bound = {}
        for var in tuple(registry.values()):  # another thread may bind a new key meanwhile
            value = var.get(Ellipsis)
            if value is not Ellipsis:
                bound[var.name[skip:]] = value
        return bound

    return read


bound_contextvars = _contextvars_reader()


def merge_contextvars(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog's ``merge_contextvars`` (bound values under the keys the event does not set),
    read through :data:`bound_contextvars`."""
    for key, value in bound_contextvars().items():
        event_dict.setdefault(key, value)
    return event_dict


def add_timestamp(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    event_dict["timestamp"] = utc_timestamp()
    return event_dict


_LEADING_KEYS = ("timestamp", "level", "event", "logger", "service", "trace_id", "span_id")


class JSONRenderer:
    """One JSON object per line: ``ensure_ascii`` escapes every control character, ANSI
    escape and line separator. A line past ``max_length`` keeps only its leading keys."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
        ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
        ordered.update(event_dict)
        line = _encode(ordered)
        if len(line) <= self.max_length:
            return line
        kept = {key: ordered[key] for key in _LEADING_KEYS if key in ordered}
        kept["aiobs_truncated_line_length"] = len(line)
        return _encode(kept)


def shared_processors(settings: Settings) -> list[Processor]:
    """Everything but rendering, applied to structlog and standard-library events alike."""
    return [
        merge_contextvars,
        # A plain string traceback: structlog's dict tracebacks would carry every frame's locals.
        structlog.processors.format_exc_info,
        # Before aiobs adds its own fields: only what the caller logged needs cleaning.
        Sanitizer(settings.log_max_field_length),
        structlog.processors.add_log_level,
        _normalize_level,
        add_logger_name,
        add_timestamp,
        _static("service", settings.service_name),
        add_trace_ids,
    ]


def renderer(settings: Settings) -> Processor:
    if settings.log_format == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return JSONRenderer(LINE_LIMIT_FACTOR * settings.log_max_field_length)


class AccessLog:
    """Writes the one ``http_request`` line per request straight to the sink.

    The line has the keys and formats of every other line, but its fields are aiobs's own
    (a normalised method, a route template, numbers): there is nothing to redact, and the
    generic pipeline would double the cost of the line on every request (measured in
    benchmarks/overhead.py). Values bound with ``structlog.contextvars`` are merged, cleaned.
    """

    def __init__(self, settings: Settings, sink: LogSink) -> None:
        self._write = sink.write
        self._write_later = sink.write_later
        self._render_number = sink.add_render(self._render)
        self._service = settings.service_name
        head = _encode({"event": catalog.ACCESS_LOG_EVENT, "logger": ACCESS_LOGGER})[1:-1]
        service = _encode(settings.service_name)
        # The line's fixed parts: after the timestamp, by level; before the status, by
        # (method, route template), a bounded set.
        self._after_timestamp = {
            failed: f'","level":"{"error" if failed else "info"}",{head},"service":{service}'
            for failed in (False, True)
        }
        self._before_status: dict[tuple[str, str], str] = {}
        self._info = getattr(logging, settings.log_level) <= logging.INFO
        self._error = getattr(logging, settings.log_level) <= logging.ERROR
        self._sanitize = Sanitizer(settings.log_max_field_length)

    def write(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        span_context: trace.SpanContext | None,
    ) -> None:
        """Write the line of one request (``span_context``: its server span's, or ``None``)."""
        failed = status >= 500
        if not (self._error if failed else self._info):
            return
        bound = bound_contextvars()
        if not bound:  # the usual case: values only, formatted by the sink's writer thread
            trace_id = span_id = 0
            if span_context is not None and span_context.is_valid:
                trace_id, span_id = span_context.trace_id, span_context.span_id
            now = time.time()
            self._write_later(
                self._render_number, now, method, route, status, duration, trace_id, span_id
            )
            return
        line: dict[str, Any] = {
            "timestamp": utc_timestamp(),
            "level": "error" if failed else "info",
            "event": catalog.ACCESS_LOG_EVENT,
            "logger": ACCESS_LOGGER,
            "service": self._service,
        }
        if span_context is not None and span_context.is_valid:
            line["trace_id"] = f"{span_context.trace_id:032x}"
            line["span_id"] = f"{span_context.span_id:016x}"
        line.update(self._sanitize(None, "info", bound))
        line["method"] = method
        line["route"] = route
        line["status"] = status
        line["duration_ms"] = round(duration * 1000, 3)
        self._write(_encode(line))

    def _render(
        self,
        now: float,
        method: str,
        route: str,
        status: int,
        duration: float,
        trace_id: int,
        span_id: int,
    ) -> str:
        """The line, formatted directly as the encoder would (on the writer thread, which
        alone reads and fills the cache of the line's fixed parts; ids 0: no span)."""
        ids = ""
        if trace_id:
            ids = f',"trace_id":"{trace_id:032x}","span_id":"{span_id:016x}"'
        middle = self._before_status.get((method, route))
        if middle is None:
            middle = f',"method":{_encode(method)},"route":{_encode(route)},"status":'
            if len(self._before_status) < 10_000:
                self._before_status[method, route] = middle
        return (
            f'{{"timestamp":"{utc_timestamp(now)}{self._after_timestamp[status >= 500]}{ids}'
            f'{middle}{status},"duration_ms":{round(duration * 1000, 3)!r}}}'
        )


class StdlibAccessLog:
    """The ``http_request`` line as a standard-library record of the logger ``aiobs.access``,
    its fields as ``extra``: for services that keep logging to themselves
    (``configure_logging=False``)."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)

    def write(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        span_context: trace.SpanContext | None,
    ) -> None:
        level = logging.ERROR if status >= 500 else logging.INFO
        if not self._logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
        }
        if span_context is not None and span_context.is_valid:
            fields["trace_id"] = f"{span_context.trace_id:032x}"
            fields["span_id"] = f"{span_context.span_id:016x}"
        self._logger.log(level, catalog.ACCESS_LOG_EVENT, extra=fields)


def access_log(settings: Settings, sink: LogSink) -> AccessLog | StdlibAccessLog:
    """The access line writer: straight to aiobs's sink when aiobs configures logging, else
    through the standard library to whatever the service configured."""
    return AccessLog(settings, sink) if settings.configure_logging else StdlibAccessLog()


class SinkLogger:
    """The structlog logger that hands rendered lines to a :class:`LogSink`."""

    def __init__(self, sink: LogSink, name: str | None = None) -> None:
        self._sink = sink
        self.name = name

    def msg(self, message: str) -> None:
        self._sink.write(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class SinkLoggerFactory:
    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def __call__(self, *args: Any) -> SinkLogger:
        return SinkLogger(self._sink, str(args[0]) if args else None)


class SinkHandler(logging.Handler):
    """A standard-library handler that formats through the structlog pipeline."""

    def __init__(self, sink: LogSink, formatter: logging.Formatter) -> None:
        super().__init__()
        self._sink = sink
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def configure(settings: Settings, sink: LogSink) -> Callable[[], None]:
    """Route structlog and the standard library (uvicorn included) into ``sink``.

    The root logger's console handlers give way to aiobs's; its other handlers (a file, a
    log shipper's) keep receiving every record. A structlog configuration the service made
    before is kept (add :func:`aiobs.logging.processors` to it for trace ids).
    Touches process globals (structlog's configuration, the root logger); returns a function
    that undoes it, for tests.
    """
    level = getattr(logging, settings.log_level)
    shared = shared_processors(settings)
    own_structlog = not structlog.is_configured()
    if own_structlog:
        structlog.configure(
            processors=[*shared, renderer(settings)],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=SinkLoggerFactory(sink),
            context_class=dict,
            cache_logger_on_first_use=False,
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer(settings)],
        foreign_pre_chain=shared,
    )
    handler = SinkHandler(sink, formatter)
    root = logging.getLogger()
    previous = (root.handlers[:], root.level)
    root.handlers = [handler, *(kept for kept in root.handlers if not _is_console(kept))]
    root.setLevel(level)
    route_server_loggers()
    if not own_structlog:
        logging.getLogger("aiobs").info(
            "structlog_configuration_kept",
            extra={"hint": "add aiobs.logging.processors() to it for trace ids"},
        )

    def undo() -> None:
        if own_structlog:
            structlog.reset_defaults()
        root.handlers, level_before = previous
        root.setLevel(level_before)

    return undo


def _is_console(handler: logging.Handler) -> bool:
    """A handler writing to the terminal (``logging.basicConfig``'s): aiobs's JSON replaces
    it. File handlers, handlers of log shippers and error trackers are not."""
    stream = getattr(handler, "stream", None)
    return type(handler) is logging.StreamHandler and stream in (
        sys.stdout,
        sys.stderr,
        sys.__stdout__,
        sys.__stderr__,
    )


def route_server_loggers() -> None:
    """Send uvicorn's loggers to the root pipeline and silence its access log (aiobs writes
    one access line per request). Run again after uvicorn applies its own logging config."""
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers = []
        server_logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    access.disabled = True


def get_logger(name: str | None = None, **initial_values: Any) -> FilteringBoundLogger:
    """A structlog logger that writes JSON lines through the aiobs pipeline (bound to
    ``initial_values``); ``name`` is the ``logger`` key of its lines."""
    logger: FilteringBoundLogger
    if name is not None:
        logger = structlog.get_logger(name, **initial_values)
    else:
        logger = structlog.get_logger(**initial_values)
    return logger
