"""Live: the demo service, a real Prometheus loaded with the real rules (windows shortened by
``RulesConfig(time_scale=60)``, never a hand-written copy) and a real Alertmanager on
127.0.0.1. A demo whose model file is corrupt stays unready until AiobsModelNotReady reaches
Alertmanager; when the scrape target turns to a demo with a good model, it resolves.

Prometheus scrapes the demos through a relay, so the switch keeps one ``instance`` and leaves
no scrape gap: a stopped target would resolve the alert by staleness, proving nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import httpx
import pytest

from aiobs.ops.rules.config import RulesConfig
from aiobs.ops.rules.generator import rule_files
from tests.support.otlp_receiver import HOST, free_port, wait_for
from tests.support.prometheus import WebhookReceiver, alertmanager, prometheus
from tests.support.servers import REPO_ROOT, child_env, stop_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
        reason="Debian's prometheus and prometheus-alertmanager packages",
    ),
]
TIME_SCALE = 60  # an hour of the real rules is a minute here; `for: 5m` is 5 s
ALERT = "AiobsModelNotReady"


class Demo:
    """``python -m demo_service`` on a fixed port, restartable."""

    def __init__(self, workdir: Path, models: Path, name: str) -> None:
        self.port = free_port()
        self.log = workdir / f"{name}.log"
        self.env = child_env(
            {
                "MODEL_PATH": str(models),
                "MODEL_VERSIONS": "v1",
                "MAX_BATCH_SIZE": "4",
                "HOST": HOST,
                "PORT": str(self.port),
            }
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Demo:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "demo_service"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class MetricsRelay:
    """Serves ``GET /metrics`` of whichever demo ``upstream`` names, as one scrape target."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    answer = httpx.get(f"{relay.upstream}{self.path}", timeout=5)
                except httpx.TransportError:  # the demo is still starting: a failed scrape
                    self.send_error(503)
                    return
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers["content-type"])
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self.address = f"{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> MetricsRelay:
        Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[tuple[Demo, Demo]]:
    """A demo whose model file is corrupt and one that builds a good model, both started."""
    broken_models = tmp_path / "broken-models"
    broken_models.mkdir()
    (broken_models / "demo-cnn-v1.onnx").write_bytes(b"not an onnx model")
    broken = Demo(tmp_path, broken_models, "broken").start()
    good = Demo(tmp_path, tmp_path / "good-models", "good").start()
    try:
        yield broken, good
    finally:
        broken.stop()
        good.stop()


def _timestamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time with up to nanoseconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")


@pytest.mark.timeout(240)
def test_model_not_ready_reaches_alertmanager_and_resolves(
    tmp_path: Path, demos: tuple[Demo, Demo]
) -> None:
    """An unready demo makes AiobsModelNotReady fire in Alertmanager with its labels and runbook;
    once the target is a ready demo, Alertmanager gets it resolved, at a time Prometheus saw
    ai_service_ready at 1."""
    broken, good = demos
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for name, text in rule_files(RulesConfig(time_scale=TIME_SCALE)).items():
        (rules_dir / name).write_text(text, encoding="utf-8")
    with (
        MetricsRelay(broken.url) as relay,
        WebhookReceiver() as webhook,
        alertmanager(tmp_path, webhook.url) as manager,
        prometheus(
            tmp_path,
            sorted(rules_dir.glob("*.yml")),
            {"aiobs": relay.address},
            alertmanager=manager.url,
            extra_args=["--rules.alert.resend-delay=1s"],
        ) as server,
    ):
        wait_for(
            lambda: webhook.statuses(ALERT),
            timeout=60,
            interval=0.5,
            message=f"{ALERT} never reached Alertmanager\n{server.log()}",
        )
        assert webhook.statuses(ALERT)[0] == "firing"
        fired = next(a for a in webhook.alerts if a["labels"]["alertname"] == ALERT)
        assert fired["labels"]["severity"] == "page"
        assert fired["labels"]["job"] == "aiobs"
        assert fired["annotations"]["runbook_url"].endswith("#aiobsmodelnotready")

        wait_for(good.ready, timeout=120, interval=0.5, message=good.log.read_text()[-3000:])
        relay.upstream = good.url
        wait_for(
            lambda: "resolved" in webhook.statuses(ALERT),
            timeout=60,
            interval=0.5,
            message=f"{ALERT} never resolved\n{server.log()}",
        )
        resolved = next(
            a
            for a in webhook.alerts
            if a["labels"]["alertname"] == ALERT and a["status"] == "resolved"
        )
        at = str(_timestamp(resolved["endsAt"]))
        ready = server.get("/api/v1/query", query='ai_service_ready{job="aiobs"}', time=at)
        assert [sample["value"][1] for sample in ready["data"]["result"]] == ["1"]
