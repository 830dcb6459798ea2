"""Shared fixtures: real kernel state, changed only under a lock and always put back.

- ``hugepages``: reserve N huge pages for a test (restored even when the test fails).
- ``no_free_hugepages``: a window in which the default pool has no free pages.
- ``sysctl``: set /proc/sys values for a test, restored afterwards.
- ``as_nobody``: run a uffdctl command (or Python code) as uid 65534 with no capabilities,
  through setpriv, for real.
- ``system_state``: a snapshot of what tests must leave as found (nr_hugepages, free pages,
  the unprivileged_userfaultfd sysctl); checked after every test.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from uffdctl import hugepages as hp

ROOT = Path(__file__).resolve().parent.parent
SYSCTL_LOCK = "/run/lock/uffdctl-sysctl.lock"
IS_ROOT = os.geteuid() == 0
HELPERS = ROOT / "tests" / "helpers"


@contextmanager
def helper_process(script: str, *args: str
                   ) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """Run tests/helpers/SCRIPT in its own session and yield it with the JSON line it prints
    once it is ready; it and every process it started are killed at the end."""
    proc = subprocess.Popen([sys.executable, str(HELPERS / script), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        yield proc, json.loads(line)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def system_snapshot() -> dict[str, str]:
    snap = {}
    for p in ("/proc/sys/vm/nr_hugepages", "/proc/sys/vm/unprivileged_userfaultfd"):
        try:
            snap[p] = _read(p)
        except OSError:
            pass
    return snap


@contextmanager
def _sysctl_lock() -> Iterator[None]:
    fd = os.open(SYSCTL_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def system_state() -> Iterator[None]:
    """Every test leaves nr_hugepages and the uffd sysctl as it found them."""
    # Both locks: another test run on this machine changes these only while holding them and
    # puts them back before letting go, so a snapshot under the locks is never mid-change.
    # Always the sysctl lock first: the sysctl fixture holds it for a whole test that may take
    # the huge page lock inside; the other order deadlocked two test runs.
    with _sysctl_lock(), hp.exclusive():
        before = system_snapshot()
    yield
    with _sysctl_lock(), hp.exclusive():
        after = system_snapshot()
    assert after == before, f"test changed system state: {before} -> {after}"


@pytest.fixture
def hugepages() -> Callable[..., AbstractContextManager[hp.Reservation]]:
    """``with hugepages(4):`` — 4 free default-size huge pages for the block."""
    if not IS_ROOT:
        pytest.skip("reserving huge pages needs root")
    return hp.reserve


@pytest.fixture
def no_free_hugepages() -> Callable[[], AbstractContextManager[None]]:
    """``with no_free_hugepages():`` — the default pool has no free pages inside the block."""
    if not IS_ROOT:
        pytest.skip("emptying the huge page pool needs root")

    @contextmanager
    def window() -> Iterator[None]:
        path = "/proc/sys/vm/nr_hugepages"
        removed = 0
        try:
            with hp.exclusive():
                pool = hp.read_pools().pool()
                # Shrink only by free pages no live uffdctl run counts as its own: pages in
                # use stay where they are, and a run's pages stay for it to give back.
                removed = hp.removable(pool) if pool else 0
                if pool and removed > 0:
                    _write(path, str(pool.nr - removed))
            # Not locked inside the window: the code under test (often a child process)
            # takes the same lock to grow the pool.
            yield
        finally:
            if removed:
                with hp.exclusive():
                    _write(path, str(int(_read(path)) + removed))
    return window


@pytest.fixture
def sysctl() -> Iterator[Callable[[str, str], None]]:
    """``sysctl("vm/unprivileged_userfaultfd", "1")`` for the rest of the test."""
    if not IS_ROOT:
        pytest.skip("changing sysctls needs root")
    saved: dict[str, str] = {}
    with _sysctl_lock():
        def set_(name: str, value: str) -> None:
            path = f"/proc/sys/{name}"
            saved.setdefault(path, _read(path))
            _write(path, value)
        try:
            yield set_
        finally:
            for path, value in saved.items():
                _write(path, value)


# ----- running as nobody ------------------------------------------------------------------

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
          "--inh-caps=-all", "--bounding-set=-all"]


def _nobody_can_run(python: str) -> bool:
    try:
        return subprocess.run(NOBODY + [python, "-c", "pass"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def nobody_python() -> Iterator[tuple[str, dict[str, str]]]:
    """An interpreter uid 65534 can execute, and an environment in which it imports uffdctl
    and its dependencies from a world-readable copy (the venv may sit under /root, 0700)."""
    if not IS_ROOT or shutil.which("setpriv") is None:
        pytest.skip("running as nobody needs root and setpriv")
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/python{ver}", f"/usr/local/bin/python{ver}"]
    python = next((p for p in candidates if os.path.exists(p) and _nobody_can_run(p)), None)
    if python is None:
        pytest.skip(f"no Python {ver} that uid 65534 may execute")
    import click
    import markdown_it
    import mdurl
    import pygments
    import rich

    import uffdctl
    mods = (uffdctl, click, rich, pygments, markdown_it, mdurl)
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/",
           "LANG": "C.UTF-8", "NO_COLOR": "1"}
    # Where they are, if uid 65534 may read them there (a kernel-matrix guest: copying
    # pygments over 9p under TCG takes a minute).
    where = {str(Path(mod.__file__ or "").parent.parent) for mod in mods}
    direct = {**env, "PYTHONPATH": ":".join(sorted(where))}
    if subprocess.run(NOBODY + [python, "-c", "import uffdctl.cli, click, rich"],
                      capture_output=True, env=direct, cwd="/").returncode == 0:
        yield python, direct
        return
    tmp = tempfile.mkdtemp(prefix="uffdctl-nobody-")
    os.chmod(tmp, 0o755)
    for mod in mods:
        src = Path(mod.__file__ or "").parent
        # With the byte code: PYTHONDONTWRITEBYTECODE stops nobody from caching it, and
        # compiling rich and click again in each interpreter costs seconds (a minute in a
        # kernel-matrix guest under TCG).  copytree keeps mtimes, so the caches stay valid.
        shutil.copytree(src, Path(tmp) / src.name)
    for dirpath, dirnames, filenames in os.walk(tmp):
        for n in dirnames:
            os.chmod(os.path.join(dirpath, n), 0o755)
        for n in filenames:
            os.chmod(os.path.join(dirpath, n), 0o644)
    try:
        yield python, {**env, "PYTHONPATH": tmp}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def as_nobody(nobody_python: tuple[str, dict[str, str]]
              ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``as_nobody("probe", "--json")`` runs ``python -m uffdctl probe --json`` as uid 65534
    with no capabilities; ``as_nobody(code="...")`` runs Python code instead."""
    python, env = nobody_python

    def run(*args: str, code: str | None = None, timeout: float = 120,
            extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = NOBODY + (extra or []) + [python]
        cmd += ["-c", code] if code is not None else ["-m", "uffdctl", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd="/")
    return run


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m uffdctl ARGS`` in a child process, as the test's own user."""
    def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
            input: str | None = None, prefix: list[str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        full_env.pop("GITHUB_OUTPUT", None) if "GITHUB_OUTPUT" not in (env or {}) else None
        return subprocess.run((prefix or []) + [sys.executable, "-m", "uffdctl", *args],
                              capture_output=True, text=True, env=full_env, timeout=timeout,
                              input=input, cwd=ROOT)
    return run


def run_on_pty(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60
               ) -> tuple[int, bytes]:
    """Run ``cmd`` on a real pseudo-terminal (from the repository's root): its exit status and
    everything it wrote.  Killed when it outlives ``timeout``."""
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.chdir(ROOT)
            os.execve(cmd[0], cmd, env if env is not None else dict(os.environ))
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        else:
            os.kill(pid, 9)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out
