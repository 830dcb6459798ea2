"""One process, or every process, as userfaultfd sees it: registered regions, descriptors,
threads stuck in a fault; and a process watched over time.  Read from /proc only; every
failure a user can meet becomes an errors.UffdctlError with the cause and the fix, in one
place (procfs.py).

Processes change under us: a file may vanish between two reads (the process exited) or be
cut short.  The readers treat both as "exited while being read", never as a crash.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BufferedReader

from . import abi, errors, procfs, smaps
from .fdinfo import UffdDescriptor, is_userfaultfd, list_fds, userfaultfds
from .output import inert

# Where a thread sleeps while its fault is unresolved: /proc/PID/task/TID/wchan names the
# function (6.18 fs/userfaultfd.c handle_userfault() schedules there).  It sleeps
# interruptibly for a fault from user mode and killably (D) for one the kernel took in a
# copy_to/from_user (userfaultfd_get_blocking_state()).
STUCK_WCHAN = "handle_userfault"
_SLEEPING = ("S", "D")


@dataclass
class StuckThread:
    tid: int
    comm: str
    state: str
    wchan: str
    seen_in: str = "wchan"  # the file that showed it: wchan, or stack where wchan reads 0


@dataclass
class Unseen:
    """Sleeping threads whose wait could not be read, so whether they are stuck in a fault is
    unknown: plain data for the renderers, cause and fix worded for who asked."""
    threads: int
    cause: str
    fix: str


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
    unseen: Unseen | None = None  # sleeping threads that could not be checked

    @property
    def registered(self) -> list[smaps.Region]:
        return [r for r in self.regions if r.registered]

    @property
    def pending(self) -> int:
        return sum(u.pending for u in self.uffds)


# ----- reading one process ---------------------------------------------------------------------

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


def _regions(pid: int, all_regions: bool) -> list[smaps.Region]:
    """/proc/PID/smaps as regions: every one, or only the registered ones read piece by piece.

    A user process always has mappings: an empty read means its mm is gone (6.18
    fs/proc/task_mmu.c proc_maps_open() takes no mm from an exited task, and m_start() then
    shows nothing), so it exited or became a zombie while we looked."""
    path = f"/proc/{pid}/smaps"
    with procfs.reading(pid, "the memory map (/proc/PID/smaps)"):
        with open(path, "rb") as f:
            read = _Counted(f)
            # Both piece by piece: smaps of a big process is tens of MB, never held whole.
            regions = smaps.scan_all(read) if all_regions else smaps.scan_registered(read)
        size = read.size
    if not size:
        raise procfs.gone(pid)
    return regions


def stuck_threads(pid: int) -> tuple[list[StuckThread], Unseen | None]:
    """The threads waiting in handle_userfault(), and the sleeping ones that could not be
    checked.  A thread that ends while we look is not stuck, so what cannot be read because it
    went is left out (procfs.read_detail).

    wchan reads "0" for a sleeping thread where the kernel cannot say where it sleeps: x86-64
    before 5.16 walked frame pointers only, so kernels built with the ORC unwinder (Debian's
    5.10) print 0 for every thread (get_wchan() in arch/x86/kernel/process.c; fixed by
    bc9bbb81730e "x86: Fix get_wchan() to support the ORC unwinder", 5.16), and any kernel
    prints 0 to a reader that may not ptrace the task (proc_pid_wchan() in fs/proc/base.c).
    Then the thread's kernel stack is the other source of truth: /proc/PID/task/TID/stack,
    which needs CONFIG_STACKTRACE and CAP_SYS_ADMIN (proc_pid_stack(), EACCES otherwise)."""
    out: list[StuckThread] = []
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit())
    except OSError:
        return out, None  # the process went: the reads before and after say so
    unseen, denied = 0, False
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        wchan = (procfs.read_detail(f"{base}/wchan") or "").strip()
        seen_in = "wchan"
        stat = None
        if wchan == "0":
            stat = procfs.parse_stat(procfs.read_detail(f"{base}/stat") or "")
            if stat is None or stat.state not in _SLEEPING:
                continue  # running, or gone: not waiting for a fault
            try:
                stack = procfs.read_text(f"{base}/stack")
            except OSError as exc:
                if os.path.exists(base):  # still there: the stack is what we may not read
                    unseen += 1
                    denied = denied or exc.errno in (errno.EACCES, errno.EPERM)
                continue
            if f"] {STUCK_WCHAN}+" not in stack:
                continue
            wchan, seen_in = STUCK_WCHAN, "stack"
        elif wchan != STUCK_WCHAN:
            continue
        if stat is None:
            stat = procfs.parse_stat(procfs.read_detail(f"{base}/stat") or "")
        out.append(StuckThread(tid, stat.comm if stat else "?", stat.state if stat else "?",
                               wchan, seen_in))
    return out, (_unseen(unseen, denied) if unseen else None)


def _unseen(threads: int, denied: bool) -> Unseen:
    why = ("their wchan reads 0 (this kernel cannot name where a thread sleeps, e.g. x86-64 "
           "before 5.16 with the ORC unwinder, or this user may not trace them)")
    if denied:
        return Unseen(threads, f"{why} and their kernel stack is readable only by root",
                      "run as root (CAP_SYS_ADMIN reads /proc/PID/task/TID/stack)")
    return Unseen(threads, f"{why} and this kernel has no /proc/PID/task/TID/stack "
                  "(CONFIG_STACKTRACE)", "none from /proc: a kernel 5.16 or newer names the "
                  "wait in wchan")


def inspect_process(pid: int, all_regions: bool = False) -> ProcessReport:
    if pid <= 0:
        raise errors.UffdctlError(f"{pid} is not a process id", "give a pid greater than 0",
                                  errors.USAGE)
    stat = procfs.user_process(pid)
    regions = _regions(pid, all_regions)
    with procfs.reading(pid, "the open files (/proc/PID/fd)"):
        uffds = userfaultfds(pid)
    cmdline = [a for a in (procfs.read_detail(f"/proc/{pid}/cmdline") or "").split("\0") if a]
    stuck, unseen = stuck_threads(pid)
    report = ProcessReport(pid, stat.comm, cmdline, stat.state, regions, uffds, stuck,
                           stat.minflt, all_regions, unseen=unseen)
    report.owners = attribute(regions, uffds)
    return report


# ----- which descriptor registered a region ---------------------------------------------------

@dataclass(frozen=True)
class _Rule:
    """What abi.MODE_SUPPORT says about one mode on one memory type, for attribution."""

    required: frozenset[str]  # checked by the kernel at UFFDIO_REGISTER
    evidence: frozenset[str]  # asked for only to use this mode on this memory


def _rules() -> dict[tuple[str, str], _Rule]:
    anon = {row.mode: frozenset(row.features) for row in abi.MODE_SUPPORT
            if row.memory == "anon"}
    return {(row.mode, row.memory): _Rule(frozenset(row.required),
                                          frozenset(row.features) - anon.get(row.mode, frozenset()))
            for row in abi.MODE_SUPPORT}




def attribute(regions: list[smaps.Region], uffds: list[UffdDescriptor]) -> dict[int, Owner]:
    """Which descriptor registered each region, as far as the kernel lets us know.

    /proc does not say, and the features a descriptor asked for prove little: the kernel
    checks none of them at UFFDIO_REGISTER except WP_ASYNC, without which WP on a plain file
    is refused (6.18 fs/userfaultfd.c userfaultfd_register() -> vma_can_userfault() in
    include/linux/userfaultfd_k.h; abi.MODE_SUPPORT's ``required``).  So, per region:

    candidates  the initialized descriptors (all of them if none is marked: before 5.15)
                holding every ``required`` feature of each of the region's modes
    evidence    per mode, the features of its row a program asks for only for this memory
                type: the row's features minus those of the same mode on anon (wp on shmem:
                wp_hugetlbfs_shmem; missing on shmem: missing_shmem; anon rows: none)
    fits        a candidate asked for at least one feature of each non-empty evidence
    owners      the candidates that fit every mode, or all candidates when none does; a mode
                with no row on this memory (the kernel never allows it) leaves the candidates

    ``certain`` only when exactly one candidate exists."""
    marks_init = any(u.info.initialized for u in uffds)
    asked = {u.fd: frozenset(u.features) for u in uffds if u.info.initialized or not marks_init}
    owners = {}
    table = _rules()  # read afresh: twelve rows, and the table is the one source
    for r in regions:
        if not r.registered:
            continue
        rules = [table.get((mode, r.memory)) for mode in r.modes]
        known = [rule for rule in rules if rule is not None]
        candidates = [fd for fd, features in asked.items()
                      if all(rule.required <= features for rule in known)]
        fitting = [fd for fd in candidates
                   if all(not rule.evidence or rule.evidence & asked[fd] for rule in known)]
        if len(known) < len(rules) or not fitting:
            fitting = candidates
        owners[r.start] = Owner(fitting, certain=len(candidates) == 1)
    return owners


# ----- a process over time ---------------------------------------------------------------------

@dataclass
class Frame:
    """One look at a watched process."""

    report: ProcessReport  # the look; on the closing frame, the last look before it went
    at: float  # time.time() of the look
    changes: list[str]  # what changed since the previous look, one line each (plain text)
    rate: float | None  # minor faults per second since the previous look; None the first time
    exited: str | None = None  # set on the closing frame only: why the watch ended


def watch(pid: int, interval: float, all_regions: bool = False, count: int | None = None
          ) -> Iterator[Frame]:
    """Look at ``pid`` now and every ``interval`` seconds until it exits or ``count`` looks
    were made.  When the process exits a closing frame says so (``exited``).  The first look
    raises like inspect_process(); a later one that fails for another reason than the
    process being gone (errors.NO_PROCESS) raises too."""
    report = inspect_process(pid, all_regions)
    t_prev, looks = time.monotonic(), 1
    yield Frame(report, time.time(), [], None)
    while count is None or looks < count:
        time.sleep(interval)
        try:
            new = inspect_process(pid, all_regions)
        except errors.UffdctlError as exc:
            if exc.status != errors.NO_PROCESS:
                raise
            yield Frame(report, time.time(), [], None,
                        f"pid {pid} ({inert(report.comm)}) exited; watched for {looks} "
                        "refreshes")
            return
        now = time.monotonic()
        rate = (new.minflt - report.minflt) / max(now - t_prev, 1e-6)
        yield Frame(new, time.time(), changes(report, new), rate)
        report, t_prev, looks = new, now, looks + 1


def changes(before: ProcessReport, after: ProcessReport) -> list[str]:
    """What changed between two looks at a process, one line each (plain text)."""
    out = []
    old = {(r.start, r.end): r for r in before.registered}
    new = {(r.start, r.end): r for r in after.registered}
    for key in sorted(new.keys() - old.keys()):
        r = new[key]
        out.append(f"+ region {r.start:x}-{r.end:x} {r.memory} registered "
                   f"{'+'.join(r.modes)}")
    for key in sorted(old.keys() - new.keys()):
        r = old[key]
        out.append(f"- region {r.start:x}-{r.end:x} {r.memory} no longer registered")
    for key in sorted(new.keys() & old.keys()):
        if new[key].modes != old[key].modes:
            out.append(f"~ region {key[0]:x}-{key[1]:x} modes {'+'.join(old[key].modes)} -> "
                       f"{'+'.join(new[key].modes)}")
    pend_old = {u.fd: u.pending for u in before.uffds}
    for u in after.uffds:
        if u.fd not in pend_old:
            out.append(f"+ fd {u.fd} userfaultfd opened ({' '.join(u.features) or 'no features'})")
        elif u.pending != pend_old[u.fd]:
            out.append(f"~ fd {u.fd} pending {pend_old[u.fd]} -> {u.pending}")
    for fd in sorted(pend_old.keys() - {u.fd for u in after.uffds}):
        out.append(f"- fd {fd} userfaultfd closed")
    stuck_old = {t.tid for t in before.stuck_threads}
    stuck_new = {t.tid for t in after.stuck_threads}
    for tid in sorted(stuck_new - stuck_old):
        out.append(f"! thread {tid} stuck in a fault")
    for tid in sorted(stuck_old - stuck_new):
        out.append(f"  thread {tid} released")
    return out


# ----- every process -----------------------------------------------------------------------------

@dataclass
class PsRow:
    pid: int
    comm: str
    uffds: int
    regions_by_mode: dict[str, int]  # only the modes in use, in smaps.UFFD_MODE_ORDER
    registered_regions: int
    pending: int
    stuck_threads: int
    unseen_threads: int = 0  # sleeping threads that could not be checked (see Unseen)


@dataclass
class PsReport:
    rows: list[PsRow]
    scanned: int
    unreadable: dict[str, int]  # reason -> number of processes

    @property
    def unreadable_total(self) -> int:
        return sum(self.unreadable.values())


def _pids() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def _ps_row(report: ProcessReport) -> PsRow:
    registered = report.registered
    by_mode = {m: sum(m in r.modes for r in registered) for m in smaps.UFFD_MODE_ORDER}
    return PsRow(report.pid, report.comm, len(report.uffds),
                 {m: n for m, n in by_mode.items() if n}, len(registered), report.pending,
                 len(report.stuck_threads), report.unseen.threads if report.unseen else 0)


def scan_all() -> PsReport:
    """Every process holding a userfaultfd.  Only /proc/PID/fd of each process is read until
    one link is a userfaultfd: that scan is the cost of `ps` (see procfs.py for why it does
    not go through psutil, which is 2x slower here)."""
    rows: list[PsRow] = []
    unreadable: dict[str, int] = {}
    pids = _pids()
    for pid in pids:
        try:
            links = list_fds(pid)
        except OSError as exc:
            if procfs.error(pid, exc, "the open files").status == errors.NO_ACCESS:
                key = ("not yours: run as root to read them" if os.geteuid() else
                       "denied even to root (changing credentials or exiting while read)")
                unreadable[key] = unreadable.get(key, 0) + 1
            continue  # gone meanwhile: nothing to report
        if not any(is_userfaultfd(link) for _, link in links):
            continue
        try:
            report = inspect_process(pid)
        except errors.UffdctlError as exc:
            if exc.status == errors.NO_ACCESS:
                key = ("their memory maps are not readable: run as root" if os.geteuid() else
                       "their memory maps are not readable even to root (no CAP_SYS_PTRACE?)")
                unreadable[key] = unreadable.get(key, 0) + 1
            continue
        rows.append(_ps_row(report))
    return PsReport(rows, len(pids), unreadable)
