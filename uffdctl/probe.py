"""What the running kernel's userfaultfd can do for this process, found out by doing it.

Every answer comes from a real call: the UFFDIO_API handshake on a throw-away fd (the API is
once per fd), each feature requested alone on a fresh fd, and each memory type x mode really
registered, with each resolving ioctl the kernel lists for the range tried without blocking.
The kernel over-reports (userfaultfd_register() hands back UFFD_API_RANGE_IOCTLS for any
non-hugetlb range, so MOVE is listed on shmem and fails there), so "listed" and "works" are
kept apart.

Capability and capacity are kept apart too.  A cell says what the kernel and this caller can
do, whatever the huge page pools hold now: it is registered on memory mapped with
MAP_NORESERVE (memtypes), which takes no huge page and needs none, since UFFDIO_REGISTER never
faults a page in.  Only the ioctl tries that put a page into the range (copy, continue, ...)
need a free huge page; without one they are "untested", never failing.  What the pools hold
now, and whether each `demo` could run on hugetlb now, is :func:`capacity`.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable

from . import abi, access, advice, hugepages, kconfig, memtypes, support, uffd
from .hugepages import Leftover
from .records import NamedTuple, field, record

TYPE_CHECKING = False  # as typing's, without importing typing at run time (records.py)

if TYPE_CHECKING:
    from .ioctl_reasons import IoctlNote


# Records that are never changed once made are named tuples: each dataclass costs three
# exec() calls when this module is imported, which every `probe` pays (benchmarks/README.md).
# Cell and ProbeReport are filled in as the probe goes: those two stay dataclasses.
class Kernel(NamedTuple):
    """The running kernel: release, machine and the Kconfig symbols that matter."""

    release: str
    machine: str
    config: dict[str, str] | None  # None: no configuration file could be read
    config_source: str | None = None  # the file the configuration was read from
    # Symbols this release predates (absent from its file, added later): symbol -> release.
    # Never changed once made, so one shared empty default is safe.
    not_in_release: dict[str, str] = {}  # noqa: RUF012

    def here(self) -> support.Here:
        """What support.absence reads of this kernel besides the offer."""
        return support.Here(self.machine, self.release, self.config, self.config_source)


class FeatureStatus(NamedTuple):
    """A feature bit: offered by the handshake, and usable when requested alone."""

    name: str
    bit: int
    first: str
    meaning: str
    offered: bool
    usable: bool
    errno: str | None = None  # why requesting it alone failed
    # The first release with it on this architecture (abi.first_on): ``first`` is the first
    # anywhere.  None: no release has it here.
    first_here: str | None = None
    # Why it is missing here (support.absence, worded by advice.not_offered) and what gives
    # it; None when it is there.  Also set for an offer the kernel predates the filter of
    # (usable is then False with errno None).
    why_not: str | None = None
    fix: str | None = None


class Api(NamedTuple):
    """The UFFDIO_API handshake with features=0, decoded."""

    features_mask: int
    ioctls_mask: int
    features: list[FeatureStatus]
    method: str  # how the probe's descriptors were opened (an abi.OPEN_METHODS name)

    @property
    def kernel_faults(self) -> bool:
        """Do the probe's descriptors handle faults raised by the kernel (KVM, vhost, O_DIRECT,
        a syscall reading registered memory)?  abi.OPEN_METHODS says, per way of opening."""
        return abi.OPEN_METHOD_BY_NAME[self.method].kernel_faults


@record
class Cell:
    """One memory type and register mode of the matrix, really registered."""

    memory: str
    mode: str
    status: str  # ok, unsupported, denied, error
    errno: str | None = None
    error: str | None = None
    fix: str | None = None
    ioctls_mask: int = 0
    ioctls: list[str] = field(default_factory=list)
    failing_ioctls: dict[str, str] = field(default_factory=dict)  # name -> errno name
    untested_ioctls: dict[str, str] = field(default_factory=dict)  # name -> why not tried

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def working_ioctls(self) -> list[str]:
        return [i for i in self.ioctls if i not in self.failing_ioctls]


class Caller(NamedTuple):
    """Whose answer a probe is (`probe --pid`, `--user`), and how it was got: what the child
    took on for real, and what the answer rests on where it could not."""

    name: str
    pid: int | None
    uid: int
    gid: int
    groups: list[int]
    cap_eff: int
    no_new_privs: bool
    seccomp: int  # 0 none, 1 strict, 2 filter (/proc/PID/status Seccomp)
    seccomp_filters: int
    initial_userns: bool
    copied: list[str]
    inferred: list[str]


@record
class ProbeReport:
    """Everything `uffdctl probe` found out."""

    kernel: Kernel
    access: access.AccessReport
    api: Api | None  # None when no userfaultfd could be opened
    matrix: list[Cell]
    hugepages: hugepages.HugePages
    # Pages uffdctl runs that were killed left in the pools: given back now (as root) or not.
    leftover: list[Leftover] = field(default_factory=list)
    # Whose answer this is when not this process's own (probe --pid, --user).
    caller: Caller | None = None
    # Each listed ioctl was tried (not --no-ioctl-check): a cell's failing_ioctls is complete.
    ioctls_checked: bool = True

    @property
    def usable(self) -> bool:
        return self.api is not None

    def cell(self, mode: str, memory: str) -> Cell | None:
        return next((c for c in self.matrix if c.mode == mode and c.memory == memory), None)

    def feature(self, key: str) -> FeatureStatus | None:
        if self.api is None:
            return None
        return next((f for f in self.api.features if f.name == key), None)


# ----- capacity: what the pools hold now --------------------------------------------------------

class PoolCapacity(NamedTuple):
    """One huge page size now: volatile, never a capability."""

    size_kb: int
    total: int  # nr_hugepages
    free: int  # free_hugepages less resv_hugepages: what a new mapping can get now
    default: bool


class DemoCapacity(NamedTuple):
    """Could `uffdctl demo MODE` (as is, on hugetlb) run now, with the pages free now?"""

    demo: str  # minor, missing, wp
    backing: str  # always "hugetlb": the backing whose pages come and go
    size_kb: int  # the default huge page size (0: no huge page pool)
    needs: int  # huge pages the demo maps as is
    free: int  # free now and not claimed by a running uffdctl (hugepages.unclaimed)
    can_run: bool
    why: str = ""  # why not, one line ("" when it can)


class Capacity(NamedTuple):
    pools: list[PoolCapacity]
    demos: list[DemoCapacity]


def capacity(report: ProbeReport) -> Capacity:
    """The volatile half of the answer: huge pages free and in total per size now, and
    whether each demo could run on hugetlb now without growing a pool (as root the demo
    reserves what is missing itself).  Read from the pools the probe read, plus the claims of
    uffdctl runs in progress (a demo claims its pages before it maps them)."""
    from .demoneeds import DEFAULT_PAGES, DEMOS  # the demos' needs, without their engine

    pools = [PoolCapacity(p.size_kb, p.nr, p.available, p.default)
             for p in report.hugepages.pools]
    pool = report.hugepages.pool()
    free = hugepages.unclaimed(pool) if pool is not None else 0
    demos = []
    for mode, scenario in DEMOS.items():  # each demo as is, no options
        # Its pages, and as many for the floor's unregistered mapping (demo._hugepages()).
        need = 2 * DEFAULT_PAGES
        why = ""
        if report.api is None:
            cause, _ = report.access.summary()
            why = f"no userfaultfd can be opened: {cause}"
        elif lacking := scenario.absent("hugetlb", None, report.api.features_mask,
                                        report.kernel.here()):
            why = advice.not_offered(lacking)
        elif not (cell := report.cell(scenario.register_mode, "hugetlb")) or not cell.ok:
            why = (f"{scenario.register_mode} does not register on hugetlb here: "
                   f"{(cell.error or cell.status) if cell else 'not probed'}")
        elif pool is None:
            why = "no huge page pool of the default size"
        elif free < need:
            why = f"{free} of {need} free {pool.size_kb} kB huge pages"
        demos.append(DemoCapacity(mode, "hugetlb", pool.size_kb if pool else 0, need, free,
                                  not why, why))
    return Capacity(pools, demos)


# ----- the answer in one line ---------------------------------------------------------------

class Outline(NamedTuple):
    """What `probe` says first, as plain data: which faults, how, where minor faults
    register, and the free huge pages per size (render.probe words it)."""

    kernel_faults: bool
    method: str | None  # the way the probe's descriptors were opened; None: nothing opens
    cause: str  # why kernel-mode faults are refused ("" when they are there)
    minor_on: list[str]  # kinds of memory ("shmem", "hugetlb") where a minor cell registers
    pools: list[PoolCapacity]


def outline(report: ProbeReport) -> Outline:
    kinds = {mt.name: mt.kind for mt in memtypes.MEMORY_TYPES}
    minor_on = list(dict.fromkeys(kinds[c.memory] for c in report.matrix
                                  if c.mode == "minor" and c.ok))
    verdict = report.access.verdict
    return Outline(report.api.kernel_faults if report.api else False,
                   report.api.method if report.api else None,
                   verdict.cause if not verdict.kernel_faults else "", minor_on,
                   capacity(report).pools)


# ----- the handshake and features -----------------------------------------------------------

Opener = Callable[[], uffd.Userfaultfd]


def probe_api(open_fd: Opener, method: str, at: support.Here | None = None) -> Api:
    """The handshake, each feature requested alone, and for each feature missing here why
    (support.absence, on the kernel ``at``: support.here() by default)."""
    at = at or support.here()
    with open_fd() as u:
        offered, ioctls = u.api(0)
    statuses = []
    known = {f.bit for f in abi.FEATURES}
    bits = sorted(known | {b for b in range(64) if offered >> b & 1})
    for bit in bits:
        feat = abi.FEATURE_BY_BIT.get(bit)
        is_offered = bool(offered >> bit & 1)
        usable, err = False, None
        absent = support.absence(feat.key, offered, at) if feat else None
        if is_offered and absent is None:
            try:
                with open_fd() as u:
                    u.api(1 << bit)
                usable = True
            except uffd.UffdError as exc:
                err = exc.errname
        statuses.append(FeatureStatus(
            feat.key if feat else abi.bit_names(1 << bit, {})[0], bit,
            feat.first if feat else "?",
            feat.meaning if feat else "not known to this uffdctl", is_offered, usable, err,
            abi.first_on(feat.key, at.arch) if feat else "?",
            advice.not_offered([absent]) if absent else None,
            (advice.absence_fix([absent]) or None) if absent else None))
    return Api(offered, ioctls, statuses, method)


def missing_features(report: ProbeReport) -> list[tuple[str, str]]:
    """(cause, fix) for each reason features uffdctl knows are missing on this kernel, the
    features missing for one reason together (advice.not_offered_groups): plain data for the
    features table's notes."""
    if report.api is None:
        return []
    absent = support.missing((f.key for f in abi.FEATURES), report.api.features_mask,
                             report.kernel.here())
    return advice.not_offered_groups(absent)


# ----- the registration matrix --------------------------------------------------------------

# The tries that put a page into the range: COPY, ZEROPAGE and MOVE fill it, CONTINUE maps the
# page written through the alias.  On hugetlbfs that page comes from the pool
# (hugetlb_mfill_atomic_pte() in mm/hugetlb.c), so these are tried on reserving memory, and
# with no free huge page they are untested (capacity), not failing: into an unreserved range
# with an empty pool 6.18 answers UFFDIO_COPY with EEXIST, which would read as a failure.
# WAKE touches nothing, WRITEPROTECT on an empty range only installs uffd-wp markers
# (hugetlb_change_protection()) and POISON a marker (hugetlb_mfill_atomic_pte(),
# MFILL_ATOMIC_POISON): tried on MAP_NORESERVE memory, they need no free page at all.
NEEDS_A_PAGE = frozenset({"copy", "zeropage", "move", "continue"})
NO_FREE_HUGE_PAGE = "no free huge page to try it on"


def try_move(u: uffd.Userfaultfd, dst: int, length: int) -> None:
    """UFFDIO_MOVE of a fresh populated anonymous page onto ``dst`` (MOVE takes the source
    page away: a fresh one each time).  Raises UffdError as the kernel answers."""
    src = uffd.mmap(length, uffd.PROT_READ | uffd.PROT_WRITE,
                    uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS)
    try:
        uffd.fill(src, 0x5A, length)
        u.move(dst, src, length, abi.UFFDIO_MOVE_MODE_DONTWAKE)
    finally:
        uffd.munmap(src, length)


def _check_ioctl(u: uffd.Userfaultfd, name: str, mt: memtypes.MemoryType, mode: int,
                 page_size: int, scratch: Scratch) -> str | None:
    """Try one resolving ioctl on a fresh registered page, without blocking and without this
    thread ever touching the registered mapping.  Returns None when it worked, else errno
    (ENOMEM from a reserving mmap(): no free huge page, or another program took it
    meanwhile: counted as untested)."""
    try:
        area = mt.allocate(1, page_size, noreserve=name not in NEEDS_A_PAGE)
    except uffd.UffdError as exc:
        return exc.errname
    try:
        u.register(area.addr, area.length, mode)
        n = area.length
        try:
            if name == "wake":
                u.wake(area.addr, n)
            elif name == "copy":
                u.copy(area.addr, scratch.get(page_size), n, abi.UFFDIO_COPY_MODE_DONTWAKE)
            elif name == "zeropage":
                u.zeropage(area.addr, n, abi.UFFDIO_ZEROPAGE_MODE_DONTWAKE)
            elif name == "move":
                try_move(u, area.addr, n)
            elif name == "writeprotect":
                u.writeprotect(area.addr, n, True)
                u.writeprotect(area.addr, n, False)
            elif name == "continue":
                mt.map_alias(area)
                # One byte written through the alias puts the whole page (a huge page on
                # hugetlb) into the page cache; what it holds does not matter to CONTINUE.
                uffd.fill(area.alias, 0x5A, 1)
                u.continue_(area.addr, n, abi.UFFDIO_CONTINUE_MODE_DONTWAKE)
            elif name == "poison":
                u.poison(area.addr, n, abi.UFFDIO_POISON_MODE_DONTWAKE)
            else:
                return None  # an ioctl this uffdctl does not know how to try: listed only
        finally:
            u.unregister(area.addr, area.length)
    except uffd.UffdError as exc:
        return exc.errname
    finally:
        mt.release(area)
    return None


# memfd_create(MFD_HUGETLB) for a size the kernel has no hugetlb for (hugetlb_file_setup() in
# fs/hugetlbfs/inode.c): ENODEV no hstate of that size, ENOENT no hugetlbfs mount for it
# (hugetlbfs disabled: no supported huge page size), ENOSYS no CONFIG_HUGETLBFS (the stub in
# include/linux/hugetlb.h).  The kernel cannot do hugetlb there at all: unsupported.
_NO_HUGETLB = {_errno.ENODEV, _errno.ENOENT, _errno.ENOSYS}


def _no_hugetlb_fix(err: int) -> str:
    if err == _errno.ENOSYS:
        return "use a kernel built with CONFIG_HUGETLBFS=y"
    if err == _errno.ENOENT:
        return ("give the machine a CPU (or VM) with huge page support: the kernel disabled "
                "hugetlbfs for want of a supported huge page size")
    sizes = ", ".join(f"{p.size_kb} kB" for p in hugepages.read_pools().pools)
    return (f"use a huge page size this kernel has ({sizes})" if sizes else
            "boot with hugepagesz=SIZE for a size the CPU supports")


def probe_cell(open_fd: Opener, offered: int, mt: memtypes.MemoryType, mode: str,
               check: bool = True, huge_page_size: int | None = None,
               at: support.Here | None = None, scratch: Scratch | None = None) -> Cell:
    """Register ``mode`` on one page of ``mt`` for real (the default huge page size, or
    ``huge_page_size`` bytes, for hugetlb), and try each ioctl the kernel lists (``check``).
    ``at``: the kernel, whose architecture and configuration say why a feature is missing
    (support.here() by default).  ``scratch``: the copy sources a whole matrix shares (one
    of the cell's own otherwise)."""
    cell = Cell(mt.name, mode, "ok")
    page_size = mt.page_size(huge_page_size)
    value = abi.mode_value(mode)
    # What a real program requests first (abi.MODE_SUPPORT): a kernel that does not offer it
    # cannot do the mode, whatever the memory; said before any huge page is needed, so a
    # kernel without the mode is never told to reserve pages for it.  The cause names what
    # is really missing: the release, or the architecture's support (arm64 before 6.10 has
    # no write-protect at all: every wp cell), or a Kconfig symbol.
    needs = abi.features_for(mode, mt.kind)
    missing = support.missing(needs, offered, at or support.here())
    if missing:
        cell.status, cell.error = "unsupported", advice.not_offered(missing)
        cell.fix = advice.absence_fix(missing) or None
        return cell
    try:
        # MAP_NORESERVE: no huge page is taken or needed (memtypes), so a hugetlb cell is the
        # same with an empty pool as with a full one.
        area = mt.allocate(1, page_size, noreserve=True)
    except uffd.UffdError as exc:
        cell.errno = exc.errname
        if mt.kind == "hugetlb" and exc.step == "memfd_create" and exc.errno in _NO_HUGETLB:
            cell.status = "unsupported"
            cell.error = (f"this kernel has no hugetlb pages of {page_size // 1024} kB "
                          f"(memfd_create: {exc.errname})")
            cell.fix = _no_hugetlb_fix(exc.errno or 0)
        else:
            cell.status = "error"
            cell.error = f"{exc.step} failed: {abi.errno_meaning(exc.step, exc.errno or 0)}"
        return cell
    try:
        with open_fd() as u:
            u.api(abi.features_mask(needs))
            try:
                cell.ioctls_mask = u.register(area.addr, area.length, value)
            except uffd.UffdError as exc:
                cell.errno = exc.errname
                cell.error = abi.errno_meaning("register", exc.errno or 0)
                cell.status = {_errno.EINVAL: "unsupported", _errno.EPERM: "denied"}.get(
                    exc.errno or 0, "error")
                return cell
            u.unregister(area.addr, area.length)
            mt.release(area)  # the checks map pages of their own
            cell.ioctls = abi.ioctl_names(cell.ioctls_mask)
            if check:
                own = scratch is None
                sources = Scratch() if scratch is None else scratch
                try:
                    _check_listed(u, cell, mt, value, page_size, sources)
                finally:
                    if own:
                        sources.close()
    finally:
        mt.release(area)
    return cell


class Scratch:
    """The source pages UFFDIO_COPY tries copy from: one filled anonymous mapping per page
    size, made when a copy is first tried and shared by every cell of a matrix.  A copy only
    reads its source, so one serves them all; a fresh one per cell cost the probe ~30 fills,
    each faulting in every small page of it (512 for a 2 MB huge page): 17 ms of the matrix's
    60 ms under cProfile (benchmarks/README.md).  close() unmaps them all."""

    def __init__(self) -> None:
        self._pages: dict[int, int] = {}  # page size -> address

    def get(self, page_size: int) -> int:
        addr = self._pages.get(page_size)
        if addr is None:
            addr = uffd.mmap(page_size, uffd.PROT_READ | uffd.PROT_WRITE,
                             uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS)
            self._pages[page_size] = addr
            uffd.fill(addr, 0xA5, page_size)
        return addr

    def close(self) -> None:
        while self._pages:
            size, addr = self._pages.popitem()
            uffd.munmap(addr, size)


def _check_listed(u: uffd.Userfaultfd, cell: Cell, mt: memtypes.MemoryType, mode: int,
                  page_size: int, scratch: Scratch) -> None:
    if "copy" in cell.ioctls:
        # Made here, outside _check_ioctl's handling: a source that cannot be mapped is this
        # process's failure (raised, as it always was), never the kernel's answer to a copy.
        scratch.get(page_size)
    for name in cell.ioctls:
        failed = _check_ioctl(u, name, mt, mode, page_size, scratch)
        if failed == "ENOMEM" and mt.kind == "hugetlb" and name in NEEDS_A_PAGE:
            cell.untested_ioctls[name] = NO_FREE_HUGE_PAGE
        elif failed:
            cell.failing_ioctls[name] = failed


def probe_matrix(open_fd: Opener, offered: int, check: bool = True,
                 at: support.Here | None = None) -> list[Cell]:
    at = at or support.here()
    scratch = Scratch()
    # The default huge page size is fixed at boot: read from /proc/meminfo once for the
    # matrix, not once for each hugetlb cell.
    huge = next((mt.page_size() for mt in memtypes.MEMORY_TYPES if mt.kind == "hugetlb"), None)
    try:
        return [probe_cell(open_fd, offered, mt, mode, check, huge, at, scratch)
                for mt in memtypes.MEMORY_TYPES for mode in abi.MATRIX_MODES]
    finally:
        scratch.close()


def run_probe(check_ioctls: bool = True) -> ProbeReport:
    cfg = kconfig.read()
    release = abi.release()
    kernel = Kernel(release, abi.machine(), cfg.values if cfg else None,
                    cfg.source if cfg else None,
                    kconfig.not_in_release(cfg, release) if cfg else {})
    acc = access.diagnose()
    leftover = hugepages.recover()  # before the pools are read: the report shows them after
    pools = hugepages.read_pools()
    # The strongest method that works: kernel-mode faults first.  A UFFD_USER_MODE_ONLY
    # descriptor registers the same but handle_userfault() (fs/userfaultfd.c) fails a fault
    # without FAULT_FLAG_USER, so a syscall touching the page gets EFAULT: probed through it,
    # the API and matrix would not be what QEMU postcopy or Firecracker get.
    working = sorted((m for m in acc.methods if m.ok), key=lambda m: not m.kernel_faults)
    method = working[0].name if working else None
    if method is None:
        return ProbeReport(kernel, acc, None, [], pools, leftover)
    open_fd = access.opener(method)
    api = probe_api(open_fd, method, kernel.here())
    matrix = probe_matrix(open_fd, api.features_mask, check_ioctls, kernel.here())
    return ProbeReport(kernel, acc, api, matrix, pools, leftover, ioctls_checked=check_ioctls)


# ----- why the memory types' ioctls differ ----------------------------------------------------

def widest(report: ProbeReport, memory: str) -> Cell | None:
    """The registered cell of ``memory`` that UFFDIO_REGISTER handed the most ioctls, or
    None when no mode registers there."""
    cells = [c for c in report.matrix if c.memory == memory and c.ok]
    return max(cells, key=lambda c: bin(c.ioctls_mask).count("1")) if cells else None


def ioctl_notes(report: ProbeReport) -> list[IoctlNote]:
    """For each memory type, why its widest cell's ioctls differ from what the other cells
    were handed (ioctl_reasons.explain): plain data for the table's notes and JSON's
    ioctl_notes.  A refusal is noted only where the probe's try saw it (or nothing was
    tried: --no-ioctl-check, or no free huge page)."""
    from . import ioctl_reasons

    others = {i for c in report.matrix if c.ok for i in c.ioctls}
    kinds = {mt.name: mt.kind for mt in memtypes.MEMORY_TYPES}
    notes = []
    for memory in dict.fromkeys(c.memory for c in report.matrix):
        cell = widest(report, memory)
        if cell is None:
            continue
        registrable = {c.mode for c in report.matrix if c.memory == memory and c.ok}
        # A single mode refused for want of a feature: its cell says what is missing
        # (support.absence), which a note about an ioctl that mode brings repeats.
        unregistrable = {c.mode: c.error for c in report.matrix
                         if c.memory == memory and "+" not in c.mode and c.error
                         and c.status == "unsupported" and c.errno is None}
        failing = None if not report.ioctls_checked else {
            **cell.failing_ioctls, **{n: "" for n in cell.untested_ioctls}}
        for note in ioctl_reasons.explain(kinds.get(memory, memory), cell.mode, cell.ioctls,
                                          others, registrable, failing, unregistrable):
            notes.append(note._replace(memory=memory, mode=cell.mode))
    return notes
