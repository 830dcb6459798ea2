"""The userfaultfd kernel ABI as plain data.

Everything here is transcribed from include/uapi/linux/userfaultfd.h, mm/userfaultfd.c and
fs/proc/task_mmu.c (see shared/reference/userfaultfd-facts.md).  Nothing in this module
talks to the kernel; the syscall layer (uffd.py) and the logic modules read these tables.

Kernel releases are strings ("5.13"); "7.3-rc" marks items present only in a release
candidate.  Bits a newer kernel adds that this table does not know are kept and named
"bit N" by the decoders, never dropped.
"""

from __future__ import annotations

import platform
from typing import NamedTuple

UFFD_API = 0xAA
UFFDIO_TYPE = 0xAA

# userfaultfd(2) flags.  O_CLOEXEC/O_NONBLOCK are the asm-generic values, which x86_64
# and aarch64 share.
O_CLOEXEC = 0o2000000
O_NONBLOCK = 0o4000
UFFD_USER_MODE_ONLY = 1

# The syscall has no glibc wrapper; its number differs per architecture.
SYSCALL_NR = {
    "x86_64": 323,
    "i386": 374,
    "i686": 374,
    "aarch64": 282,
    "arm64": 282,
    "riscv64": 282,
    "loongarch64": 282,
    "ppc64le": 364,
    "ppc64": 364,
    "s390x": 355,
}
MEMFD_CREATE_NR = {
    "x86_64": 319,
    "aarch64": 279,
    "arm64": 279,
    "riscv64": 279,
    "loongarch64": 279,
    "ppc64le": 360,
    "ppc64": 360,
    "s390x": 350,
}

DEV_USERFAULTFD = "/dev/userfaultfd"
SYSCTL_UNPRIVILEGED = "/proc/sys/vm/unprivileged_userfaultfd"
CAP_SYS_PTRACE = 19

# The kernel keeps this bit in the context's feature word once UFFDIO_API succeeded
# (5.15+).  It is never a requestable feature, but fdinfo shows it.
UFFD_FEATURE_INITIALIZED = 1 << 31


def machine() -> str:
    return platform.machine()


class Feature(NamedTuple):
    """A UFFD_FEATURE_* bit of struct uffdio_api.features.

    The ABI's records are named tuples, not dataclasses: each dataclass is built with
    several exec() calls, and start-up (`probe --json`) pays for every one."""

    bit: int
    name: str  # without the UFFD_FEATURE_ prefix
    first: str
    meaning: str
    concerns: str

    @property
    def mask(self) -> int:
        return 1 << self.bit

    @property
    def key(self) -> str:
        """The lower-case name used in JSON, --require and CI outputs."""
        return self.name.lower()

    @property
    def uapi_name(self) -> str:
        return "UFFD_FEATURE_" + self.name


FEATURES: tuple[Feature, ...] = (
    Feature(0, "PAGEFAULT_FLAG_WP", "5.7", "write-protect faults can be tracked", "wp, anonymous"),
    Feature(1, "EVENT_FORK", "4.11",
            "registrations follow fork() and a new uffd is sent in UFFD_EVENT_FORK; "
            "requesting it needs CAP_SYS_PTRACE", "non-cooperative"),
    Feature(2, "EVENT_REMAP", "4.11",
            "mremap() of a registered area sends UFFD_EVENT_REMAP", "non-cooperative"),
    Feature(3, "EVENT_REMOVE", "4.11",
            "madvise(MADV_DONTNEED/MADV_REMOVE) sends UFFD_EVENT_REMOVE", "non-cooperative"),
    Feature(4, "MISSING_HUGETLBFS", "4.11", "missing mode works on hugetlbfs", "missing, hugetlb"),
    Feature(5, "MISSING_SHMEM", "4.11", "missing mode works on shmem", "missing, shmem"),
    Feature(6, "EVENT_UNMAP", "4.11",
            "munmap() of a registered area sends UFFD_EVENT_UNMAP", "non-cooperative"),
    Feature(7, "SIGBUS", "4.14",
            "no fault messages: a faulting access gets SIGBUS instead", "all modes"),
    Feature(8, "THREAD_ID", "4.14", "fault messages carry the faulting thread id", "all faults"),
    Feature(9, "MINOR_HUGETLBFS", "5.13",
            "minor mode and UFFDIO_CONTINUE on hugetlbfs", "minor, hugetlb"),
    Feature(10, "MINOR_SHMEM", "5.14", "minor mode and UFFDIO_CONTINUE on shmem", "minor, shmem"),
    Feature(11, "EXACT_ADDRESS", "5.18",
            "fault messages carry the exact address, not the page start", "all faults"),
    Feature(12, "WP_HUGETLBFS_SHMEM", "5.19",
            "write-protect mode works on shmem and hugetlbfs", "wp, shmem, hugetlb"),
    Feature(13, "WP_UNPOPULATED", "6.4",
            "write-protect also covers never-populated anonymous pages", "wp, anonymous"),
    Feature(14, "POISON", "6.6", "UFFDIO_POISON exists", "missing, minor"),
    Feature(15, "WP_ASYNC", "6.7",
            "write-protect faults are resolved by the kernel without a message; "
            "read the result with PAGEMAP_SCAN", "wp, any memory"),
    Feature(16, "MOVE", "6.8", "UFFDIO_MOVE exists", "anonymous private"),
    Feature(17, "RWP", "7.3-rc",
            "read-write-protect tracking (UFFDIO_REGISTER_MODE_RWP, UFFDIO_RWPROTECT)",
            "rwp, anon, shmem, hugetlb"),
    Feature(18, "RWP_ASYNC", "7.3-rc",
            "read-write-protect faults resolved in place without a message", "rwp"),
)
FEATURE_BY_BIT = {f.bit: f for f in FEATURES}
FEATURE_BY_KEY = {f.key: f for f in FEATURES}


class Ioctl(NamedTuple):
    """A UFFDIO_* ioctl: its number and argument struct."""

    name: str  # without the UFFDIO_ prefix, lower case is the key
    nr: int
    direction: str  # "_IO", "_IOR", "_IOW", "_IOWR"
    size: int  # bytes of the argument struct
    first: str
    modes: tuple[tuple[str, int, str], ...] = ()  # (name, value, first)
    range_ioctl: bool = True  # offered per range by UFFDIO_REGISTER, not per fd by UFFDIO_API
    meaning: str = ""

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def mask(self) -> int:
        return 1 << self.nr

    @property
    def request(self) -> int:
        return ioc(self.direction, UFFDIO_TYPE, self.nr, self.size)

    @property
    def uapi_name(self) -> str:
        return "UFFDIO_" + self.name


_IOC_DIR = {"_IO": 0, "_IOW": 1, "_IOR": 2, "_IOWR": 3}


def ioc(direction: str, typ: int, nr: int, size: int) -> int:
    """The generic _IOC encoding (x86_64, arm64, riscv; not powerpc/mips/sparc/alpha)."""
    return (_IOC_DIR[direction] << 30) | (size << 16) | (typ << 8) | nr


# The struct sizes are part of the request number; all fields are u64 (s64 for results).
IOCTLS: tuple[Ioctl, ...] = (
    Ioctl("REGISTER", 0x00, "_IOWR", 32, "4.3", range_ioctl=False,
          meaning="register a range in missing/wp/minor mode"),
    Ioctl("UNREGISTER", 0x01, "_IOR", 16, "4.3", range_ioctl=False,
          meaning="unregister a range"),
    Ioctl("WAKE", 0x02, "_IOR", 16, "4.3", meaning="wake threads waiting on a range"),
    Ioctl("COPY", 0x03, "_IOWR", 40, "4.3",
          (("DONTWAKE", 1 << 0, "4.3"), ("WP", 1 << 1, "5.7")),
          meaning="resolve a missing fault by copying a page in"),
    Ioctl("ZEROPAGE", 0x04, "_IOWR", 32, "4.3", (("DONTWAKE", 1 << 0, "4.3"),),
          meaning="resolve a missing fault with a zero page (not hugetlb)"),
    Ioctl("MOVE", 0x05, "_IOWR", 40, "6.8",
          (("DONTWAKE", 1 << 0, "6.8"), ("ALLOW_SRC_HOLES", 1 << 1, "6.8")),
          meaning="resolve a missing fault by moving pages (anonymous private only)"),
    Ioctl("WRITEPROTECT", 0x06, "_IOWR", 24, "5.7",
          (("WP", 1 << 0, "5.7"), ("DONTWAKE", 1 << 1, "5.7")),
          meaning="set or clear write protection on a range"),
    Ioctl("CONTINUE", 0x07, "_IOWR", 32, "5.13",
          (("DONTWAKE", 1 << 0, "5.13"), ("WP", 1 << 1, "6.4")),
          meaning="resolve a minor fault by mapping the page already in the page cache"),
    Ioctl("POISON", 0x08, "_IOWR", 32, "6.6", (("DONTWAKE", 1 << 0, "6.6"),),
          meaning="mark a range poisoned: accesses get SIGBUS"),
    Ioctl("RWPROTECT", 0x09, "_IOWR", 24, "7.3-rc",
          (("RWP", 1 << 0, "7.3-rc"), ("DONTWAKE", 1 << 1, "7.3-rc")),
          meaning="set or clear read-write protection"),
    Ioctl("SET_MODE", 0x0A, "_IOW", 16, "7.3-rc", range_ioctl=False,
          meaning="toggle RWP_ASYNC at run time"),
    Ioctl("API", 0x3F, "_IOWR", 24, "4.3", range_ioctl=False,
          meaning="handshake: API version and features (once per fd)"),
)
IOCTL_BY_NR = {i.nr: i for i in IOCTLS}
IOCTL_BY_KEY = {i.key: i for i in IOCTLS}
# The resolving ioctls UFFDIO_REGISTER may hand back for a range.
RANGE_IOCTLS = tuple(i for i in IOCTLS if i.range_ioctl)

# On /dev/userfaultfd (6.1): the argument is the flags value itself.
USERFAULTFD_IOC_NEW = ioc("_IO", UFFDIO_TYPE, 0x00, 0)
# UFFDIO_CONTINUE was _IOR in 5.13-rc1..rc7 only; no release uses this value.
UFFDIO_CONTINUE_RC_ONLY = ioc("_IOR", UFFDIO_TYPE, 0x07, 32)


class RegisterMode(NamedTuple):
    """A UFFDIO_REGISTER_MODE_* bit and the VM flag it sets on the registered VMA."""

    name: str  # lower case: the name used in the matrix and on the command line
    value: int
    first: str
    vm_flag: str
    mnemonic: str
    fault_flag: str  # the pagefault flag a fault in this mode carries ("" for missing)


REGISTER_MODES: tuple[RegisterMode, ...] = (
    RegisterMode("missing", 1 << 0, "4.3", "VM_UFFD_MISSING", "um", ""),
    RegisterMode("wp", 1 << 1, "5.7", "VM_UFFD_WP", "uw", "WP"),
    RegisterMode("minor", 1 << 2, "5.13", "VM_UFFD_MINOR", "ui", "MINOR"),
    RegisterMode("rwp", 1 << 3, "7.3-rc", "VM_UFFD_RWP", "ur", "RWP"),
)
MODE_BY_NAME = {m.name: m for m in REGISTER_MODES}
MODE_BY_MNEMONIC = {m.mnemonic: m for m in REGISTER_MODES}

# The mode combinations the probe's matrix tries, in the order people read them.
MATRIX_MODES: tuple[str, ...] = (
    "missing", "wp", "minor", "missing+wp", "missing+minor", "wp+minor", "missing+wp+minor",
)


def mode_value(combo: str) -> int:
    """'missing+wp' -> UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP."""
    value = 0
    for part in combo.split("+"):
        value |= MODE_BY_NAME[part].value
    return value


# struct uffd_msg: 32 bytes, packed.
UFFD_MSG_SIZE = 32


class Event(NamedTuple):
    """A UFFD_EVENT_* code of struct uffd_msg."""

    name: str
    code: int
    first: str
    payload: str


EVENTS: tuple[Event, ...] = (
    Event("PAGEFAULT", 0x12, "4.3", "flags u64 @8, address u64 @16, ptid u32 @24"),
    Event("FORK", 0x13, "4.11", "ufd u32 @8: a new uffd already installed in the reader"),
    Event("REMAP", 0x14, "4.11", "from u64 @8, to u64 @16, len u64 @24"),
    Event("REMOVE", 0x15, "4.11", "start u64 @8, end u64 @16"),
    Event("UNMAP", 0x16, "4.11", "start u64 @8, end u64 @16"),
)
EVENT_BY_CODE = {e.code: e for e in EVENTS}
UFFD_EVENT_PAGEFAULT = 0x12
UFFD_EVENT_FORK = 0x13
UFFD_EVENT_REMAP = 0x14
UFFD_EVENT_REMOVE = 0x15
UFFD_EVENT_UNMAP = 0x16

# pagefault.flags
UFFD_PAGEFAULT_FLAG_WRITE = 1 << 0
UFFD_PAGEFAULT_FLAG_WP = 1 << 1
UFFD_PAGEFAULT_FLAG_MINOR = 1 << 2
UFFD_PAGEFAULT_FLAG_RWP = 1 << 3
PAGEFAULT_FLAGS: tuple[tuple[str, int, str], ...] = (
    ("WRITE", UFFD_PAGEFAULT_FLAG_WRITE, "4.3"),
    ("WP", UFFD_PAGEFAULT_FLAG_WP, "5.7"),
    ("MINOR", UFFD_PAGEFAULT_FLAG_MINOR, "5.13"),
    ("RWP", UFFD_PAGEFAULT_FLAG_RWP, "7.3-rc"),
)

# Mode flags of the resolving ioctls, by name, for the syscall layer.
UFFDIO_COPY_MODE_DONTWAKE = 1 << 0
UFFDIO_COPY_MODE_WP = 1 << 1
UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1 << 0
UFFDIO_MOVE_MODE_DONTWAKE = 1 << 0
UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES = 1 << 1
UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0
UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 1 << 1
UFFDIO_CONTINUE_MODE_DONTWAKE = 1 << 0
UFFDIO_CONTINUE_MODE_WP = 1 << 1
UFFDIO_POISON_MODE_DONTWAKE = 1 << 0


class VmFlag(NamedTuple):
    """A two-letter VmFlags mnemonic of /proc/PID/smaps (fs/proc/task_mmu.c)."""

    mnemonic: str
    flag: str
    bit: int  # 7.2's bit number on 64-bit; -1 where it varies by arch
    meaning: str
    note: str = ""


# /proc/PID/smaps "VmFlags:" mnemonics (fs/proc/task_mmu.c show_smap_vma_flags()).
# The kernel warns that mnemonics come and go between releases: unknown ones are kept raw.
VMFLAGS: tuple[VmFlag, ...] = (
    VmFlag("rd", "VM_READ", 0, "readable"),
    VmFlag("wr", "VM_WRITE", 1, "writable"),
    VmFlag("ex", "VM_EXEC", 2, "executable"),
    VmFlag("sh", "VM_SHARED", 3, "shared"),
    VmFlag("mr", "VM_MAYREAD", 4, "may read"),
    VmFlag("mw", "VM_MAYWRITE", 5, "may write"),
    VmFlag("me", "VM_MAYEXEC", 6, "may execute"),
    VmFlag("ms", "VM_MAYSHARE", 7, "may share"),
    VmFlag("gd", "VM_GROWSDOWN", 8, "stack grows down"),
    VmFlag("um", "VM_UFFD_MISSING", 9, "userfaultfd missing-page tracking", "4.3"),
    VmFlag("pf", "VM_PFNMAP", 10, "pure PFN range"),
    VmFlag("gu", "VM_MAYBE_GUARD", 11, "may contain guard regions"),
    VmFlag("dw", "VM_DENYWRITE", 11, "writes to the file are denied", "gone by 6.1"),
    VmFlag("uw", "VM_UFFD_WP", 12, "userfaultfd write-protect tracking", "4.3"),
    VmFlag("lo", "VM_LOCKED", 13, "pages are locked in memory"),
    VmFlag("io", "VM_IO", 14, "memory-mapped I/O"),
    VmFlag("sr", "VM_SEQ_READ", 15, "sequential-read advice"),
    VmFlag("rr", "VM_RAND_READ", 16, "random-read advice"),
    VmFlag("dc", "VM_DONTCOPY", 17, "not copied on fork"),
    VmFlag("de", "VM_DONTEXPAND", 18, "cannot grow with mremap"),
    VmFlag("lf", "VM_LOCKONFAULT", 19, "lock pages as they fault in"),
    VmFlag("ac", "VM_ACCOUNT", 20, "memory is accounted"),
    VmFlag("nr", "VM_NORESERVE", 21, "no swap space reserved"),
    VmFlag("ht", "VM_HUGETLB", 22, "hugetlb pages"),
    VmFlag("sf", "VM_SYNC", 23, "synchronous page faults"),
    VmFlag("ar", "VM_ARCH_1", 24, "architecture-specific flag"),
    VmFlag("bt", "VM_ARM64_BTI", 24, "arm64 branch target identification"),
    VmFlag("wf", "VM_WIPEONFORK", 25, "wiped in the child on fork"),
    VmFlag("dd", "VM_DONTDUMP", 26, "not in core dumps"),
    VmFlag("sd", "VM_SOFTDIRTY", 27, "soft-dirty"),
    VmFlag("mm", "VM_MIXEDMAP", 28, "mixed map"),
    VmFlag("hg", "VM_HUGEPAGE", 29, "MADV_HUGEPAGE advice"),
    VmFlag("nh", "VM_NOHUGEPAGE", 30, "MADV_NOHUGEPAGE advice"),
    VmFlag("mg", "VM_MERGEABLE", 31, "KSM may merge pages"),
    VmFlag("mt", "VM_MTE", 36, "arm64 MTE tags enabled"),
    VmFlag("ss", "VM_SHADOW_STACK", -1, "shadow stack / guarded control stack"),
    VmFlag("dp", "VM_DROPPABLE", 40, "always lazily freeable"),
    VmFlag("ui", "VM_UFFD_MINOR", 41, "userfaultfd minor-fault tracking", "5.13"),
    VmFlag("sl", "VM_SEALED", 42, "sealed with mseal()"),
    VmFlag("ur", "VM_UFFD_RWP", 43, "userfaultfd read-write-protect tracking", "7.3-rc"),
    VmFlag("??", "", -1, "a flag bit the kernel has no mnemonic for"),
)
VMFLAG_BY_MNEMONIC = {v.mnemonic: v for v in VMFLAGS}
# The mnemonics that mean "registered with a userfaultfd", mapped to the mode name.
UFFD_MNEMONICS = {m.mnemonic: m.name for m in REGISTER_MODES}

# fdinfo's "API:" third field is a build constant, not per fd or range (facts §6).
FDINFO_READLINK = "anon_inode:[userfaultfd]"


# ----- decoders: masks to names, unknown bits kept --------------------------------------


def bit_names(mask: int, names: dict[int, str]) -> list[str]:
    """Names of the set bits of ``mask``, lowest first; unknown bits become 'bit N'."""
    out = []
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            out.append(names.get(bit, f"bit {bit}"))
        bit += 1
    return out


def feature_names(mask: int) -> list[str]:
    """Feature keys of ``mask`` ('minor_hugetlbfs', ...); bit 31 is 'initialized'."""
    names = {f.bit: f.key for f in FEATURES}
    names[31] = "initialized"
    return bit_names(mask, names)


def ioctl_names(mask: int) -> list[str]:
    return bit_names(mask, {i.nr: i.key for i in IOCTLS})


def pagefault_flag_names(flags: int) -> list[str]:
    return bit_names(flags, {v.bit_length() - 1: n for n, v, _ in PAGEFAULT_FLAGS})


def fault_kind(flags: int) -> str:
    """'minor', 'wp', 'rwp' or 'missing': none of WP/MINOR/RWP set means a missing fault."""
    if flags & UFFD_PAGEFAULT_FLAG_MINOR:
        return "minor"
    if flags & UFFD_PAGEFAULT_FLAG_WP:
        return "wp"
    if flags & UFFD_PAGEFAULT_FLAG_RWP:
        return "rwp"
    return "missing"


def mode_names(value: int) -> list[str]:
    return bit_names(value, {m.value.bit_length() - 1: m.name for m in REGISTER_MODES})


def normalize_feature(name: str) -> str | None:
    """'MINOR_HUGETLBFS', 'minor_hugetlbfs' or 'UFFD_FEATURE_MINOR_HUGETLBFS' -> key."""
    key = name.strip().lower().replace("-", "_")
    if key.startswith("uffd_feature_"):
        key = key[len("uffd_feature_"):]
    return key if key in FEATURE_BY_KEY else None


def normalize_ioctl(name: str) -> str | None:
    """'continue', 'CONTINUE' or 'UFFDIO_CONTINUE' -> 'continue'."""
    key = name.strip().lower()
    if key.startswith("uffdio_"):
        key = key[len("uffdio_"):]
    return key if key in IOCTL_BY_KEY else None


def errno_meaning(step: str, err: int) -> str:
    """What an errno means at a given step, in the kernel's terms (facts §3, §5)."""
    import errno as e

    table: dict[tuple[str, int], str] = {
        ("userfaultfd", e.ENOSYS): "the kernel has no userfaultfd syscall (or a seccomp filter "
                                   "denies it)",
        ("userfaultfd", e.EPERM): "not allowed: vm.unprivileged_userfaultfd is 0 and the process "
                                  "lacks CAP_SYS_PTRACE",
        ("userfaultfd", e.EINVAL): "flags not supported by this kernel",
        ("open", e.ENOENT): "no /dev/userfaultfd (kernel older than 6.1, or no devtmpfs)",
        ("open", e.EACCES): "no permission to open /dev/userfaultfd",
        ("api", e.EINVAL): "feature not offered by this kernel, or UFFDIO_API already done",
        ("api", e.EPERM): "EVENT_FORK needs CAP_SYS_PTRACE",
        ("register", e.EINVAL): "this memory type does not support this mode",
        ("register", e.EPERM): "the mapping is not writable (no VM_MAYWRITE)",
        ("register", e.EBUSY): "the range is registered with another userfaultfd",
        ("register", e.ENOMEM): "no free huge pages",
        ("mmap", e.ENOMEM): "no free huge pages",
        ("continue", e.EEXIST): "the page is already mapped",
        ("continue", e.EFAULT): "no page in the page cache to map",
        ("move", e.EINVAL): "UFFDIO_MOVE works on anonymous private memory only",
        ("zeropage", e.EINVAL): "hugetlbfs has no zero page",
    }
    found = table.get((step, err))
    if found:
        return found
    import os

    return os.strerror(err)


# ----- /proc/PID/pagemap and PAGEMAP_SCAN (6.7) --------------------------------------------

PAGEMAP_ENTRY_SIZE = 8
PM_PFN_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_UFFD_WP = 1 << 57  # the PTE is uffd write-protected (5.14)
PM_GUARD_REGION = 1 << 58
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63

PM_SCAN_ARG_SIZE = 96
PAGE_REGION_SIZE = 24
PAGEMAP_SCAN = ioc("_IOWR", ord("f"), 16, PM_SCAN_ARG_SIZE)
PM_SCAN_WP_MATCHING = 1 << 0  # write-protect the pages that matched
PM_SCAN_CHECK_WPASYNC = 1 << 1  # EPERM at the first VMA that is not async-WP capable

PAGE_CATEGORIES: tuple[tuple[str, int, str], ...] = (
    ("WPALLOWED", 1 << 0, "6.7"),
    ("WRITTEN", 1 << 1, "6.7"),
    ("FILE", 1 << 2, "6.7"),
    ("PRESENT", 1 << 3, "6.7"),
    ("SWAPPED", 1 << 4, "6.7"),
    ("PFNZERO", 1 << 5, "6.7"),
    ("HUGE", 1 << 6, "6.7"),
    ("SOFT_DIRTY", 1 << 7, "6.7"),
    ("GUARD", 1 << 8, "6.18"),  # fact sheet: "in 7.2"; 6.18 accepts it already
    ("ACCESSED", 1 << 9, "7.3-rc"),
)
PAGE_IS = {name: value for name, value, _ in PAGE_CATEGORIES}


def page_category_names(mask: int) -> list[str]:
    return bit_names(mask, {v.bit_length() - 1: n for n, v, _ in PAGE_CATEGORIES})
