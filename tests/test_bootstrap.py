"""scripts/bootstrap's package install: packaged services are kept from starting only while
apt-get runs, and the machine's own policy-rc.d survives. Driven with a fake apt-get and a
policy-rc.d path of the test's own (never the machine's)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).resolve().parent.parent / "scripts" / "bootstrap"
FAKE_APT_GET = """#!/bin/sh
# Records each call and what policy-rc.d answered meanwhile; fails or is interrupted as told.
if [ -e "$POLICY_RC_D" ]; then state=$(tail -n 1 "$POLICY_RC_D"); else state=absent; fi
echo "$1 $state" >> "$APT_LOG"
case "$1:$FAKE_APT" in
  install:fails) exit 100 ;;
  install:terminated) kill -TERM "$PPID" ;;
esac
exit 0
"""
USERS_POLICY = "#!/bin/sh\n# the machine's own policy\nexit 0\n"


def _install(tmp_path: Path, outcome: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run bootstrap's install step for two packages; returns the run and the call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(FAKE_APT_GET)
    apt_get.chmod(0o755)
    log = tmp_path / "apt.log"
    environ = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "POLICY_RC_D": str(tmp_path / "sbin" / "policy-rc.d"),
        "APT_LOG": str(log),
        "FAKE_APT": outcome,
    }
    run = subprocess.run(
        ["bash", "-c", 'source "$1"; install_packages prometheus wrk', "bash", str(BOOTSTRAP)],
        env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return run, log


OUTCOMES = [("succeeds", 0), ("fails", 100), ("terminated", 1)]


@pytest.mark.parametrize(("outcome", "status"), OUTCOMES)
def test_policy_rc_d_forbids_starts_during_the_install_and_is_removed_after(
    tmp_path: Path, outcome: str, status: int
) -> None:
    """policy-rc.d answers 101 while apt-get runs and is gone afterwards, whether the install
    succeeded, failed or was interrupted."""
    (tmp_path / "sbin").mkdir()
    run, log = _install(tmp_path, outcome)
    assert run.returncode == status, run.stderr
    assert log.read_text().splitlines() == ["update exit 101", "install exit 101"]
    assert list((tmp_path / "sbin").iterdir()) == []


@pytest.mark.parametrize(("outcome", "status"), OUTCOMES)
def test_a_policy_rc_d_that_was_there_is_restored(
    tmp_path: Path, outcome: str, status: int
) -> None:
    """The machine's own policy-rc.d is replaced only while apt-get runs, then put back as it
    was (content and mode), whatever the install did."""
    (tmp_path / "sbin").mkdir()
    own = tmp_path / "sbin" / "policy-rc.d"
    own.write_text(USERS_POLICY)
    own.chmod(0o750)
    run, log = _install(tmp_path, outcome)
    assert run.returncode == status, run.stderr
    assert log.read_text().splitlines() == ["update exit 101", "install exit 101"]
    assert own.read_text() == USERS_POLICY
    assert own.stat().st_mode & 0o777 == 0o750
    assert list((tmp_path / "sbin").iterdir()) == [own]
