"""What the benchmarks share: a free loopback port, the demo service started and stopped,
and the machine and commit a result was measured on."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
_SCRUBBED = ("AIOBS_", "OTEL_", "PROMETHEUS_MULTIPROC")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_demo(
    settings: Mapping[str, str], log_path: Path, ready_timeout: float
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m demo_service`` on a free port with ``settings`` (its environment
    variables; no aiobs, OpenTelemetry or multiprocess variables of this process), its output
    to ``log_path``; its URL and process once ``/health/ready`` says 200; stopped on exit."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SCRUBBED)}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]),
        HOST=HOST,
        PORT=str(port),
        **settings,
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "demo_service"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        with httpx.Client(base_url=url, timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the service exited:\n{log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health/ready").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service was not ready within {ready_timeout} s")
                time.sleep(0.1)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def git_revision(*paths: str) -> tuple[str | None, bool | None]:
    """The commit checked out and whether ``paths`` have uncommitted changes (read-only git;
    None where git could not say)."""

    def git(*arguments: str) -> str | None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                ["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
            if done.returncode == 0:
                return done.stdout.strip()
        return None

    status = git("status", "--porcelain", "--", *paths)
    return git("rev-parse", "HEAD"), (bool(status) if status is not None else None)


def machine(packages: Sequence[str]) -> dict[str, Any]:
    """CPUs, their model, the platform, the load average now, Python and the versions of
    ``packages`` (None: not installed)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    versions: dict[str, str | None] = dict.fromkeys(packages)
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "packages": versions,
    }
