"""One process, or every process, as userfaultfd sees it: registered regions, descriptors,
threads stuck in a fault.  Read from /proc only; every failure a user can meet becomes an
errors.UffdctlError with the cause and the fix (the pid is gone, a kernel thread, a zombie,
not ours to read).

Processes change under us: a file may vanish between two reads (the process exited) or be
cut short.  The readers treat both as "exited while being read", never as a crash.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BufferedReader

from . import errors, smaps
from .fdinfo import UffdDescriptor, list_fds, userfaultfds
from .output import inert

PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread
STUCK_WCHAN = "handle_userfault"  # where a thread sleeps while its fault is unresolved

# The feature a descriptor must have asked for to register MODE on MEMORY (None: none needed).
_NEEDS = {
    ("missing", "anon"): None, ("missing", "shmem"): "missing_shmem",
    ("missing", "hugetlb"): "missing_hugetlbfs",
    ("wp", "anon"): None, ("wp", "shmem"): "wp_hugetlbfs_shmem",
    ("wp", "hugetlb"): "wp_hugetlbfs_shmem", ("wp", "file"): "wp_async",
    ("minor", "shmem"): "minor_shmem", ("minor", "hugetlb"): "minor_hugetlbfs",
}


@dataclass
class Stat:
    comm: str
    state: str
    flags: int
    minflt: int
    uid: int | None = None


@dataclass
class StuckThread:
    tid: int
    comm: str
    state: str
    wchan: str


@dataclass
class Owner:
    fds: list[int]  # the descriptors that may have registered the region
    certain: bool

    def text(self) -> str:
        if not self.fds:
            return "no descriptor of this process fits (held by another process?)"
        if len(self.fds) == 1:
            return f"fd {self.fds[0]}"
        return "one of " + ", ".join(f"fd {fd}" for fd in self.fds)


@dataclass
class ProcessReport:
    pid: int
    comm: str
    cmdline: list[str]
    state: str
    regions: list[smaps.Region]
    uffds: list[UffdDescriptor]
    stuck_threads: list[StuckThread]
    minflt: int
    all_regions: bool  # regions holds every region, not only the registered ones
    owners: dict[int, Owner] = field(default_factory=dict)  # region start -> owner

    @property
    def registered(self) -> list[smaps.Region]:
        return [r for r in self.regions if r.registered]

    @property
    def pending(self) -> int:
        return sum(u.pending for u in self.uffds)


# ----- reading /proc ---------------------------------------------------------------------------

def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def _read_bytes(path: str) -> bytes:
    # A large buffer: /proc/PID/smaps of a big process is tens of MB.
    with open(path, "rb", buffering=1 << 20) as f:
        return f.read()


class _Counted:
    """A file's readinto that counts what it read (0 in all: the process had already gone)."""

    def __init__(self, f: BufferedReader) -> None:
        self.f, self.size = f, 0

    def __call__(self, view: memoryview) -> int:
        # smaps hands out about one entry per read(); the buffered reader's readinto gathers
        # them in C until the view is full, so the Python work is per piece, not per entry.
        n = self.f.readinto(view)
        self.size += n
        return n


def parse_stat(text: str) -> Stat | None:
    """/proc/PID/stat: the name sits in parentheses and may itself hold ") " and spaces."""
    open_at, close_at = text.find("("), text.rfind(")")
    if open_at < 0 or close_at < open_at:
        return None
    rest = text[close_at + 1:].split()
    if len(rest) < 8:
        return None
    try:
        return Stat(text[open_at + 1:close_at], rest[0], int(rest[6]), int(rest[7]))
    except ValueError:
        return None


def _gone(pid: int) -> errors.UffdctlError:
    return errors.UffdctlError(f"pid {pid} exited while it was being read",
                               "run again if it was restarted (its pid changes)",
                               errors.NO_PROCESS)


def _denied(pid: int, what: str) -> errors.UffdctlError:
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = -1
    whose = f"it belongs to uid {owner} and you are uid {os.geteuid()}" if owner >= 0 else \
        "it is not yours"
    return errors.UffdctlError(
        f"not allowed to read {what} of pid {pid}: {whose}",
        "run as its owner or as root: reading another process's memory map needs ptrace "
        "read access (same user and dumpable, or CAP_SYS_PTRACE)", errors.NO_ACCESS)


def read_stat(pid: int) -> Stat:
    try:
        text = _read(f"/proc/{pid}/stat")
    except FileNotFoundError:
        raise errors.UffdctlError(f"no process with pid {pid}",
                                  "check the pid with `uffdctl ps` or `ps -e`",
                                  errors.NO_PROCESS) from None
    except ProcessLookupError:
        raise _gone(pid) from None
    stat = parse_stat(text)
    if stat is None:
        raise _gone(pid)
    return stat


def _check_user_process(pid: int, stat: Stat) -> None:
    if stat.flags & PF_KTHREAD:
        raise errors.UffdctlError(
            f"pid {pid} ({inert(stat.comm)}) is a kernel thread: it has no user memory to register",
            "give the pid of a user process", errors.NO_PROCESS)
    if stat.state in ("Z", "X"):
        raise errors.UffdctlError(
            f"pid {pid} ({inert(stat.comm)}) is a zombie: it has exited and its memory is gone "
            "(its parent has not reaped it yet)", "give the pid of a running process",
            errors.NO_PROCESS)


def stuck_threads(pid: int) -> list[StuckThread]:
    out: list[StuckThread] = []
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit())
    except OSError:
        return out
    for tid in tids:
        try:
            wchan = _read(f"/proc/{pid}/task/{tid}/wchan").strip()
            if wchan != STUCK_WCHAN:
                continue
            stat = parse_stat(_read(f"/proc/{pid}/task/{tid}/stat"))
        except OSError:
            continue  # the thread ended: it is not stuck
        out.append(StuckThread(tid, stat.comm if stat else "?", stat.state if stat else "?",
                               wchan))
    return out


def attribute(regions: list[smaps.Region], uffds: list[UffdDescriptor]) -> dict[int, Owner]:
    """Which descriptor registered each region, as far as the kernel lets us know.

    /proc does not say.  It is certain when the process holds one initialized descriptor;
    otherwise only the descriptors whose features allow that mode on that memory remain."""
    marks_init = any(u.info.initialized for u in uffds)
    usable = [u for u in uffds if u.info.initialized or not marks_init]
    owners = {}
    for r in regions:
        if not r.registered:
            continue
        memory = r.memory
        fits = []
        for u in usable:
            names = set(u.features)
            if all(_NEEDS.get((m, memory), "?") is None or _NEEDS.get((m, memory)) in names
                   for m in r.modes):
                fits.append(u.fd)
        owners[r.start] = Owner(fits, certain=len(usable) == 1 and len(fits) == 1)
    return owners


def inspect_process(pid: int, all_regions: bool = False) -> ProcessReport:
    if pid <= 0:
        raise errors.UffdctlError(f"{pid} is not a process id", "give a pid greater than 0",
                                  errors.USAGE)
    stat = read_stat(pid)
    _check_user_process(pid, stat)
    path = f"/proc/{pid}/smaps"
    try:
        if all_regions:
            text = _read_bytes(path)
            size = len(text)
            regions = smaps.parse_smaps(text)
        else:
            with open(path, "rb") as f:
                read = _Counted(f)
                regions = smaps.scan_registered(read)
            size = read.size
    except PermissionError:
        raise _denied(pid, "the memory map (/proc/PID/smaps)") from None
    except (FileNotFoundError, ProcessLookupError):
        raise _gone(pid) from None
    if not size:
        # A user process always has mappings: it exited (or became a zombie) meanwhile.
        _check_user_process(pid, read_stat(pid))
        raise _gone(pid)
    try:
        uffds = userfaultfds(pid)
    except PermissionError:
        raise _denied(pid, "the open files (/proc/PID/fd)") from None
    except (FileNotFoundError, ProcessLookupError):
        raise _gone(pid) from None
    try:
        cmdline = [a for a in _read(f"/proc/{pid}/cmdline").split("\0") if a]
    except OSError:
        cmdline = []
    report = ProcessReport(pid, stat.comm, cmdline, stat.state, regions, uffds,
                           stuck_threads(pid), stat.minflt, all_regions)
    report.owners = attribute(regions, uffds)
    return report


# ----- every process -----------------------------------------------------------------------------

@dataclass
class PsRow:
    pid: int
    comm: str
    uffds: int
    regions_by_mode: dict[str, int]
    registered_regions: int
    pending: int
    stuck_threads: int


@dataclass
class PsReport:
    rows: list[PsRow]
    scanned: int
    unreadable: dict[str, int]  # reason -> number of processes

    @property
    def unreadable_total(self) -> int:
        return sum(self.unreadable.values())


def _pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def scan_all() -> PsReport:
    rows: list[PsRow] = []
    unreadable: dict[str, int] = {}
    scanned = 0
    for pid in sorted(_pids()):
        scanned += 1
        try:
            links = list_fds(pid)
        except PermissionError:
            key = ("not yours: run as root to read them" if os.geteuid() else
                   "denied even to root (changing credentials or exiting while read)")
            unreadable[key] = unreadable.get(key, 0) + 1
            continue
        except OSError:
            continue  # exited meanwhile: nothing to report
        if not any(link == "anon_inode:[userfaultfd]" for _, link in links):
            continue
        try:
            report = inspect_process(pid)
        except errors.UffdctlError as exc:
            if exc.status == errors.NO_ACCESS:
                key = "their memory maps are not readable: run as root"
                unreadable[key] = unreadable.get(key, 0) + 1
            continue
        by_mode: dict[str, int] = {}
        for r in report.registered:
            for m in r.modes:
                by_mode[m] = by_mode.get(m, 0) + 1
        rows.append(PsRow(pid, report.comm, len(report.uffds), by_mode,
                          len(report.registered), report.pending, len(report.stuck_threads)))
    return PsReport(rows, scanned, unreadable)
