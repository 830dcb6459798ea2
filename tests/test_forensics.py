"""A hung VM, answered: who is stuck, on what, who should answer, and is anyone there.

Each layout real users run is made for real by tests/helpers/uffd_layouts.py (the handler in
another process that got the descriptor over SCM_RIGHTS, a handler thread, nobody), and
`ps`, `inspect` (table and JSON) must report exactly what the kernel shows, on every kernel
of the matrix: where fdinfo has no ino (before 5.12) the descriptors are matched by kcmp,
where wchan reads 0 (Debian's 5.10) stuck threads are found through the kernel stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

import pytest
from conftest import ROOT, helper_process

from uffdctl import fdinfo, procfs, smaps

LAYOUTS = str(ROOT / "tests" / "helpers" / "uffd_layouts.py")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the layouts open userfaultfds "
                                "for kernel-mode faults and read other processes: root")


def layout(*args: str
           ) -> AbstractContextManager[tuple[subprocess.Popen[str], dict[str, Any]]]:
    return helper_process("uffd_layouts.py", *args)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "uffdctl", *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def _json(*args: str) -> dict[str, Any]:
    res = _cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _row(doc: dict[str, Any], pid: int) -> dict[str, Any]:
    (row,) = [p for p in doc["processes"] if p["pid"] == pid]
    return row


def _same_file_by() -> str:
    """How this kernel tells one userfaultfd across processes: ino from 5.12, else kcmp."""
    from uffdctl import uffd

    with uffd.Userfaultfd.open() as u, open(f"/proc/self/fdinfo/{u.fd}") as f:
        return "ino" if fdinfo.parse_fdinfo(f.read()).ino is not None else "kcmp"


def _wait_state(pid: int, states: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = procfs.parse_stat(procfs.read_detail(f"/proc/{pid}/stat") or "")
        if stat is None or stat.state in states:
            return
        time.sleep(0.01)
    pytest.fail(f"pid {pid} never reached state {states}")


# ----- the handler in another process ------------------------------------------------------------

@pytest.mark.kernel
def test_remote_handler_reading_is_named_from_both_sides() -> None:
    """Firecracker's layout: the VMM sent the descriptor and closed its copy.  ps lists the
    VMM (no descriptor, one stuck thread) and the handler; each side names the other."""
    with layout("--layout", "remote", "--handler", "reading") as (_, info):
        vmm, handler = info["pid"], info["handler"]
        ps = _json("ps")
        doc = _json("inspect", str(vmm))
        hdoc = _json("inspect", str(handler["pid"]))
        table = _cli("inspect", str(vmm)).stdout
        ps_table = _cli("ps").stdout
    row = _row(ps, vmm)
    assert (row["uffds"], row["stuck_threads"], row["registered_regions"]) == (0, 1, 1)
    assert row["service"]["verdict"] == "reading"
    assert row["service"]["matched_by"] == "inferred"
    (desc,) = row["service"]["descriptors"]
    assert [(h["pid"], h["fd"]) for h in desc["holders"]] == [(handler["pid"], handler["fd"])]
    assert (desc["pending"], desc["total"]) == (0, 1)  # read by the handler, not answered
    assert desc["holders"][0]["readers"][0]["call"] in ("poll", "ppoll")
    hrow = _row(ps, handler["pid"])
    assert hrow["serves"] == [{"fd": handler["fd"], "pid": vmm}]
    assert hrow["stuck_threads"] == 0 and hrow["service"] is None
    # inspect of the stuck process: the thread, where, how long, who serves it.
    (t,) = doc["stuck_threads"]
    assert t["tid"] == info["tid"] and t["comm"] == "vcpu"
    assert t["stuck_for_s"] is not None and 0 <= t["stuck_for_s"] < 120
    assert t["where"]["call"] == "user-mode fault" and t["where"]["args"] == []
    assert t["where"]["pc_mapping"] is not None  # touch_read's memcpy: in libc
    assert {"start": info["region"]["start"], "end": info["region"]["end"]} in \
        t["where"]["regions"]
    assert doc["service"]["verdict"] == "reading"
    assert doc["uffds"] == []
    # inspect of the handler: what its descriptor serves, who reads it.
    (u,) = hdoc["uffds"]
    assert u["fd"] == handler["fd"]
    assert u["serves"] == {"pid": vmm, "comm": "vmm", "how": "inferred"}
    assert [r["tid"] for r in u["readers"]] == [handler["pid"]]
    # In words.
    assert f"served by pid {handler['pid']} (uffd-handler) fd {handler['fd']}" in table
    assert "1 fault(s) read and not yet resolved" in table
    assert "vcpu" in table and "user-mode fault at pc" in table
    assert f"{vmm} vmm: 1 thread(s) stuck" in ps_table
    assert f"reading: served by pid {handler['pid']} (uffd-handler) fd {handler['fd']} " \
        "(inferred)" in ps_table
    assert f"{handler['pid']} uffd-handler: serves pid {vmm} (fd {handler['fd']})" in ps_table


@pytest.mark.kernel
def test_remote_handler_sharing_the_descriptor_is_matched_as_one_file() -> None:
    """The VMM keeps its copy: both hold one userfaultfd, matched by ino (5.12+) or kcmp."""
    with layout("--layout", "remote", "--keep", "--handler", "epoll") as (_, info):
        vmm, handler = info["pid"], info["handler"]
        doc = _json("inspect", str(vmm))
        hdoc = _json("inspect", str(handler["pid"]))
    by = _same_file_by()
    (u,) = doc["uffds"]
    assert u["same_file_by"] == by
    assert u["other_holders"] == [{"pid": handler["pid"], "comm": "uffd-handler",
                                   "fd": handler["fd"]}]
    assert doc["service"]["matched_by"] == by
    assert doc["service"]["verdict"] == "reading"
    readers = [r for d in doc["service"]["descriptors"] for h in d["holders"]
               for r in h["readers"]]
    assert [r["call"] for r in readers] in (["epoll_wait"], ["epoll_pwait"])
    assert readers[0]["via"].startswith("epoll fd ")
    (hu,) = hdoc["uffds"]
    assert hu["serves"]["pid"] == vmm and hu["serves"]["how"] == "regions"


@pytest.mark.kernel
def test_handler_not_reading_is_said_so() -> None:
    with layout("--layout", "remote", "--handler", "idle") as (_, info):
        doc = _json("inspect", str(info["pid"]))
    s = doc["service"]
    assert s["verdict"] == "not-reading"
    assert f"pid {info['handler']['pid']}" in s["cause"] and "no thread" in s["cause"]
    assert s["descriptors"][0]["pending"] == 1  # nobody read the fault


@pytest.mark.kernel
def test_stopped_handler_is_said_so_with_the_fix() -> None:
    with layout("--layout", "remote", "--handler", "reading") as (_, info):
        hpid = info["handler"]["pid"]
        os.kill(hpid, signal.SIGSTOP)
        try:
            _wait_state(hpid, "Tt")
            doc = _json("inspect", str(info["pid"]))
            ps = _json("ps")
        finally:
            os.kill(hpid, signal.SIGCONT)
    assert doc["service"]["verdict"] == "stopped"
    assert doc["service"]["fix"] == f"kill -CONT {hpid}"
    assert _row(ps, info["pid"])["service"]["verdict"] == "stopped"


@pytest.mark.kernel
def test_killed_handler_with_a_copy_left_means_nobody_answers() -> None:
    """The handler is SIGKILLed while the VMM keeps its copy: the faults stay, nobody reads."""
    with layout("--layout", "remote", "--keep", "--handler", "reading") as (_, info):
        hpid = info["handler"]["pid"]
        os.kill(hpid, signal.SIGKILL)
        _wait_state(hpid, "ZX")
        time.sleep(0.1)
        doc = _json("inspect", str(info["pid"]))
        table = _cli("inspect", str(info["pid"])).stdout
    s = doc["service"]
    assert s["verdict"] == "gone"
    assert f"nobody is reading fd {info['fd']}" in s["cause"]
    assert "every copy of the descriptor is closed" in s["cause"]
    assert [t["tid"] for t in doc["stuck_threads"]] == [info["tid"]]
    assert "gone: nobody is reading" in table


@pytest.mark.kernel
def test_killed_handler_holding_the_last_copy_releases_the_threads() -> None:
    """What the verdict says ends the faults, checked: the last copy closed (the handler
    killed), the kernel unregisters the region and wakes the thread, which gets zeros."""
    with layout("--layout", "remote", "--handler", "reading") as (proc, info):
        hpid = info["handler"]["pid"]
        os.kill(hpid, signal.SIGKILL)
        _wait_state(hpid, "ZX")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            doc = _json("inspect", str(info["pid"]))
            if not doc["stuck_threads"]:
                break
            time.sleep(0.05)
        assert doc["stuck_threads"] == [] and doc["regions"] == []
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("touch\n")
        proc.stdin.flush()
        after = json.loads(proc.stdout.readline())
    assert after == {"zero": True, "regions_left": 0}


@pytest.mark.kernel
def test_handler_thread_in_the_same_process() -> None:
    """QEMU's layout: a thread of the process itself reads the descriptor."""
    with layout("--layout", "thread") as (_, info):
        doc = _json("inspect", str(info["pid"]))
        ps = _json("ps")
    s = doc["service"]
    assert s["verdict"] == "reading" and s["matched_by"] == "own"
    assert "a thread of this process" in s["cause"]
    (u,) = doc["uffds"]
    assert [r["tid"] for r in u["readers"]] == [info["handler_tid"]]
    assert u["other_holders"] == []
    assert _row(ps, info["pid"])["service"]["verdict"] == "reading"


@pytest.mark.kernel
def test_nobody_reading_its_own_descriptor() -> None:
    with layout("--layout", "alone") as (_, info):
        doc = _json("inspect", str(info["pid"]))
        ps_table = _cli("ps").stdout
    assert doc["service"]["verdict"] == "gone"
    assert "the handler is gone" in doc["service"]["cause"]
    assert f"{info['pid']} vmm: 1 thread(s) stuck" in ps_table
    assert "gone: served by its own descriptor" in ps_table


# ----- memory type from the file system ----------------------------------------------------------

@pytest.mark.kernel
def test_tmpfs_and_memfd_files_are_shmem() -> None:
    """Registrations on a /dev/shm file and a memfd: memory shmem (the file system decides,
    not the path), and the process's own descriptor is found to own them."""
    with layout("--layout", "thread", "--shm") as (_, info):
        if not info["shm"]:
            pytest.skip("this kernel does not offer missing_shmem")
        doc = _json("inspect", str(info["pid"]))
    by_start = {r["start"]: r for r in doc["regions"]}
    for shm in info["shm"]:
        r = by_start[shm["start"]]
        assert r["memory"] == "shmem", r
        assert r["uffd_fds"] == [info["fd"]]
    devshm = next(s for s in info["shm"] if s["kind"] == "devshm")
    assert by_start[devshm["start"]]["fs"] == "tmpfs"


def test_memory_type_follows_the_file_system() -> None:
    assert smaps.memory_type([], "/run/x", 5, "tmpfs") == "shmem"
    assert smaps.memory_type([], "/mnt/huge/x", 5, "hugetlbfs") == "hugetlb"
    assert smaps.memory_type([], "/home/x", 5, "ext4") == "file"
    assert smaps.memory_type([], "/memfd:x (deleted)", 5, "") == "shmem"


def test_mount_types_reads_this_process_mounts() -> None:
    types = procfs.mount_types(os.getpid())
    st = os.stat("/proc/self/exe")
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    assert dev in types
    if os.path.ismount("/dev/shm"):
        shm = os.stat("/dev/shm").st_dev
        assert types.get(f"{os.major(shm):02x}:{os.minor(shm):02x}") == "tmpfs"


# ----- races -------------------------------------------------------------------------------------

def test_processes_and_handlers_exiting_mid_scan() -> None:
    """Layouts come and go (handlers killed, VMMs killed) while ps and inspect scan: every
    run exits 0 (or 4 for an inspected process that went) with no traceback."""
    stop = threading.Event()
    errors: list[str] = []

    def churn() -> None:
        kinds = [("--layout", "remote", "--handler", "reading"), ("--layout", "alone"),
                 ("--layout", "remote", "--keep", "--handler", "idle")]
        k = 0
        while not stop.is_set():
            try:
                with layout(*kinds[k % len(kinds)]) as (_, info):
                    if "handler" in info and k % 2:
                        os.kill(info["handler"]["pid"], signal.SIGKILL)
                    time.sleep(0.05 * (k % 3))
            except Exception as exc:  # a layout failing is a test failure
                errors.append(repr(exc))
                return
            k += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deadline = time.monotonic() + 25
        runs = 0
        while time.monotonic() < deadline or runs < 10:
            res = _cli("ps", "--json")
            assert res.returncode == 0, res.stderr
            doc = json.loads(res.stdout)
            for row in doc["processes"]:
                r = _cli("inspect", "--json", str(row["pid"]))
                assert r.returncode in (0, 4), r.stderr
            runs += 1
    finally:
        stop.set()
        thread.join()
    assert not errors, errors


# ----- without root ------------------------------------------------------------------------------

@pytest.mark.kernel
def test_as_its_owner_the_answer_or_what_cannot_be_known(as_nobody, sysctl) -> None:  # type: ignore[no-untyped-def]
    """nobody runs Firecracker's layout and asks about its own processes: the handler's
    threads and kcmp are its to read, so the answer is the same as root's; where this
    kernel's wchan reads 0 (Debian's 5.10) the stuck thread cannot be seen without root, and
    that is said, with the fix."""
    with open(LAYOUTS) as f:
        source = f.read()
    code = (
        "import json, os, signal, subprocess\n"
        f"src = {source!r}\n"
        "h = subprocess.Popen(['/proc/self/exe', '-c', src, '--layout', 'remote', '--keep'],"
        " stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)\n"
        "info = json.loads(h.stdout.readline())\n"
        "wchan = open(f'/proc/{info[\"pid\"]}/task/{info[\"tid\"]}/wchan').read().strip()\n"
        "cli = ['/proc/self/exe', '-m', 'uffdctl']\n"
        "res = subprocess.run([*cli, 'inspect', '--json', str(info['pid'])],"
        " capture_output=True, text=True)\n"
        "ps = subprocess.run([*cli, 'ps', '--json'], capture_output=True, text=True)\n"
        "os.killpg(h.pid, signal.SIGKILL)\n"
        "print(json.dumps({'info': info, 'wchan': wchan, 'rc': res.returncode,"
        " 'out': res.stdout, 'err': res.stderr + ps.stderr, 'ps': ps.stdout}))\n")
    sysctl("vm/unprivileged_userfaultfd", "1")
    res = as_nobody(code=code)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["rc"] == 0 and "Traceback" not in got["err"], got["err"]
    doc, ps = json.loads(got["out"]), json.loads(got["ps"])
    info = got["info"]
    assert ps["unreadable_total"] > 0  # root's processes: counted, not hidden
    if got["wchan"] == "handle_userfault":
        assert [t["tid"] for t in doc["stuck_threads"]] == [info["tid"]]
        assert doc["service"]["verdict"] == "reading"
        assert doc["service"]["matched_by"] == _same_file_by()
        assert any(p["pid"] == info["pid"] for p in ps["processes"])
    else:
        assert doc["stuck_threads"] == [] and doc["unseen_threads"]["threads"] >= 1
        assert "root" in doc["unseen_threads"]["fix"]
