"""Who answers a process's faults: one userfaultfd followed across processes, the threads
waiting on it, and whether anyone is there.

A userfaultfd serves one address space, its creator's (6.18 fs/userfaultfd.c: the context
keeps the mm it was created in, and UFFDIO_REGISTER works on that mm only), but any process
may hold it: Firecracker's VMM sends it to a handler process over a UNIX socket (SCM_RIGHTS)
and closes its copy, CRIU's lazy-pages daemon receives it the same way, QEMU reads it in a
thread of its own.  /proc names no link from a process's memory to the descriptor, so:

same file     two processes' descriptors are one userfaultfd when fdinfo shows the same ino
              (5.12+: each userfaultfd its own anonymous inode), else when kcmp(KCMP_FILE)
              says so (needs ptrace read access to both); ``matched_by`` says which
served pid    a descriptor serves the holder whose registered regions it fits
              (procs.attribute); one that fits no holder's regions serves a process with
              registered regions and no descriptor of its own: which one is inferred (the
              only such pair, or the one whose stuck threads equal the descriptor's
              blocked count) and said to be inferred
readers       the threads of a holder waiting to read it: in read() on it, in poll/select
              with it in their set, or in epoll_wait on a set holding it
              (/proc/PID/task/TID/syscall, its arguments, /proc/PID/mem and the epoll
              fdinfo; without ptrace access, a wchan in userfaultfd's read)

Plain data: the renderers word it for people and the formats.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Sequence

from . import abi, procfs
from .fdinfo import UffdDescriptor
from .output import inert
from .records import field, record

# Types only (the checker's): typing stays unimported at run time (start-up, issue 17).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class _Owner(Protocol):
        @property
        def fds(self) -> list[int]: ...

    class _Owners(Protocol):
        def values(self) -> Sequence[_Owner]: ...

    class ProcessReport(Protocol):
        """What the survey reads of a process (procs.ProcessReport has it: procs calls survey(),
        so this module does not import procs)."""

        @property
        def pid(self) -> int: ...
        @property
        def comm(self) -> str: ...
        @property
        def state(self) -> str: ...
        @property
        def uffds(self) -> list[UffdDescriptor]: ...
        @property
        def owners(self) -> _Owners: ...
        @property
        def registered(self) -> Sequence[object]: ...
        @property
        def stuck_threads(self) -> Sequence[object]: ...
        @property
        def pending(self) -> int: ...


# The verdicts, most urgent first (the order ps sorts by).
GONE = "gone"  # nobody holds it but the faulting process, and none of its threads reads it
STOPPED = "stopped"  # every holder is stopped (SIGSTOP, a debugger)
NOT_READING = "not-reading"  # a holder is alive but no thread of it waits on the descriptor
UNKNOWN = "unknown"  # no descriptor found, or the holders' threads could not be read
READING = "reading"  # a thread waits on it: the handler is there
VERDICTS = (GONE, STOPPED, NOT_READING, UNKNOWN, READING)

# Where a thread sleeps while it reads a userfaultfd, as wchan names it: userfaultfd_read
# (5.10), userfaultfd_ctx_read (when not inlined), userfaultfd_read_iter (6.18).
_READ_WCHAN = "userfaultfd_"

# What ends faults nobody will answer (6.18 fs/userfaultfd.c userfaultfd_release(): the last
# close unregisters every region of the context and wakes the waiting threads; handle_userfault()
# then returns VM_FAULT_NOPAGE on a released context, the fault is retried on a region no
# longer registered and served as any other: the zero page or a new zeroed page for anonymous
# memory, the page cache for shmem and hugetlbfs files).
WHAT_ENDS_THEM = ("until every copy of the descriptor is closed (the kernel then unregisters "
                  "the regions and wakes the threads: they retry and get the memory's ordinary "
                  "contents, zeroed pages for anonymous memory, not the pages a handler would "
                  "have supplied) or the process is killed")


@record
class Reader:
    tid: int
    call: str  # the call it waits in: read, poll, epoll_wait, ...
    via: str = ""  # "" directly; "epoll fd 5"; "wchan" (seen only by wchan: which fd unknown)


@record
class Holding:
    """One process's descriptor of a userfaultfd."""

    pid: int
    comm: str
    fd: int
    state: str  # the process's state letter: T or t when stopped
    readers: list[Reader] = field(default_factory=list)
    readers_known: bool = True  # False: its threads' calls could not be read

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")


@record
class UffdFile:
    """One userfaultfd and every descriptor of it this scan could read."""

    holders: list[Holding]
    pending: int
    total: int
    matched_by: str  # how the holders were found to be one file: ino, kcmp, or "" (one holder)
    serves: int | None = None  # the pid whose memory it serves
    serves_how: str = ""  # "regions" (its registered regions fit it) or "inferred"
    serves_comm: str = ""

    def held_by(self, pid: int) -> list[Holding]:
        return [h for h in self.holders if h.pid == pid]


@record
class Service:
    """Who answers the faults of one process, and the verdict when something waits."""

    pid: int
    files: list[UffdFile]  # the userfaultfds serving its memory (inferred ones included)
    matched_by: str  # own, ino, kcmp, inferred (paired), candidates (not paired) or none
    verdict: str | None  # one of VERDICTS when a thread is stuck or a fault pending, else None
    cause: str = ""
    fix: str = ""

    @property
    def handlers(self) -> list[Holding]:
        """The holdings in other processes: who serves it from outside."""
        return [h for f in self.files for h in f.holders if h.pid != self.pid]


@record
class Survey:
    files: list[UffdFile]
    services: dict[int, Service]  # pid -> who serves it (processes with regions or stuck)
    by_descriptor: dict[tuple[int, int], UffdFile] = field(default_factory=dict)

    def serving(self, pid: int, fd: int) -> UffdFile | None:
        return self.by_descriptor.get((pid, fd))


# ----- one file across processes ----------------------------------------------------------------

def _kcmp_order(a: tuple[int, int], b: tuple[int, int]) -> int:
    # Imported here: only kernels before 5.12 (no ino in fdinfo) come this way, and uffd
    # brings ctypes, which inspect and ps need not load (start-up, issue 17).
    from . import uffd

    r = uffd.kcmp_file(a[0], a[1], b[0], b[1])
    return 0 if r == 0 else (-1 if r == 1 else 1)


def group_files(reports: Sequence[ProcessReport]) -> list[tuple[list[tuple[int, int]], str]]:
    """The userfaultfds among every descriptor of ``reports``: lists of (pid, fd) that are one
    file, each with how that was known.  By ino where every descriptor has one (5.12+), else by
    kcmp's order (sorted and grouped: n log n calls); where kcmp is refused each descriptor is
    a file of its own ("" for matched_by)."""
    descs = [(r.pid, u.fd, u.info.ino) for r in reports for u in r.uffds]
    if not descs:
        return []
    if all(ino is not None for _, _, ino in descs):
        by_ino: dict[int, list[tuple[int, int]]] = {}
        for pid, fd, ino in descs:
            by_ino.setdefault(ino or 0, []).append((pid, fd))
        return [(members, "ino" if len(members) > 1 else "") for members in by_ino.values()]
    keys = [(pid, fd) for pid, fd, _ in descs]
    try:
        ordered = sorted(keys, key=functools.cmp_to_key(_kcmp_order))
    except OSError:
        return [([k], "") for k in keys]  # kcmp refused: each descriptor on its own
    groups: list[list[tuple[int, int]]] = []
    for k in ordered:
        try:
            same = bool(groups) and _kcmp_order(groups[-1][0], k) == 0
        except OSError:
            same = False
        if same:
            groups[-1].append(k)
        else:
            groups.append([k])
    return [(g, "kcmp" if len(g) > 1 else "") for g in groups]


# ----- the threads waiting on a descriptor -----------------------------------------------------

def _waited_fds(pid: int, st: procfs.SyscallState, call: str) -> tuple[set[int], str]:
    """The descriptors a thread in ``call`` waits to read, and how (epoll: "epoll fd N")."""
    how = abi.WAIT_CALLS.get(call)
    a = st.args
    if how == "fd":
        return {a[0]}, ""
    if how == "pollfd":
        count = min(a[1], 4096)
        raw = procfs.read_memory(pid, a[0], 8 * count) if count else b""
        if raw is None:
            return set(), ""
        # struct pollfd { int fd; short events; short revents; }: POLLIN (1) asked for.
        return {fd for fd, events, _ in struct.iter_unpack("ihh", raw) if events & 1}, ""
    if how == "fdset":
        nfds = min(a[0], 1 << 16)
        if not a[1] or not nfds:
            return set(), ""
        raw = procfs.read_memory(pid, a[1], (nfds + 63) // 64 * 8)
        if raw is None:
            return set(), ""
        bits = int.from_bytes(raw, "little")
        return {fd for fd in range(nfds) if bits >> fd & 1}, ""
    if how == "epoll":
        targets = procfs.epoll_targets(pid, a[0])
        return {fd for fd, _ in targets or []}, f"epoll fd {a[0]}"
    return set(), ""


def readers(pid: int, fds: set[int]) -> tuple[dict[int, list[Reader]], bool]:
    """The threads of ``pid`` waiting to read each of ``fds``, and whether every thread's call
    could be read (False: no ptrace access; then a thread whose wchan is in userfaultfd's read
    counts as reading, via "wchan", for each fd when the process holds only one)."""
    found: dict[int, list[Reader]] = {fd: [] for fd in fds}
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit())
    except OSError:
        return found, False
    known = True
    for tid in tids:
        st = procfs.thread_syscall(pid, tid)
        if isinstance(st, OSError):
            known = False
            wchan = procfs.read_detail(f"/proc/{pid}/task/{tid}/wchan") or ""
            if wchan.startswith(_READ_WCHAN) and len(fds) == 1:
                found[next(iter(fds))].append(Reader(tid, "read", "wchan"))
            continue
        if st is None:
            continue
        call = abi.syscall_name(st.nr)
        waited, via = _waited_fds(pid, st, call)
        for fd in waited & fds:
            found[fd].append(Reader(tid, call, via))
    return found, known


# ----- the survey ------------------------------------------------------------------------------

def _fitting_fds(report: ProcessReport) -> set[int]:
    return {fd for owner in report.owners.values() for fd in owner.fds}


def survey(reports: Sequence[ProcessReport]) -> Survey:
    """Every userfaultfd among ``reports`` (every process holding one or with a stuck thread),
    whom it serves, who reads it, and for each process with registered regions or stuck
    threads who serves it and the verdict.

    Each descriptor, file and process is looked up through an index, never by a search of
    all of them: a host may have thousands of holders (benchmarks/ps_fleet.py)."""
    by_pid = {r.pid: r for r in reports}
    fitting = {r.pid: _fitting_fds(r) for r in reports}
    files: list[UffdFile] = []
    by_descriptor: dict[tuple[int, int], UffdFile] = {}
    for members, how in group_files(reports):
        holders = []
        pending = total = 0
        for pid, fd in members:
            r = by_pid[pid]
            holders.append(Holding(pid, r.comm, fd, r.state))
            u = next(u for u in r.uffds if u.fd == fd)
            pending, total = max(pending, u.pending), max(total, u.total)
        f = UffdFile(holders, pending, total, how)
        for h in holders:
            if h.fd in fitting[h.pid] and by_pid[h.pid].registered:
                f.serves, f.serves_how, f.serves_comm = h.pid, "regions", h.comm
                break
        files.append(f)
        by_descriptor.update({(pid, fd): f for pid, fd in members})
    _read_holders(files)
    _infer(files, reports, fitting)
    served: dict[int, list[UffdFile]] = {}
    for f in files:
        if f.serves is not None:
            served.setdefault(f.serves, []).append(f)
    loose = [f for f in files if f.serves is None]
    services = {r.pid: _service(r, served.get(r.pid, []), loose) for r in reports
                if r.registered or r.stuck_threads}
    return Survey(files, services, by_descriptor)


def _read_holders(files: list[UffdFile]) -> None:
    holdings: dict[int, list[Holding]] = {}
    for f in files:
        for h in f.holders:
            holdings.setdefault(h.pid, []).append(h)
    for pid, held in holdings.items():
        found, known = readers(pid, {h.fd for h in held})
        for h in held:
            h.readers, h.readers_known = found.get(h.fd, []), known


def _infer(files: list[UffdFile], reports: Sequence[ProcessReport],
           fitting: dict[int, set[int]]) -> None:
    """Pair the files that fit no holder's regions with the processes that have registered
    regions (or stuck threads) and no descriptor that fits them."""
    served = {f.serves for f in files if f.serves is not None}
    loose = [f for f in files if f.serves is None]
    orphans = [r for r in reports if (r.registered or r.stuck_threads)
               and r.pid not in served and not fitting[r.pid]]
    if not loose or not orphans:
        return
    # A loose file held by the process itself is its own, even when no region fits (its
    # features say nothing for a mode the kernel checks nothing for).
    loose_held: dict[int, list[UffdFile]] = {}
    for f in loose:
        for pid in {h.pid for h in f.holders}:
            loose_held.setdefault(pid, []).append(f)
    for r in orphans:
        for f in loose_held.get(r.pid, []):
            if f.serves is None:
                _pair(f, r)
    served = {f.serves for f in files if f.serves is not None}
    loose = [f for f in loose if f.serves is None]
    orphans = [r for r in orphans if r.pid not in served]
    if len(orphans) == 1 and len(loose) == 1:
        _pair(loose[0], orphans[0])
        return
    # Several of each: a file with threads blocked on it serves the process with as many
    # stuck threads, when that pairing is the only one.
    by_total: dict[int, list[UffdFile]] = {}
    for f in loose:
        by_total.setdefault(f.total, []).append(f)
    by_stuck: dict[int, int] = {}
    for r in orphans:
        by_stuck[len(r.stuck_threads)] = by_stuck.get(len(r.stuck_threads), 0) + 1
    for r in orphans:
        n = len(r.stuck_threads)
        fits = by_total.get(n, []) if n else []
        if len(fits) == 1 and by_stuck[n] == 1 and fits[0].serves is None:
            _pair(fits[0], r)


def _pair(f: UffdFile, r: ProcessReport) -> None:
    f.serves, f.serves_how, f.serves_comm = r.pid, "inferred", r.comm


def _who(h: Holding) -> str:
    return f"pid {h.pid} ({inert(h.comm)}) fd {h.fd}"


def _matched(r: ProcessReport, mine: list[UffdFile]) -> str:
    if any(f.serves_how == "inferred" and not f.held_by(r.pid) for f in mine):
        return "inferred"
    return next((f.matched_by for f in mine if f.matched_by), "own")


def _service(r: ProcessReport, mine: list[UffdFile], loose: list[UffdFile]) -> Service:
    if mine:
        matched = _matched(r, mine)
    else:
        # Not paired: every file that serves no known process may be the one ("candidates").
        mine = loose
        matched = "candidates" if mine else "none"
    service = Service(r.pid, mine, matched, None)
    if r.stuck_threads or any(f.pending or f.total for f in mine) or r.pending:
        _judge(service, r)
    return service


def _judge(s: Service, r: ProcessReport) -> None:
    # The files something waits on, when the counts say which; else every one serving it.
    waited = [f for f in s.files if f.total or f.pending] or s.files
    holdings = [h for f in waited for h in f.holders]
    if not s.files:
        s.verdict = UNKNOWN
        s.cause = ("no userfaultfd this scan could read serves it: the handler is another "
                   "user's process, in another PID namespace, or gone with its last copy")
        s.fix = ("run as root in the host's PID namespace (`sudo uffdctl ps`); a fault whose "
                 "descriptor is closed is woken, so a thread stuck for long has a holder")
        return
    # A stopped thread still shows the call it was in (to be restarted): it reads nothing.
    reading = [(h, rd) for h in holdings if not h.stopped for rd in h.readers]
    if reading:
        h, rd = reading[0]
        self_ = " (a thread of this process)" if h.pid == r.pid else ""
        via = f" via {rd.via}" if rd.via and rd.via != "wchan" else ""
        pending = max(f.pending for f in waited)
        unread = max(f.total - f.pending for f in waited)
        s.verdict = READING
        s.cause = (f"{_who(h)}{self_} is reading it: thread {rd.tid} waits in {rd.call}{via}")
        if unread > 0:
            s.cause += (f"; {unread} fault(s) read and not yet resolved: the handler has "
                        "them and has not answered (UFFDIO_COPY, ZEROPAGE, CONTINUE or WAKE)")
        elif pending:
            s.cause += f"; {pending} fault(s) queued for it to read"
        s.fix = f"if it stays so, look at the handler: uffdctl inspect {h.pid}"
        return
    if not all(h.readers_known for h in holdings):
        s.verdict = UNKNOWN
        s.cause = ("whether anyone reads it is unknown: the holders' threads' calls "
                   "(/proc/PID/task/TID/syscall) need ptrace access")
        s.fix = "run as root, or as the holders' owner"
        return
    others = [h for h in holdings if h.pid != r.pid]
    if all(h.stopped for h in others or holdings):
        stopped = [h for h in others or holdings]
        s.verdict = STOPPED
        s.cause = ("its handler is stopped: " + ", ".join(_who(h) for h in stopped)
                   + " (SIGSTOP or a debugger): the faults wait until it continues")
        s.fix = "kill -CONT " + " ".join(str(p) for p in sorted({h.pid for h in stopped}))
        return
    if others:
        s.verdict = NOT_READING
        s.cause = (", ".join(_who(h) for h in others) + " holds it, but no thread of it waits "
                   "on it (read, poll, select or epoll): busy, slow, or not reading this "
                   "descriptor")
        s.fix = ("look at what the handler does: uffdctl inspect "
                 + " ".join(str(p) for p in sorted({h.pid for h in others}))
                 + "; cat /proc/PID/task/*/stack")
        return
    fds = ", ".join(f"fd {h.fd}" for h in holdings)
    s.verdict = GONE
    s.cause = (f"nobody is reading {fds}: the handler is gone; these faults stay unresolved "
               + WHAT_ENDS_THEM)
    s.fix = (f"restart the handler and give it the descriptor, or kill pid {r.pid} (the "
             "memory it was waiting for was never supplied)")
