"""The compose stack's runnable part, natively on 127.0.0.1: the demo and its load generator
with the environment and arguments compose gives them, Debian's Prometheus and Alertmanager
with the flags compose gives them and the very config files compose mounts (service addresses
rewritten to loopback ports, the rules folder to the repository's alerts/). An OTLP receiver
stands in for Jaeger; Jaeger, Fluent Bit and Loki cannot run here, so their targets are
pointed at closed ports and expected down.

The alert: the demo runs with ``AIOBS_MAX_LABEL_VALUES=1`` while the load generator asks for
v1 and v2, so v2 is folded into ``other`` and the real AiobsLabelValuesFolded rule
(``for: 0s``) fires within two scrapes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.compose import (
    flag,
    host_path,
    native_prometheus_config,
    resolved,
)
from tests.support.dashboards_prometheus import dashboards, substitute
from tests.support.otlp_receiver import HOST, OtlpReceiver, RefusingPort, free_port, wait_for
from tests.support.prometheus import Daemon
from tests.support.servers import REPO_ROOT, child_env, stop_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
        reason="Debian's prometheus and prometheus-alertmanager packages",
    ),
]
ALERT = "AiobsLabelValuesFolded"
RUNNING = ("aiobs", "prometheus", "alertmanager")
NOT_RUNNING = ("jaeger", "fluent-bit", "loki")


@pytest.fixture
def compose() -> dict[str, Any]:
    return resolved({"GF_SECURITY_ADMIN_PASSWORD": "unused-here", "LOADGEN_DURATION": "120"})


@pytest.fixture
def jaeger() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver in Jaeger's place."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def demo(compose: dict[str, Any], jaeger: OtlpReceiver, tmp_path: Path) -> Iterator[str]:
    """``python -m demo_service`` with compose's environment for it (Jaeger's address
    rewritten) and a label limit of one value, ready; its ``host:port``."""
    environment = dict(compose["services"]["demo"]["environment"])
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = jaeger.endpoint
    port = free_port()
    env = child_env(
        {
            **environment,
            "AIOBS_MAX_LABEL_VALUES": "1",
            "MODEL_PATH": str(tmp_path / "models"),
            "HOST": HOST,
            "PORT": str(port),
        }
    )
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "demo_service"], cwd=REPO_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def ready() -> bool:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            return httpx.get(f"http://{HOST}:{port}/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=90, interval=0.2, message="demo not ready")
        yield f"{HOST}:{port}"
    finally:
        stop_process(process)


@pytest.fixture
def loadgen(compose: dict[str, Any], demo: str, tmp_path: Path) -> Iterator[None]:
    """The load generator with compose's arguments, aimed at the native demo."""
    command = [
        argument.replace("--url=http://demo:8000", f"--url=http://{demo}")
        for argument in compose["services"]["loadgen"]["command"]
    ]
    assert command[:3] == ["python", "-m", "demo_service.loadgen"]
    with (tmp_path / "loadgen.log").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *command[1:]], cwd=REPO_ROOT, env=child_env(),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield
    finally:
        stop_process(process)


def _alertmanager(compose: dict[str, Any], workdir: Path) -> Daemon:
    """Debian's Alertmanager with compose's flags and its mounted config file, unchanged."""
    service = compose["services"]["alertmanager"]
    config = host_path(service, flag(service["command"], "--config.file"))
    arguments = [
        f"--config.file={config}" if a.startswith("--config.file=")
        else f"--storage.path={workdir / 'alertmanager'}" if a.startswith("--storage.path=")
        else a
        for a in service["command"]
    ]  # fmt: skip
    return Daemon(["prometheus-alertmanager", *arguments], workdir, "alertmanager")


def _prometheus(
    compose: dict[str, Any], workdir: Path, demo: str, alertmanager: str, closed: str
) -> Daemon:
    """Debian's Prometheus with compose's flags and its mounted config, service addresses
    rewritten; the rules are the repository's alerts/ that compose mounts."""
    prometheus_port = free_port()
    addresses = {
        "demo:8000": demo,
        "prometheus:9090": f"{HOST}:{prometheus_port}",
        "alertmanager:9093": alertmanager,
        "jaeger:14269": closed,
        "fluent-bit:2020": closed,
        "loki:3100": closed,
    }
    service = compose["services"]["prometheus"]
    rules = host_path(service, "/etc/prometheus/rules")
    config = workdir / "prometheus.yml"
    text = native_prometheus_config(compose, addresses, rules)
    for address in addresses:
        assert address not in text, address
    config.write_text(text, encoding="utf-8")
    arguments = [
        f"--config.file={config}" if a.startswith("--config.file=")
        else f"--storage.tsdb.path={workdir / 'tsdb'}" if a.startswith("--storage.tsdb.path=")
        else a
        for a in service["command"]
    ]  # fmt: skip
    daemon = Daemon(["prometheus", *arguments], workdir, "prometheus")
    daemon.port = prometheus_port
    daemon.command[-1] = f"--web.listen-address={HOST}:{prometheus_port}"
    return daemon


@pytest.mark.timeout(180)
def test_native_stack_scrapes_evaluates_the_rules_answers_dashboards_and_alerts(
    compose: dict[str, Any],
    demo: str,
    loadgen: None,
    jaeger: OtlpReceiver,
    tmp_path: Path,
) -> None:
    """With compose's own configs, Prometheus scrapes the demo, itself and Alertmanager,
    loads and evaluates every alert rule file without an error, answers every Service overview
    panel query (most with data) and stores trace_id exemplars; an alert reaches Alertmanager;
    the demo's spans, with those trace ids, reach the OTLP endpoint in Jaeger's place."""
    started = time.monotonic()
    with (
        RefusingPort() as closed,
        _alertmanager(compose, tmp_path) as manager,
        _prometheus(
            compose, tmp_path, demo, manager.url.removeprefix("http://"), f"{HOST}:{closed.port}"
        ) as server,
    ):

        def targets() -> dict[str, str]:
            active = server.get("/api/v1/targets")["data"]["activeTargets"]
            return {t["labels"]["job"]: t["health"] for t in active}

        expected = {**dict.fromkeys(RUNNING, "up"), **dict.fromkeys(NOT_RUNNING, "down")}
        wait_for(
            lambda: targets() == expected,
            timeout=30, interval=0.5, message=f"{targets()}\n{server.log()}",
        )  # fmt: skip

        rule_files = sorted(host_path(compose["services"]["prometheus"], "/etc/prometheus/rules")
                            .glob("*.yml"))  # fmt: skip

        def evaluated() -> list[dict[str, Any]]:
            groups = server.get("/api/v1/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return groups if all(r["health"] != "unknown" for r in rules) else []

        groups = wait_for(evaluated, timeout=20, interval=0.5, message=server.log())
        assert {Path(group["file"]) for group in groups} == set(rule_files)
        broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
                  if r["health"] != "ok"]  # fmt: skip
        assert not broken
        assert server.log().count("level=error") == 0, server.log()

        def alerted() -> list[dict[str, Any]]:
            alerts = httpx.get(f"{manager.url}/api/v2/alerts", timeout=5).json()
            return [a for a in alerts if a["labels"]["alertname"] == ALERT]

        alerts = wait_for(alerted, timeout=45, interval=0.5, message=server.log())
        alert = next(a for a in alerts if a["labels"]["label"] == "model_version")
        assert alert["labels"]["job"] == "aiobs"
        assert alert["labels"]["metric"] == "ai_inference_total"
        assert alert["labels"]["severity"] == "info"
        assert alert["annotations"]["runbook_url"].endswith("#aiobslabelvaluesfolded")
        assert alert["status"]["state"] == "active"
        assert alert["receivers"] == [{"name": "default"}]

        overview = dashboards()["aiobs-service-overview.json"]
        answered = 0
        for panel in overview["panels"]:
            for target in panel.get("targets", []):
                query = substitute(target["expr"], "aiobs")
                answer = server.get("/api/v1/query", query=query)
                assert answer["status"] == "success", (panel["title"], answer)
                answered += bool(answer["data"]["result"])
        assert answered >= 5, answered

        now = time.time()
        exemplars = server.get(
            "/api/v1/query_exemplars",
            query='http_request_duration_seconds_bucket{job="aiobs"}',
            start=str(now - 120), end=str(now),
        )["data"]  # fmt: skip
        trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
        assert trace_ids
        wait_for(lambda: jaeger.spans, timeout=15, message="no span reached the OTLP receiver")
        assert trace_ids & {span.trace_id for span in jaeger.spans}
    assert time.monotonic() - started < 90
