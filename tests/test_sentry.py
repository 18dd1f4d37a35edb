"""Sentry keeps working beside aiobs: the exception of a raising request reaches it once, and
error records still reach its logging integration."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.servers import REPO_ROOT, child_env

pytestmark = pytest.mark.slow


def test_sentry_sees_what_it_saw_without_aiobs() -> None:
    """Sentry's Starlette integration captures the unhandled KeyError with and without aiobs
    (one event each, deduplicated with aiobs's own error line), and the service's error log
    record reaches Sentry either way."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.sentry_check"],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(result.stdout.splitlines()[-1])
    for variant in ("bare", "instrumented"):
        events = report[variant]["events"]
        assert report[variant]["status"] == 500
        assert [event["exception"] for event in events if event["exception"]] == [["KeyError"]]
        assert [event["message"] for event in events if not event["exception"]] == [
            "payment provider down"
        ]
