"""A real Prometheus server (Debian's ``prometheus``) on 127.0.0.1 for the dashboard tests,
and the dashboards' queries with their Grafana variables substituted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.otlp_receiver import HOST, free_port
from tests.support.servers import stop_process

PROMETHEUS = shutil.which("prometheus")
DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"


def dashboards() -> dict[str, dict[str, Any]]:
    """The checked-in dashboards by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels() -> Iterator[tuple[str, dict[str, Any]]]:
    """(dashboard title, panel) for every panel of every dashboard."""
    for dashboard in dashboards().values():
        for panel in dashboard["panels"]:
            yield dashboard["title"], panel


def substitute(expr: str, job: str, rate_interval: str = "5s") -> str:
    """``expr`` as Grafana sends it with ``job`` selected and All models and versions."""
    values = {"job": job, "model": ".*", "model_version": ".*", "__rate_interval": rate_interval}
    return re.sub(r"\$\{?(\w+)\}?", lambda match: values[match.group(1)], expr)


class Prometheus:
    """``prometheus`` on a free loopback port with ``scrape_configs``, its data under
    ``directory``; stopped by :meth:`stop`."""

    def __init__(self, directory: Path, scrape_configs: list[dict[str, Any]]) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        config = directory / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": scrape_configs,
                }
            )
        )
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={directory / 'db'}",
                 f"--web.listen-address={HOST}:{self.port}", "--enable-feature=exemplar-storage",
                 "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def wait_ready(self, timeout: float = 30.0) -> Prometheus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready\n{self.log.read_text(errors='replace')}")

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get(f"/api/v1/{path}", params=params).json()
        return answer

    def stop(self) -> None:
        self.client.close()
        stop_process(self.process, timeout=10)
