"""The userfaultfd kernel ABI as plain data.

Everything here is transcribed from the kernel: include/uapi/linux/userfaultfd.h,
fs/userfaultfd.c (mm/userfaultfd.c from 6.13 on), include/linux/userfaultfd_k.h and
fs/proc/task_mmu.c.  Nothing in this module talks to the kernel; the syscall layer (uffd.py)
and the logic modules read these tables.  Each fact lives in one table here: what each mode
needs on each memory type (MODE_SUPPORT), why the ioctls UFFDIO_REGISTER hands back differ
between memory types (IOCTL_DIFFERENCES), the ways to open a userfaultfd (OPEN_METHODS), the
Kconfig symbols that gate features and the release each architecture gained them in
(KCONFIG_GATES: a feature's own release is x86_64's), the features, ioctls, register modes
and VmFlags; the columns and lists elsewhere derive from them.

Kernel releases are strings ("5.13"); "7.3-rc" marks items present only in a release
candidate.  Bits a newer kernel adds that this table does not know are kept and named
"bit_N" by the decoders, never dropped.
"""

from __future__ import annotations

import os

from .records import NamedTuple

UFFD_API = 0xAA
UFFDIO_TYPE = 0xAA

# userfaultfd(2) flags.  O_CLOEXEC/O_NONBLOCK are the asm-generic values, which x86_64
# and aarch64 share.
O_CLOEXEC = 0o2000000
O_NONBLOCK = 0o4000
UFFD_USER_MODE_ONLY = 1

# The syscall has no glibc wrapper; its number differs per architecture
# (arch/x86/entry/syscalls/syscall_64.tbl, syscall_32.tbl, include/uapi/asm-generic/unistd.h).
# Only architectures with the generic _IOC encoding and little-endian structs are listed:
# powerpc, mips, sparc and alpha encode ioctl directions and sizes differently, and s390x and
# big-endian powerpc store the u64 fields the other way round.  uffd.py refuses the others by
# name rather than sending them wrong request numbers.
SYSCALL_NR = {
    "x86_64": 323,
    "i386": 374,
    "i686": 374,
    "aarch64": 282,
    "arm64": 282,
    "riscv64": 282,
    "loongarch64": 282,
}

DEV_USERFAULTFD = "/dev/userfaultfd"
SYSCTL_UNPRIVILEGED = "/proc/sys/vm/unprivileged_userfaultfd"
CAP_SYS_PTRACE = 19

# The kernel keeps this bit in the context's feature word once UFFDIO_API succeeded
# (5.15+).  It is never a requestable feature, but fdinfo shows it.
UFFD_FEATURE_INITIALIZED = 1 << 31


# The running kernel's architecture and release, as uname(2) gives them (the platform module
# says the same, for 3 ms of start-up: benchmarks/startup.py).
def machine() -> str:
    return os.uname().machine


def release() -> str:
    return os.uname().release


class OpenMethod(NamedTuple):
    """A way to open a userfaultfd (fs/userfaultfd.c: new_userfaultfd(), userfaultfd_dev_ioctl()).

    ``kernel_faults``: whether faults raised by the kernel on the process's behalf (a syscall
    reading registered memory, KVM, vhost, O_DIRECT) are handled.  With UFFD_USER_MODE_ONLY
    they are not: handle_userfault() fails them (the syscall gets EFAULT), which is why QEMU
    postcopy and Firecracker need one of the other two."""

    name: str
    first: str
    kernel_faults: bool
    device: bool  # USERFAULTFD_IOC_NEW on /dev/userfaultfd instead of the syscall
    flags: int  # flags added to O_CLOEXEC/O_NONBLOCK


# In order of preference: full power first, and the device (6.1, where its file mode is the
# only check) before the flag that gives up kernel-mode faults (5.11, fs/userfaultfd.c
# new_userfaultfd()).
OPEN_METHODS: tuple[OpenMethod, ...] = (
    OpenMethod("syscall", "4.3", True, False, 0),
    OpenMethod("/dev/userfaultfd", "6.1", True, True, 0),
    OpenMethod("syscall+user-mode-only", "5.11", False, False, UFFD_USER_MODE_ONLY),
)
OPEN_METHOD_BY_NAME = {m.name: m for m in OPEN_METHODS}


class Feature(NamedTuple):
    """A UFFD_FEATURE_* bit of struct uffdio_api.features.

    The ABI's records are named tuples, not dataclasses: each dataclass is built with
    several exec() calls, and start-up (`probe --json`) pays for every one."""

    bit: int
    name: str  # without the UFFD_FEATURE_ prefix
    first: str
    meaning: str
    concerns: str
    # The Kconfig symbol without which userfaultfd_api() leaves the bit out of what it offers
    # (fs/userfaultfd.c; architectures select the HAVE_ARCH ones in arch/*/Kconfig).
    kconfig: str = ""

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


_ARCH_WP = "CONFIG_HAVE_ARCH_USERFAULTFD_WP"  # per architecture: KCONFIG_GATES below
_ARCH_MINOR = "CONFIG_HAVE_ARCH_USERFAULTFD_MINOR"  # per architecture: KCONFIG_GATES below
_WP_MARKER = "CONFIG_PTE_MARKER_UFFD_WP"  # PTE markers: WP on shmem and hugetlbfs (5.19)
_RWP = "CONFIG_USERFAULTFD_RWP"


# ----- what depends on the architecture ------------------------------------------------------
# A feature gated by a HAVE_ARCH_* symbol exists only where the architecture selects that
# symbol in arch/*/Kconfig, from the release that added the select: the release column of
# FEATURES (and MODE_SUPPORT) is the first release anywhere, which is x86_64's.  These tables
# say, per architecture, where it came later or never, with the commit.

def kernel_arch(machine: str) -> str:
    """The kernel's name of the architecture os.uname().machine reports (arch/*/): aarch64 is
    arm64, ppc64le powerpc, s390x s390; i386/i686 stay apart from x86_64, since the x86
    selects below are `if X86_64`."""
    return {"aarch64": "arm64", "arm64": "arm64", "ppc64le": "powerpc", "ppc64": "powerpc",
            "s390x": "s390", "i686": "i386", "i586": "i386"}.get(machine, machine)


class ArchFirst(NamedTuple):
    """When one architecture first selects a HAVE_ARCH symbol.

    ``first`` None: no release selects it (as far as ``source`` goes).  ``commit``: the hash
    and title that brought the select ("" where none does).  ``verified``: the select was read
    in the commit (the patch as merged, and the pull request that took it into that release);
    False: taken from the fact sheet or the lists, not from the kernel source.
    ``condition``: what the running machine needs besides (riscv: a CPU extension, checked at
    boot)."""

    arch: str  # a kernel_arch() name
    first: str | None
    commit: str
    source: str
    verified: bool = True
    condition: str = ""


class KconfigGate(NamedTuple):
    """A Kconfig symbol without which userfaultfd_api() leaves features out of its answer
    (fs/userfaultfd.c; mm/userfaultfd.c from 6.13 on).

    ``kind``: "arch" for a HAVE_ARCH symbol an architecture selects (no user can set it),
    "option" for one a kernel's configuration chooses, "derived" for a def_bool that follows
    from others.  ``depends_on``: the symbol it needs (PTE markers need the uffd-wp PTE bit).
    ``filtered_from``: the release from which userfaultfd_api() drops the features when the
    symbol is unset; before it, the kernel offered them on every architecture (and a
    registration then silently did nothing there)."""

    symbol: str
    kind: str
    support: str  # what it brings, as a cause names it: "userfaultfd write-protect"
    first: str  # the release that added the symbol
    source: str
    depends_on: str = ""
    arches: tuple[ArchFirst, ...] = ()
    filtered_from: str = ""
    filtered_by: str = ""  # the commit that made userfaultfd_api() filter on it, if later


_X86_WP = '5a281062af1d "userfaultfd: wp: add WP pagetable tracking to x86"'
_X86_WP_SOURCE = ("5.7: arch/x86/Kconfig selects HAVE_ARCH_USERFAULTFD_WP if X86_64 && "
                  "USERFAULTFD (the `X86_64 &&` from \"mm/userfaultfd: Disable userfaultfd-wp "
                  "on x86_32\", posted 2020-04-13 as a fix of 5a281062af1d)")
_MINOR = '7677f7fd8be7 "userfaultfd: add minor fault registration mode"'
_MINOR_SOURCE = ("5.13: arch/x86/Kconfig selects HAVE_ARCH_USERFAULTFD_MINOR if X86_64 && "
                 "USERFAULTFD, arch/arm64/Kconfig if USERFAULTFD (64-bit only: VM_UFFD_MINOR "
                 "needs a high VMA flag bit)")
_NOT_FOUND = "no select of it found in arch/{}/Kconfig"

KCONFIG_GATES: tuple[KconfigGate, ...] = (
    KconfigGate(
        _ARCH_WP, "arch", "userfaultfd write-protect", "5.7",
        "a uffd-wp bit in the architecture's page table entries; userfaultfd_api() clears "
        "PAGEFAULT_FLAG_WP without it and userfaultfd_register() refuses MODE_WP",
        arches=(
            ArchFirst("x86_64", "5.7", _X86_WP, _X86_WP_SOURCE),
            ArchFirst("i386", None, "", _X86_WP_SOURCE),
            ArchFirst("arm64", "6.10", '5b32510af77b "arm64/mm: Add uffd write-protect support"',
                      "6.10 (the arm64 pull \"arm64 updates for 6.10\"): arch/arm64/Kconfig "
                      "selects HAVE_ARCH_USERFAULTFD_WP if USERFAULTFD; the bit is PTE bit 58"),
            # The fact sheet (userfaultfd-facts.md 3.1, 8.4) gives 7.2; the series was read on
            # the lists, not in the release that merged it.
            ArchFirst("riscv64", "7.2", '"riscv: mm: Add uffd write-protect support"',
                      "arch/riscv/Kconfig selects HAVE_ARCH_USERFAULTFD_WP if 64BIT && MMU && "
                      "USERFAULTFD && RISCV_ISA_SVRSW60T59B; pgtable_supports_uffd_wp() "
                      "checks the extension at boot", verified=False,
                      condition="a CPU with the Svrsw60t59b extension"),
            ArchFirst("loongarch64", None, "", _NOT_FOUND.format("loongarch"), verified=False),
            ArchFirst("powerpc", None, "", _NOT_FOUND.format("powerpc"), verified=False),
            ArchFirst("s390", None, "", _NOT_FOUND.format("s390"), verified=False),
        ),
        # 00b151f21f39 "mm/userfaultfd: fail uffd-wp registration if not supported" (5.14):
        # from it, userfaultfd_api() clears PAGEFAULT_FLAG_WP without the symbol.  From 5.7
        # to 5.13 every architecture was offered the bit and could register MODE_WP on
        # anonymous memory, where pte_mkuffd_wp() was a no-op: no write ever faulted.
        filtered_from="5.14",
        filtered_by='00b151f21f39 "mm/userfaultfd: fail uffd-wp registration if not supported"'),
    KconfigGate(
        _ARCH_MINOR, "arch", "userfaultfd minor faults", "5.13",
        "VM_UFFD_MINOR, a VMA flag bit only 64-bit architectures have free; "
        "userfaultfd_api() clears MINOR_HUGETLBFS and MINOR_SHMEM without it",
        arches=(
            ArchFirst("x86_64", "5.13", _MINOR, _MINOR_SOURCE),
            ArchFirst("i386", None, "", _MINOR_SOURCE),
            ArchFirst("arm64", "5.13", _MINOR, _MINOR_SOURCE),
            ArchFirst("riscv64", "6.5",
                      'a2492ca86c98 "riscv: Select HAVE_ARCH_USERFAULTFD_MINOR"',
                      "6.5 (\"RISC-V Patches for the 6.5 Merge Window, Part 2\"): if 64BIT && "
                      "USERFAULTFD"),
            ArchFirst("loongarch64", "6.9",
                      'f48ad26e5e57 "LoongArch: Select HAVE_ARCH_USERFAULTFD_MINOR in Kconfig"',
                      "6.9 (tag loongarch-6.9): if USERFAULTFD"),
            ArchFirst("powerpc", None, "", _NOT_FOUND.format("powerpc"), verified=False),
            ArchFirst("s390", None, "", _NOT_FOUND.format("s390"), verified=False),
        ),
        # The commit that added the symbol also filters the API (MINOR_SHMEM since 5.14).
        filtered_from="5.13"),
    KconfigGate(
        _WP_MARKER, "option", "uffd-wp PTE markers (write-protect on shmem and hugetlbfs)",
        "5.19",
        "mm/Kconfig: bool, default y, depends on HAVE_ARCH_USERFAULTFD_WP (5.19, the series "
        "of b1f9e876862d \"mm/uffd: enable write protection for shmem & hugetlbfs\"); "
        "userfaultfd_api() clears WP_HUGETLBFS_SHMEM, WP_UNPOPULATED and WP_ASYNC without it",
        # 5.19 clears WP_HUGETLBFS_SHMEM under #ifndef CONFIG_HAVE_ARCH_USERFAULTFD_WP
        # (b1f9e876862d), the 6.x source under #ifndef CONFIG_PTE_MARKER_UFFD_WP: either way
        # an architecture without the uffd-wp bit is never offered them.
        depends_on=_ARCH_WP, filtered_from="5.19"),
    KconfigGate(
        _RWP, "derived", "userfaultfd read-write-protect", "7.3-rc",
        "mm/Kconfig: def_bool y, depends on 64BIT && ARCH_HAS_PTE_PROTNONE && "
        "HAVE_ARCH_USERFAULTFD_WP (7.3-rc)", depends_on=_ARCH_WP, filtered_from="7.3-rc"),
)
KCONFIG_GATE_BY_SYMBOL = {g.symbol: g for g in KCONFIG_GATES}
# Not gated by any architecture, though one might expect it: UFFD_FEATURE_MOVE (6.8).
# userfaultfd_api() filters only the MINOR, WP and (7.3-rc) RWP bits, and move_pages()
# (mm/userfaultfd.c) takes the PMD path only where pmd_trans_huge_lock() finds a huge PMD,
# which without CONFIG_TRANSPARENT_HUGEPAGE it never does: MOVE needs CONFIG_USERFAULTFD only.


def gate_chain(symbol: str) -> list[KconfigGate]:
    """The gate of ``symbol`` and, after it, every gate it depends on (PTE markers, then the
    uffd-wp bit); empty for a symbol no table here knows."""
    chain: list[KconfigGate] = []
    while symbol in KCONFIG_GATE_BY_SYMBOL and all(g.symbol != symbol for g in chain):
        gate = KCONFIG_GATE_BY_SYMBOL[symbol]
        chain.append(gate)
        symbol = gate.depends_on
    return chain


def arch_gate(symbol: str) -> KconfigGate | None:
    """The architecture's own symbol behind ``symbol`` (a HAVE_ARCH one with per-architecture
    releases), or None when nothing behind it depends on the architecture."""
    return next((g for g in gate_chain(symbol) if g.arches), None)


def arch_first(symbol: str, arch: str) -> ArchFirst | None:
    """When ``arch`` (a kernel_arch() name) first selected the architecture's symbol behind
    ``symbol``; None when no table here says anything about that architecture."""
    gate = arch_gate(symbol)
    return next((a for a in gate.arches if a.arch == arch), None) if gate else None


def release_order(first: str) -> tuple[int, int, int]:
    """A sort key for release strings: a release candidate ("7.3-rc") before the release."""
    return (*release_tuple(first), 0 if first.endswith("-rc") else 1)


def first_on(key: str, arch: str) -> str | None:
    """The first release in which feature ``key`` exists on ``arch``: the later of the release
    that added it and the one in which the architecture selected its symbol.  None: no release
    has it there.  An architecture the tables do not list gets the feature's own release."""
    feat = FEATURE_BY_KEY[key]
    where = arch_first(feat.kconfig, arch) if feat.kconfig else None
    if where is None:
        return feat.first
    if where.first is None:
        return None
    return max(feat.first, where.first, key=release_order)


FEATURES: tuple[Feature, ...] = (
    Feature(0, "PAGEFAULT_FLAG_WP", "5.7", "write-protect faults can be tracked", "wp, anonymous",
            _ARCH_WP),
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
            "minor mode and UFFDIO_CONTINUE on hugetlbfs", "minor, hugetlb", _ARCH_MINOR),
    Feature(10, "MINOR_SHMEM", "5.14", "minor mode and UFFDIO_CONTINUE on shmem", "minor, shmem",
            _ARCH_MINOR),
    Feature(11, "EXACT_ADDRESS", "5.18",
            "fault messages carry the exact address, not the page start", "all faults"),
    Feature(12, "WP_HUGETLBFS_SHMEM", "5.19",
            "write-protect mode works on shmem and hugetlbfs", "wp, shmem, hugetlb", _WP_MARKER),
    Feature(13, "WP_UNPOPULATED", "6.4",
            "write-protect also covers never-populated anonymous pages", "wp, anonymous",
            _WP_MARKER),
    Feature(14, "POISON", "6.6", "UFFDIO_POISON exists", "missing, minor"),
    Feature(15, "WP_ASYNC", "6.7",
            "write-protect faults are resolved by the kernel without a message; "
            "read the result with PAGEMAP_SCAN", "wp, any memory", _WP_MARKER),
    Feature(16, "MOVE", "6.8", "UFFDIO_MOVE exists", "anonymous private"),
    Feature(17, "RWP", "7.3-rc",
            "read-write-protect tracking (UFFDIO_REGISTER_MODE_RWP, UFFDIO_RWPROTECT)",
            "rwp, anon, shmem, hugetlb", _RWP),
    Feature(18, "RWP_ASYNC", "7.3-rc",
            "read-write-protect faults resolved in place without a message", "rwp", _RWP),
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
    resolves: bool = False  # answers a fault (or protects a range); WAKE only wakes

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
          meaning="resolve a missing fault by copying a page in", resolves=True),
    Ioctl("ZEROPAGE", 0x04, "_IOWR", 32, "4.3", (("DONTWAKE", 1 << 0, "4.3"),),
          meaning="resolve a missing fault with a zero page (not hugetlb)", resolves=True),
    Ioctl("MOVE", 0x05, "_IOWR", 40, "6.8",
          (("DONTWAKE", 1 << 0, "6.8"), ("ALLOW_SRC_HOLES", 1 << 1, "6.8")), resolves=True,
          meaning="resolve a missing fault by moving pages (anonymous private only)"),
    Ioctl("WRITEPROTECT", 0x06, "_IOWR", 24, "5.7",
          (("WP", 1 << 0, "5.7"), ("DONTWAKE", 1 << 1, "5.7")),
          meaning="set or clear write protection on a range", resolves=True),
    Ioctl("CONTINUE", 0x07, "_IOWR", 32, "5.13",
          (("DONTWAKE", 1 << 0, "5.13"), ("WP", 1 << 1, "6.4")), resolves=True,
          meaning="resolve a minor fault by mapping the page already in the page cache"),
    Ioctl("POISON", 0x08, "_IOWR", 32, "6.6", (("DONTWAKE", 1 << 0, "6.6"),),
          meaning="mark a range poisoned: accesses get SIGBUS", resolves=True),
    Ioctl("RWPROTECT", 0x09, "_IOWR", 24, "7.3-rc",
          (("RWP", 1 << 0, "7.3-rc"), ("DONTWAKE", 1 << 1, "7.3-rc")),
          meaning="set or clear read-write protection", resolves=True),
    Ioctl("SET_MODE", 0x0A, "_IOW", 16, "7.3-rc", range_ioctl=False,
          meaning="toggle RWP_ASYNC at run time"),
    Ioctl("API", 0x3F, "_IOWR", 24, "4.3", range_ioctl=False,
          meaning="handshake: API version and features (once per fd)"),
)
IOCTL_BY_KEY = {i.key: i for i in IOCTLS}
# The ioctls that answer faults on a registered range: what CI formats report as usable.
RESOLVING_IOCTLS = tuple(i for i in IOCTLS if i.resolves)

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

# The mode combinations the probe's matrix tries, in the order people read them.
MATRIX_MODES: tuple[str, ...] = (
    "missing", "wp", "minor", "missing+wp", "missing+minor", "wp+minor", "missing+wp+minor",
)


class ModeSupport(NamedTuple):
    """What registering one mode on one kind of memory needs, as the kernel selftests keep it
    (tools/testing/selftests/mm/uffd-unit-tests.c: uffd_tests[] with .uffd_feature_required
    and .mem_targets).

    ``features``: what a program asks UFFDIO_API for before registering; a kernel that does
    not offer them cannot do the mode (the API filters what the architecture or the
    configuration lacks: userfaultfd_api() in fs/userfaultfd.c).  ``required``: the subset
    the kernel itself checks at UFFDIO_REGISTER (vma_can_userfault(): only WP_ASYNC, for WP on
    a plain file, 6.7); the rest is convention, so attributing a region to a descriptor by its
    features is evidence, never proof.  ``ioctls``: the resolving ioctls that really work on
    such a range (UFFDIO_REGISTER lists more: MOVE on shmem, which fails).  ``kconfig``: the
    symbol that gates it, which architectures select (arch/*/Kconfig)."""

    mode: str  # a RegisterMode name
    memory: str  # anon, shmem, hugetlb or file (what smaps and memtypes call the kind)
    first: str  # first release (x86_64) in which the registration works
    features: tuple[str, ...]
    ioctls: tuple[str, ...]
    kconfig: str = "CONFIG_USERFAULTFD"
    required: tuple[str, ...] = ()


MODE_SUPPORT: tuple[ModeSupport, ...] = (
    ModeSupport("missing", "anon", "4.3", (), ("wake", "copy", "zeropage", "move", "poison")),
    ModeSupport("missing", "shmem", "4.11", ("missing_shmem",),
                ("wake", "copy", "zeropage", "poison")),
    ModeSupport("missing", "hugetlb", "4.11", ("missing_hugetlbfs",), ("wake", "copy", "poison")),
    ModeSupport("wp", "anon", "5.7", ("pagefault_flag_wp",), ("wake", "writeprotect"), _ARCH_WP),
    ModeSupport("wp", "shmem", "5.19", ("pagefault_flag_wp", "wp_hugetlbfs_shmem"),
                ("wake", "writeprotect"), _WP_MARKER),
    ModeSupport("wp", "hugetlb", "5.19", ("pagefault_flag_wp", "wp_hugetlbfs_shmem"),
                ("wake", "writeprotect"), _WP_MARKER),
    ModeSupport("wp", "file", "6.7", ("pagefault_flag_wp", "wp_async"), ("writeprotect",),
                _WP_MARKER, required=("wp_async",)),
    ModeSupport("minor", "shmem", "5.14", ("minor_shmem",), ("wake", "continue"), _ARCH_MINOR),
    ModeSupport("minor", "hugetlb", "5.13", ("minor_hugetlbfs",), ("wake", "continue"),
                _ARCH_MINOR),
    ModeSupport("rwp", "anon", "7.3-rc", ("rwp",), ("wake", "rwprotect"), _RWP),
    ModeSupport("rwp", "shmem", "7.3-rc", ("rwp",), ("wake", "rwprotect"), _RWP),
    ModeSupport("rwp", "hugetlb", "7.3-rc", ("rwp",), ("wake", "rwprotect"), _RWP),
)


def mode_support(mode: str, memory: str) -> ModeSupport | None:
    """The row for one register mode on one memory kind; None: the kernel never allows it."""
    return next((r for r in MODE_SUPPORT if r.mode == mode and r.memory == memory), None)


def combo_support(combo: str, memory: str) -> list[ModeSupport] | None:
    """The rows of every mode of 'missing+wp' on ``memory``; None when one is never allowed."""
    rows = [mode_support(part, memory) for part in combo.split("+")]
    return None if any(r is None for r in rows) else [r for r in rows if r is not None]


def features_for(combo: str, memory: str) -> tuple[str, ...]:
    """The features a program requests before registering ``combo`` on ``memory``."""
    out: list[str] = []
    for row in combo_support(combo, memory) or ():
        out += [f for f in row.features if f not in out]
    return tuple(out)


def features_mask(keys: tuple[str, ...] | list[str]) -> int:
    mask = 0
    for key in keys:
        mask |= FEATURE_BY_KEY[key].mask
    return mask


def mode_value(combo: str) -> int:
    """'missing+wp' -> UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP."""
    value = 0
    for part in combo.split("+"):
        value |= MODE_BY_NAME[part].value
    return value


class IoctlDifference(NamedTuple):
    """Why one memory kind's UFFDIO_REGISTER ``ioctls`` differ from another's, for one ioctl.

    The kernel picks the mask in fs/userfaultfd.c userfaultfd_register(): it starts from
    UFFD_API_RANGE_IOCTLS_BASIC when any VMA of the range is hugetlb, else from
    UFFD_API_RANGE_IOCTLS, whatever the memory; then clears WRITEPROTECT without MODE_WP,
    CONTINUE without MODE_MINOR (and, 7.3-rc, RWPROTECT without MODE_RWP).  Nothing else
    looks at the memory, so a kind either lacks an ioctl (``missing``) or is handed one the
    ioctl itself then refuses (``refused``).

    ``memory`` "" is a rule of the register mode for every kind: it applies when the range
    was registered without ``needs_mode``.  A kind's row with ``needs_mode`` explains the
    absence by the kind being unable to register that mode at all (anon and MINOR).
    ``errno``: what the kernel answers when the ioctl is called on such a range anyway
    ("" where nothing is claimed).  ``until``: the release from which the row no longer
    holds on a kernel with the feature (a configuration may still keep it)."""

    ioctl: str  # an IOCTLS key
    memory: str  # anon, shmem or hugetlb (memtypes kinds); "" for any
    status: str  # "missing" or "refused"
    reason: str  # one line, in the kernel's terms
    first: str  # the release from which it is so
    source: str  # the kernel: commit, file, function
    needs_mode: str = ""  # the register mode that brings the ioctl (a REGISTER_MODES name)
    errno: str = ""
    until: str = ""


_WP_REGISTER = ("14819305e09f \"userfaultfd: wp: declare _UFFDIO_WRITEPROTECT conditionally\" "
                "(5.7): fs/userfaultfd.c userfaultfd_register() clears _UFFDIO_WRITEPROTECT "
                "without UFFDIO_REGISTER_MODE_WP; mm/userfaultfd.c mwriteprotect_range() "
                "answers ENOENT on a VMA without VM_UFFD_WP")
_CONTINUE_REGISTER = ("f619147104c8 \"userfaultfd: add UFFDIO_CONTINUE ioctl\" (5.13): "
                      "fs/userfaultfd.c userfaultfd_register() clears _UFFDIO_CONTINUE without "
                      "UFFDIO_REGISTER_MODE_MINOR")
_WP_MARKERS = ("b1f9e876862d \"mm/uffd: enable write protection for shmem & hugetlbfs\" "
               "(5.19): before it, and without CONFIG_PTE_MARKER_UFFD_WP, "
               "vma_can_userfault() refuses VM_UFFD_WP on a VMA that is not anonymous")
_MOVE = ("adef440691ba \"userfaultfd: UFFDIO_MOVE uABI\" (6.8): "
         "include/uapi/linux/userfaultfd.h adds _UFFDIO_MOVE to UFFD_API_RANGE_IOCTLS only; "
         "mm/userfaultfd.c move_pages() refuses a VM_SHARED VMA and validate_move_areas() a "
         "VMA that is not anonymous, both with EINVAL")

# Every way the ioctls UFFDIO_REGISTER hands back differ between memory kinds, and why.
# Read in the kernel source and seen on 6.18 (tests/test_ioctl_reasons.py registers each
# memory type for real and calls each ioctl the table says is refused).  POISON (6.6, commit
# fc71884a5f59) is in both the _BASIC and the full set, WAKE and COPY are in every set
# since hugetlb ranges registered (4.11): they never differ.  CONTINUE is only *listed* by
# mode: on 6.18 UFFDIO_CONTINUE maps a page-cache page in a shmem range registered MISSING
# or WP too, so that row claims no errno.
IOCTL_DIFFERENCES: tuple[IoctlDifference, ...] = (
    IoctlDifference("writeprotect", "", "missing",
                    "handed back only to a range registered in WP mode (5.7)", "5.7", _WP_REGISTER,
                    needs_mode="wp", errno="ENOENT"),
    IoctlDifference("continue", "", "missing",
                    "handed back only to a range registered in MINOR mode (5.13)", "5.13",
                    _CONTINUE_REGISTER, needs_mode="minor"),
    IoctlDifference("rwprotect", "", "missing",
                    "handed back only to a range registered in RWP mode (7.3-rc)", "7.3-rc",
                    "7.3-rc fs/userfaultfd.c userfaultfd_register() clears _UFFDIO_RWPROTECT "
                    "without UFFDIO_REGISTER_MODE_RWP", needs_mode="rwp"),
    IoctlDifference("continue", "anon", "missing",
                    "anonymous memory has no page cache for a minor fault to find, so it "
                    "cannot be registered in MINOR mode, which CONTINUE comes with (5.13)", "5.13",
                    "7677f7fd8be7 \"userfaultfd: add minor fault registration mode\" (5.13): "
                    "vma_can_userfault() allows VM_UFFD_MINOR on hugetlb (shmem from 5.14) "
                    "only; mm/userfaultfd.c mfill_atomic() answers EINVAL to CONTINUE on "
                    "anything but shmem and hugetlb; " + _CONTINUE_REGISTER,
                    needs_mode="minor", errno="EINVAL"),
    IoctlDifference("writeprotect", "shmem", "missing",
                    "WP on shmem needs uffd-wp PTE markers (WP_HUGETLBFS_SHMEM, 5.19, "
                    "CONFIG_PTE_MARKER_UFFD_WP): without them it cannot be registered in WP "
                    "mode", "5.7", _WP_MARKERS, needs_mode="wp", until="5.19"),
    IoctlDifference("writeprotect", "hugetlb", "missing",
                    "WP on hugetlbfs needs uffd-wp PTE markers (WP_HUGETLBFS_SHMEM, 5.19, "
                    "CONFIG_PTE_MARKER_UFFD_WP): without them it cannot be registered in WP "
                    "mode", "5.7", _WP_MARKERS, needs_mode="wp", until="5.19"),
    IoctlDifference("zeropage", "hugetlb", "missing",
                    "hugetlbfs has no zero page of huge page size: a hugetlb range gets "
                    "UFFD_API_RANGE_IOCTLS_BASIC, without ZEROPAGE, and a call is refused "
                    "(4.11)", "4.11",
                    "cab350afcbc9 \"userfaultfd: hugetlbfs: allow registration of ranges "
                    "containing huge pages\" (4.11): fs/userfaultfd.c userfaultfd_register() "
                    "hands a range with a hugetlb VMA UFFD_API_RANGE_IOCTLS_BASIC; "
                    "mm/userfaultfd.c mfill_atomic_hugetlb() (__mcopy_atomic_hugetlb() in "
                    "older releases) answers EINVAL to ZEROPAGE: \"There is no default zero "
                    "huge page for all huge page sizes as supported by hugetlb\"",
                    errno="EINVAL"),
    IoctlDifference("move", "hugetlb", "missing",
                    "UFFDIO_MOVE (6.8) moves anonymous private pages only and is not in the "
                    "UFFD_API_RANGE_IOCTLS_BASIC a hugetlb range gets", "6.8", _MOVE,
                    errno="EINVAL"),
    IoctlDifference("move", "shmem", "refused",
                    "listed because any range without a hugetlb VMA gets the whole "
                    "UFFD_API_RANGE_IOCTLS, but UFFDIO_MOVE moves anonymous private pages only "
                    "(6.8)", "6.8", _MOVE, errno="EINVAL"),
)


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

def ioctl_mode(key: str, name: str) -> int:
    """A mode flag of an ioctl, from the IOCTLS table: ioctl_mode("copy", "DONTWAKE")."""
    return next(value for n, value, _ in IOCTL_BY_KEY[key].modes if n == name)


# The mode flags the syscall layer and the probe pass, read from the table above.
UFFDIO_COPY_MODE_DONTWAKE = ioctl_mode("copy", "DONTWAKE")
UFFDIO_ZEROPAGE_MODE_DONTWAKE = ioctl_mode("zeropage", "DONTWAKE")
UFFDIO_MOVE_MODE_DONTWAKE = ioctl_mode("move", "DONTWAKE")
UFFDIO_WRITEPROTECT_MODE_WP = ioctl_mode("writeprotect", "WP")
UFFDIO_WRITEPROTECT_MODE_DONTWAKE = ioctl_mode("writeprotect", "DONTWAKE")
UFFDIO_CONTINUE_MODE_DONTWAKE = ioctl_mode("continue", "DONTWAKE")
UFFDIO_POISON_MODE_DONTWAKE = ioctl_mode("poison", "DONTWAKE")


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

# ----- the system calls a stuck thread or a handler can be found in ---------------------------
# /proc/PID/task/TID/syscall (fs/proc/base.c proc_pid_syscall()) gives the number of the call a
# sleeping thread is in, its six arguments, sp and pc; -1 when it sleeps outside a call: a
# fault taken in user mode (x86-64's exception entry stores -1 in orig_ax, "no syscall to
# restart", arch/x86/entry/entry_64.S; arm64 sets NO_SYSCALL, arch/arm64/kernel/entry-common.c).
NOT_IN_SYSCALL = -1


# How each call a handler waits in names its descriptors: "fd" args[0] is the descriptor;
# "pollfd" args[0] points at args[1] struct pollfd; "fdset" args[1] points at the read fd_set
# of args[0] bits; "epoll" args[0] is an epoll descriptor, whose fdinfo lists its targets.
WAIT_CALLS = {  # the calls a handler thread waits in, by how they name the descriptor
    "read": "fd", "readv": "fd", "pread64": "fd", "preadv": "fd", "preadv2": "fd",
    "poll": "pollfd", "ppoll": "pollfd", "select": "fdset", "pselect6": "fdset",
    "epoll_wait": "epoll", "epoll_pwait": "epoll", "epoll_pwait2": "epoll",
}

# Numbers of the calls uffdctl names (arch/x86/entry/syscalls/syscall_64.tbl and, for arm64,
# include/uapi/asm-generic/unistd.h).  Others are shown as "syscall N".
SYSCALL_NAMES = {
    "x86_64": {
        0: "read", 1: "write", 7: "poll", 16: "ioctl", 17: "pread64", 18: "pwrite64",
        19: "readv", 20: "writev", 23: "select", 35: "nanosleep", 44: "sendto",
        45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 61: "wait4", 202: "futex",
        209: "io_submit", 230: "clock_nanosleep", 232: "epoll_wait", 270: "pselect6",
        271: "ppoll", 281: "epoll_pwait", 295: "preadv", 296: "pwritev", 310:
        "process_vm_readv", 311: "process_vm_writev", 318: "getrandom", 327: "preadv2",
        328: "pwritev2", 426: "io_uring_enter", 441: "epoll_pwait2",
    },
    "aarch64": {
        63: "read", 64: "write", 29: "ioctl", 67: "pread64", 68: "pwrite64", 65: "readv",
        66: "writev", 72: "pselect6", 73: "ppoll", 101: "nanosleep", 206: "sendto",
        207: "recvfrom", 211: "sendmsg", 212: "recvmsg", 260: "wait4", 98: "futex",
        2: "io_submit", 115: "clock_nanosleep", 22: "epoll_pwait", 69: "preadv",
        70: "pwritev", 270: "process_vm_readv", 271: "process_vm_writev", 278: "getrandom",
        286: "preadv2", 287: "pwritev2", 426: "io_uring_enter", 441: "epoll_pwait2",
    },
}
SYSCALL_NAMES["arm64"] = SYSCALL_NAMES["aarch64"]

# kcmp(2): whether two processes' descriptors are one open file (KCMP_FILE), the way to tell
# one userfaultfd across processes where fdinfo has no ino line (before 5.12).  Needs
# CONFIG_KCMP (5.12; CONFIG_CHECKPOINT_RESTORE before) and ptrace read access to both.
KCMP_NR = {"x86_64": 312, "aarch64": 272, "arm64": 272}
KCMP_FILE = 0


def syscall_name(nr: int, arch: str | None = None) -> str:
    if nr == NOT_IN_SYSCALL:
        return "user-mode fault"
    return SYSCALL_NAMES.get(arch or machine(), {}).get(nr, f"syscall {nr}")


# fdinfo's "API:" third field is a build constant, not per fd or range
# (userfaultfd_show_fdinfo() prints UFFD_API_IOCTLS | UFFD_API_RANGE_IOCTLS).
FDINFO_READLINK = "anon_inode:[userfaultfd]"


# ----- decoders: masks to names, unknown bits kept --------------------------------------


def bit_names(mask: int, names: dict[int, str]) -> list[str]:
    """Names of the set bits of ``mask``, lowest first; unknown bits become 'bit_N' (one
    spelling, valid as a JSON value, a $GITHUB_OUTPUT key, part of a shell variable name and,
    dashed, of an NFD label; `--require bit_N` names it)."""
    out = []
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            out.append(names.get(bit, f"bit_{bit}"))
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


def normalize_feature(name: str) -> str | None:
    """'MINOR_HUGETLBFS', 'minor_hugetlbfs' or 'UFFD_FEATURE_MINOR_HUGETLBFS' -> key.  A bit
    this table does not know yet is 'bit_N' (N < 64; also 'bit N', 'BIT-N'): named by its
    number, or by the known feature's key when N is known."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key.startswith("uffd_feature_"):
        key = key[len("uffd_feature_"):]
    if key in FEATURE_BY_KEY:
        return key
    number = key.removeprefix("bit_")
    if number != key and number.isascii() and number.isdigit() and int(number) < 64:
        bit = int(number)
        known = FEATURE_BY_BIT.get(bit)
        return known.key if known else f"bit_{bit}"
    return None


def normalize_ioctl(name: str) -> str | None:
    """'continue', 'CONTINUE' or 'UFFDIO_CONTINUE' -> 'continue'."""
    key = name.strip().lower()
    if key.startswith("uffdio_"):
        key = key[len("uffdio_"):]
    return key if key in IOCTL_BY_KEY else None


def errno_meaning(step: str, err: int) -> str:
    """What an errno means at a given step, in the kernel's terms (fs/userfaultfd.c:
    new_userfaultfd(), userfaultfd_api(), userfaultfd_register(); mm/userfaultfd.c)."""
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
# The bits of an entry (Documentation/admin-guide/mm/pagemap.rst, made in
# fs/proc/task_mmu.c pagemap_read()).  One entry per base page, a huge page included: its
# entries are alike but for the frame number, which counts up from the head page's.
PM_PFRAME_MASK = (1 << 55) - 1  # bits 0-54: the page frame number when present; zero unless
# the reader opened the file with CAP_SYS_ADMIN in the initial user namespace (4.2:
# pagemap_read() sets show_pfn = file_ns_capable(file, &init_user_ns, CAP_SYS_ADMIN))
PM_SOFT_DIRTY = 1 << 55  # 3.11
PM_MMAP_EXCLUSIVE = 1 << 56  # the page is mapped once only (4.2)
PM_UFFD_WP = 1 << 57  # the PTE is uffd write-protected (5.14, fs/proc/task_mmu.c)
# Bit 57 came with commit fb8e37f35a2f "mm/pagemap: export uffd-wp protection information"
# in 5.14 (proc_pid_pagemap(5) says 5.14; pagemap.rst's "since 5.13" is wrong), for anonymous
# memory, the only kind uffd-wp then had; shmem and hugetlbfs have it with their uffd-wp
# support (5.19, "mm/pagemap: recognize uffd-wp bit for shmem/hugetlbfs", in the series of
# "mm/uffd: enable write protection for shmem & hugetlbfs").  Before 5.14 the bit always
# reads 0, so a clear bit there says nothing.
PM_UFFD_WP_FIRST = "5.14"
PM_FILE = 1 << 61  # a file page or shared anonymous (shmem) page (3.5)
PM_SWAP = 1 << 62  # swapped out (bits 0-54 then hold the swap type and offset)
PM_PRESENT = 1 << 63  # a page is mapped

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


# ----- releases ------------------------------------------------------------------------------

def release_tuple(release: str) -> tuple[int, int]:
    """'6.1.0-26-amd64' -> (6, 1); '7.3-rc' -> (7, 3); unparsable -> (0, 0)."""
    import re

    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def release_at_least(release: str, first: str) -> bool:
    """Is kernel ``release`` at least the release ``first`` that added an item?  A release
    candidate ("7.3-rc") counts as not released yet."""
    if first.endswith("-rc"):
        return release_tuple(release) > release_tuple(first)
    return release_tuple(release) >= release_tuple(first)
