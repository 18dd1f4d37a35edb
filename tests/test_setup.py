"""Process-wide set-up: setup() for workers without FastAPI, the separate metrics port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import aiobs
from aiobs import ConfigError, Observability, Settings
from tests.conftest import client_for

WORKER = textwrap.dedent(
    """
    import logging
    import aiobs

    obs = aiobs.setup(service_name="embedder-worker")
    assert aiobs.setup(service_name="ignored") is obs
    log = aiobs.get_logger("worker")
    log.info("batch_done", items=3, api_key="canary-key")
    logging.getLogger("library").warning("from the standard library")
    """
)


def test_setup_gives_a_worker_json_logs_and_flushes_at_exit() -> None:
    """A plain process gets JSON lines on stdout, written before it exits, once set up."""
    result = subprocess.run(
        [sys.executable, "-c", WORKER],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["batch_done", "from the standard library"]
    assert {line["service"] for line in lines} == {"embedder-worker"}
    assert lines[0]["api_key"] == "[REDACTED]"
    assert "canary" not in result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.anyio
async def test_metrics_on_their_own_port() -> None:
    """With AIOBS_METRICS_PORT the exposition moves to its own server; the app's /metrics
    path is then the application's own (here: unmatched)."""
    port = _free_port()
    settings = Settings.load({"metrics_port": port, "metrics_addr": "127.0.0.1"}, environ={})
    obs = Observability(settings, registry=CollectorRegistry(), environ={})
    obs.start_metrics_server()
    app = FastAPI()
    aiobs.instrument(app, observability=obs)
    try:
        async with client_for(app) as client:
            assert (await client.get("/metrics")).status_code == 404
        async with httpx.AsyncClient() as scraper:
            body = (await scraper.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
        assert 'http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in body
        with pytest.raises(ConfigError, match="AIOBS_METRICS_PORT"):
            Observability(settings, registry=CollectorRegistry(), environ={}).start_metrics_server()
    finally:
        obs.shutdown(1)


BUILT = textwrap.dedent(
    """
    import json
    import aiobs

    built = aiobs.Settings(service_name="built-svc", log_level="WARNING", tracing=False)
    obs = aiobs.setup(settings=built, access_log=False)
    print(json.dumps({"service": obs.settings.service_name, "level": obs.settings.log_level,
                      "tracing": obs.settings.tracing, "access_log": obs.settings.access_log}))
    """
)


def test_setup_with_built_settings_reads_no_environment() -> None:
    """``settings=`` is used as it is, keyword options over it; the environment is not read."""
    environment = {"OTEL_SERVICE_NAME": "from-env", "AIOBS_LOG_LEVEL": "DEBUG", "PATH": "/usr/bin"}
    result = subprocess.run(
        [sys.executable, "-c", BUILT],
        capture_output=True, text=True, timeout=60, check=True, env=environment,
    )  # fmt: skip
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "service": "built-svc",
        "level": "WARNING",
        "tracing": False,
        "access_log": False,
    }


def test_settings_built_directly_are_checked_like_the_environment() -> None:
    with pytest.raises(ConfigError, match="setting 'sampler_arg'"):
        Settings(sampler_arg=2.0)
    with pytest.raises(ConfigError, match="setting 'log_level'"):
        Settings(log_level="LOUD")
    assert Settings(log_level="debug").log_level == "DEBUG"
