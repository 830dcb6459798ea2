"""The `--require` language: names of features, register cells MODE:MEMORY and ioctls,
parsed and checked against a probe report.  Shared by `probe --require` and the pytest
plugin's `uffd` marker, so both accept the same names and give the same reasons."""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass

from . import abi, memtypes
from .probe import FeatureStatus, ProbeReport


class RequirementError(ValueError):
    """An unknown requirement name; the message carries a suggestion."""


@dataclass(frozen=True)
class Requirement:
    """A --require: a feature, a matrix cell or an ioctl."""

    kind: str  # "feature", "cell" or "ioctl"
    key: str  # feature key ("bit_N" for a bit uffdctl does not know), "mode:memory", ioctl key
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
