"""One process, or every process, as userfaultfd sees it: registered regions, descriptors,
threads stuck in a fault; and a process watched over time.  Read from /proc only; every
failure a user can meet becomes an errors.UffdctlError with the cause and the fix, in one
place (procfs.py).

Processes change under us: a file may vanish between two reads (the process exited) or be
cut short.  The readers treat both as "exited while being read", never as a crash.
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Hashable, Iterator

from . import abi, errors, handlers, procfs, smaps
from .fdinfo import UffdDescriptor, is_userfaultfd, list_fds, userfaultfds
from .output import inert
from .records import NamedTuple, field, record

# Where a thread sleeps while its fault is unresolved: /proc/PID/task/TID/wchan names the
# function (6.18 fs/userfaultfd.c handle_userfault() schedules there).  It sleeps
# interruptibly for a fault from user mode and killably (D) for one the kernel took in a
# copy_to/from_user (userfaultfd_get_blocking_state()).
STUCK_WCHAN = "handle_userfault"
_SLEEPING = ("S", "D")


@record
class Where:
    """Where a stuck thread took its fault, as far as the kernel shows (/proc/PID/task/TID/
    syscall): in user mode, at an instruction (the fault address itself is not in /proc), or
    inside a system call whose copy to or from user memory faulted."""

    call: str  # "user-mode fault", "read", "syscall 123"
    nr: int  # abi.NOT_IN_SYSCALL for a fault in user mode
    args: tuple[int, ...]  # the call's six arguments; none for a user-mode fault
    pc: int
    pc_mapping: str | None  # the path of the mapping pc falls in ("" anonymous), None: none
    # Registered regions (start, end) the fault can be in: those an argument of the call
    # points into, else (a user-mode fault, or no argument points into one) every one.
    regions: list[tuple[int, int]] = field(default_factory=list)
    regions_from: str = "any registered region"  # or "argument N of CALL"


@record
class StuckThread:
    tid: int
    comm: str
    state: str
    wchan: str
    seen_in: str = "wchan"  # the file that showed it: wchan, or stack where wchan reads 0
    where: Where | None = None
    where_unknown: str = ""  # why where is None
    stuck_for: float | None = None  # seconds since it last ran (procfs.not_run_for)


@record
class Unseen:
    """Sleeping threads whose wait could not be read, so whether they are stuck in a fault is
    unknown: plain data for the renderers, cause and fix worded for who asked."""
    threads: int
    cause: str
    fix: str


@record
class Owner:
    fds: list[int]  # the descriptors that may have registered the region
    certain: bool

    def text(self) -> str:
        if not self.fds:
            return "no descriptor of this process fits (held by another process?)"
        if len(self.fds) == 1:
            return f"fd {self.fds[0]}"
        return "one of " + ", ".join(f"fd {fd}" for fd in self.fds)


class Owners:
    """attribute()'s answer: who registered each region (None: not registered), worked out
    once per smaps.shape() of region, and looked up by it."""

    __slots__ = ("_by_shape",)

    def __init__(self, by_shape: dict[Hashable, Owner | None] | None = None) -> None:
        self._by_shape = {} if by_shape is None else by_shape

    def of(self, r: smaps.Region) -> Owner | None:
        return self._by_shape.get(smaps.shape(r))

    def by_shape(self, shape: Hashable) -> Owner | None:
        """of() for a region whose smaps.shape() the caller has at hand."""
        return self._by_shape.get(shape)

    def values(self) -> list[Owner]:
        """The owners of the registered regions, each once."""
        return list({id(o): o for o in self._by_shape.values() if o is not None}.values())


@record
class ProcessReport:
    pid: int
    comm: str
    cmdline: list[str]
    state: str
    regions: list[smaps.Region]
    uffds: list[UffdDescriptor]
    stuck_threads: list[StuckThread]
    minflt: int
    all_regions: bool  # regions holds every region (False: only the registered ones)
    owners: Owners = field(default_factory=Owners)  # who registered each region
    unseen: Unseen | None = None  # sleeping threads that could not be checked
    # Set by a survey of the other processes (handlers.survey), when one was made: who
    # answers this process's faults, and what each of its descriptors serves.
    service: handlers.Service | None = None
    serving: dict[int, handlers.UffdFile] = field(default_factory=dict)  # fd -> its file
    surveyed: bool = False

    @property
    def registered_bytes(self) -> dict[str, int]:
        """Bytes registered in each mode in use, in smaps.UFFD_MODE_ORDER."""
        return by_mode(self.registered)[1]

    @property
    def stuck_for(self) -> float | None:
        """How long the longest-stuck thread has not run, where the kernel says."""
        known = [t.stuck_for for t in self.stuck_threads if t.stuck_for is not None]
        return max(known) if known else None

    @functools.cached_property
    def registered(self) -> list[smaps.Region]:
        # Asked for several times a report (ps: five), over maybe tens of thousands of
        # regions; the regions of a report do not change once it is made.
        if not self.all_regions:
            return list(self.regions)  # only registered ones were read
        modes = smaps.ModesOf()
        return [r for r in self.regions if modes(r)]

    @property
    def pending(self) -> int:
        return sum(u.pending for u in self.uffds)


def by_mode(regions: list[smaps.Region]) -> tuple[dict[str, int], dict[str, int]]:
    """How many of ``regions`` and how many of their bytes are registered in each mode in use,
    in smaps.UFFD_MODE_ORDER.  Counted and summed per VmFlags list (regions alike share one),
    then per mode: the one loop over the regions does as little as it can (a process may have
    tens of thousands, issue 17)."""
    count: dict[int, int] = {}
    length: dict[int, int] = {}
    flags: dict[int, list[str]] = {}
    for r in regions:
        key = id(r.flags)
        if key in count:
            count[key] += 1
            length[key] += r.end - r.start
        else:
            count[key], length[key], flags[key] = 1, r.end - r.start, r.flags
    regions_in = dict.fromkeys(smaps.UFFD_MODE_ORDER, 0)
    bytes_in = dict.fromkeys(smaps.UFFD_MODE_ORDER, 0)
    for key, n in count.items():
        for m in smaps.modes_of(flags[key]):
            regions_in[m] += n
            bytes_in[m] += length[key]
    return ({m: n for m, n in regions_in.items() if n},
            {m: n for m, n in bytes_in.items() if n})


# ----- reading one process ---------------------------------------------------------------------

def _regions(pid: int, all_regions: bool) -> list[smaps.Region]:
    """/proc/PID/smaps as regions: every one, or only the registered ones read piece by piece.

    A user process always has mappings: an empty read means its mm is gone (6.18
    fs/proc/task_mmu.c proc_maps_open() takes no mm from an exited task, and m_start() then
    shows nothing), so it exited or became a zombie while we looked."""
    path = f"/proc/{pid}/smaps"
    with procfs.reading(pid, "the memory map (/proc/PID/smaps)"):
        with open(path, "rb", buffering=0) as f:
            read = procfs.ReadAhead(f)
            try:
                # Both piece by piece: smaps of a big process is tens of MB, never held whole.
                regions = smaps.scan_all(read) if all_regions else smaps.scan_registered(read)
            finally:
                read.close()
        size = read.size
    if not size:
        raise procfs.gone(pid)
    _file_systems(pid, regions)
    return regions


def _file_systems(pid: int, regions: list[smaps.Region]) -> None:
    """Name the file system under each file mapping (Region.fs), so that a file on tmpfs is
    shmem and one on hugetlbfs hugetlb: one read of the process's mountinfo, only when a
    mapping of a file is there to be named."""
    memory = smaps.MemoryOf()
    files = [r for r in regions if r.inode and memory(r) == "file"]  # anon: inode 0
    if not files:
        return
    types = procfs.mount_types(pid)
    for r in files:
        r.fs = types.get(r.dev, "")


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


def _mapping_of(pid: int, addresses: set[int]) -> dict[int, str]:
    """The path of the mapping (from /proc/PID/maps, "" for anonymous) each address is in."""
    found: dict[int, str] = {}
    text = procfs.read_detail(f"/proc/{pid}/maps") or ""
    for line in text.splitlines():
        span, _, rest = line.partition(" ")
        lo, _, hi = span.partition("-")
        try:
            start, end = int(lo, 16), int(hi, 16)
        except ValueError:
            continue
        for a in addresses:
            if start <= a < end:
                fields = rest.split(None, 4)
                found[a] = fields[4] if len(fields) > 4 else ""
    return found


def locate(pid: int, stuck: list[StuckThread], registered: list[smaps.Region]) -> None:
    """Fill in where each stuck thread faulted and how long it has not run."""
    states = {t.tid: procfs.thread_syscall(pid, t.tid) for t in stuck}
    pcs = {st.pc for st in states.values() if isinstance(st, procfs.SyscallState)}
    mappings = _mapping_of(pid, pcs) if pcs else {}
    spans = [(r.start, r.end) for r in registered]
    for t in stuck:
        t.stuck_for = procfs.not_run_for(pid, t.tid)
        st = states[t.tid]
        if isinstance(st, OSError):
            t.where_unknown = ("/proc/PID/task/TID/syscall needs ptrace access to the process: "
                               "run as its owner or as root")
            continue
        if st is None:
            t.where_unknown = "the thread ran while it was read"
            continue
        call = abi.syscall_name(st.nr)
        where = Where(call, st.nr, st.args, st.pc, mappings.get(st.pc))
        pointed = [(k, span) for k, a in enumerate(st.args) for span in spans
                   if span[0] <= a < span[1]]
        if pointed:
            where.regions = sorted({span for _, span in pointed})
            where.regions_from = ", ".join(f"argument {k + 1} of {call}"
                                           for k in sorted({k for k, _ in pointed}))
        else:
            where.regions = spans
        t.where = where


def inspect_process(pid: int, all_regions: bool = False, survey: bool = True
                    ) -> ProcessReport:
    """One process; with ``survey``, when its faults may be answered from elsewhere (a thread
    stuck, registered regions no descriptor of its own fits, or a descriptor that fits none
    of its regions), every other process holding a userfaultfd is read too (the scan of
    `ps`) to name who answers and whether anyone is there."""
    report = _inspect_one(pid, all_regions)
    if survey and _needs_survey(report):
        others, _ = _scan_reports(skip=pid)
        _apply(handlers.survey([report, *others]), [report])
    return report


def _needs_survey(r: ProcessReport) -> bool:
    fitting = {fd for o in r.owners.values() for fd in o.fds}
    return bool(r.stuck_threads or r.pending
                or (r.registered and not fitting)
                or any(u.fd not in fitting for u in r.uffds))


def _apply(s: handlers.Survey, reports: list[ProcessReport]) -> None:
    for r in reports:
        r.surveyed = True
        r.service = s.services.get(r.pid)
        r.serving = {u.fd: f for u in r.uffds if (f := s.serving(r.pid, u.fd)) is not None}


def _inspect_one(pid: int, all_regions: bool, links: list[tuple[int, str]] | None = None
                 ) -> ProcessReport:
    if pid <= 0:
        raise errors.UffdctlError(f"{pid} is not a process id", "give a pid greater than 0",
                                  errors.USAGE)
    stat = procfs.user_process(pid)
    regions = _regions(pid, all_regions)
    with procfs.reading(pid, "the open files (/proc/PID/fd)"):
        uffds = userfaultfds(pid, links)
    cmdline = [a for a in (procfs.read_detail(f"/proc/{pid}/cmdline") or "").split("\0") if a]
    stuck, unseen = stuck_threads(pid)
    report = ProcessReport(pid, stat.comm, cmdline, stat.state, regions, uffds, stuck,
                           stat.minflt, all_regions, unseen=unseen)
    if stuck:
        locate(pid, stuck, report.registered)
    report.owners = attribute(regions, uffds)
    return report


# ----- which descriptor registered a region ---------------------------------------------------

class _Rule(NamedTuple):
    """What abi.MODE_SUPPORT says about one mode on one memory type, for attribution."""

    required: frozenset[str]  # checked by the kernel at UFFDIO_REGISTER
    evidence: frozenset[str]  # asked for only to use this mode on this memory


def _rules() -> dict[tuple[str, str], _Rule]:
    anon = {row.mode: frozenset(row.features) for row in abi.MODE_SUPPORT
            if row.memory == "anon"}
    return {(row.mode, row.memory): _Rule(frozenset(row.required),
                                          frozenset(row.features) - anon.get(row.mode, frozenset()))
            for row in abi.MODE_SUPPORT}




def attribute(regions: list[smaps.Region], uffds: list[UffdDescriptor]) -> Owners:
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
    table = _rules()  # read afresh: twelve rows, and the table is the one source
    # The answer depends on the modes and the memory type only: worked out once for each
    # pair, not for each of (maybe) tens of thousands of registered regions.
    decided: dict[tuple[tuple[str, ...], str], tuple[list[int], bool]] = {}
    # And the modes and memory type of a region follow from its VmFlags, path, inode and file
    # system, which most regions share with many others: one Owner for each of those (None:
    # not registered), shared by the regions alike (read it, do not change it).
    shapes: dict[Hashable, Owner | None] = {}
    for shape, r in smaps.kinds(regions).items():
        modes = tuple(r.modes)
        found = None if not modes else _decide(decided, table, asked, modes, r.memory)
        shapes[shape] = None if found is None else Owner(list(found[0]), certain=found[1])
    return Owners(shapes)


def _decide(decided: dict[tuple[tuple[str, ...], str], tuple[list[int], bool]],
            table: dict[tuple[str, str], _Rule], asked: dict[int, frozenset[str]],
            modes: tuple[str, ...], memory: str) -> tuple[list[int], bool]:
    """attribute()'s answer for one pair of modes and memory type (kept in ``decided``)."""
    found = decided.get((modes, memory))
    if found is None:
        rules = [table.get((mode, memory)) for mode in modes]
        known = [rule for rule in rules if rule is not None]
        candidates = [fd for fd, features in asked.items()
                      if all(rule.required <= features for rule in known)]
        fitting = [fd for fd in candidates
                   if all(not rule.evidence or rule.evidence & asked[fd] for rule in known)]
        if len(known) < len(rules) or not fitting:
            fitting = candidates
        found = decided[(modes, memory)] = (fitting, len(candidates) == 1)
    return found


# ----- a process over time ---------------------------------------------------------------------

@record
class Frame:
    """One look at a watched process."""

    report: ProcessReport  # the look; on the closing frame, the last look before it went
    at: float  # time.time() of the look
    changes: list[str]  # what changed since the previous look, one line each (plain text)
    # The process's page faults per second since the previous look (minflt of
    # /proc/PID/stat: all its minor page faults, not only userfaultfd's); None the first time.
    rate: float | None
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
    verdict_old = before.service.verdict if before.service else None
    verdict_new = after.service.verdict if after.service else None
    if verdict_old != verdict_new:
        out.append(f"~ handler {verdict_old or 'nothing waiting'} -> "
                   f"{verdict_new or 'nothing waiting'}")
    stuck_old = {t.tid for t in before.stuck_threads}
    stuck_new = {t.tid for t in after.stuck_threads}
    for tid in sorted(stuck_new - stuck_old):
        out.append(f"! thread {tid} stuck in a fault")
    for tid in sorted(stuck_old - stuck_new):
        out.append(f"  thread {tid} released")
    return out


# ----- every process -----------------------------------------------------------------------------

@record
class PsRow:
    pid: int
    comm: str
    uffds: int
    regions_by_mode: dict[str, int]  # only the modes in use, in smaps.UFFD_MODE_ORDER
    registered_regions: int
    pending: int
    stuck_threads: int
    unseen_threads: int = 0  # sleeping threads that could not be checked (see Unseen)
    registered_bytes: dict[str, int] = field(default_factory=dict)  # by mode, as above
    stuck_for: float | None = None  # seconds the longest-stuck thread has not run
    service: handlers.Service | None = None  # who answers its faults (see handlers)
    serves: list[tuple[int, int]] = field(default_factory=list)  # (fd, pid) it serves


@record
class PsReport:
    rows: list[PsRow]
    scanned: int
    unreadable: dict[str, int]  # reason -> number of processes
    # Sleeping threads of processes holding no userfaultfd that could not be checked.
    unseen_elsewhere: Unseen | None = None

    @property
    def unreadable_total(self) -> int:
        return sum(self.unreadable.values())


def _pids() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def _ps_row(report: ProcessReport) -> PsRow:
    registered = report.registered
    regions, size = by_mode(registered)
    serves = sorted((fd, f.serves) for fd, f in report.serving.items()
                    if f.serves is not None and f.serves != report.pid)
    return PsRow(report.pid, report.comm, len(report.uffds),
                 regions, len(registered), report.pending,
                 len(report.stuck_threads), report.unseen.threads if report.unseen else 0,
                 size, report.stuck_for, report.service,
                 serves)


def _scan_reports(skip: int = 0) -> tuple[list[ProcessReport], tuple[int, dict[str, int],
                                                                     Unseen | None]]:
    """Every process holding a userfaultfd or with a thread stuck in a fault, read whole;
    and (processes scanned, unreadable by reason, unseen threads elsewhere).

    Per process, /proc/PID/fd is listed (the links only) and each thread's wchan read: a
    process is read whole only when a link is a userfaultfd or a thread waits in a fault
    (the faulting process of a VMM whose handler lives elsewhere holds no descriptor).  See
    procfs.py for why this does not go through psutil."""
    reports: list[ProcessReport] = []
    unreadable: dict[str, int] = {}
    unseen_threads, unseen_denied = 0, False
    pids = _pids()
    for pid in pids:
        if pid == skip:
            continue
        try:
            links = list_fds(pid)
        except OSError as exc:
            try:
                status = procfs.error(pid, exc, "the open files").status
            except OSError:
                continue
            if status == errors.NO_ACCESS:
                key = ("not yours: run as root to read them" if os.geteuid() else
                       "denied even to root (changing credentials or exiting while read)")
                unreadable[key] = unreadable.get(key, 0) + 1
            continue  # gone meanwhile: nothing to report
        if not any(is_userfaultfd(link) for _, link in links):
            stuck, unseen = stuck_threads(pid)
            if unseen:
                unseen_threads += unseen.threads
                unseen_denied = unseen_denied or "root" in unseen.fix
            if not stuck:
                continue
        try:
            report = _inspect_one(pid, False, links)
        except errors.UffdctlError as exc:
            if exc.status == errors.NO_ACCESS:
                key = ("their memory maps are not readable: run as root" if os.geteuid() else
                       "their memory maps are not readable even to root (no CAP_SYS_PTRACE?)")
                unreadable[key] = unreadable.get(key, 0) + 1
            continue
        reports.append(report)
    elsewhere = _unseen(unseen_threads, unseen_denied) if unseen_threads else None
    return reports, (len(pids), unreadable, elsewhere)


def scan_all() -> PsReport:
    """Every process holding a userfaultfd or with a thread stuck in a fault, who answers
    each one's faults (handlers.survey) and the verdict where something waits."""
    reports, (scanned, unreadable, elsewhere) = _scan_reports()
    _apply(handlers.survey(reports), reports)
    rows = [_ps_row(r) for r in reports]
    return PsReport(rows, scanned, unreadable, elsewhere)


ps_row = _ps_row
