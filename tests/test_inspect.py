"""`uffdctl inspect` and `uffdctl ps` against a real helper process (tests/helpers/uffd_holder.py)
that registers regions in every mode, plus bad pids, races and the parsers' properties."""

from __future__ import annotations

import errno
import json
import os
import queue
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import ROOT, helper_process, run_on_pty
from hypothesis import given, settings
from hypothesis import strategies as st

from uffdctl import abi, errors, fdinfo, procfs, procs, smaps, uffd

HOLDER = str(ROOT / "tests" / "helpers" / "uffd_holder.py")
PR_SET_NAME = 15  # include/uapi/linux/prctl.h


def holder(*args: str
           ) -> AbstractContextManager[tuple[subprocess.Popen[str], dict[str, Any]]]:
    return helper_process("uffd_holder.py", *args)


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` at the
    deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.01)
    pytest.fail(f"no {what} after {timeout:.0f} s")


def _state(pid: int) -> str | None:
    stat = procfs.parse_stat(procfs.read_detail(f"/proc/{pid}/stat") or "")
    return stat.state if stat else None


def _zombie(pid: int) -> None:
    """Until the forked child has exited and is not reaped: a zombie."""
    _wait_for(lambda: _state(pid) == "Z", f"zombie state for pid {pid}")


def _inspect_json(run_cli: Callable[..., Any], pid: int, *extra: str) -> dict[str, Any]:
    res = run_cli("inspect", "--json", *extra, str(pid))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _registered(doc: dict[str, Any]) -> set[tuple[int, int, tuple[str, ...], str]]:
    return {(r["start"], r["end"], tuple(r["modes"]), r["memory"]) for r in doc["regions"]
            if r["modes"]}


def _expected(info: dict[str, Any]) -> set[tuple[int, int, tuple[str, ...], str]]:
    return {(r["start"], r["end"], tuple(r["modes"]), r["memory"]) for r in info["regions"]}


@pytest.mark.kernel
def test_inspect_reports_exactly_the_registered_regions(run_cli) -> None:  # type: ignore[no-untyped-def]
    with holder() as (proc, info):
        doc = _inspect_json(run_cli, proc.pid)
    assert doc["schema_version"] == 2 and doc["pid"] == proc.pid
    assert _registered(doc) == _expected(info)
    assert len(doc["regions"]) == len(info["regions"])  # only registered ones by default
    a, b = info["uffds"]["A"], info["uffds"]["B"]
    uffds = {u["fd"]: u for u in doc["uffds"]}
    assert set(uffds) == {a, b}
    # What each asked for of what this kernel offers (the holder requests only those).
    assert uffds[a]["features"] == info["features"]["A"]
    assert uffds[b]["features"] == info["features"]["B"]
    # Bit 31 is the kernel's "handshake done" mark, kept in the mask but not named a feature.
    assert all(u["features_mask"] & abi.UFFD_FEATURE_INITIALIZED and u["initialized"]
               for u in uffds.values())
    assert all((u["pending"], u["total"]) == (0, 0) for u in uffds.values())
    assert doc["stuck_threads"] == []
    by_start = {r["start"]: r for r in doc["regions"]}
    for r in info["regions"]:
        got = by_start[r["start"]]["uffd_fds"]
        if r["memory"] == "anon":  # any descriptor may register anon memory: never guessed
            assert got == sorted([a, b])
        else:  # only the descriptor whose features allow it
            assert got == [r["fd"]]


def test_unregistered_alias_is_not_listed_but_shows_with_all(run_cli) -> None:  # type: ignore[no-untyped-def]
    with holder() as (proc, info):
        default = _inspect_json(run_cli, proc.pid)
        everything = _inspect_json(run_cli, proc.pid, "--all")
    alias = info["alias"]
    assert all(not (r["start"] <= alias["start"] < r["end"]) for r in default["regions"])
    (row,) = [r for r in everything["regions"] if r["start"] == alias["start"]]
    assert row["modes"] == [] and row["memory"] == "shmem" and "sh" in row["flags"]
    assert _registered(everything) == _expected(info)
    assert len(everything["regions"]) > 50  # the interpreter's own mappings too


@pytest.mark.kernel
def test_hugetlb_regions(run_cli, hugepages) -> None:  # type: ignore[no-untyped-def]
    with hugepages(3), holder("--hugetlb") as (proc, info):
        doc = _inspect_json(run_cli, proc.pid)
    assert _registered(doc) == _expected(info)
    huge = [r for r in doc["regions"] if r["memory"] == "hugetlb"]
    # Every mode this kernel offers on hugetlbfs (missing since 4.11; the rest need features).
    assert sorted(tuple(r["modes"]) for r in huge) == sorted(
        tuple(r["modes"]) for r in info["regions"] if r["memory"] == "hugetlb")
    assert ("missing",) in {tuple(r["modes"]) for r in huge}
    assert all(r["uffd_fds"] == [info["uffds"]["B"]] and "ht" in r["flags"] for r in huge)
    assert all(r["kernel_page_size"] == 2 << 20 for r in huge)


def _wchan_works(tid: int) -> bool:
    """Whether this kernel names where a sleeping thread waits: x86-64 before 5.16 with the
    ORC unwinder prints 0 for every thread (arch/x86/kernel/process.c get_wchan())."""
    with open(f"/proc/self/task/{tid}/wchan") as f:
        return f.read().strip() != "0"


@pytest.mark.kernel
def test_pending_fault_and_stuck_thread(run_cli) -> None:  # type: ignore[no-untyped-def]
    with holder("--fault") as (proc, info):  # the holder answers once the thread is stuck
        doc = _inspect_json(run_cli, proc.pid)
        text = run_cli("inspect", str(proc.pid))
        wchan = procfs.read_detail(f"/proc/{proc.pid}/task/{info['fault']['tid']}/wchan")
    a = info["uffds"]["A"]
    uffds = {u["fd"]: u for u in doc["uffds"]}
    assert (uffds[a]["pending"], uffds[a]["total"]) == (1, 1)
    # Found through wchan where the kernel names the wait, else through the kernel stack
    # (root reads it): stuck threads are found on every kernel.
    seen_in = "wchan" if (wchan or "").strip() == "handle_userfault" else "stack"
    keys = ("tid", "comm", "wchan", "state", "seen_in")
    assert [{k: t[k] for k in keys} for t in doc["stuck_threads"]] == [
        {"tid": info["fault"]["tid"], "comm": "stuck", "wchan": "handle_userfault",
         "state": "S", "seen_in": seen_in}]
    assert doc["unseen_threads"] is None
    assert text.returncode == 0
    assert "stuck" in text.stdout and "handle_userfault" in text.stdout
    assert "not a running count" in text.stdout


@pytest.mark.kernel
def test_stuck_threads_unseen_are_said_so(as_nobody, sysctl) -> None:  # type: ignore[no-untyped-def]
    """As nobody, where wchan reads 0 the stack is root's only: the threads that could not be
    checked are counted with the cause and the fix; where wchan works, the thread is found."""
    code = (
        "import json, subprocess\n"
        # The holder's source, not its path: the tree may not be readable by nobody.
        f"h = subprocess.Popen(['/proc/self/exe', '-c', {Path(HOLDER).read_text()!r}, '--fault'],"
        " stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n"
        "info = json.loads(h.stdout.readline())\n"
        "tid = info['fault']['tid']\n"
        "wchan = open(f'/proc/{h.pid}/task/{tid}/wchan').read().strip()\n"
        "cli = ['/proc/self/exe', '-m', 'uffdctl', 'inspect']\n"
        "res = subprocess.run([*cli, '--json', str(h.pid)], capture_output=True, text=True)\n"
        "plain = subprocess.run([*cli, str(h.pid)], capture_output=True, text=True)\n"
        "h.kill()\n"
        "print(json.dumps({'tid': tid, 'wchan': wchan, 'rc': res.returncode, 'out': res.stdout,"
        " 'err': res.stderr, 'plain': plain.stdout}))\n")
    sysctl("vm/unprivileged_userfaultfd", "1")  # nobody opens a userfaultfd for kernel faults
    res = as_nobody(code=code)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["rc"] == 0, got["err"]
    doc = json.loads(got["out"])
    if got["wchan"] == "handle_userfault":
        assert [t["tid"] for t in doc["stuck_threads"]] == [got["tid"]]
        assert doc["unseen_threads"] is None
    else:  # this kernel's wchan reads 0 and the stack is root's only
        assert got["wchan"] == "0" and doc["stuck_threads"] == []
        assert doc["unseen_threads"]["threads"] >= 1
        assert "wchan reads 0" in doc["unseen_threads"]["cause"]
        assert "root" in doc["unseen_threads"]["fix"]
        assert "could not be checked" in got["plain"] and "run as root" in got["plain"]


@pytest.mark.kernel
def test_ps_lists_the_holder(run_cli) -> None:  # type: ignore[no-untyped-def]
    with holder("--fault") as (proc, info):
        res = run_cli("ps", "--json")
        plain = run_cli("ps")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    (row,) = [p for p in doc["processes"] if p["pid"] == proc.pid]
    by_mode = {m: sum(m in r["modes"] for r in info["regions"]) for m in abi.MODE_BY_NAME}
    bytes_by_mode = {m: sum(r["end"] - r["start"] for r in info["regions"] if m in r["modes"])
                     for m in abi.MODE_BY_NAME}
    keys = ("pid", "comm", "uffds", "registered_regions", "regions_by_mode", "pending",
            "stuck_threads", "unseen_threads", "registered_bytes", "serves")
    assert {k: row[k] for k in keys} == {
        "pid": proc.pid, "comm": "python", "uffds": 2,
        "registered_regions": len(info["regions"]),
        "regions_by_mode": {m: n for m, n in by_mode.items() if n}, "pending": 1,
        "stuck_threads": 1, "unseen_threads": 0,
        "registered_bytes": {m: n for m, n in bytes_by_mode.items() if n}, "serves": []}
    # Its own descriptor, and no thread of it reads it: nobody will answer.
    assert row["service"]["verdict"] == "gone" and row["service"]["matched_by"] == "own"
    assert row["stuck_for_s"] is not None and row["stuck_for_s"] >= 0
    assert doc["scanned"] > 10
    assert str(proc.pid) in plain.stdout


# ----- attribution, ps columns, the error mapping --------------------------------------------

def _uffd(fd: int, *features: str, initialized: bool = True) -> fdinfo.UffdDescriptor:
    mask = abi.features_mask(features) | (abi.UFFD_FEATURE_INITIALIZED if initialized else 0)
    return fdinfo.UffdDescriptor(fd, fdinfo.FdInfo(features_mask=mask))


_BACKING = {"anon": ([], "", 0), "shmem": (["sh"], "/memfd:x (deleted)", 5),
            "hugetlb": (["sh", "ht"], "/memfd:h (deleted)", 6), "file": (["sh"], "/srv/data", 7)}


def _region(start: int, memory: str, *modes: str) -> smaps.Region:
    flags, path, inode = _BACKING[memory]
    r = smaps.Region(start, start + 4096, "rw-s", 0, "00:01", inode, path,
                     ["rd", "wr", *flags, *(abi.MODE_BY_NAME[m].mnemonic for m in modes)])
    assert r.memory == memory and r.modes == list(modes)
    return r


def _owner(memory: str, modes: tuple[str, ...], *uffds: fdinfo.UffdDescriptor
           ) -> tuple[list[int], bool]:
    region = _region(0x1000, memory, *modes)
    owner = procs.attribute([region], list(uffds)).of(region)
    assert owner is not None
    return owner.fds, owner.certain


def test_attribution_evidence_comes_from_the_mode_support_table() -> None:
    rules = procs._rules()
    assert set(rules) == {(row.mode, row.memory) for row in abi.MODE_SUPPORT}
    assert rules["wp", "shmem"].evidence == {"wp_hugetlbfs_shmem"}
    assert rules["missing", "shmem"].evidence == {"missing_shmem"}
    assert rules["wp", "file"].required == {"wp_async"}
    assert all(not rules[row.mode, "anon"].evidence for row in abi.MODE_SUPPORT
               if row.memory == "anon")


def test_attribution_rules() -> None:
    a, b = _uffd(3, "missing_shmem", "minor_shmem"), _uffd(4, "pagefault_flag_wp")
    # Only the evidence picks: both may have, one asked for what shmem minor needs.
    assert _owner("shmem", ("minor",), a, b) == ([3], False)
    # Anon needs nothing a program asks for only for it: both, never guessed.
    assert _owner("anon", ("wp",), a, b) == ([3, 4], False)
    # Nobody asked for missing_hugetlbfs: no evidence either way, every candidate.
    assert _owner("hugetlb", ("missing",), a, b) == ([3, 4], False)
    # The kernel refuses WP on a plain file without WP_ASYNC: the one that has it is certain.
    c = _uffd(5, "pagefault_flag_wp", "wp_async")
    assert _owner("file", ("wp",), a, b, c) == ([5], True)
    assert _owner("file", ("wp",), a, b) == ([], False)
    # Every mode must fit: missing+wp on shmem needs evidence of both.
    d = _uffd(6, "missing_shmem", "wp_hugetlbfs_shmem")
    e = _uffd(7, "wp_hugetlbfs_shmem")
    assert _owner("shmem", ("missing", "wp"), a, d, e) == ([6], False)
    assert _owner("shmem", ("missing", "wp"), a, e) == ([3, 7], False)
    # A mode the kernel never allows on that memory: the candidates, nothing to go by.
    assert _owner("anon", ("minor",), a, b) == ([3, 4], False)
    # One initialized descriptor is certain; one without UFFDIO_API is not a candidate...
    assert _owner("shmem", ("missing",), a, _uffd(8, initialized=False)) == ([3], True)
    # ...unless none is marked (before 5.15 the kernel did not mark the handshake).
    old = [_uffd(3, "missing_shmem", initialized=False), _uffd(4, initialized=False)]
    assert _owner("shmem", ("missing",), *old) == ([3], False)


def test_ps_has_a_column_per_register_mode() -> None:
    import io

    from rich.console import Console

    from uffdctl.render import documents
    from uffdctl.render import inspect as view

    regions = [_region(0x1000, "anon", "rwp"), _region(0x3000, "anon", "missing", "wp"),
               _region(0x5000, "shmem", "missing")]
    report = procs.ProcessReport(7, "vm", [], "S", regions, [_uffd(3)], [], 0, False)
    row = procs._ps_row(report)
    assert list(row.regions_by_mode.items()) == [("missing", 2), ("wp", 1), ("rwp", 1)]
    ps = procs.PsReport([row], 10, {})
    assert documents.ps_json(ps)["processes"][0]["regions_by_mode"] == {
        "missing": 2, "wp": 1, "rwp": 1}
    out = io.StringIO()
    view.render_ps(ps, Console(file=out, width=200, force_terminal=False, no_color=True))
    header, cells = [line.replace("|", " ").split() for line in out.getvalue().splitlines()
                     if line.startswith("|")]
    assert header == ["pid", "command", "uffds", *(m.name for m in abi.REGISTER_MODES),
                      "pending", "stuck"]
    assert cells == ["7", "vm", "1", "2", "1", "0", "1", "0", "0"]


def test_proc_errors_map_to_the_documented_statuses() -> None:
    me = os.getpid()
    for err in (errno.EACCES, errno.EPERM):
        exc = procfs.error(me, OSError(err, os.strerror(err)), "the memory map")
        assert exc.status == errors.NO_ACCESS
        # Our own process: the advice is never "run as its owner" (we are), but the check.
        assert exc.cause.startswith(f"not allowed to read the memory map of pid {me}: ")
        assert f"it belongs to uid {os.getuid()} and you are uid {os.geteuid()}" in exc.cause \
            or "CAP_SYS_PTRACE" in exc.cause
        assert "ptrace" in exc.cause + exc.fix and "run as its owner" not in exc.fix
    with open("/proc/sys/kernel/pid_max") as f:
        never = int(f.read()) + 1
    for err in (errno.ENOENT, errno.ESRCH):
        exc = procfs.error(never, OSError(err, os.strerror(err)), "the open files")
        assert (exc.status, exc.cause) == (errors.NO_PROCESS,
                                           f"pid {never} exited while it was being read")
    assert procfs.gone(never).cause == f"pid {never} exited while it was being read"
    with pytest.raises(OSError) as raised:  # not a process's fate: raised as it is
        procfs.error(me, OSError(errno.EIO, os.strerror(errno.EIO)), "the memory map")
    assert raised.value.errno == errno.EIO
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        _zombie(pid)
        exc = procfs.error(pid, OSError(errno.ESRCH, os.strerror(errno.ESRCH)), "the fds")
        assert exc.status == errors.NO_PROCESS and "is a zombie" in exc.cause
    finally:
        os.waitpid(pid, 0)
    with pytest.raises(errors.UffdctlError) as kthread:
        procfs.user_process(2)  # kthreadd
    assert kthread.value.status == errors.NO_PROCESS and "kernel thread" in kthread.value.cause


def test_json_documents_need_no_rich() -> None:
    """`inspect --json` and `ps --json` load neither rich nor psutil; inspect's path loads
    nothing of probe's either (advice, hugepages) nor ctypes (uffd): start-up, issue 17.  A
    process holding no userfaultfd is inspected, so no descriptor is compared by kcmp (what
    kernels before 5.12 need uffd for)."""
    code = ("import os, sys\n"
            "from uffdctl.render import documents\n"
            "from uffdctl import procs\n"
            "text = ''.join(documents.report_text(procs.inspect_process(os.getpid())))\n"
            "print(sorted(m for m in sys.modules if m in ('ctypes', 'uffdctl.advice',\n"
            "                                             'uffdctl.hugepages', 'uffdctl.uffd')))\n"
            "doc = documents.ps_json(procs.scan_all())\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'psutil')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "[]"]


# ----- watching ----------------------------------------------------------------------------

class _Lines:
    """A child's output read line by line in a thread, so a test can wait for a line with a
    deadline instead of sleeping."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"output ended without {needle!r}:\n{''.join(self.seen)}")
            self.seen.append(line)
            if needle in line:
                return line
        pytest.fail(f"no {needle!r} after {timeout:.0f} s:\n{''.join(self.seen)}")


def test_watch_sees_a_region_appear_and_the_exit() -> None:
    with holder() as (proc, _info):
        watcher = subprocess.Popen(
            [sys.executable, "-m", "uffdctl", "inspect", "--watch", "--interval", "0.1",
             str(proc.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT, env={**os.environ, "NO_COLOR": "1"})
        try:
            assert watcher.stdout is not None and watcher.stderr is not None
            out = _Lines(watcher.stdout)
            out.wait_for("registered regions")  # the first look, printed whole
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("more\n")
            proc.stdin.flush()
            added = json.loads(proc.stdout.readline())
            line = out.wait_for(f"+ region {added['start']:x}-{added['end']:x} ")
            proc.stdin.write("exit\n")
            proc.stdin.flush()
            watcher.wait(timeout=30)
            err = watcher.stderr.read()
        finally:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert re.fullmatch(rf"\d\d:\d\d:\d\d \+ region {added['start']:x}-{added['end']:x} anon "
                        r"registered missing\n", line), line
    assert f"pid {proc.pid} (python) exited" in err


def test_watch_frames_follow_the_process() -> None:
    with holder() as (proc, info):
        frames = procs.watch(proc.pid, 0.02)
        first = next(frames)
        assert (first.changes, first.rate, first.exited) == ([], None, None)
        assert {(r.start, r.end) for r in first.report.registered} == {
            (r["start"], r["end"]) for r in info["regions"]}
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("more\n")
        proc.stdin.flush()
        added = json.loads(proc.stdout.readline())
        changed = _wait_for(lambda: next(frames).changes, "frame with a change")
        assert changed == [f"+ region {added['start']:x}-{added['end']:x} anon registered "
                           "missing"]
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        last = _wait_for(lambda: next(frames).exited, "closing frame")
        assert last.startswith(f"pid {proc.pid} (python) exited; watched for ")
        assert next(frames, None) is None  # nothing after the closing frame
    with holder() as (proc, _info):
        counted = list(procs.watch(proc.pid, 0.01, count=3))
    assert len(counted) == 3 and not any(f.exited for f in counted)
    assert all(f.rate is not None and f.rate >= 0 for f in counted[1:])


# ----- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["abc", "0", "1.5", ""])
def test_bad_pid_is_a_usage_error(run_cli, arg: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("inspect", arg)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr


def test_negative_pid_is_a_usage_error(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("inspect", "--", "-1")
    assert res.returncode == 2 and "not a process id" in res.stderr


def test_missing_pid_is_exit_4(run_cli) -> None:  # type: ignore[no-untyped-def]
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1  # never a pid
    res = run_cli("inspect", str(pid))
    assert res.returncode == 4
    assert res.stderr.strip() == (f"uffdctl: no process with pid {pid} (fix: check the pid "
                                  "with `uffdctl ps` or `ps -e`)")


def test_kernel_thread_is_exit_4(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("inspect", "2")
    assert res.returncode == 4 and "kernel thread" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_zombie_is_exit_4(run_cli) -> None:  # type: ignore[no-untyped-def]
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        _zombie(pid)
        res = run_cli("inspect", str(pid))
    finally:
        os.waitpid(pid, 0)
    assert res.returncode == 4 and "zombie" in res.stderr


def test_nobody_cannot_inspect_root(as_nobody) -> None:  # type: ignore[no-untyped-def]
    res = as_nobody("inspect", str(os.getpid()))
    assert res.returncode == 5
    (line,) = res.stderr.strip().splitlines()
    assert "not allowed to read" in line and "uid 0" in line and "ptrace" in line


def test_nobody_ps_counts_what_it_cannot_read(as_nobody) -> None:  # type: ignore[no-untyped-def]
    res = as_nobody("ps", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["unreadable_total"] > 0
    assert any("run as root" in u["reason"] for u in doc["unreadable"])
    plain = as_nobody("ps")
    assert "processes not readable" in plain.stdout and "run as root" in plain.stdout


def test_untrusted_names_are_printed_inert(run_cli) -> None:  # type: ignore[no-untyped-def]
    name = "x\x1b]0;pwn\x07[bold]y"
    with holder("--fault", "--name", name) as (proc, _info):
        plain = run_cli("inspect", str(proc.pid))
        tty = _under_pty([sys.executable, "-m", "uffdctl", "inspect", str(proc.pid)])
        ps = run_cli("ps")
    for out in (plain.stdout, tty, ps.stdout):
        assert "\x1b]0;" not in out and "\x07" not in out
        assert "\\x1b]0;pwn\\x07[bold]" in out  # shown, escaped, markup left as text


def _under_pty(cmd: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"COLUMNS": "200"}
    _, out = run_on_pty(cmd, env)
    text = out.decode("utf-8", "replace")
    assert "\x1b[" in text  # it really was a terminal: rich styled it
    return text


# ----- races ---------------------------------------------------------------------------------

def test_processes_exiting_at_random_moments_never_crash() -> None:
    rng = random.Random(5)
    children = [subprocess.Popen(["sleep", f"{rng.uniform(0.0, 0.3):.3f}"]) for _ in range(60)]
    statuses: dict[int, int] = {}
    # Counted in inspections, not seconds: a loaded CI runner must not make it fail.  It goes
    # on until every child has exited, so the gone-process path is really taken.
    after_all_exited = 0
    deadline = time.monotonic() + 60
    try:
        while (sum(statuses.values()) < 150 or after_all_exited < 20) \
                and time.monotonic() < deadline:
            child = rng.choice(children)
            try:
                procs.inspect_process(child.pid, all_regions=rng.random() < 0.5)
                statuses[0] = statuses.get(0, 0) + 1
            except errors.UffdctlError as exc:
                assert exc.status == errors.NO_PROCESS, exc.line()
                statuses[exc.status] = statuses.get(exc.status, 0) + 1
            if rng.random() < 0.05:
                procs.scan_all()
            if all(c.poll() is not None for c in children):
                after_all_exited += 1
    finally:
        for c in children:
            c.kill()
            c.wait()
    assert sum(statuses.values()) >= 150 and statuses.get(errors.NO_PROCESS), statuses


def test_cli_on_exiting_processes_never_tracebacks(run_cli) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(6)
    for _ in range(15):
        child = subprocess.Popen(["sleep", f"{rng.uniform(0.0, 0.2):.3f}"])
        res = run_cli("inspect", "--all", str(child.pid))
        child.wait()
        assert res.returncode in (0, 4), res.stderr
        assert "Traceback" not in res.stderr
        if res.returncode == 4:
            assert len(res.stderr.strip().splitlines()) == 1
    os.kill(os.getpid(), 0)  # still here


# ----- parsers: properties ----------------------------------------------------------------------

KNOWN = [v.mnemonic for v in abi.VMFLAGS]
mnemonic = st.one_of(st.sampled_from(KNOWN), st.text("abcdefghijklmnopqrstuvwxyz?", min_size=2,
                                                      max_size=2))
path_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
                    max_size=40).map(str.strip)


@st.composite
def regions(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 12))
    addr = draw(st.integers(0, 1 << 40)) * 4096
    out = []
    for _ in range(n):
        size = draw(st.integers(1, 64)) * 4096
        out.append({"start": addr, "end": addr + size,
                    "perms": draw(st.sampled_from(["rw-p", "r--s", "r-xp", "---p", "rw-s"])),
                    "offset": draw(st.integers(0, 1 << 32)),
                    "dev": draw(st.sampled_from(["00:00", "fd:01", "00:01"])),
                    "inode": draw(st.integers(0, 1 << 30)), "path": draw(path_text),
                    "flags": draw(st.lists(mnemonic, max_size=14)),
                    "rss": draw(st.integers(0, 1 << 20))})
        addr += size + draw(st.integers(0, 16)) * 4096
    return out


def render_smaps(rs: list[dict[str, Any]]) -> str:
    lines = []
    for r in rs:
        lines.append(f"{r['start']:08x}-{r['end']:08x} {r['perms']} {r['offset']:08x} "
                     f"{r['dev']} {r['inode']}" + (f"    {r['path']}" if r["path"] else " "))
        lines.append(f"Size:           {(r['end'] - r['start']) // 1024:8d} kB")
        lines.append(f"Rss:            {r['rss']:8d} kB")
        lines.append("KernelPageSize:        4 kB")
        lines.append("THPeligible:    0")
        lines.append("ProtectionKey:         0")
        lines.append("VmFlags: " + "".join(f + " " for f in r["flags"]))
    return "\n".join(lines) + "\n"


@settings(max_examples=1500, deadline=None)
@given(regions())
def test_smaps_round_trip(rs: list[dict[str, Any]]) -> None:
    text = render_smaps(rs)
    parsed = smaps.parse_smaps(text)
    assert [(p.start, p.end, p.perms, p.offset, p.dev, p.inode, p.path, p.flags)
            for p in parsed] == [(r["start"], r["end"], r["perms"], r["offset"], r["dev"],
                                  r["inode"], r["path"], r["flags"]) for r in rs]
    assert all(p.sizes_kb["Rss"] == r["rss"] for p, r in zip(parsed, rs, strict=True))
    registered = smaps.parse_smaps(text, registered_only=True)
    assert [p.start for p in registered] == [
        r["start"] for r in rs if set(r["flags"]) & set(abi.UFFD_MNEMONICS)]
    for p in parsed:
        assert set(p.modes) <= {m.name for m in abi.REGISTER_MODES}
        assert len(smaps.decode_flags(p.flags)) == len(p.flags)  # unknown ones kept


@settings(max_examples=1500, deadline=None)
@given(regions(), st.data())
def test_smaps_streamed_in_pieces_cut_anywhere(rs: list[dict[str, Any]], data: st.DataObject
                                               ) -> None:
    raw = render_smaps(rs).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    whole = smaps.parse_smaps(raw, registered_only=True)
    queue = [p for p in pieces if p]

    def readinto(view: memoryview) -> int:
        # Hands out at most the rest of one piece per call, like a short read.
        if not queue:
            return 0
        k = min(len(view), len(queue[0]))
        view[:k] = queue[0][:k]
        queue[0] = queue[0][k:]
        if not queue[0]:
            queue.pop(0)
        return k

    streamed = smaps.scan_registered(readinto, chunk=data.draw(st.integers(1, 300)))
    assert [(r.start, r.flags, r.path) for r in streamed] == [
        (r.start, r.flags, r.path) for r in whole]


@settings(max_examples=1500, deadline=None)
@given(regions(), st.data())
def test_smaps_truncated_or_garbled_never_raises(rs: list[dict[str, Any]], data: st.DataObject
                                                 ) -> None:
    text = render_smaps(rs)
    cut = data.draw(st.integers(0, len(text)))
    noise = data.draw(st.text(max_size=30))
    for variant in (text[:cut], text[:cut] + noise + text[cut:], noise):
        for r in smaps.parse_smaps(variant) + smaps.parse_smaps(variant, registered_only=True):
            assert r.start <= (1 << 64) and isinstance(r.flags, list)


@settings(max_examples=1500, deadline=None)
@given(st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.integers(0, (1 << 32) - 1),
       st.integers(0, (1 << 64) - 1), st.integers(0, 0o7777777))
def test_fdinfo_round_trip(pending: int, total: int, features: int, ioctls: int, flags: int
                           ) -> None:
    text = (f"pos:\t0\nflags:\t{flags:08o}\nmnt_id:\t17\nino:\t45634\npending:\t{pending}\n"
            f"total:\t{total}\nAPI:\taa:{features:x}:{ioctls:x}\n")
    info = fdinfo.parse_fdinfo(text)
    assert (info.pending, info.total, info.features_mask, info.api_ioctls, info.flags) == (
        pending, total, features, ioctls, flags)
    assert info.api_version == 0xAA
    assert "initialized" not in info.features
    assert info.initialized == bool(features & (1 << 31))


@pytest.mark.kernel
def test_fdinfo_of_a_real_userfaultfd() -> None:
    """What this kernel prints: the ino line (5.12+, secure anonymous inodes) names the
    descriptor's own inode, as fstat does; where there is none (5.10) ino is None, not a
    guess."""
    with uffd.Userfaultfd.open() as u:
        before = _own_fdinfo(u.fd)
        u.api(0)
        after = _own_fdinfo(u.fd)
        text = Path(f"/proc/self/fdinfo/{u.fd}").read_text()
        st_ino = os.fstat(u.fd).st_ino
    assert (before.pending, before.total, after.pending, after.total) == (0, 0, 0, 0)
    assert after.api_version == abi.UFFD_API
    assert after.features == [] and before.features == []
    if "\nino:" in text:
        assert after.ino == st_ino
    else:
        assert after.ino is None


def _own_fdinfo(fd: int) -> fdinfo.FdInfo:
    return fdinfo.parse_fdinfo(Path(f"/proc/self/fdinfo/{fd}").read_text())


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=200))
def test_fdinfo_garbage_never_raises(text: str) -> None:
    info = fdinfo.parse_fdinfo(text)
    assert isinstance(info.features, list)
    for line in ("API:\tzz:yy", "pending:\t-", "API:\taa:ffffffffffffffffff:1"):
        assert isinstance(fdinfo.parse_fdinfo(text + "\n" + line).features, list)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40), st.text("0123456789 -", max_size=60))
def test_stat_parser_takes_any_comm(comm: str, tail: str) -> None:
    stat = procfs.parse_stat(f"42 ({comm}) S 1 42 42 0 -1 4194560 123 0 0 0 {tail}")
    assert stat is not None and stat.comm == comm and stat.minflt == 123
    assert stat.flags == 4194560 and stat.state == "S"
    assert procfs.parse_stat(tail) is None or isinstance(procfs.parse_stat(tail), procfs.Stat)


def test_nobody_inspects_its_own_process(as_nobody) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import subprocess\n"
        "python = '/proc/self/exe'  # the running interpreter, whatever its path\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "try:\n"
        "    res = subprocess.run([python, '-m', 'uffdctl', 'inspect', '--all', '--json',\n"
        "                          str(child.pid)], capture_output=True, text=True)\n"
        "finally:\n"
        "    child.kill()\n"
        "print(res.returncode)\n"
        "print(res.stdout or res.stderr)\n")
    res = as_nobody(code=code)
    assert res.returncode == 0, res.stderr
    status, doc = res.stdout.split("\n", 1)
    assert status == "0", doc
    parsed = json.loads(doc)
    assert parsed["comm"] == "sleep" and parsed["regions"] and parsed["uffds"] == []


def test_zombie_with_an_escape_in_its_name_is_reported_inert(run_cli) -> None:  # type: ignore[no-untyped-def]
    import ctypes

    pid = os.fork()
    if pid == 0:
        ctypes.CDLL(None).prctl(PR_SET_NAME, b"z\x1b]0;pwn\x07", 0, 0, 0)
        os._exit(0)
    try:
        _zombie(pid)
        res = run_cli("inspect", str(pid))
    finally:
        os.waitpid(pid, 0)
    assert res.returncode == 4
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr
    assert "z\\x1b]0;pwn\\x07" in res.stderr


@pytest.mark.parametrize("all_regions", [False, True])
def test_report_text_is_the_document_byte_for_byte(all_regions: bool, tmp_path: Path) -> None:
    """documents.report_text (what `inspect --json` prints, in pieces, what regions share
    encoded once) writes json_text(report_json()) exactly: for the holder's registered regions
    of two descriptors and, with --all, every kind of region it has, a file with a name that
    is not UTF-8 among them; in pieces of any size."""
    import mmap

    from uffdctl.output import json_text
    from uffdctl.render import documents

    odd = tmp_path / os.fsdecode(b"odd-\xff-\"name\"")
    odd.write_bytes(b"x" * 4096)
    with open(odd, "rb") as f, mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ), \
            holder() as (proc, _info):
        for pid in (proc.pid, os.getpid()):
            report = procs.inspect_process(pid, all_regions)
            want = json_text(documents.report_json(report))
            for chunk in (1, 2, 4096):
                assert "".join(documents.report_text(report, chunk)) == want
            if pid == os.getpid():
                assert not all_regions or "odd-\\ufffd-\\\"name\\\"" in want
