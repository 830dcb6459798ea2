"""The `--require` language: names of features, register cells MODE:MEMORY and ioctls,
parsed and checked against a probe report.  Shared by `probe --require` and the pytest
plugin's `uffd` marker, so both accept the same names and give the same reasons.

A requirement is met only where it holds with kernel-mode faults: QEMU postcopy, Firecracker
(its vCPUs fault from KVM), vhost, O_DIRECT and any syscall reading registered memory fault
from inside the kernel, and a UFFD_USER_MODE_ONLY descriptor fails those (handle_userfault()
in fs/userfaultfd.c: no FAULT_FLAG_USER, goto out; the syscall gets EFAULT).  ``NAME@user-mode``
says user-mode faults are enough, and then a user-mode-only descriptor counts too.
"""

from __future__ import annotations

import errno as _errno
import re
from dataclasses import dataclass

from . import abi, memtypes
from .probe import FeatureStatus, ProbeReport

# The one qualifier: NAME@user-mode accepts a descriptor whose kernel-mode faults fail.
USER_MODE = "user-mode"
# What a qualifier meant as USER_MODE looks like when mistyped ("@usermode", ":user_mode_only").
_USER_MODE_LIKE = re.compile(r"user[\s_-]*mode([\s_-]*only)?", re.I)


class RequirementError(ValueError):
    """An unknown requirement name; the message carries a suggestion."""


@dataclass(frozen=True)
class Requirement:
    """A --require: a feature, a matrix cell or an ioctl."""

    kind: str  # "feature", "cell" or "ioctl"
    key: str  # feature key ("bit_N" for a bit uffdctl does not know), "mode:memory", ioctl key
    text: str  # as the user wrote it
    user_mode: bool = False  # "@user-mode": met with user-mode faults only, too


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
    name, at, qualifier = text.strip().partition("@")
    if at and qualifier.strip().lower() != USER_MODE:
        base = name.strip()
        example = f"{base}@{USER_MODE}" if _known(base) else f"minor:shmem@{USER_MODE}"
        default = (f"; kernel-mode faults are what {base or 'a name'} alone asks for"
                   if qualifier.strip().lower().startswith("kernel") else "")
        raise RequirementError(
            f"unknown qualifier {'@' + qualifier!r} in {text!r}; the one qualifier is "
            f"@{USER_MODE} (user-mode faults are enough), as in {example}{default}")
    req = _parse_name(name.strip())
    if req is not None:
        return Requirement(req.kind, req.key, text, bool(at))
    # The qualifier written some other way ("minor:shmem:user-mode", "minor:shmem/usermode").
    stripped = _USER_MODE_LIKE.sub("", name).strip(" :/,+_-")
    if not at and stripped != name.strip() and _known(stripped):
        raise RequirementError(f"unknown requirement {text!r}; did you mean "
                               f"{stripped}@{USER_MODE}?")
    import difflib  # only for a name nobody knows: not paid on every probe

    close = difflib.get_close_matches(name.lower().removeprefix("uffd_feature_")
                                      .removeprefix("uffdio_"), _all_names(), n=3, cutoff=0.5)
    suffix = f"@{USER_MODE}" if at else ""
    hint = f"; did you mean {' or '.join(c + suffix for c in close)}?" if close else (
        "; expected a feature (minor_hugetlbfs), a cell (minor:hugetlb) or an ioctl (continue), "
        f"each optionally followed by @{USER_MODE} when user-mode faults are enough")
    raise RequirementError(f"unknown requirement {text!r}{hint}")


def _known(name: str) -> bool:
    return _parse_name(name) is not None


def _parse_name(name: str) -> Requirement | None:
    """The requirement a name without qualifier stands for, or None."""
    if ":" in name:
        mode, _, memory = name.lower().partition(":")
        if mode in memtypes.MEMORY_BY_NAME and memory in abi.MATRIX_MODES:
            mode, memory = memory, mode  # "hugetlb:minor" reads the same
        if mode in abi.MATRIX_MODES and memory in memtypes.MEMORY_BY_NAME:
            return Requirement("cell", f"{mode}:{memory}", name)
        return None
    feature = abi.normalize_feature(name)
    if feature:
        return Requirement("feature", feature, name)
    ioctl = abi.normalize_ioctl(name)
    if ioctl:
        return Requirement("ioctl", ioctl, name)
    return None


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
    met, reason = _holds(report, req)
    if report.api.kernel_faults:
        return met, reason
    if req.user_mode:
        return met, reason + (f" (user-mode faults only, via {report.api.method})" if met else "")
    # Access's verdict: what refuses each way that handles kernel-mode faults, and what
    # gives them from here (never "use UFFD_USER_MODE_ONLY", which is what is refused).
    cause, fix = report.access.summary()
    refused = cause + (f"; fix: {fix}" if fix else "")
    if not met:
        return False, f"{reason}; and kernel-mode faults are refused: {refused}"
    return False, (f"holds only with user-mode faults ({report.api.method}, whose descriptors "
                   "fail the faults QEMU postcopy, Firecracker, vhost and O_DIRECT raise in "
                   f"the kernel with EFAULT); kernel-mode faults are refused: {refused}; or, if "
                   f"user-mode faults are enough, require {_qualified(req)}")


def _qualified(req: Requirement) -> str:
    return f"{req.text.strip().partition('@')[0].strip()}@{USER_MODE}"


def _holds(report: ProbeReport, req: Requirement) -> tuple[bool, str]:
    """Does the requirement hold for the descriptors the probe opened?"""
    assert report.api is not None
    if req.kind == "feature":
        f = _feature(report, req.key)
        if f is None or not f.offered:
            known = abi.FEATURE_BY_KEY.get(req.key)
            since = f"added in {known.first}" if known else "a bit this uffdctl does not know"
            return False, f"not offered by kernel {report.kernel.release} ({since})"
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
        why = f"{cell.error} ({cell.errno})" if cell.errno else str(cell.error or cell.status)
        return False, why + (f"; fix: {cell.fix}" if cell.fix else "")
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


def _feature(report: ProbeReport, key: str) -> FeatureStatus | None:
    """The probe's status of a feature key; an unknown bit ('bit_20') by its number, however
    the report spells its name."""
    if key in abi.FEATURE_BY_KEY or report.api is None:
        return report.feature(key)
    bit = int(key.removeprefix("bit_"))
    return next((f for f in report.api.features if f.bit == bit), None)


def _errno_value(name: str | None) -> int:
    return int(getattr(_errno, name or "", 0) or 0)
