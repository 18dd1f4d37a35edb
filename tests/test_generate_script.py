"""scripts/generate writes the repository's generated copies through the public `aiobs`
command; on a clean checkout its --check passes, and it fails on a stale copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = str(Path(sys.executable).parent / "aiobs")


def _run(root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "generate"), *arguments],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "AIOBS": COMMAND},
    )  # fmt: skip


def test_the_checked_in_copies_are_current() -> None:
    result = _run(ROOT, "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stale_copy_fails_the_check_and_generate_rewrites_it(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for part in ("scripts", "alerts", "dashboards", "deploy", "docs"):
        shutil.copytree(ROOT / part, copy / part)
    rule_file = copy / "alerts" / "http.yml"
    original = rule_file.read_text()
    rule_file.write_text(original + "# edited by hand\n")
    assert _run(copy, "--check").returncode != 0
    result = _run(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert rule_file.read_text() == original
    assert _run(copy, "--check").returncode == 0
