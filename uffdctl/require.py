"""The requirement language: what `probe --require`, `probe --require-profile` and the pytest
plugin's `uffd` marker ask for, parsed and checked against a probe report.  One language, so
every entry point accepts the same expressions and gives the same one-line reasons.

    REQUIREMENT  := CAPABILITY ["@user-mode"] | "kernel-faults" | "method=" METHOD
                  | "kernel" OP MAJOR.MINOR | "hugepages" [":" SIZE] OP COUNT
    CAPABILITY   := FEATURE                  minor_hugetlbfs, UFFD_FEATURE_MINOR_SHMEM, bit_20
                  | MODE ":" MEMORY          minor:hugetlb, missing+wp:shmem (or MEMORY:MODE)
                  | IOCTL                    continue, UFFDIO_COPY: works on some memory
                  | IOCTL ":" MEMORY         move:shmem: listed on that memory AND not failing
    METHOD       := syscall | dev_userfaultfd | syscall_user_mode_only   (abi.OPEN_METHODS)
    OP           := ">=" | ">" | "<=" | "<" | "==" | "!="
    SIZE         := 2M, 1G, 2048K, 2048kB, bytes (hugepages.parse_size); default: the default
                    huge page size

A capability is met only where it holds with kernel-mode faults: QEMU postcopy, Firecracker
(its vCPUs fault from KVM), vhost, O_DIRECT and any syscall reading registered memory fault
from inside the kernel, and a UFFD_USER_MODE_ONLY descriptor fails those (handle_userfault()
in fs/userfaultfd.c: no FAULT_FLAG_USER, goto out; the syscall gets EFAULT).
``CAPABILITY@user-mode`` says user-mode faults are enough, and then a user-mode-only
descriptor counts too.  ``kernel-faults`` asks for exactly that: a descriptor that handles
kernel-mode faults opens.  ``method=NAME`` holds when that way of opening a userfaultfd opens
one for this caller (access.AccessReport.methods: CRIU only ever calls the syscall, QEMU tries
/dev/userfaultfd first).  ``kernel OP MAJOR.MINOR`` compares the running release's leading
numbers (abi.release_tuple: "6.1.0-26-amd64" is 6.1; distribution release strings do not carry
the real sublevel, so only MAJOR.MINOR is compared).  ``hugepages[:SIZE] OP COUNT`` is
capacity, not capability: the pages of that size a new mapping can get now (free less
reserved, /sys/kernel/mm/hugepages), which other processes change at any time.

Malformed expressions raise RequirementError with one line: what was wrong, what was
expected and, where one is close, the expression that was probably meant.
"""

from __future__ import annotations

import errno as _errno
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import abi, advice, memtypes, support
from .hugepages import parse_size

if TYPE_CHECKING:  # annotations only: shell completion of --require names imports this module
    from .probe import Cell, FeatureStatus, ProbeReport

# The one qualifier: NAME@user-mode accepts a descriptor whose kernel-mode faults fail.
USER_MODE = "user-mode"
# What a qualifier meant as USER_MODE looks like when mistyped ("@usermode", ":user_mode_only").
_USER_MODE_LIKE = re.compile(r"user[\s_-]*mode([\s_-]*only)?", re.I)

# Kinds of requirement; the first four are capabilities of userfaultfd itself.
CAPABILITY_KINDS = ("feature", "cell", "ioctl", "ioctl-memory")
KERNEL_FAULTS = "kernel-faults"
COMPARISONS = (">=", ">", "<=", "<", "==", "!=")
# Operators people write for the ones meant: "kernel=6.12", "kernel=>5.13".
_OP_MEANT = {"=": "==", "===": "==", "=>": ">=", "=<": "<=", "<>": "!=", "!": "!=", "=!": "!="}
_EXPECTED = ("expected a feature (minor_hugetlbfs), a cell (minor:hugetlb), an ioctl (continue) "
             "or one on a memory type (move:shmem), each optionally followed by @user-mode "
             "when user-mode faults are enough; or kernel-faults, method=syscall, "
             "kernel>=5.13, hugepages:2M>=64")


class RequirementError(ValueError):
    """A malformed or unknown requirement; the message says what was expected and carries a
    suggestion where one is close."""


@dataclass(frozen=True)
class Requirement:
    """One requirement of the language (module docstring).

    ``key`` is canonical: the feature key ("bit_N" for a bit uffdctl does not know),
    "mode:memory", the ioctl key, "ioctl:memory", "kernel-faults", the abi.OPEN_METHODS name,
    "kernel>=5.13", "hugepages:2048kB>=64" or "hugepages>=16" (the default size)."""

    kind: str  # feature, cell, ioctl, ioctl-memory, kernel-faults, method, kernel, hugepages
    key: str
    text: str  # as written; a profile's reads "PROFILE: EXPRESSION" (profiles.Profile.parsed)
    user_mode: bool = False  # "@user-mode": met with user-mode faults only, too
    op: str = ""  # kernel, hugepages: one of COMPARISONS
    value: tuple[int, ...] = ()  # kernel: (major, minor); hugepages: (count,)
    size_kb: int = 0  # hugepages: the page size in kB; 0 for the default size
    profile: str = ""  # the consumer profile it belongs to (probe --require-profile)

    @property
    def capability(self) -> bool:
        """A fact about userfaultfd itself, to which the kernel-mode-faults rule applies."""
        return self.kind in CAPABILITY_KINDS

    @property
    def capacity(self) -> bool:
        """Volatile: true now, maybe not in a second (free huge pages)."""
        return self.kind == "hugepages"

    @property
    def needs_kernel_faults(self) -> bool:
        """Is it met only with kernel-mode faults (what JSON calls needs_kernel_faults)?"""
        if self.capability:
            return not self.user_mode
        if self.kind == "method":
            return abi.OPEN_METHOD_BY_NAME[self.key].kernel_faults
        return self.kind == KERNEL_FAULTS


@dataclass(frozen=True)
class RequirementResult:
    """A requirement checked against the report."""

    requirement: Requirement
    met: bool
    reason: str


# ----- parsing -------------------------------------------------------------------------------

def _range_ioctls() -> list[str]:
    return [i.key for i in abi.IOCTLS if i.range_ioctl]


def _method_names() -> dict[str, str]:
    """Every accepted spelling of a method -> its abi.OPEN_METHODS name: the name itself and
    its flat form (what --format github/env/nfd write: dev_userfaultfd)."""
    out: dict[str, str] = {}
    for m in abi.OPEN_METHODS:
        out[m.name] = m.name
        out[method_fact(m.name)] = m.name
    return out


def method_fact(name: str) -> str:
    """'/dev/userfaultfd' -> 'dev_userfaultfd', 'syscall+user-mode-only' ->
    'syscall_user_mode_only': the spelling of the flat formats and of the man page."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _all_names(capabilities_only: bool = False) -> list[str]:
    """Every name a suggestion may offer (only those that take @user-mode, if asked)."""
    cells = [f"{mode}:{mt.name}" for mode in abi.MATRIX_MODES for mt in memtypes.MEMORY_TYPES]
    on_memory = [f"{i}:{mt.name}" for i in _range_ioctls() for mt in memtypes.MEMORY_TYPES]
    names = [f.key for f in abi.FEATURES] + cells + [i.key for i in abi.IOCTLS] + on_memory
    if capabilities_only:
        return names
    return names + [KERNEL_FAULTS] + [f"method={method_fact(m.name)}" for m in abi.OPEN_METHODS]


def completion_names(capabilities_only: bool = False) -> list[str]:
    """What shell completion offers for --require (uffdctl.completion): every name above,
    then the comparisons' left sides with their usual operator: kernel>=, hugepages>= and
    hugepages:SIZE>= for each huge page size this machine has."""
    names = _all_names(capabilities_only)
    if capabilities_only:
        return names
    from .hugepages import read_pools

    # In kB, the spelling of the canonical key (Requirement.key: hugepages:2048kB>=64).
    sizes = [f"hugepages:{p.size_kb}kB>=" for p in read_pools().pools]
    return names + ["kernel>=", "hugepages>=", *sizes]


def parse_requirement(text: str) -> Requirement:
    """The Requirement ``text`` stands for; RequirementError (one line, with a suggestion)
    when it stands for none."""
    if not text.strip():
        raise RequirementError(f"empty requirement; {_EXPECTED}")
    name, at, qualifier = text.strip().partition("@")
    if at and qualifier.strip().lower() != USER_MODE:
        base = name.strip()
        example = f"{base}@{USER_MODE}" if _known(base) else f"minor:shmem@{USER_MODE}"
        default = (f"; kernel-mode faults are what {base or 'a name'} alone asks for"
                   if qualifier.strip().lower().startswith("kernel") else "")
        raise RequirementError(
            f"unknown qualifier {'@' + qualifier!r} in {text!r}; the one qualifier is "
            f"@{USER_MODE} (user-mode faults are enough), as in {example}{default}")
    other = _parse_other(name.strip(), text)
    if other is not None:
        if at:
            raise RequirementError(f"@{USER_MODE} in {text!r} goes only with features, cells "
                                   f"and ioctls: {_no_qualifier(other, name.strip())}")
        return other
    req = _parse_name(name.strip())
    if req is not None:
        return Requirement(req.kind, req.key, text, bool(at))
    # The qualifier written some other way ("minor:shmem:user-mode", "minor:shmem/usermode").
    stripped = _USER_MODE_LIKE.sub("", name).strip(" :/,+_-")
    if not at and stripped != name.strip() and _known(stripped):
        raise RequirementError(f"unknown requirement {text!r}; did you mean "
                               f"{stripped}@{USER_MODE}?")
    _not_a_range_ioctl(name.strip(), text)
    import difflib  # only for a name nobody knows: not paid on every probe

    close = difflib.get_close_matches(name.lower().strip().removeprefix("uffd_feature_")
                                      .removeprefix("uffdio_"), _all_names(bool(at)), n=3,
                                      cutoff=0.5)
    suffix = f"@{USER_MODE}" if at else ""
    hint = f"; did you mean {' or '.join(c + suffix for c in close)}?" if close else (
        f"; {_EXPECTED}")
    raise RequirementError(f"unknown requirement {text!r}{hint}")


def _no_qualifier(req: Requirement, name: str) -> str:
    """Why ``req`` takes no @user-mode, and what to write instead."""
    if req.kind == KERNEL_FAULTS:
        return (f"{name} asks for kernel-mode faults itself; leave it out where user-mode "
                "faults are enough")
    if req.kind == "method":
        return f"the method says which faults it handles; write {name}"
    return f"{req.kind} does not depend on the kind of fault; write {name}"


def _known(name: str) -> bool:
    return _parse_name(name) is not None


def _parse_name(name: str) -> Requirement | None:
    """The capability a name without qualifier stands for, or None."""
    if ":" in name:
        left, _, right = (part.strip() for part in name.lower().partition(":"))
        if left in memtypes.MEMORY_BY_NAME:
            left, right = right, left  # "hugetlb:minor" and "shmem:move" read the same
        if left in abi.MATRIX_MODES and right in memtypes.MEMORY_BY_NAME:
            return Requirement("cell", f"{left}:{right}", name)
        ioctl = abi.normalize_ioctl(left)
        if ioctl and abi.IOCTL_BY_KEY[ioctl].range_ioctl and right in memtypes.MEMORY_BY_NAME:
            return Requirement("ioctl-memory", f"{ioctl}:{right}", name)
        return None
    feature = abi.normalize_feature(name)
    if feature:
        return Requirement("feature", feature, name)
    ioctl = abi.normalize_ioctl(name)
    if ioctl:
        return Requirement("ioctl", ioctl, name)
    return None


def _not_a_range_ioctl(name: str, text: str) -> None:
    """'register:shmem': an ioctl of the descriptor, not of a range, named on a memory type."""
    left, colon, right = (part.strip() for part in name.lower().partition(":"))
    if left in memtypes.MEMORY_BY_NAME:
        left, right = right, left
    ioctl = abi.normalize_ioctl(left) if colon else None
    if ioctl and not abi.IOCTL_BY_KEY[ioctl].range_ioctl and right in memtypes.MEMORY_BY_NAME:
        raise RequirementError(
            f"UFFDIO_{abi.IOCTL_BY_KEY[ioctl].name} in {text!r} is an ioctl of the descriptor, "
            f"not of a registered range; on a memory type name a range ioctl "
            f"({', '.join(_range_ioctls())}) or a cell such as missing:{right}")


_WORD = re.compile(r"([A-Za-z_][\w-]*)")


def _parse_other(name: str, text: str) -> Requirement | None:
    """kernel-faults, method=..., kernel OP X.Y, hugepages[:SIZE] OP N; None for anything
    else.  A comparison whose left side is unknown is an error with the word probably meant."""
    low = name.lower()
    if low.replace("_", "-") in (KERNEL_FAULTS, "kernel-fault"):
        return Requirement(KERNEL_FAULTS, KERNEL_FAULTS, text)
    m = _WORD.match(low)
    word = m.group(1) if m else ""
    rest = name[len(word):]
    if word == "method" and (not rest or rest[0] in ":=!<> "):
        return _parse_method(rest, text)
    if word == "kernel" and (not rest or rest[0] in "<>=! "):
        return _parse_kernel(rest, text)
    if word in ("hugepages", "hugepage") and (not rest or rest[0] in ":<>=! "):
        if word == "hugepage":
            raise RequirementError(f"unknown requirement {text!r}; did you mean "
                                   f"hugepages{rest.strip()}?")
        return _parse_hugepages(rest, text)
    if not any(c in name for c in "<>=!"):
        return None
    import difflib

    close = difflib.get_close_matches(word, ["kernel", "hugepages", "method"], n=1, cutoff=0.6)
    if close and word:
        raise RequirementError(f"unknown requirement {text!r}; did you mean "
                               f"{close[0]}{rest.strip()}?")
    raise RequirementError(
        f"unknown requirement {text!r}: comparisons go with kernel (kernel>=5.13), hugepages "
        f"(hugepages:2M>=64) and method (method=syscall)")


def _split_op(rest: str, text: str, example: str) -> tuple[str, str]:
    """'>= 5.13' -> ('>=', '5.13'); an operator not in COMPARISONS is an error naming the one
    meant."""
    m = re.match(r"\s*([<>=!]+)\s*(.*?)\s*$", rest)
    if not m:
        raise RequirementError(f"{text!r} needs a comparison, as in {example} "
                               f"(one of {', '.join(COMPARISONS)})")
    op, value = m.groups()
    if op not in COMPARISONS:
        meant = _OP_MEANT.get(op)
        fixed = text.strip().replace(op, meant, 1) if meant else example
        raise RequirementError(f"unknown operator {op!r} in {text!r}; expected one of "
                               f"{', '.join(COMPARISONS)}; did you mean {fixed}?")
    return op, value


def _parse_method(rest: str, text: str) -> Requirement:
    names = _method_names()
    spelled = ", ".join(f"method={method_fact(m.name)}" for m in abi.OPEN_METHODS)
    if re.match(r"\s*(!|<|>)", rest):
        raise RequirementError(f"{text!r}: a method is named with = only, as in "
                               f"method=syscall ({spelled})")
    m = re.match(r"\s*(==?|:)?\s*(.*?)\s*$", rest)
    sep, value = (m.group(1), m.group(2)) if m else (None, rest.strip())
    if sep is None or not value:
        raise RequirementError(f"{text!r} needs the way of opening a userfaultfd: {spelled}")
    canonical = names.get(value.lower()) or names.get(method_fact(value))
    if sep == ":" and canonical:
        raise RequirementError(f"unknown requirement {text!r}; did you mean "
                               f"method={method_fact(canonical)}?")
    if canonical is None:
        import difflib

        flat = method_fact(value)
        spellings = sorted(set(map(method_fact, names)))
        close = ([s for s in spellings if flat and s.startswith(flat)]
                 or difflib.get_close_matches(flat, spellings, n=1, cutoff=0.5))
        hint = f"; did you mean method={close[0]}?" if close else ""
        raise RequirementError(f"unknown method {value!r} in {text!r}; expected {spelled}{hint}")
    return Requirement("method", canonical, text)


def _parse_kernel(rest: str, text: str) -> Requirement:
    if rest.strip().lower().startswith("fault"):
        raise RequirementError(f"unknown requirement {text!r}; did you mean kernel-faults?")
    op, value = _split_op(rest, text, "kernel>=5.13")
    v = value.lower().removeprefix("v").removeprefix("linux-")
    m = re.fullmatch(r"(\d+)\.(\d+)", v)
    if m:
        version = (int(m.group(1)), int(m.group(2)))
        return Requirement("kernel", f"kernel{op}{version[0]}.{version[1]}", text, op=op,
                           value=version)
    longer = re.fullmatch(r"(\d+)\.(\d+)[.-].*", v)
    if longer:
        raise RequirementError(
            f"{text!r}: kernel releases compare on MAJOR.MINOR only (a distribution's release "
            f"string does not carry the real sublevel: Debian's 6.1.0-26-amd64 is 6.1.112); "
            f"did you mean kernel{op}{longer.group(1)}.{longer.group(2)}?")
    if re.fullmatch(r"\d+", v):
        raise RequirementError(f"{text!r}: expected MAJOR.MINOR after {op}; did you mean "
                               f"kernel{op}{v}.0?")
    raise RequirementError(f"{text!r}: expected a kernel release MAJOR.MINOR after {op}, as in "
                           f"kernel{op}5.13")


def _parse_hugepages(rest: str, text: str) -> Requirement:
    example = "hugepages:2M>=64 (2 MB pages) or hugepages>=16 (the default size)"
    size_kb = 0
    if rest.lstrip().startswith(":"):
        m = re.match(r"\s*:\s*([^<>=!]*?)\s*([<>=!].*)?$", rest)
        size_text, rest = (m.group(1), m.group(2) or "") if m else ("", "")
        try:
            size = parse_size(size_text)
        except (ValueError, IndexError):
            raise RequirementError(
                f"huge page size {size_text!r} in {text!r} is not a size: expected a number "
                f"with K, M or G, as in {example}") from None
        if size % 1024:
            raise RequirementError(f"huge page size {size_text!r} in {text!r} is not a whole "
                                   f"number of kB; did you mean hugepages:2M{rest.strip()}?")
        size_kb = size // 1024
    if not rest.strip():
        raise RequirementError(f"{text!r} needs a comparison and a number of pages, as in "
                               f"{example}")
    op, value = _split_op(rest, text, example)
    if not re.fullmatch(r"\d+", value):
        raise RequirementError(f"{text!r}: expected a whole number of pages after {op}, as in "
                               f"{example}")
    count = int(value)
    key = f"hugepages:{size_kb}kB{op}{count}" if size_kb else f"hugepages{op}{count}"
    return Requirement("hugepages", key, text, op=op, value=(count,), size_kb=size_kb)


# ----- checking ------------------------------------------------------------------------------

def check_requirements(report: ProbeReport, requirements: list[Requirement]
                       ) -> list[RequirementResult]:
    return [RequirementResult(req, *_check(report, req)) for req in requirements]


def compare(left: tuple[int, ...], op: str, right: tuple[int, ...]) -> bool:
    return {">=": left >= right, ">": left > right, "<=": left <= right, "<": left < right,
            "==": left == right, "!=": left != right}[op]


def _check(report: ProbeReport, req: Requirement) -> tuple[bool, str]:
    # Facts that do not depend on a userfaultfd opening: the release, the pools, each way.
    if req.kind == "kernel":
        return _kernel(report, req)
    if req.kind == "hugepages":
        return _hugepages(report, req)
    if req.kind == "method":
        return _method(report, req)
    if report.api is None:
        cause, _ = report.access.summary()
        return False, f"no userfaultfd can be opened: {cause}"
    if req.kind == KERNEL_FAULTS:
        if report.api.kernel_faults:
            return True, f"a descriptor that handles kernel-mode faults opens ({report.api.method})"
        return False, f"only user-mode faults ({report.api.method}): {_refused(report)}"
    met, reason = _holds(report, req)
    if report.api.kernel_faults:
        return met, reason
    if req.user_mode:
        return met, reason + (f" (user-mode faults only, via {report.api.method})" if met else "")
    # Access's verdict: what refuses each way that handles kernel-mode faults, and what
    # gives them from here (never "use UFFD_USER_MODE_ONLY", which is what is refused).
    refused = _refused(report)
    if not met:
        return False, f"{reason}; and kernel-mode faults are refused: {refused}"
    hint = (f"; {req.profile} needs them" if req.profile else
            f"; or, if user-mode faults are enough, require {_qualified(req)}")
    return False, (f"holds only with user-mode faults ({report.api.method}, whose descriptors "
                   "fail the faults QEMU postcopy, Firecracker, vhost and O_DIRECT raise in "
                   f"the kernel with EFAULT); kernel-mode faults are refused: {refused}{hint}")


def _refused(report: ProbeReport) -> str:
    cause, fix = report.access.summary()
    return cause + (f"; fix: {fix}" if fix else "")


def _qualified(req: Requirement) -> str:
    return f"{req.text.strip().partition('@')[0].strip()}@{USER_MODE}"


def _kernel(report: ProbeReport, req: Requirement) -> tuple[bool, str]:
    release = report.kernel.release
    have = abi.release_tuple(release)
    want = ".".join(map(str, req.value))
    if have == (0, 0):
        return False, f"release {release!r} has no MAJOR.MINOR to compare with {want}"
    met = compare(have, req.op, req.value)
    return met, f"running {release}: {have[0]}.{have[1]} {req.op} {want} is {_truth(met)}"


def _hugepages(report: ProbeReport, req: Requirement) -> tuple[bool, str]:
    pools = report.hugepages
    size_kb = req.size_kb or pools.default_size_kb
    (count,) = req.value
    if not size_kb:
        return False, ("capacity: no huge page pools on this machine (a kernel without "
                       "CONFIG_HUGETLBFS, or /sys/kernel/mm/hugepages unreadable)")
    pool = pools.pool(size_kb * 1024)
    if pool is None:
        sizes = ", ".join(f"{p.size_kb} kB" for p in pools.pools) or "none"
        return False, (f"capacity: no pool of {size_kb} kB huge pages on this machine (pools: "
                       f"{sizes}; the size needs hugepagesz= on the kernel command line)")
    met = compare((pool.available,), req.op, (count,))
    reason = (f"capacity, read now: {pool.available} free {size_kb} kB huge pages (free "
              f"{pool.free}, reserved {pool.reserved}), {pool.available} {req.op} {count} is "
              f"{_truth(met)}; other processes change it at any time")
    short = count - pool.available + (req.op == ">")
    if not met and req.op in (">=", ">", "==") and short > 0:
        reason += (f"; fix: {advice.pool_command(size_kb, pool.nr + short)} as root "
                   f"(grows the pool by {short})")
    return met, reason


def _truth(met: bool) -> str:
    return "true" if met else "false"


def _method(report: ProbeReport, req: Requirement) -> tuple[bool, str]:
    m = next((m for m in report.access.methods if m.name == req.key), None)
    used = f"; the probe used {report.api.method}" if report.api else ""
    if m is None:
        first = abi.OPEN_METHOD_BY_NAME[req.key].first
        return False, f"{req.key} was not tried here (added in {first}){used}"
    if m.ok:
        faults = "kernel-mode faults" if m.kernel_faults else "user-mode faults only"
        return True, f"{req.key} opens a userfaultfd ({faults}){used}"
    why = f"{m.errno}: {m.cause}" if m.errno else m.cause or "refused"
    return False, f"{req.key} is refused ({why})" + (f"; fix: {m.fix}" if m.fix else "")


def _holds(report: ProbeReport, req: Requirement) -> tuple[bool, str]:
    """Does the capability hold for the descriptors the probe opened?"""
    assert report.api is not None
    if req.kind == "feature":
        f = _feature(report, req.key)
        release = report.kernel.release
        absent = support.absence(req.key, report.api.features_mask, report.kernel.here()) \
            if req.key in abi.FEATURE_BY_KEY else None
        if absent is not None:
            # What is really missing (support.absence): the release, or this architecture's
            # support, or a Kconfig symbol; never a release table alone.
            fix = advice.absence_fix([absent])
            return False, (f"{'offered by' if absent.offered else 'not offered by'} kernel "
                           f"{release}{advice.unoffered_reason(absent)}"
                           + (f"; fix: {fix}" if fix and absent.why != support.RELEASE else ""))
        if f is None or not f.offered:
            return False, f"not offered by kernel {release} (a bit this uffdctl does not know)"
        if not f.usable:
            return False, (f"offered but not usable by this process ({f.errno}: "
                           f"{abi.errno_meaning('api', _errno_value(f.errno))})")
        return True, "offered and usable"
    if req.kind == "cell":
        mode, memory = req.key.split(":")
        cell = report.cell(mode, memory)
        if cell is None:
            return False, "not probed"
        return (True, "registers") if cell.ok else (False, _cell_reason(cell))
    if req.kind == "ioctl-memory":
        ioctl, memory = req.key.split(":")
        return _ioctl_on(report, ioctl, memory)
    ioctl_ = abi.IOCTL_BY_KEY[req.key]
    if not ioctl_.range_ioctl:
        ok = bool(report.api.ioctls_mask & ioctl_.mask) or req.key == "register"
        return ok, "offered by UFFDIO_API" if ok else "not offered by UFFDIO_API"
    # Works somewhere: listed by a working cell, neither failing nor left untried there.
    works = [c for c in report.matrix
             if req.key in c.working_ioctls and req.key not in c.untested_ioctls]
    if works:
        where = ", ".join(sorted({c.memory for c in works}))
        return True, f"works on {where}"
    untested = [c for c in report.matrix if req.key in c.untested_ioctls]
    if untested:
        c = untested[0]
        return False, (f"listed by UFFDIO_REGISTER on {c.memory} but not tried: "
                       f"{c.untested_ioctls[req.key]} (capacity); fix: "
                       f"{advice.reserve_hugepages(memtypes.MEMORY_BY_NAME[c.memory].page_size())}")
    listed = [c for c in report.matrix if req.key in c.ioctls]
    if listed:
        return False, "listed by UFFDIO_REGISTER but every try failed"
    # No mode that would hand it back (abi.MODE_SUPPORT) registers anywhere here, for want of
    # a feature: that cell's cause names what is missing (UFFDIO_WRITEPROTECT on arm64 6.1:
    # no write-protect on arm64 at all).  Where such a mode does register, the ioctl itself
    # is what this release lacks (POISON before 6.6).
    modes = {r.mode for r in abi.MODE_SUPPORT if req.key in r.ioctls}
    cells = [c for c in report.matrix if c.mode in modes]
    meant = next((c for c in cells if c.status == "unsupported" and c.errno is None), None)
    if meant is not None and not any(c.ok for c in cells):
        return False, (f"no registration offers UFFDIO_{ioctl_.name}: it needs "
                       f"{meant.mode}:{meant.memory}, which fails: {_cell_reason(meant)}")
    return False, f"no registration offers UFFDIO_{ioctl_.name} (added in {ioctl_.first})"


def _cell_reason(cell: Cell) -> str:
    why = f"{cell.error} ({cell.errno})" if cell.errno else str(cell.error or cell.status)
    return why + (f"; fix: {cell.fix}" if cell.fix else "")


def _ioctl_on(report: ProbeReport, key: str, memory: str) -> tuple[bool, str]:
    """UFFDIO_<key> on ``memory``: handed back by UFFDIO_REGISTER for a working cell there and
    not failing when the probe tried it (probe._check_listed), which is what "works" means:
    the kernel lists UFFD_API_RANGE_IOCTLS for any non-hugetlb range (userfaultfd_register()
    in fs/userfaultfd.c), so MOVE is listed on shmem and fails there with EINVAL."""
    ioctl = abi.IOCTL_BY_KEY[key]
    name = f"UFFDIO_{ioctl.name}"
    cells = [c for c in report.matrix if c.memory == memory]
    working = [c for c in cells if c.ok]
    listing = [c for c in working if key in c.ioctls]
    good = [c for c in listing if key not in c.failing_ioctls and key not in c.untested_ioctls]
    if good:
        return True, (f"{name} works on {memory}: handed back by UFFDIO_REGISTER "
                      f"({', '.join(c.mode for c in good)}) and not failing when tried")
    failing = [c for c in listing if key in c.failing_ioctls]
    if failing:
        err = failing[0].failing_ioctls[key]
        return False, (f"{name} is listed by UFFDIO_REGISTER on {memory} but fails when tried "
                       f"({err}: {abi.errno_meaning(key, _errno_value(err))})")
    untested = [c for c in listing if key in c.untested_ioctls]
    if untested:
        mt = memtypes.MEMORY_BY_NAME[memory]
        return False, (f"{name} is listed on {memory} but was not tried: "
                       f"{untested[0].untested_ioctls[key]} (capacity); fix: "
                       f"{advice.reserve_hugepages(mt.page_size())}")
    # Which register mode would hand it back there (abi.MODE_SUPPORT), and what that cell says.
    kind = memtypes.MEMORY_BY_NAME[memory].kind
    modes = [r.mode for r in abi.MODE_SUPPORT if r.memory == kind and key in r.ioctls]
    meant = next((c for c in cells if c.mode in modes and not c.ok), None)
    if meant is not None:
        return False, f"{name} needs {meant.mode}:{memory}, which fails: {_cell_reason(meant)}"
    if working:
        offered = sorted({i for c in working for i in c.ioctls}, key=_ioctl_order)
        return False, (f"no registration on {memory} hands back {name} (they hand back "
                       f"{' '.join(offered)}; {ioctl.meaning})")
    first = cells[0] if cells else None
    return False, f"nothing registers on {memory}" + (
        f": {_cell_reason(first)}" if first is not None else " (not probed)")


def _ioctl_order(key: str) -> int:
    return abi.IOCTL_BY_KEY[key].nr if key in abi.IOCTL_BY_KEY else 99


def _feature(report: ProbeReport, key: str) -> FeatureStatus | None:
    """The probe's status of a feature key; an unknown bit ('bit_20') by its number, however
    the report spells its name."""
    if key in abi.FEATURE_BY_KEY or report.api is None:
        return report.feature(key)
    bit = int(key.removeprefix("bit_"))
    return next((f for f in report.api.features if f.bit == bit), None)


def _errno_value(name: str | None) -> int:
    return int(getattr(_errno, name or "", 0) or 0)
