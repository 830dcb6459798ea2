"""procfs.ReadAhead: a big /proc file read by a helper process beside the parse (issue 17).

Real files of real processes: a child with thousands of mappings (smaps of ~2 MB, past
READ_AHEAD_AFTER) and a `sleep` with a few; the helpers are real programs (dd, cat, false) or a
path that does not exist."""

from __future__ import annotations

import errno
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import seccomp

from uffdctl import procfs, smaps

# What the helper reads on from, and where a failed one leaves off, is the kernel's seq_file
# (one position per open file; seq_lseek() regenerating up to an offset): checked on each.
pytestmark = pytest.mark.kernel

# A process with N one-page mappings that cannot merge (alternating protections), waiting.
MAPPINGS = r"""
import mmap, sys
n = int(sys.argv[1])
keep = []
for i in range(n):
    keep.append(mmap.mmap(-1, 4096, prot=mmap.PROT_READ | (mmap.PROT_WRITE if i % 2 else 0)))
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def many() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", MAPPINGS, "3000"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def few() -> Iterator[int]:
    child = subprocess.Popen(["sleep", "60"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # asleep: done mapping and touching its pages
        stat = procfs.parse_stat(procfs.read_detail(f"/proc/{child.pid}/stat") or "")
        if stat and stat.state == "S" and "sleep" in stat.comm:
            break
        time.sleep(0.01)
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def _whole(pid: int) -> list[smaps.Region]:
    with open(f"/proc/{pid}/smaps", "rb") as f:
        return smaps.parse_smaps(f.read())


# The sizes that stay put in an idle process.  Pss, Shared_* and Private_* of a shared
# library move whenever another process maps it, and Referenced whenever the kernel ages its
# pages (seen in the arm64 guest).
STEADY = ("Size", "KernelPageSize", "MMUPageSize")


def _plain(regions: list[smaps.Region]) -> list[tuple[object, ...]]:
    """The regions, their flags and their steady sizes."""
    return [(r.start, r.end, r.perms, r.offset, r.dev, r.inode, r.path, r.flags,
             [r.sizes_kb.get(k) for k in STEADY]) for r in regions]


def _same(got: list[smaps.Region], want: list[smaps.Region]) -> None:
    assert _plain(got) == _plain(want)


def _ahead(pid: int, **kwargs: object) -> tuple[list[smaps.Region], procfs.ReadAhead]:
    with open(f"/proc/{pid}/smaps", "rb", buffering=0) as f:
        read = procfs.ReadAhead(f, **kwargs)  # type: ignore[arg-type]
        try:
            return smaps.scan_all(read), read
        finally:
            read.close()


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _installed() -> str | None:
    return next((h for h, *_ in procfs.READ_AHEAD_HELPERS if os.access(h, os.X_OK)), None)


def test_the_helper_reads_what_one_read_gives(many: int) -> None:
    want = _whole(many)
    assert len(want) > 3000
    got, read = _ahead(many)
    _same(got, want)
    assert read.size > procfs.READ_AHEAD_AFTER
    assert read.helper == _installed()  # None where none is installed: read here
    if read.helper:
        assert _reaped(read.spawned)


@pytest.mark.parametrize("helper", procfs.READ_AHEAD_HELPERS, ids=" ".join)
def test_each_helper_reads_what_one_read_gives(many: int, helper: tuple[str, ...]) -> None:
    if not os.access(helper[0], os.X_OK):
        pytest.skip(f"{helper[0]} is not installed here")
    got, read = _ahead(many, helpers=(helper,))
    _same(got, _whole(many))
    assert read.helper == helper[0] and read.status == 0


def test_a_small_file_is_read_here(few: int) -> None:
    got, read = _ahead(few)
    _same(got, _whole(few))
    assert read.size < procfs.READ_AHEAD_AFTER
    assert read.helper is None and read.spawned == 0


def test_no_helper_to_run_reads_here(many: int) -> None:
    got, read = _ahead(many, helpers=(("/nonexistent/uffdctl-helper",),))
    _same(got, _whole(many))
    assert read.helper is None


def test_a_helper_that_fails_leaves_the_rest_to_read_here(many: int) -> None:
    false = shutil.which("false")
    if false is None:
        pytest.skip("no false(1) to fail as the helper")
    got, read = _ahead(many, helpers=((false,),))
    _same(got, _whole(many))
    assert read.helper == false and read.status and _reaped(read.spawned)


def test_a_helper_killed_midway_leaves_the_rest_to_read_here(many: int) -> None:
    """As a seccomp filter or the OOM killer would end it: what came through is kept, the
    rest is read here from the byte after."""
    if _installed() is None:
        pytest.skip("no helper installed: nothing is spawned")
    with open(f"/proc/{many}/smaps", "rb", buffering=0) as f:
        read = procfs.ReadAhead(f, after=4096)
        pieces = []
        buf = bytearray(8192)
        with memoryview(buf) as view:
            for _ in range(3):  # one piece read here, two through the helper
                pieces.append(bytes(buf[:read(view)]))
        os.kill(read.spawned, signal.SIGKILL)
        try:
            rest = bytearray(1 << 16)
            with memoryview(rest) as view:
                while n := read(view):
                    pieces.append(bytes(rest[:n]))
        finally:
            read.close()
    assert read.status is not None and os.WIFSIGNALED(read.status)
    want = _whole(many)
    _same(smaps.parse_smaps(b"".join(pieces)), want)


def test_stopping_early_kills_and_reaps_the_helper(many: int) -> None:
    if _installed() is None:
        pytest.skip("no helper installed: nothing is spawned")
    with open(f"/proc/{many}/smaps", "rb", buffering=0) as f:
        read = procfs.ReadAhead(f, after=4096)
        buf = bytearray(8192)
        with memoryview(buf) as view:
            assert read(view) == len(buf)  # the first piece, read here
            assert read(view) == len(buf)  # through the helper
        assert read.spawned and os.path.exists(f"/proc/{read.spawned}")  # still running
        read.close()
    assert _reaped(read.spawned)


def test_a_sandbox_that_forbids_programs_leaves_it_to_read_here(many: int) -> None:
    """A real seccomp filter refusing execve(2), installed in a child of this test: no helper
    starts, and the file is read whole in that process."""
    if platform.machine() not in seccomp.NR_EXECVE:
        pytest.skip(f"no execve number for {platform.machine()} in tests/seccomp.py")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: filter, read, report, leave
        code = 1
        try:
            os.close(r)
            seccomp.install(errno.EPERM, ("execve",))
            got, read = _ahead(many)
            os.write(w, repr((read.helper, read.spawned, _plain(got))).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with open(r, "rb") as pipe:
        told = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert told.decode() == repr((None, 0, _plain(_whole(many))))
