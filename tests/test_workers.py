"""Several workers without multiprocess mode are refused at start with the fix named; with it,
every worker starts, also when they share a metrics port."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from aiobs import ConfigError
from aiobs.metrics.workers import Workers, check_workers, server_workers
from tests.support.otlp_receiver import HOST, free_port
from tests.support.servers import sample_value, start_logged, stop_process

pytestmark = pytest.mark.slow


def _found_under(config: object) -> Workers | None:
    """What aiobs finds when a frame below it holds ``config`` as uvicorn's
    ``subprocess_started(config=...)`` does while a worker imports the app."""
    return server_workers()


def test_uvicorns_own_configuration_gives_the_worker_count() -> None:
    """A uvicorn Config on the stack that imports the app says how many workers there are;
    a reloading server has one whatever --workers says."""
    assert _found_under(uvicorn.Config("app:app", workers=3)) == Workers("uvicorn", 3)
    assert _found_under(uvicorn.Config("app:app", workers=3, reload=True)) == Workers("uvicorn", 1)
    assert server_workers() is None  # pytest is no server


def test_several_workers_need_the_multiprocess_directory() -> None:
    """The refusal names the server, the count, the variable and the doc; one worker or a
    directory passes."""
    with pytest.raises(
        ConfigError, match=r"uvicorn runs 4 worker.*PROMETHEUS_MULTIPROC_DIR.*multiprocess\.md"
    ):
        check_workers(Workers("uvicorn", 4), None)
    check_workers(Workers("uvicorn", 1), None)
    check_workers(Workers("gunicorn", 4), "/tmp/metrics")
    check_workers(None, None)


def _uvicorn_workers(port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "tests.support.sample_app:app", "--host", HOST,
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def _wait_for_text(log: Path, text: str, count: int = 1, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace")
        if output.count(text) >= count:
            return output
        time.sleep(0.1)
    raise AssertionError(f"{text!r} x{count} not seen within {timeout} s:\n{output[-3000:]}")


def test_uvicorn_workers_without_a_directory_are_refused(tmp_path: Path) -> None:
    """uvicorn --workers 2 without PROMETHEUS_MULTIPROC_DIR: the workers refuse to start and
    say why; nothing serves wrong numbers."""
    log = tmp_path / "uvicorn.log"
    port = free_port()
    process = start_logged(
        _uvicorn_workers(port, 2),
        {},
        log,
    )
    try:
        output = _wait_for_text(log, "PROMETHEUS_MULTIPROC_DIR is not set")
        assert "uvicorn runs 2 worker processes" in output
        with httpx.Client(timeout=1) as client, pytest.raises(httpx.TransportError):
            client.get(f"http://{HOST}:{port}/metrics")
    finally:
        stop_process(process)


def test_gunicorn_workers_without_a_directory_stop_the_server(tmp_path: Path) -> None:
    """gunicorn -w 2 without PROMETHEUS_MULTIPROC_DIR and without aiobs's hooks: the first
    worker fails to boot with the message, and gunicorn stops."""
    log = tmp_path / "gunicorn.log"
    process = start_logged(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "2",
            "-k",
            "uvicorn.workers.UvicornWorker",
            "-b",
            f"{HOST}:{free_port()}",
            "tests.support.sample_app:app",
        ],
        {},
        log,
    )
    try:
        assert process.wait(60) != 0
        output = log.read_text(errors="replace")
        assert "gunicorn runs 2 worker processes" in output
        assert "PROMETHEUS_MULTIPROC_DIR is not set" in output
    finally:
        stop_process(process)


def test_uvicorn_workers_share_the_metrics_port(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR and AIOBS_METRICS_PORT, both workers start (each binds
    the port) and a scrape on it shows both workers' requests."""
    log = tmp_path / "uvicorn.log"
    directory = tmp_path / "metrics"
    directory.mkdir()
    port, metrics_port = free_port(), free_port()
    process = start_logged(
        _uvicorn_workers(port, 2),
        {
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
            "AIOBS_METRICS_PORT": str(metrics_port),
            "AIOBS_METRICS_ADDR": HOST,
        },
        log,
    )
    try:
        _wait_for_text(log, "Application startup complete", count=2)
        with httpx.Client(timeout=5) as client:
            for _ in range(20):  # each request on a new connection: both workers take some
                client.get(f"http://{HOST}:{port}/v1/models/m", headers={"connection": "close"})
            text = client.get(f"http://{HOST}:{metrics_port}/metrics").text
        assert (
            sample_value(text, "http_requests_total", route="/v1/models/{name}", status="200") == 20
        )
        assert "cannot listen" not in log.read_text()
    finally:
        stop_process(process)
