"""The public API is typed for its users: ``mypy --strict`` passes on a service that uses
every public name (tests/typed/service.py) and reports each mistake in tests/typed/mistakes.py
on the line that makes it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TYPED = Path(__file__).parent / "typed"
REPO = Path(__file__).parent.parent


def test_mypy_strict_accepts_a_typed_service_and_reports_each_mistake(tmp_path: Path) -> None:
    service, mistakes = TYPED / "service.py", TYPED / "mistakes.py"
    no_config = tmp_path / "mypy.ini"
    # --strict alone, not the project's settings; aiobs is read from the checkout, and its own
    # modules' errors are silenced as mypy silences an installed package's.
    no_config.write_text("[mypy]\n[mypy-aiobs.*]\nignore_errors = True\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(no_config),
         "--no-incremental", "--cache-dir", str(tmp_path / "cache"), "--no-error-summary",
         str(service), str(mistakes)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert result.returncode == 1, result.stdout + result.stderr
    assert not [line for line in errors if "service.py" in line], result.stdout
    reported = {int(re.split(r":", line)[1]) for line in errors if "mistakes.py" in line}
    expected = {
        number
        for number, text in enumerate(mistakes.read_text().splitlines(), start=1)
        if "# error:" in text
    }
    assert reported == expected, result.stdout


def test_the_keyword_options_are_the_settings() -> None:
    """``SettingsOptions`` (the typed keywords of instrument/setup) names every field of
    ``Settings``, and only the two keywords that are not fields besides."""
    import dataclasses

    import aiobs

    fields = {field.name for field in dataclasses.fields(aiobs.Settings)}
    assert set(aiobs.SettingsOptions.__annotations__) == fields | {
        "config_file",
        "otlp_base_endpoint",
    }
