"""Real uvicorn servers in subprocesses: start on 127.0.0.1, wait until live, read their JSON
log lines, stop with SIGTERM and time the exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.otlp_receiver import HOST, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP = "tests.support.sample_app:app"
_SCRUBBED_PREFIXES = ("OTEL_", "AIOBS_", "PROMETHEUS_MULTIPROC")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child Python process: this one's without any aiobs,
    OpenTelemetry or multiprocess variables, the repository importable, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    base["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    base["PYTHONDONTWRITEBYTECODE"] = "1"
    return {**base, **(extra or {})}


def start_logged(
    command: list[str], env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """``command`` in the repository with ``env`` added to a scrubbed environment, its stdout
    and stderr to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=child_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM a child process and reap it; killed if it outlives ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class ServerError(RuntimeError):
    """The server did not start, or did not stop."""


class Server:
    """One uvicorn process serving ``app`` with ``env`` added to a scrubbed environment."""

    def __init__(
        self, app: str, env: Mapping[str, str], log_dir: Path, name: str = "server"
    ) -> None:
        self.app = app
        self.port = free_port()
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.env = child_env(env)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.run_server", self.app, HOST, str(self.port)],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise ServerError(
                        f"{self.app} exited with {self.process.returncode} before it was live\n"
                        f"{self.describe()}"
                    )
                try:
                    if client.get("/health/live").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    self.kill()
                    raise ServerError(f"{self.app} not live within {timeout} s\n{self.describe()}")
                time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM, then wait; the seconds from the signal to the exit. Killed (and
        ServerError) if it outlives ``timeout``."""
        process = self.process
        if process is None or process.poll() is not None:
            return 0.0
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError(f"{self.app} ignored SIGTERM for {timeout} s") from None
        return time.monotonic() - started

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    # --- output ------------------------------------------------------------------------
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (a line that is not JSON fails the caller)."""
        lines = []
        for number, line in enumerate(self.stdout().splitlines(), 1):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"stdout line {number} is not JSON: {line[:300]!r}") from None
        return lines

    def logs(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == event]

    def describe(self) -> str:
        return f"--- stdout ---\n{self.stdout()[-4000:]}\n--- stderr ---\n{self.stderr()[-4000:]}"


def metrics_text(client: httpx.Client, openmetrics: bool = False) -> str:
    headers = {"Accept": "application/openmetrics-text"} if openmetrics else {}
    response = client.get("/metrics", headers=headers)
    response.raise_for_status()
    return response.text


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name{labels}`` in Prometheus text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
