"""Messages that never contradict themselves: advice fits who is asking (class 8 of the
do-no-harm issue).  Real processes, real credentials: setpriv drops a capability for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import IS_ROOT, NOBODY, ROOT

pytestmark = pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None,
                                reason="changing credentials needs root and setpriv")


def _uffdctl(*args: str, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(prefix + [sys.executable, "-m", "uffdctl", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "NO_COLOR": "1"})


@pytest.fixture
def nobodys_process() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(NOBODY + ["sleep", "60"])
    try:
        yield proc  # type: ignore[misc]
    finally:
        proc.kill()
        proc.wait()


def test_root_without_cap_sys_ptrace_is_told_about_the_capability(
        nobodys_process: subprocess.Popen[bytes]) -> None:
    drop = ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace"]
    res = _uffdctl("inspect", str(nobodys_process.pid), prefix=drop)
    assert res.returncode == 5, res.stderr
    [line] = res.stderr.splitlines()
    assert "root without CAP_SYS_PTRACE" in line and "CAP_SYS_PTRACE" in line.split("fix:")[1]
    assert "run as its owner or as root" not in line  # it is root already


def test_another_user_is_told_to_run_as_owner_or_root(
        nobodys_process: subprocess.Popen[bytes]) -> None:
    other = ["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all"]
    res = _uffdctl("inspect", str(nobodys_process.pid), prefix=other)
    if "ModuleNotFoundError" in res.stderr or "Permission denied" in res.stderr:
        pytest.skip("this interpreter or checkout is not readable by another uid")
    assert res.returncode == 5, res.stderr
    assert "run as its owner or as root" in res.stderr
