"""The `aiobs config` command prints resolved settings with secrets masked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiobs.ops.cli", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
        check=False,
    )


def test_config_prints_resolved_settings_masked(tmp_path: Path) -> None:
    """File and environment merge; header values and URL passwords are masked."""
    config = tmp_path / "aiobs.yaml"
    config.write_text("service_name: from-file\nlog_level: debug\n")
    result = _run(
        "config",
        "--config-file",
        str(config),
        env={
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer canary",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:canary@collector:4318",
            "AIOBS_LOG_LEVEL": "warning",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "canary" not in result.stdout
    printed = json.loads(result.stdout)
    assert printed["service_name"] == "from-file"
    assert printed["log_level"] == "WARNING"
    assert printed["otlp_headers"] == {"authorization": "***"}


def test_config_rejects_a_bad_value_naming_it() -> None:
    """A bad variable exits with status 2 and names the variable."""
    result = _run("config", env={"OTEL_TRACES_SAMPLER": "sometimes"})
    assert result.returncode == 2
    assert "OTEL_TRACES_SAMPLER" in result.stderr
