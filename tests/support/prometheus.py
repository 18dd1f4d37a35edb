"""Debian's Prometheus and Alertmanager as subprocesses on 127.0.0.1, for the rule tests."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.otlp_receiver import HOST, free_port, wait_for
from tests.support.servers import stop_process


class Daemon:
    """One server process started with ``arguments`` plus its listen address; stopped on exit."""

    def __init__(self, command: Sequence[str], workdir: Path, name: str) -> None:
        self.port = free_port()
        self.command = [*command, f"--web.listen-address={HOST}:{self.port}"]
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Daemon:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_for(self._ready, timeout=30, interval=0.1, message=self.log())
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.command[0]} exited:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            stop_process(self.process)

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=5)
        response.raise_for_status()
        return response.json()


def prometheus(
    workdir: Path,
    rule_files: Sequence[Path],
    targets: dict[str, str],
    alertmanager: str | None = None,
    interval: str = "1s",
    extra_args: Sequence[str] = (),
) -> Daemon:
    """Prometheus scraping ``targets`` (job name to host:port) every ``interval``, evaluating
    ``rule_files`` as often, sending alerts to ``alertmanager`` (a URL) when given."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    if alertmanager:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager.split("//")[1]]}]}]
        }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return Daemon(
        [
            "prometheus",
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            *extra_args,
        ],
        workdir,
        "prometheus",
    )


def alertmanager(workdir: Path, webhook: str) -> Daemon:
    """Alertmanager (no cluster) sending every notification, resolved ones too, to ``webhook``
    within about a second."""
    config = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": webhook, "send_resolved": True}]}
        ],
    }
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return Daemon(
        [
            "prometheus-alertmanager",
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'alertmanager'}",
            "--cluster.listen-address=",
        ],
        workdir,
        "alertmanager",
    )


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 keeping every alert Alertmanager posts to it."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.extend(json.loads(self.rfile.read(length))["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/"

    def statuses(self, alertname: str) -> list[str]:
        """The status (firing, resolved) of each notification about ``alertname``, in order."""
        return [a["status"] for a in list(self.alerts) if a["labels"]["alertname"] == alertname]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
