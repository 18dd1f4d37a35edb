"""The service's own logging set-up is joined, not replaced: file handlers and structlog
configurations made before aiobs are kept, and ``configure_logging=False`` leaves logging
entirely to the service."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from fastapi import FastAPI

import aiobs
from tests.conftest import Harness, client_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored after the test (handlers, level) with structlog's defaults."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


def test_file_handlers_keep_receiving_records(
    root_logger: logging.Logger, tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    """A file handler of the service's stays on the root logger and gets every record; a
    console handler gives way to aiobs's JSON."""
    log_file = tmp_path / "service.log"
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    console = logging.StreamHandler()  # logging.basicConfig's, on stderr
    root_logger.handlers = [file_handler, console]
    harness = make_harness()
    assert file_handler in root_logger.handlers
    assert console not in root_logger.handlers
    logging.getLogger("billing").warning("card declined")
    file_handler.flush()
    assert log_file.read_text() == "WARNING billing card declined\n"
    assert [line["event"] for line in harness.log_lines()] == ["card declined"]


def test_a_structlog_configuration_made_first_is_kept(
    root_logger: logging.Logger, make_harness: Callable[..., Harness]
) -> None:
    """The service configured structlog before aiobs: its chain stays; with
    aiobs.logging.processors() in it, its lines carry the current span's ids."""
    captured: list[dict[str, object]] = []

    def capture(_logger: object, _method: str, event_dict: dict[str, object]) -> str:
        captured.append(dict(event_dict))
        return json.dumps(event_dict)

    structlog.configure(
        processors=[*aiobs.logging.processors(), capture],
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    harness = make_harness()
    assert harness.obs.tracer is not None
    with harness.obs.tracer.start_as_current_span("work") as span:
        structlog.get_logger("mine").info("step", password="hunter2")
    (event,) = captured
    assert event["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert event["password"] == "[REDACTED]"
    assert structlog.get_config()["processors"][-1] is capture
    kept = [line for line in harness.log_lines() if line["event"] == "structlog_configuration_kept"]
    assert len(kept) == 1


async def test_configure_logging_off_leaves_logging_alone(
    root_logger: logging.Logger, make_harness: Callable[..., Harness]
) -> None:
    """configure_logging=False: no handler, level or structlog change; the access line is a
    standard record of aiobs.access with its fields as extras, for the service's handlers."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(name)s %(message)s %(route)s %(status)s %(trace_id)s")
    )
    root_logger.handlers = [handler]
    root_logger.setLevel(logging.INFO)
    config_before = structlog.get_config()
    harness = make_harness(configure_logging=False)
    assert root_logger.handlers == [handler]
    assert structlog.get_config() == config_before
    app = FastAPI()

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, str]:
        return {"name": name}

    aiobs.instrument(app, observability=harness.obs)
    async with client_for(app) as client:
        assert (await client.get("/v1/models/a")).status_code == 200
    (span,) = harness.spans()
    assert span.context is not None
    trace_id = format(span.context.trace_id, "032x")
    assert stream.getvalue() == f"aiobs.access http_request /v1/models/{{name}} 200 {trace_id}\n"
    assert harness.log_lines() == []  # nothing written behind the service's back
