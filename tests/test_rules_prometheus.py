"""Every generated rule file loads and evaluates in a real Prometheus (Debian's)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiobs.ops.rules.generator import rule_groups
from tests.support.otlp_receiver import HOST, wait_for
from tests.support.prometheus import Daemon, prometheus
from tests.support.servers import SAMPLE_APP, Server

ALERTS = Path(__file__).resolve().parents[1] / "alerts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus package"),
]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Server]:
    server = Server(SAMPLE_APP, {}, tmp_path, name="service").start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for _ in range(5):
                client.get("/v1/models/resnet")
                client.get("/boom", headers={"connection": "close"})  # the server closes it
        yield server
    finally:
        server.stop()


def _every_rule_evaluated(daemon: Daemon) -> bool:
    groups: list[dict[str, Any]] = daemon.get("/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    never = [rule for rule in rules if rule["lastEvaluation"].startswith("0001")]
    return len(groups) == len(rule_groups()) and not never


def test_rule_files_load_and_evaluate_without_errors(tmp_path: Path, service: Server) -> None:
    """Prometheus loads every alerts/*.yml, scrapes a real aiobs service as job "aiobs", and
    evaluates every rule with health ok and no lastError."""
    with prometheus(
        tmp_path, sorted(ALERTS.glob("*.yml")), {"aiobs": f"{HOST}:{service.port}"}
    ) as daemon:
        wait_for(
            lambda: daemon.get("/api/v1/query", query='up{job="aiobs"}')["data"]["result"],
            timeout=20,
            interval=0.2,
            message="no scrape",
        )
        wait_for(
            lambda: daemon.get("/api/v1/query", query="job:http_requests:rate5m")["data"][
                "result"
            ],
            timeout=20,
            interval=0.5,
            message="recording rule never produced a sample",
        )
        wait_for(lambda: _every_rule_evaluated(daemon), timeout=20, interval=0.5)
        groups = daemon.get("/api/v1/rules")["data"]["groups"]
    expected = {group["name"]: len(group["rules"]) for group in rule_groups()}
    assert {group["name"]: len(group["rules"]) for group in groups} == expected
    broken = [
        (rule["name"], rule["health"], rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok" or rule.get("lastError")
    ]
    assert broken == []
