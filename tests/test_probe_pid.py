"""`uffdctl probe --pid PID` and `--user`: the answer for the process that will really use
userfaultfd.  Each case is a real process in a real context (a seccomp filter, uid 65534 with
the sysctl at 0 or 1, its own user namespace, a private mount namespace with its own device
node), and `probe --pid` of it must say what the same probe says when run inside that very
context, method by method and cell by cell."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import seccomp
from conftest import IS_ROOT, NOBODY

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="probe --pid/--user needs root")

PROBE = ["-m", "uffdctl", "probe", "--json", "--no-ioctl-check"]


@contextmanager
def target(cmd: list[str], **kw: Any) -> Iterator[int]:
    """A long-running process started by ``cmd`` (which ends by exec'ing `sleep`), its pid
    once the exec happened, killed afterwards."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **kw)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep":
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"{cmd} ended with status {proc.returncode}"
            time.sleep(0.02)
        else:
            pytest.fail(f"{cmd} did not reach sleep")
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def essentials(doc: dict[str, Any]) -> dict[str, Any]:
    """What the kernel answered, without what depends on the moment (huge page counts)."""
    api = doc["api"]
    return {
        "methods": [(m["name"], m["ok"], m["errno"]) for m in doc["access"]["methods"]],
        # Not the sysctl: another test run may change it between two probes (the tests that
        # depend on it hold its lock through the `sysctl` fixture and check it themselves).
        "ids": (doc["access"]["uid"], doc["access"]["euid"], doc["access"]["cap_sys_ptrace"]),
        "api": None if api is None else (api["method"], api["kernel_faults"],
                                         api["features_mask"]),
        "matrix": [(c["memory"], c["mode"], c["status"], c["errno"]) for c in doc["matrix"]
                   if c["memory"] != "hugetlb"],  # free huge pages change under other runs
    }


def by_pid(run_cli: Callable[..., Any], pid: int) -> dict[str, Any]:
    res = run_cli("probe", "--pid", str(pid), "--json", "--no-ioctl-check")
    assert res.returncode in (0, 3), res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    assert doc["caller"]["pid"] == pid
    return doc


def inside(prefix: list[str], env: dict[str, str] | None = None,
           python: str = sys.executable) -> dict[str, Any]:
    res = subprocess.run([*prefix, python, *PROBE], capture_output=True, text=True,
                         env=env, cwd="/", timeout=120)
    assert res.returncode in (0, 3), res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


@pytest.mark.kernel
@pytest.mark.parametrize("err", ["EPERM", "ENOSYS"])
def test_seccomp_filter_is_copied(run_cli, err: str) -> None:  # type: ignore[no-untyped-def]
    with target(seccomp.command(err, ["sleep", "60"])) as pid:
        doc = by_pid(run_cli, pid)
    here = inside(seccomp.command(err, []))
    assert essentials(doc) == essentials(here)
    assert doc["access"]["seccomp"] == 2
    syscall = doc["access"]["methods"][0]
    assert (syscall["name"], syscall["ok"], syscall["errno"]) == ("syscall", False, err)
    assert any("seccomp filter" in c for c in doc["caller"]["copied"]), doc["caller"]
    assert doc["caller"]["inferred"] == []


@pytest.mark.kernel
@pytest.mark.parametrize("value", ["0", "1"])
def test_nobody(run_cli, sysctl, nobody_python, value: str) -> None:  # type: ignore[no-untyped-def]
    python, env = nobody_python
    sysctl("vm/unprivileged_userfaultfd", value)
    with target([*NOBODY, "sleep", "60"]) as pid:
        doc = by_pid(run_cli, pid)
    here = inside(NOBODY, env, python)
    assert essentials(doc) == essentials(here)
    assert doc["access"]["unprivileged_userfaultfd"] == here["access"][
        "unprivileged_userfaultfd"] == int(value)
    assert doc["caller"]["uid"] == 65534 and doc["caller"]["cap_eff"] == 0
    # What a user of `--user nobody` gets is the same: a login has no capabilities either.
    res = run_cli("probe", "--user", "nobody", "--json", "--no-ioctl-check")
    assert res.returncode in (0, 3), res.stderr
    assert essentials(json.loads(res.stdout))["methods"] == essentials(here)["methods"]


def test_user_namespace(run_cli) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    with target(["unshare", "-U", "-r", "sleep", "60"]) as pid:
        doc = by_pid(run_cli, pid)
    here = inside(["unshare", "-U", "-r"])
    assert essentials(doc) == essentials(here)
    assert doc["caller"]["initial_userns"] is False and doc["access"]["initial_userns"] is False
    assert any("user" in c and "namespace" in c for c in doc["caller"]["copied"])


def test_device_node_in_a_private_mount_namespace(run_cli, tmp_path, nobody_python  # type: ignore[no-untyped-def]
                                                  ) -> None:
    """A container's own /dev/userfaultfd, readable by everyone there (mode 0666), and not on
    the host: uid 65534 there has kernel-mode faults through it."""
    try:
        real = os.stat("/dev/userfaultfd")
    except FileNotFoundError:
        pytest.skip("this kernel has no /dev/userfaultfd (6.1)")
    node = tmp_path / "userfaultfd"
    os.mknod(node, 0o666 | stat.S_IFCHR, real.st_rdev)
    os.chmod(node, 0o666)
    os.chmod(tmp_path, 0o755)
    python, env = nobody_python
    bind = ["unshare", "-m", "sh", "-c",
            f"mount --bind {node} /dev/userfaultfd && exec \"$0\" \"$@\""]
    with target([*bind, *NOBODY, "sleep", "60"]) as pid:
        doc = by_pid(run_cli, pid)
    here = inside([*bind, *NOBODY], env, python)
    assert essentials(doc) == essentials(here)
    assert doc["access"]["dev_userfaultfd"]["mode"] == "0666"
    dev = [m for m in doc["access"]["methods"] if m["name"] == "/dev/userfaultfd"]
    assert dev and dev[0]["ok"], doc["access"]["methods"]
    assert doc["api"]["kernel_faults"] is True
    assert os.stat("/dev/userfaultfd").st_mode == real.st_mode  # the host's node untouched


def test_the_table_says_whose_answer_it_is(run_cli) -> None:  # type: ignore[no-untyped-def]
    with target(seccomp.command("EPERM", ["sleep", "60"])) as pid:
        res = run_cli("probe", "--pid", str(pid), "--no-ioctl-check")
    assert res.returncode in (0, 3), res.stderr
    assert f"Caller: pid {pid} (sleep)" in res.stdout
    assert "taken on:" in res.stdout and "seccomp filter" in res.stdout


@pytest.mark.parametrize("args,status,words", [
    (["--pid", "0"], 2, "not a process id"),
    (["--pid", "2"], 4, "kernel thread"),
    (["--pid", str(2**22 + 7)], 4, "no process with pid"),
    (["--user", "no-such-user-here"], 2, "no user"),
    (["--pid", "1", "--user", "root"], 2, "use one"),
])
def test_bad_callers_are_one_line(run_cli, args: list[str], status: int, words: str  # type: ignore[no-untyped-def]
                                  ) -> None:
    res = run_cli("probe", *args)
    assert res.returncode == status, res.stderr
    assert "Traceback" not in res.stderr
    # One line says it (click's usage errors come with the usage and a --help hint).
    assert len([line for line in res.stderr.splitlines() if words in line]) == 1, res.stderr


def test_zombie_is_exit_4(run_cli) -> None:  # type: ignore[no-untyped-def]
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        res = run_cli("probe", "--pid", str(pid))
    finally:
        os.waitpid(pid, 0)
    assert res.returncode == 4 and "zombie" in res.stderr


def test_not_root_is_exit_5(as_nobody) -> None:  # type: ignore[no-untyped-def]
    res = as_nobody("probe", "--pid", str(os.getpid()))
    assert res.returncode == 5, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "needs root" in line and "Traceback" not in line


NOTIF_FILTER = r'''
import ctypes, os, platform, struct, sys
NR = {"x86_64": (317, 309), "aarch64": (277, 168)}[platform.machine()]  # seccomp, getcpu
insns = [(0x20, 0, 0, 0), (0x15, 0, 1, NR[1]), (0x06, 0, 0, 0x7FC00000),
         (0x06, 0, 0, 0x7FFF0000)]
raw = b"".join(struct.pack("<HBBI", *i) for i in insns)
buf = ctypes.create_string_buffer(raw, len(raw))
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
prog = Prog(len(insns), ctypes.cast(buf, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0
# SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_NEW_LISTENER: getcpu goes to a supervisor
assert libc.syscall(NR[0], 1, 1 << 3, ctypes.byref(prog)) >= 0, ctypes.get_errno()
os.execvp("sleep", ["sleep", "60"])
'''


def test_a_filter_with_a_supervisor_is_inferred_not_copied(run_cli) -> None:  # type: ignore[no-untyped-def]
    """A filter that hands calls to a supervisor (SECCOMP_RET_USER_NOTIF, 5.0) cannot be
    installed without that supervisor: the answer says it rests on the rest."""
    import platform

    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"no syscall numbers for {platform.machine()} in this test")
    with target([sys.executable, "-c", NOTIF_FILTER]) as pid:
        doc = by_pid(run_cli, pid)
    inferred = " ".join(doc["caller"]["inferred"])
    assert "supervisor" in inferred and "not installed" in inferred
    assert doc["access"]["seccomp"] == 0  # the probe ran without it, and says so above


def test_a_filter_that_denies_only_the_device_ioctl(run_cli) -> None:  # type: ignore[no-untyped-def]
    """The syscall allowed, USERFAULTFD_IOC_NEW on /dev/userfaultfd denied: copied, the probe
    by pid sees the device refused as the process would."""
    if not os.path.exists("/dev/userfaultfd"):
        pytest.skip("this kernel has no /dev/userfaultfd (6.1)")
    deny = ("ioc_new",)
    with target(seccomp.command("EPERM", ["sleep", "60"], deny)) as pid:
        doc = by_pid(run_cli, pid)
    here = inside(seccomp.command("EPERM", [], deny))
    assert essentials(doc) == essentials(here)
    dev = next(m for m in doc["access"]["methods"] if m["name"] == "/dev/userfaultfd")
    assert not dev["ok"] and dev["errno"] == "EPERM"
