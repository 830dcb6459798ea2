"""What the running kernel's userfaultfd can do for this process, found out by doing it.

Every answer comes from a real call: the UFFDIO_API handshake on a throw-away fd (the API is
once per fd), each feature requested alone on a fresh fd, and each memory type x mode really
registered, with each resolving ioctl the kernel lists for the range tried without blocking.
The kernel over-reports (facts §10.7: MOVE is listed on shmem and fails), so "listed" and
"works" are kept apart.
"""

from __future__ import annotations

import errno as _errno
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import abi, access, errors, hugepages, memtypes, uffd

SCHEMA_VERSION = 1
KCONFIG_SYMBOLS = (
    "CONFIG_USERFAULTFD", "CONFIG_HAVE_ARCH_USERFAULTFD_WP", "CONFIG_HAVE_ARCH_USERFAULTFD_MINOR",
    "CONFIG_PTE_MARKER_UFFD_WP", "CONFIG_USERFAULTFD_RWP", "CONFIG_HUGETLBFS",
    "CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_PROC_PAGE_MONITOR", "CONFIG_MEM_SOFT_DIRTY",
)

# The features a real program would request before registering a given memory kind x mode.
_MODE_FEATURES = {
    ("missing", "shmem"): "missing_shmem", ("missing", "hugetlb"): "missing_hugetlbfs",
    ("wp", "anon"): "pagefault_flag_wp", ("wp", "shmem"): "wp_hugetlbfs_shmem",
    ("wp", "hugetlb"): "wp_hugetlbfs_shmem", ("minor", "shmem"): "minor_shmem",
    ("minor", "hugetlb"): "minor_hugetlbfs",
}


@dataclass
class Kernel:
    """The running kernel: release, machine and the Kconfig symbols that matter."""

    release: str
    machine: str
    config: dict[str, str] | None  # None: /proc/config.gz not readable


@dataclass
class FeatureStatus:
    """A feature bit: offered by the handshake, and usable when requested alone."""

    name: str
    bit: int
    first: str
    meaning: str
    offered: bool
    usable: bool
    errno: str | None = None  # why requesting it alone failed


@dataclass
class Api:
    """The UFFDIO_API handshake with features=0, decoded."""

    features_mask: int
    ioctls_mask: int
    features: list[FeatureStatus]
    method: str  # how the probe's descriptors were opened


@dataclass
class Cell:
    """One memory type and register mode of the matrix, really registered."""

    memory: str
    mode: str
    status: str  # ok, unsupported, denied, no-hugepages, error
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


@dataclass
class ProbeReport:
    """Everything `uffdctl probe` found out."""

    kernel: Kernel
    access: access.AccessReport
    api: Api | None  # None when no userfaultfd could be opened
    matrix: list[Cell]
    hugepages: hugepages.HugePages

    @property
    def usable(self) -> bool:
        return self.api is not None

    def cell(self, mode: str, memory: str) -> Cell | None:
        return next((c for c in self.matrix if c.mode == mode and c.memory == memory), None)

    def feature(self, key: str) -> FeatureStatus | None:
        if self.api is None:
            return None
        return next((f for f in self.api.features if f.name == key), None)


# ----- the handshake and features -----------------------------------------------------------

Opener = Callable[[], uffd.Userfaultfd]


def _opener(method: str) -> Opener:
    flags = abi.O_CLOEXEC | abi.O_NONBLOCK
    if method == access.DEV:
        return lambda: uffd.Userfaultfd(uffd.open_dev_userfaultfd(flags))
    if method == access.USER_MODE_ONLY:
        return lambda: uffd.Userfaultfd(uffd.open_userfaultfd(flags | abi.UFFD_USER_MODE_ONLY))
    return lambda: uffd.Userfaultfd(uffd.open_userfaultfd(flags))


def probe_api(open_fd: Opener, method: str) -> Api:
    with open_fd() as u:
        offered, ioctls = u.api(0)
    statuses = []
    known = {f.bit for f in abi.FEATURES}
    bits = sorted(known | {b for b in range(64) if offered >> b & 1})
    for bit in bits:
        feat = abi.FEATURE_BY_BIT.get(bit)
        is_offered = bool(offered >> bit & 1)
        usable, err = False, None
        if is_offered:
            try:
                with open_fd() as u:
                    u.api(1 << bit)
                usable = True
            except uffd.UffdError as exc:
                err = exc.errname
        statuses.append(FeatureStatus(
            feat.key if feat else f"bit {bit}", bit, feat.first if feat else "?",
            feat.meaning if feat else "not known to this uffdctl", is_offered, usable, err))
    return Api(offered, ioctls, statuses, method)


# ----- the registration matrix --------------------------------------------------------------

def _features_for(mode: str, kind: str, offered: int) -> int:
    mask = 0
    for part in mode.split("+"):
        key = _MODE_FEATURES.get((part, kind))
        if key and offered & abi.FEATURE_BY_KEY[key].mask:
            mask |= abi.FEATURE_BY_KEY[key].mask
    return mask


def _no_hugepages_fix(page_size: int) -> str:
    kb = page_size // 1024
    return (f"reserve some: sysctl vm.nr_hugepages=N (or write N to /sys/kernel/mm/hugepages/"
            f"hugepages-{kb}kB/nr_hugepages) as root")


def _check_ioctl(u: uffd.Userfaultfd, name: str, mt: memtypes.MemoryType, mode: int,
                 page_size: int, scratch: int) -> str | None:
    """Try one resolving ioctl on a fresh registered page, without blocking and without this
    thread ever touching the registered mapping.  Returns None when it worked, else errno."""
    area = mt.allocate(1, page_size)
    try:
        u.register(area.addr, area.length, mode)
        n = area.length
        try:
            if name == "wake":
                u.wake(area.addr, n)
            elif name == "copy":
                u.copy(area.addr, scratch, n, abi.UFFDIO_COPY_MODE_DONTWAKE)
            elif name == "zeropage":
                u.zeropage(area.addr, n, abi.UFFDIO_ZEROPAGE_MODE_DONTWAKE)
            elif name == "move":
                # MOVE takes the source page away: give it a fresh populated one each time.
                src = uffd.mmap(n, uffd.PROT_READ | uffd.PROT_WRITE,
                                uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS)
                try:
                    uffd.fill(src, 0x5A, n)
                    u.move(area.addr, src, n, abi.UFFDIO_MOVE_MODE_DONTWAKE)
                finally:
                    uffd.munmap(src, n)
            elif name == "writeprotect":
                u.writeprotect(area.addr, n, True)
                u.writeprotect(area.addr, n, False)
            elif name == "continue":
                mt.map_alias(area)
                uffd.fill(area.alias, 0x5A, n)  # the page cache now has the page
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


def probe_cell(open_fd: Opener, offered: int, mt: memtypes.MemoryType, mode: str,
               check: bool = True) -> Cell:
    cell = Cell(mt.name, mode, "ok")
    page_size = mt.page_size()
    value = abi.mode_value(mode)
    try:
        area = mt.allocate(1, page_size)
    except uffd.UffdError as exc:
        cell.errno = exc.errname
        if mt.kind == "hugetlb" and exc.errno == _errno.ENOMEM:
            cell.status, cell.error = "no-hugepages", "no free huge pages"
            cell.fix = _no_hugepages_fix(page_size)
        else:
            cell.status = "error"
            cell.error = f"{exc.step} failed: {abi.errno_meaning(exc.step, exc.errno or 0)}"
        return cell
    try:
        with open_fd() as u:
            u.api(_features_for(mode, mt.kind, offered))
            try:
                cell.ioctls_mask = u.register(area.addr, area.length, value)
            except uffd.UffdError as exc:
                cell.errno = exc.errname
                cell.error = abi.errno_meaning("register", exc.errno or 0)
                cell.status = {_errno.EINVAL: "unsupported", _errno.EPERM: "denied"}.get(
                    exc.errno or 0, "error")
                return cell
            u.unregister(area.addr, area.length)
            # Give the huge page back before the checks, which need pages of their own.
            mt.release(area)
            cell.ioctls = abi.ioctl_names(cell.ioctls_mask)
            if check:
                _check_listed(u, cell, mt, value, page_size)
    finally:
        mt.release(area)
    return cell


def _check_listed(u: uffd.Userfaultfd, cell: Cell, mt: memtypes.MemoryType, mode: int,
                  page_size: int) -> None:
    scratch = uffd.mmap(page_size, uffd.PROT_READ | uffd.PROT_WRITE,
                        uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS)
    try:
        uffd.fill(scratch, 0xA5, page_size)
        for name in cell.ioctls:
            failed = _check_ioctl(u, name, mt, mode, page_size, scratch)
            if failed == "ENOMEM" and mt.kind == "hugetlb":
                cell.untested_ioctls[name] = "no free huge page to try it on"
            elif failed:
                cell.failing_ioctls[name] = failed
    finally:
        uffd.munmap(scratch, page_size)


def probe_matrix(open_fd: Opener, offered: int, check: bool = True) -> list[Cell]:
    return [probe_cell(open_fd, offered, mt, mode, check)
            for mt in memtypes.MEMORY_TYPES for mode in abi.MATRIX_MODES]


def run_probe(check_ioctls: bool = True) -> ProbeReport:
    kernel = Kernel(platform.release(), platform.machine(), access.kconfig(KCONFIG_SYMBOLS))
    acc = access.diagnose()
    pools = hugepages.read_pools()
    method = next((m.name for m in acc.methods if m.ok), None)
    if method is None:
        return ProbeReport(kernel, acc, None, [], pools)
    open_fd = _opener(method)
    api = probe_api(open_fd, method)
    matrix = probe_matrix(open_fd, api.features_mask, check_ioctls)
    return ProbeReport(kernel, acc, api, matrix, pools)


# ----- JSON -----------------------------------------------------------------------------------

def report_to_json(report: ProbeReport, results: list[RequirementResult] | None = None
                   ) -> dict[str, object]:
    """The `uffdctl probe --json` document (schema_version 1):

    kernel: {release, machine, config: {CONFIG_...: "y"|"n"|"m"} | null}
    access: {usable, uid, euid, cap_sys_ptrace, initial_userns, unprivileged_userfaultfd,
             seccomp, seccomp_filters, dev_userfaultfd: {exists, mode, uid, gid, accessible},
             methods: [{name, ok, errno, cause, fix, kernel_faults}]}
    api: {method, features_mask, ioctls_mask, ioctls: [names],
          features: [{name, bit, first, offered, usable, errno, meaning}]} | null
    matrix: [{memory, mode, ok, status, errno, error, fix, ioctls_mask, ioctls: [names],
              failing_ioctls: [names], failing: {name: errno}, untested_ioctls: {name: why}}]
    hugepages: {default_size_kb, mounts, pools: [{size_kb, nr, free, reserved, surplus,
                overcommit, default}]}
    """
    ctx = report.access.context
    api = report.api
    requirements = [{"name": r.requirement.text, "kind": r.requirement.kind,
                     "key": r.requirement.key, "met": r.met, "reason": r.reason}
                    for r in results or []]
    return {
        "schema_version": SCHEMA_VERSION,
        "kernel": {"release": report.kernel.release, "machine": report.kernel.machine,
                   "config": report.kernel.config},
        "access": {
            "usable": report.access.usable, "uid": ctx.uid, "euid": ctx.euid,
            "cap_sys_ptrace": ctx.cap_sys_ptrace, "initial_userns": ctx.initial_userns,
            "unprivileged_userfaultfd": ctx.sysctl, "seccomp": ctx.seccomp,
            "seccomp_filters": ctx.seccomp_filters,
            "dev_userfaultfd": {"exists": ctx.dev.exists, "mode": ctx.dev.mode,
                                "uid": ctx.dev.uid, "gid": ctx.dev.gid,
                                "accessible": ctx.dev.accessible},
            "methods": [{"name": m.name, "ok": m.ok, "errno": m.errno, "cause": m.cause or None,
                         "fix": m.fix or None, "kernel_faults": m.kernel_faults}
                        for m in report.access.methods],
        },
        "api": None if api is None else {
            "method": api.method, "features_mask": api.features_mask,
            "ioctls_mask": api.ioctls_mask, "ioctls": abi.ioctl_names(api.ioctls_mask),
            "features": [{"name": f.name, "bit": f.bit, "first": f.first, "offered": f.offered,
                          "usable": f.usable, "errno": f.errno, "meaning": f.meaning}
                         for f in api.features],
        },
        "matrix": [{"memory": c.memory, "mode": c.mode, "ok": c.ok, "status": c.status,
                    "errno": c.errno, "error": c.error, "fix": c.fix,
                    "ioctls_mask": c.ioctls_mask, "ioctls": c.ioctls,
                    "failing_ioctls": sorted(c.failing_ioctls), "failing": c.failing_ioctls,
                    "untested_ioctls": c.untested_ioctls}
                   for c in report.matrix],
        "hugepages": {
            "default_size_kb": report.hugepages.default_size_kb,
            "mounts": report.hugepages.mounts,
            "pools": [{"size_kb": p.size_kb, "nr": p.nr, "free": p.free, "reserved": p.reserved,
                       "surplus": p.surplus, "overcommit": p.overcommit, "default": p.default}
                      for p in report.hugepages.pools],
        },
        "requirements": requirements,
    }


# ----- --require --------------------------------------------------------------------------------

class RequirementError(ValueError):
    """An unknown requirement name; the message carries a suggestion."""


@dataclass(frozen=True)
class Requirement:
    """A --require: a feature, a matrix cell or an ioctl."""

    kind: str  # "feature", "cell" or "ioctl"
    key: str  # feature key, "mode:memory", or ioctl key
    text: str  # as the user wrote it


@dataclass(frozen=True)
class RequirementResult:
    """A --require checked against the report."""

    requirement: Requirement
    met: bool
    reason: str


def _all_names() -> list[str]:
    cells = [f"{mode}:{mt.name}" for mode in abi.MATRIX_MODES for mt in memtypes.MEMORY_TYPES]
    return [f.key for f in abi.FEATURES] + cells + [i.key for i in abi.IOCTLS]


def parse_requirement(text: str) -> Requirement:
    name = text.strip()
    if ":" in name:
        mode, _, memory = name.lower().partition(":")
        if mode in memtypes.MEMORY_BY_NAME and memory in abi.MATRIX_MODES:
            mode, memory = memory, mode  # "hugetlb:minor" reads the same
        if mode in abi.MATRIX_MODES and memory in memtypes.MEMORY_BY_NAME:
            return Requirement("cell", f"{mode}:{memory}", text)
    else:
        feature = abi.normalize_feature(name)
        if feature:
            return Requirement("feature", feature, text)
        ioctl = abi.normalize_ioctl(name)
        if ioctl:
            return Requirement("ioctl", ioctl, text)
    import difflib  # only for a name nobody knows: not paid on every probe

    close = difflib.get_close_matches(name.lower().removeprefix("uffd_feature_")
                                      .removeprefix("uffdio_"), _all_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else (
        "; expected a feature (minor_hugetlbfs), a cell (minor:hugetlb) or an ioctl (continue)")
    raise RequirementError(f"unknown requirement {text!r}{hint}")


def check_requirements(report: ProbeReport, requirements: list[Requirement]
                       ) -> list[RequirementResult]:
    out = []
    for req in requirements:
        out.append(RequirementResult(req, *_check(report, req)))
    return out


def _check(report: ProbeReport, req: Requirement) -> tuple[bool, str]:
    if report.api is None:
        cause, _ = report.access.summary()
        return False, f"no userfaultfd can be opened: {cause}"
    if req.kind == "feature":
        f = report.feature(req.key)
        if f is None or not f.offered:
            first = abi.FEATURE_BY_KEY[req.key].first
            return False, f"not offered by kernel {report.kernel.release} (added in {first})"
        if not f.usable:
            return False, (f"offered but not usable by this process ({f.errno}: "
                           f"{abi.errno_meaning('api', _errno_value(f.errno))})")
        return True, "offered and usable"
    if req.kind == "cell":
        mode, memory = req.key.split(":")
        cell = report.cell(mode, memory)
        if cell is None:
            return False, "not probed"
        if cell.ok:
            return True, "registers"
        return False, f"{cell.error} ({cell.errno})" + (f"; fix: {cell.fix}" if cell.fix else "")
    ioctl = abi.IOCTL_BY_KEY[req.key]
    if not ioctl.range_ioctl:
        ok = bool(report.api.ioctls_mask & ioctl.mask) or req.key == "register"
        return ok, "offered by UFFDIO_API" if ok else "not offered by UFFDIO_API"
    works = [c for c in report.matrix if req.key in c.working_ioctls]
    if works:
        where = ", ".join(sorted({c.memory for c in works}))
        return True, f"works on {where}"
    listed = [c for c in report.matrix if req.key in c.ioctls]
    if listed:
        return False, "listed by UFFDIO_REGISTER but every try failed"
    return False, f"no registration offers UFFDIO_{ioctl.name} (added in {ioctl.first})"


def _errno_value(name: str | None) -> int:
    return int(getattr(_errno, name or "", 0) or 0)


def hugetlb_demo_outlook(report: ProbeReport) -> str:
    """What the huge page state means for `uffdctl demo minor`, in one line."""
    pool = report.hugepages.pool()
    if pool is None:
        return "no huge page pool: `demo minor` needs --backing shmem"
    if pool.available > 0:
        return f"{pool.available} free {pool.size_kb} kB pages: `demo minor` can run as is"
    if os.geteuid() == 0:
        return ("no free huge pages: `demo minor` reserves what it needs as root and gives it "
                "back afterwards")
    return ("no free huge pages: as root, `sysctl vm.nr_hugepages=N`; or run `demo minor "
            "--backing shmem`")


def facts_document(check_ioctls: bool = True) -> dict[str, Any]:
    """The probe's JSON, or, when even the probe cannot run, an object saying why: for
    consumers (Ansible facts) that must always get a document."""
    try:
        return report_to_json(run_probe(check_ioctls=check_ioctls))
    except errors.UffdctlError as exc:
        return {"error": exc.line(), "access": {"usable": False}}
